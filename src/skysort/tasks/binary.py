"""Two classes, one logit: the output is the probability of ``classes[1]`` (the positive
class); BCE with positives weighted ``negatives / positives``; ROC-AUC (baseline 0.5) and
PR-AUC (baseline: the share of positives) before the thresholded classification; Platt
scaling, with the decision threshold moved through it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from skysort.errors import ConfigError
from skysort.tasks.base import LossFn, register_task
from skysort.tasks.calibration import Calibration, platt, sigmoid_nll
from skysort.tasks.multiclass import MulticlassTask, classification_metrics, format_classification
from skysort.tasks.scores import number, sk

if TYPE_CHECKING:
    import torch
    from torch import nn


@register_task
class BinaryTask(MulticlassTask):
    """Two classes, one logit: the output is the probability of ``classes[1]``."""

    kind: ClassVar[str] = "binary"
    headline_key: ClassVar[str] = "roc_auc"

    @classmethod
    def check_classes(cls, classes: Sequence[str], where: str) -> None:
        if len(classes) != 2:
            raise ConfigError(f"{where}: a binary task needs exactly two classes, found "
                              f"{len(classes)}: {list(classes)}")

    @property
    def num_outputs(self) -> int:
        return 1

    @property
    def output_names(self) -> list[str]:
        return [self.classes[1]]

    def table_columns(self, target_columns: Sequence[str] | None) -> list[str]:
        """The table's own target column (``name,invasive``), holding P(positive)."""
        return list(target_columns[:1]) if target_columns else self.output_names

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

    # -- scores ---------------------------------------------------------------------------

    def metrics(self, y_true: np.ndarray, outputs: np.ndarray, *, threshold: float = 0.5,
                derived_thresholds: Sequence[float] = (0.6, 0.9)) -> dict[str, Any]:
        return binary_metrics(y_true, outputs[:, 0], self.classes, self.train_counts,
                              threshold)

    @classmethod
    def format_metrics(cls, metrics: dict[str, Any], title: str = "") -> list[str]:
        lines = [title or f"{metrics['n']} images",
                 f"  {'metric':<20}{'model':>10}{'baseline':>10}"]
        for key, label in (("roc_auc", "ROC-AUC"), ("pr_auc", "PR-AUC")):
            lines.append(f"  {label:<20}{number(metrics['model'][key]):>10}"
                         f"{number(metrics['baseline'][key]):>10}")
        lines.append(f"  (below: the images called {metrics['classes'][1]!r} when its "
                     f"probability is at least {metrics['threshold']:g})")
        lines.append(format_classification(metrics, ""))
        return lines

    # -- calibration: Platt scaling ---------------------------------------------------------

    def fit_calibration(self, logits: np.ndarray, targets: np.ndarray) -> Calibration:
        return platt(logits[:, 0], targets.astype(np.float64), len(logits))

    def calibration_nll(self, logits: np.ndarray, targets: np.ndarray) -> float:
        return sigmoid_nll(logits[:, 0], targets.astype(np.float64))

    def prior_outputs(self, targets: np.ndarray) -> tuple[np.ndarray, str]:
        share = self.class_share(targets)[1:]
        return np.broadcast_to(share, (len(targets), 1)), "training share of each class"

    def calibrated_threshold(self, calibration: Calibration, threshold: float) -> float:
        """Platt's map moves the threshold too, so no image changes class."""
        return calibration.threshold(threshold) if calibration.method != "none" else threshold

    def describe_calibration(self, calibration: Calibration, threshold: float) -> str:
        return (f"Platt scaling (slope {calibration.scale[0]:.3f}, intercept "
                f"{calibration.bias[0]:+.3f}; threshold {threshold:g} is now "
                f"{self.calibrated_threshold(calibration, threshold):.4f})")


def binary_metrics(y_true: Sequence[int] | np.ndarray, p_positive: np.ndarray,
                   classes: Sequence[str], train_counts: Sequence[int] | None = None,
                   threshold: float = 0.5) -> dict[str, Any]:
    """Binary scores: ROC-AUC and PR-AUC first, then the thresholded classification.

    Args:
        y_true: 0 (``classes[0]``) or 1 (``classes[1]``, the positive class).
        p_positive: predicted probability of the positive class.
        threshold: the probability at and above which an image is called positive.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(p_positive, dtype=np.float64).reshape(-1)
    predicted = (p >= threshold).astype(np.int64)
    metrics = classification_metrics(y_true, np.eye(2)[predicted], classes, train_counts)
    metrics["task"] = "binary"
    metrics["threshold"] = threshold
    both = len(np.unique(y_true)) == 2
    prevalence = float(y_true.mean()) if len(y_true) else 0.0
    metrics["model"] = {"roc_auc": float(sk().roc_auc_score(y_true, p)) if both else None,
                        "pr_auc": float(sk().average_precision_score(y_true, p)) if both else None,
                        **metrics["model"]}
    metrics["baseline"] = {"roc_auc": 0.5, "pr_auc": prevalence, **metrics["baseline"]}
    if not both:
        metrics["warnings"].append("ROC-AUC and PR-AUC need both classes among the images; "
                                   "only one is present")
    return metrics
