"""Target kinds: what a model outputs, how it is trained, and how its output is read.

=============  ==========================  ===================  ===========================
kind           outputs                      output layer         loss
=============  ==========================  ===================  ===========================
multiclass     one probability per class    softmax              cross-entropy
binary         P(positive class)            sigmoid (1 logit)    binary cross-entropy
multilabel     one probability per label    sigmoid per label    binary cross-entropy
fractions      one fraction per answer      decision tree, or    mean squared error on the
                                            a sigmoid per column fractions
=============  ==========================  ===================  ===========================

Class imbalance (``balance="weights"``) weighs classes ``n / (k * count)`` for
multiclass, and positives ``negatives / positives`` for binary and multi-label targets.
Metrics and baselines per kind live in :mod:`skysort.evaluation.metrics`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from skysort.errors import ConfigError
from skysort.tasks.schema import TreeSchema

if TYPE_CHECKING:  # torch is imported where a loss or an output layer is built
    import torch
    from torch import nn

TASK_KINDS = ("multiclass", "binary", "multilabel", "fractions")
#: The kinds whose targets are one class per image (metrics dicts carry the kind as text).
SINGLE_LABEL_KINDS = ("multiclass", "binary")
LossFn = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]


def check_balance(kind: str, balance: str) -> None:
    """``balance=sampler`` draws each class equally often, so it needs one class per
    image: a ConfigError for multi-label and vote-fraction targets."""
    if balance == "sampler" and kind not in SINGLE_LABEL_KINDS:
        raise sampler_error(kind)


def sampler_error(kind: str) -> ConfigError:
    return ConfigError(f"balance=sampler draws every class equally often, and {kind} targets "
                       "have no one class per image; use balance=weights (weights in the "
                       "loss) or balance=none")


@dataclass
class Task:
    """A single-label, multi-class task (one softmax over ``classes``).

    Attributes:
        classes: class names (or output column names for table targets), in order.
        train_counts: training images per class (or per positive label), recorded at fit
            time; baselines and class weights come from it.
    """

    classes: list[str]
    train_counts: list[int] = field(default_factory=list)
    kind: ClassVar[str] = "multiclass"

    @property
    def single_label(self) -> bool:
        """Whether each image has exactly one class (multiclass and binary tasks)."""
        return self.kind in SINGLE_LABEL_KINDS

    @property
    def num_outputs(self) -> int:
        return len(self.classes)

    @property
    def output_names(self) -> list[str]:
        """Names of the published outputs, in order."""
        return list(self.classes)

    def output_layer(self) -> nn.Module:
        """Logits -> published outputs."""
        from torch import nn

        return nn.Softmax(dim=1)

    def fit_statistics(self, targets: np.ndarray) -> None:
        """Records what the baselines need from the training targets."""
        self.train_counts = np.bincount(targets.astype(np.int64),
                                        minlength=len(self.classes)).tolist()

    def class_weights(self, targets: np.ndarray) -> np.ndarray:
        """Weights ``n / (k * count)`` per class, as scikit-learn's ``"balanced"``."""
        k = len(self.classes)
        counts = np.bincount(targets.astype(np.int64), minlength=k).astype(np.float64)
        return np.where(counts > 0, counts.sum() / (k * np.maximum(counts, 1)),
                        0.0).astype(np.float32)

    def loss_fn(self, train_targets: np.ndarray, balance: str,
                label_smoothing: float = 0.0) -> LossFn:
        import torch
        from torch import nn

        weight = (torch.from_numpy(self.class_weights(train_targets))
                  if balance == "weights" else None)
        return nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)

    def target_tensor(self, targets: np.ndarray) -> torch.Tensor:
        import torch

        return torch.as_tensor(targets, dtype=torch.long)

    def predicted_class(self, outputs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        """Class index per row of published outputs (single-label tasks)."""
        return np.asarray(outputs).argmax(axis=1)

    def class_probabilities(self, outputs: np.ndarray) -> np.ndarray:
        """One probability per class, ``(n, len(classes))`` (single-label tasks)."""
        return np.asarray(outputs)

    def sample_weights(self, train_targets: np.ndarray) -> np.ndarray:
        """Per-sample weights that draw every class equally often (balanced sampling)."""
        return self.class_weights(train_targets)[train_targets.astype(np.int64)]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "classes": list(self.classes),
                "train_counts": list(self.train_counts)}


@dataclass
class BinaryTask(Task):
    """Two classes, one logit: the output is the probability of ``classes[1]``."""

    kind: ClassVar[str] = "binary"

    @property
    def num_outputs(self) -> int:
        return 1

    @property
    def output_names(self) -> list[str]:
        return [self.classes[1]]

    def output_layer(self) -> nn.Module:
        from torch import nn

        return nn.Sigmoid()

    def loss_fn(self, train_targets: np.ndarray, balance: str,
                label_smoothing: float = 0.0) -> LossFn:
        import torch
        from torch import nn

        pos = float((train_targets == 1).sum())
        neg = float((train_targets == 0).sum())
        pos_weight = torch.tensor([neg / max(pos, 1.0)]) if balance == "weights" else None
        bce = nn.BCEWithLogitsLoss(pos_weight=pos_weight)

        def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            if label_smoothing:
                targets = targets * (1 - label_smoothing) + 0.5 * label_smoothing
            return bce(logits[:, 0], targets)

        return loss

    def target_tensor(self, targets: np.ndarray) -> torch.Tensor:
        import torch

        return torch.as_tensor(targets, dtype=torch.float32)

    def predicted_class(self, outputs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        return (np.asarray(outputs)[:, 0] >= threshold).astype(np.int64)

    def class_probabilities(self, outputs: np.ndarray) -> np.ndarray:
        p = np.asarray(outputs)[:, :1]
        return np.concatenate([1 - p, p], axis=1)


@dataclass
class MultiLabelTask(Task):
    """Independent yes/no labels, one sigmoid each; targets are 0/1 per label."""

    kind: ClassVar[str] = "multilabel"

    def output_layer(self) -> nn.Module:
        from torch import nn

        return nn.Sigmoid()

    def fit_statistics(self, targets: np.ndarray) -> None:
        self.train_counts = targets.sum(axis=0).astype(np.int64).tolist()

    def loss_fn(self, train_targets: np.ndarray, balance: str,
                label_smoothing: float = 0.0) -> LossFn:
        import torch
        from torch import nn

        pos = train_targets.sum(axis=0)
        neg = len(train_targets) - pos
        pos_weight = (torch.from_numpy((neg / np.maximum(pos, 1)).astype(np.float32))
                      if balance == "weights" else None)
        return nn.BCEWithLogitsLoss(pos_weight=pos_weight)

    def target_tensor(self, targets: np.ndarray) -> torch.Tensor:
        import torch

        return torch.as_tensor(targets, dtype=torch.float32)

    def sample_weights(self, train_targets: np.ndarray) -> np.ndarray:
        raise sampler_error(self.kind)

    def predicted_class(self, outputs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        """Labels are independent: a 0/1 matrix at ``threshold``, not one class per row."""
        return (np.asarray(outputs) >= threshold).astype(np.int64)

    def class_probabilities(self, outputs: np.ndarray) -> np.ndarray:
        return np.asarray(outputs)


@dataclass
class FractionsTask(Task):
    """Vote fractions in [0, 1]; with a schema, outputs obey its decision tree.

    Attributes:
        schema: the decision tree, or None for independent fractions (a sigmoid each).
        train_mean: the training mean of each column: the baseline predictor.
    """

    schema: TreeSchema | None = None
    train_mean: list[float] = field(default_factory=list)
    kind: ClassVar[str] = "fractions"

    def output_layer(self) -> nn.Module:
        from torch import nn

        from skysort.tasks.tree import TreeOutput

        if self.schema is None:
            return nn.Sigmoid()
        return TreeOutput(self.schema, self.classes)

    def fit_statistics(self, targets: np.ndarray) -> None:
        self.train_mean = targets.mean(axis=0).astype(float).tolist()
        self.train_counts = [len(targets)] * len(self.classes)

    def loss_fn(self, train_targets: np.ndarray, balance: str,
                label_smoothing: float = 0.0) -> LossFn:
        from torch import nn

        layer = self.output_layer()
        mse = nn.MSELoss()

        def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            return mse(layer(logits), targets)

        return loss

    def target_tensor(self, targets: np.ndarray) -> torch.Tensor:
        import torch

        return torch.as_tensor(targets, dtype=torch.float32)

    def sample_weights(self, train_targets: np.ndarray) -> np.ndarray:
        raise sampler_error(self.kind)

    def predicted_class(self, outputs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        raise TypeError("vote fractions have no predicted class; the outputs are the fractions")

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "train_mean": list(self.train_mean),
                "schema": self.schema.to_dict() if self.schema else None}


_KINDS: dict[str, type[Task]] = {"multiclass": Task, "binary": BinaryTask,
                                 "multilabel": MultiLabelTask, "fractions": FractionsTask}


def make_task(kind: str, classes: list[str], schema: TreeSchema | None = None) -> Task:
    """A task of ``kind`` over ``classes`` (the output column names)."""
    if kind not in _KINDS:
        raise ConfigError(f"task {kind!r} is not one of {', '.join(TASK_KINDS)}")
    if kind == "binary" and len(classes) != 2:
        raise ConfigError(f"a binary task needs exactly two classes, not {classes}")
    if kind == "fractions":
        return FractionsTask(classes=list(classes), schema=schema)
    return _KINDS[kind](classes=list(classes))


def task_from_dict(data: dict[str, Any]) -> Task:
    """Rebuilds a task saved by ``to_dict`` (in ``model.json``)."""
    kind = data.get("kind", "multiclass")
    schema = TreeSchema.from_dict(data["schema"]) if data.get("schema") else None
    task = make_task(kind, list(data["classes"]), schema)
    task.train_counts = list(data.get("train_counts", []))
    if isinstance(task, FractionsTask):
        task.train_mean = list(data.get("train_mean", []))
    return task
