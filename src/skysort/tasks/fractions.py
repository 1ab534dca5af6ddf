"""Vote fractions in [0, 1]: with a schema, outputs obey its decision tree; MSE on the
fractions; RMSE overall (the Kaggle Galaxy Zoo metric), per answer and per question,
beside the mean predictor (the training mean of each column for every image); for the
Galaxy Zoo tree also a "derived class" view (elliptical, spiral, barred spiral)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from skysort.tasks.base import LossFn, Task, register_task
from skysort.tasks.calibration import Calibration
from skysort.tasks.schema import TreeSchema, galaxy_zoo_schema
from skysort.tasks.scores import MIN_MARGIN, number, rmse

if TYPE_CHECKING:
    import torch
    from torch import nn

#: Galaxy Zoo answers the derived classes are read from.
GALAXY_ZOO_RULES_COLUMNS = ("Class1.1", "Class3.1", "Class3.2", "Class4.1")
DERIVED_CLASSES = ("elliptical", "spiral", "barred spiral", "other")


@register_task
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
    headline_key: ClassVar[str] = "rmse"
    lower_is_better: ClassVar[bool] = True
    report_sections: ClassVar[tuple[str, ...]] = ("fractions",)
    votes: ClassVar[bool] = True
    value_range: ClassVar[tuple[float, float] | None] = (0.0, 1.0)
    value_rule: ClassVar[str] = "fractions lie in [0, 1]"

    @classmethod
    def create(cls, classes: Sequence[str], schema: TreeSchema | None = None) -> Task:
        return cls(classes=list(classes), schema=schema)

    def tree(self) -> TreeSchema | None:
        return self.schema

    @classmethod
    def known_tree(cls, columns: Sequence[str]) -> TreeSchema | None:
        return galaxy_zoo_schema() if galaxy_zoo_schema().matches(columns) else None

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "train_mean": list(self.train_mean),
                "schema": self.schema.to_dict() if self.schema else None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Task:
        task = super().from_dict(data)
        assert isinstance(task, FractionsTask)
        task.train_mean = list(data.get("train_mean", []))
        return task

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

    def predicted_class(self, outputs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        raise TypeError("vote fractions have no predicted class; the outputs are the fractions")

    def fit_calibration(self, logits: np.ndarray, targets: np.ndarray) -> Calibration:
        return Calibration.identity(self.num_outputs, "vote fractions are regression "
                                    "targets, not probabilities; their residuals are "
                                    "reported instead", reason="fractions")

    # -- scores ---------------------------------------------------------------------------

    def metrics(self, y_true: np.ndarray, outputs: np.ndarray, *, threshold: float = 0.5,
                derived_thresholds: Sequence[float] = (0.6, 0.9)) -> dict[str, Any]:
        return fraction_metrics(y_true, outputs, self.classes, self.train_mean, self.schema,
                                derived_thresholds)

    @classmethod
    def format_metrics(cls, metrics: dict[str, Any], title: str = "") -> list[str]:
        lines = [title or f"{metrics['n']} images"]
        gain = metrics["improvement_over_baseline"]
        lines.append(f"  {'metric':<22}{'model':>10}{'baseline':>10}   (baseline: the training "
                     "mean of each column)")
        lines.append(f"  {'RMSE (all answers)':<22}{number(metrics['model']['rmse'], 5):>10}"
                     f"{number(metrics['baseline']['rmse'], 5):>10}   "
                     f"{'' if gain is None else f'{gain:.1%} below the baseline'}")
        for name, v in metrics.get("per_question", {}).items():
            lines.append(f"  {name[:22]:<22}{number(v['rmse'], 5):>10}"
                         f"{number(v['baseline_rmse'], 5):>10}")
        if "max_tree_error" in metrics["model"]:
            lines.append(f"  predictions obey the tree: largest gap between a question's answers "
                         f"and its parent {metrics['model']['max_tree_error']:.1e}")
        for t, v in metrics.get("derived_classes", {}).items():
            lines.append(f"  derived class (threshold {t}): accuracy {number(v['accuracy'])}, "
                         f"baseline {number(v['baseline_accuracy'])}; true counts "
                         f"{v['true_counts']}")
        return lines


def residual_spread(y_true: np.ndarray, pred: np.ndarray, columns: Sequence[str]
                    ) -> dict[str, dict[str, float]]:
    """Per vote-fraction answer: mean residual (bias), its standard deviation, and its 5th
    and 95th percentiles (``predicted - true``)."""
    out: dict[str, dict[str, float]] = {}
    residual = np.asarray(pred, dtype=np.float64) - np.asarray(y_true, dtype=np.float64)
    for j, c in enumerate(columns):
        r = residual[:, j]
        out[c] = {"mean": float(r.mean()), "std": float(r.std()),
                  "p05": float(np.percentile(r, 5)), "p95": float(np.percentile(r, 95))} \
            if len(r) else {"mean": float("nan"), "std": float("nan"), "p05": float("nan"),
                            "p95": float("nan")}
    return out


def fraction_metrics(y_true: np.ndarray, pred: np.ndarray, columns: Sequence[str],
                     train_mean: Sequence[float], schema: Any = None,
                     derived_thresholds: Sequence[float] = (0.6, 0.9)) -> dict[str, Any]:
    """RMSE of vote fractions overall, per answer and per question, beside the mean predictor.

    Args:
        y_true, pred: ``(n, k)`` fractions, columns in ``columns`` order.
        train_mean: the training mean per column: the baseline predicts it for every image.
        schema: the decision tree (a :class:`~skysort.tasks.schema.TreeSchema`), for per-question
            scores, tree consistency and, for Galaxy Zoo, the derived-class view.
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    base = np.broadcast_to(np.asarray(train_mean, dtype=np.float64), y_true.shape)
    model_rmse, base_rmse = rmse(pred, y_true), rmse(base, y_true)
    spread = residual_spread(y_true, pred, columns)
    metrics: dict[str, Any] = {
        "task": "fractions",
        "n": len(y_true),
        "columns": list(columns),
        "model": {"rmse": model_rmse},
        "baseline": {"kind": "training mean of each column", "rmse": base_rmse},
        "improvement_over_baseline": (1 - model_rmse / base_rmse) if base_rmse > 0 else None,
        "per_column": {c: {"rmse": rmse(pred[:, j], y_true[:, j]),
                           "baseline_rmse": rmse(base[:, j], y_true[:, j]),
                           "residual": spread[c]}
                       for j, c in enumerate(columns)},
        "warnings": [],
    }
    if schema is not None:
        index = {c: j for j, c in enumerate(columns)}
        metrics["per_question"] = {
            q.name: {"rmse": rmse(pred[:, [index[a] for a in q.answers]],
                                  y_true[:, [index[a] for a in q.answers]]),
                     "baseline_rmse": rmse(base[:, [index[a] for a in q.answers]],
                                           y_true[:, [index[a] for a in q.answers]])}
            for q in schema.questions}
        metrics["model"]["max_tree_error"] = float(schema.tree_errors(pred, columns).max()) \
            if len(pred) else 0.0
        if set(GALAXY_ZOO_RULES_COLUMNS) <= set(columns):
            metrics["derived_classes"] = {
                f"{t:g}": derived_class_agreement(y_true, pred, base, columns, t)
                for t in derived_thresholds}
    if metrics["improvement_over_baseline"] is not None and \
            metrics["improvement_over_baseline"] < MIN_MARGIN:
        metrics["warnings"].append(
            f"NOT BETTER THAN THE BASELINE: RMSE {model_rmse:.4f} is not clearly below the "
            f"{base_rmse:.4f} of predicting the training mean for every image")
    return metrics


def derived_classes(values: np.ndarray, columns: Sequence[str], threshold: float) -> np.ndarray:
    """Galaxy Zoo fractions -> elliptical (Class1.1 >= t), barred spiral (Class4.1 >= t and
    Class3.1 >= t), spiral (Class4.1 >= t and Class3.2 >= t), else other; as indices into
    :data:`DERIVED_CLASSES`."""
    index = {c: j for j, c in enumerate(columns)}
    smooth, bar, no_bar, arms = (values[:, index[c]] for c in GALAXY_ZOO_RULES_COLUMNS)
    out = np.full(len(values), 3, dtype=np.int64)
    out[(arms >= threshold) & (no_bar >= threshold)] = 1
    out[(arms >= threshold) & (bar >= threshold)] = 2
    out[smooth >= threshold] = 0
    return out


def derived_class_agreement(y_true: np.ndarray, pred: np.ndarray, base: np.ndarray,
                            columns: Sequence[str], threshold: float) -> dict[str, Any]:
    """How often the derived class of the predictions matches that of the true fractions."""
    truth = derived_classes(y_true, columns, threshold)
    model = derived_classes(pred, columns, threshold)
    baseline = derived_classes(np.asarray(base), columns, threshold)
    return {"accuracy": float((truth == model).mean()) if len(truth) else float("nan"),
            "baseline_accuracy": float((truth == baseline).mean()) if len(truth) else float("nan"),
            "true_counts": {c: int((truth == i).sum()) for i, c in enumerate(DERIVED_CLASSES)},
            "predicted_counts": {c: int((model == i).sum()) for i, c in enumerate(DERIVED_CLASSES)}}
