"""Independent yes/no labels, one sigmoid each: BCE with positives weighted
``negatives / positives``; per-label ROC-AUC and its macro average (baseline 0.5); one
temperature per label, kept only where it moves no decision."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from skysort.tasks.base import LossFn, Task, register_task
from skysort.tasks.calibration import Calibration, best_scale, sigmoid_nll
from skysort.tasks.scores import MIN_MARGIN, number, sk

if TYPE_CHECKING:
    from torch import nn


@register_task
class MultiLabelTask(Task):
    """Independent yes/no labels, one sigmoid each; targets are 0/1 per label."""

    kind: ClassVar[str] = "multilabel"
    probabilities: ClassVar[bool] = True
    headline_key: ClassVar[str] = "macro_roc_auc"
    report_sections: ClassVar[tuple[str, ...]] = ("labels",)
    value_range: ClassVar[tuple[float, float] | None] = (0.0, 1.0)
    value_rule: ClassVar[str] = "multilabel targets are 0 or 1"

    @classmethod
    def invalid_values(cls, columns: Sequence[str], vector: np.ndarray) -> list[str]:
        return [f"{c}={v:g}" for c, v in zip(columns, vector, strict=True) if v not in (0, 1)]

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

    def predicted_class(self, outputs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        """Labels are independent: a 0/1 matrix at ``threshold``, not one class per row."""
        return (np.asarray(outputs) >= threshold).astype(np.int64)

    def decisions(self, outputs: np.ndarray, threshold: float) -> np.ndarray:
        """A 0/1 matrix at the run's threshold."""
        return (outputs >= threshold).astype(np.int64)

    # -- scores ---------------------------------------------------------------------------

    def metrics(self, y_true: np.ndarray, outputs: np.ndarray, *, threshold: float = 0.5,
                derived_thresholds: Sequence[float] = (0.6, 0.9)) -> dict[str, Any]:
        return multilabel_metrics(y_true, outputs, self.classes, threshold)

    @classmethod
    def format_metrics(cls, metrics: dict[str, Any], title: str = "") -> list[str]:
        lines = [title or f"{metrics['n']} images",
                 f"  macro ROC-AUC {number(metrics['model']['macro_roc_auc'])} over "
                 f"{metrics['model']['labels_with_auc']} labels (baseline 0.500)"]
        width = max(8, *(len(c) for c in metrics["labels"]))
        lines.append(f"  {'label':<{width}}{'ROC-AUC':>9}{'PR-AUC':>9}{'F1':>8}{'positives':>11}")
        for name, v in metrics["per_label"].items():
            lines.append(f"  {name:<{width}}{number(v['roc_auc']):>9}{number(v['pr_auc']):>9}"
                         f"{number(v['f1']):>8}{v['positives']:>11d}")
        return lines

    # -- calibration: one temperature per label --------------------------------------------

    def fit_calibration(self, logits: np.ndarray, targets: np.ndarray) -> Calibration:
        n, k = logits.shape
        y = targets.astype(np.float64)
        scales = []
        for j in range(k):
            col, t = logits[:, j], y[:, j]
            both = 0 < t.sum() < len(t)
            scales.append(best_scale(lambda s, c=col, t=t: sigmoid_nll(c * s, t))
                          if both else 1.0)
        return Calibration("temperature", scales, [0.0] * k, fitted_on=n,
                           nll_before=self.calibration_nll(logits, y),
                           nll_after=self.calibration_nll(logits * np.array(scales), y))

    def calibration_nll(self, logits: np.ndarray, targets: np.ndarray) -> float:
        return float(np.mean([sigmoid_nll(logits[:, j], targets[:, j].astype(np.float64))
                              for j in range(logits.shape[1])]))

    def calibration_events(self, outputs: np.ndarray, targets: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray]:
        """One yes/no prediction per (image, label) pair."""
        p = np.asarray(outputs, dtype=np.float64).reshape(-1, 1)
        t = np.asarray(targets, dtype=np.float64).reshape(-1, 1)
        return np.concatenate([1 - p, p], axis=1), np.concatenate([1 - t, t], axis=1)

    def prior_outputs(self, targets: np.ndarray) -> tuple[np.ndarray, str]:
        prevalence = np.asarray(targets, dtype=np.float64).mean(axis=0)
        return (np.broadcast_to(prevalence, np.shape(targets)),
                "share of each label among these images")

    def keep_calibration(self, calibration: Calibration, threshold: float) -> Calibration:
        """Temperatures keep the decisions at 0.5 only (one threshold serves all labels)."""
        if calibration.method != "none" and threshold != 0.5:
            return Calibration.identity(
                self.num_outputs, f"per-label temperatures would move the decisions at "
                                  f"threshold={threshold:g}; train with threshold=0.5 to "
                                  "calibrate", fitted_on=calibration.fitted_on,
                reason="threshold")
        return calibration


def multilabel_metrics(y_true: np.ndarray, probs: np.ndarray, labels: Sequence[str],
                       threshold: float = 0.5) -> dict[str, Any]:
    """Per-label ROC-AUC and its macro average over the labels where both values occur."""
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    per_label: dict[str, dict[str, Any]] = {}
    aucs = []
    for j, name in enumerate(labels):
        both = len(np.unique(y_true[:, j])) == 2
        auc = float(sk().roc_auc_score(y_true[:, j], probs[:, j])) if both else None
        if auc is not None:
            aucs.append(auc)
        per_label[name] = {
            "roc_auc": auc,
            "pr_auc": (float(sk().average_precision_score(y_true[:, j], probs[:, j]))
                       if both else None),
            "positives": int(y_true[:, j].sum()),
            "prevalence": float(y_true[:, j].mean()) if len(y_true) else 0.0,
            "f1": float(sk().f1_score(y_true[:, j], probs[:, j] >= threshold, zero_division=0)),
        }
    macro = float(np.mean(aucs)) if aucs else None
    warnings = []
    if macro is None:
        warnings.append("no label has both positive and negative images; no AUC can be computed")
    elif macro < 0.5 + MIN_MARGIN:
        warnings.append(f"NOT BETTER THAN THE BASELINE: macro ROC-AUC {macro:.3f} is not clearly "
                        "above 0.5, what random scores get")
    return {"task": "multilabel", "n": len(y_true), "labels": list(labels),
            "threshold": threshold,
            "model": {"macro_roc_auc": macro, "labels_with_auc": len(aucs)},
            "baseline": {"kind": "constant score", "macro_roc_auc": 0.5},
            "per_label": per_label, "warnings": warnings}
