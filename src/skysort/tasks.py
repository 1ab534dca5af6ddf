"""Target kinds: what a model outputs, how it is trained, and how its output is read.

A :class:`Task` knows the output names, the layer that turns logits into the published
outputs (softmax for single-label classes), and the training loss, including how class
imbalance is handled. Metrics and baselines per kind live in :mod:`skysort.evaluate`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from skysort.errors import ConfigError


@dataclass
class Task:
    """A single-label, multi-class task (one softmax over ``classes``).

    Attributes:
        classes: class names, in output order.
        kind: the task kind, saved with the model.
        train_counts: training images per class, recorded at fit time; the majority
            baseline and class weights come from it.
    """

    classes: list[str]
    kind: str = "multiclass"
    train_counts: list[int] = field(default_factory=list)

    @property
    def num_outputs(self) -> int:
        return len(self.classes)

    def output_layer(self) -> nn.Module:
        """Logits -> published outputs (class probabilities)."""
        return nn.Softmax(dim=1)

    def class_weights(self, targets: np.ndarray) -> np.ndarray:
        """Weights ``n / (k * count)`` per class, as scikit-learn's ``"balanced"``."""
        counts = np.bincount(targets, minlength=self.num_outputs).astype(np.float64)
        weights = np.where(counts > 0, counts.sum() / (self.num_outputs * np.maximum(counts, 1)),
                           0.0)
        return weights.astype(np.float32)

    def loss_fn(self, train_targets: np.ndarray, balance: str, label_smoothing: float = 0.0
                ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """Cross-entropy; with ``balance="weights"`` each class weighs ``n / (k * count)``."""
        weight = (torch.from_numpy(self.class_weights(train_targets))
                  if balance == "weights" else None)
        return nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)

    def target_tensor(self, targets: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(targets, dtype=torch.long)

    def sample_weights(self, train_targets: np.ndarray) -> np.ndarray:
        """Per-sample weights that draw every class equally often (balanced sampling)."""
        return self.class_weights(train_targets)[train_targets]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "classes": list(self.classes),
                "train_counts": list(self.train_counts)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Task:
        kind = data.get("kind", "multiclass")
        if kind != "multiclass":
            raise ConfigError(f"task kind {kind!r} is not known to this version of skysort")
        return cls(classes=list(data["classes"]), kind=kind,
                   train_counts=list(data.get("train_counts", [])))
