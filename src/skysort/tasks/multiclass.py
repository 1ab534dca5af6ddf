"""One class per image, three or more classes: a softmax, cross-entropy, balanced accuracy
beside the majority class, temperature scaling.

When a classifier's balanced accuracy is not clearly above its baseline, or it gives one
class to nearly every image, a warning is added and printed where nobody can miss it: the
Mars HiRISE write-up that reported 80% accuracy by calling every image "other" is the
failure this guards against.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from skysort.errors import ConfigError
from skysort.tasks.base import (
    NAN_TEXT,
    ROW_COLUMNS,
    LossFn,
    ParsedTargets,
    TargetIssue,
    Task,
    output_columns,
    register_task,
)
from skysort.tasks.calibration import Calibration, best_scale, softmax_nll
from skysort.tasks.scores import MIN_MARGIN, sk

if TYPE_CHECKING:
    import torch
    from torch import nn

    from skysort.tasks.schema import TreeSchema

#: A model "collapsed" when one class gets at least this share of its predictions...
COLLAPSE_SHARE = 0.9
#: ... and that share exceeds the class's true share by this much.
COLLAPSE_EXCESS = 0.05


@register_task
class MulticlassTask(Task):
    """A single-label, multi-class task (one softmax over ``classes``).

    Class imbalance (``balance="weights"``) weighs classes ``n / (k * count)``.
    """

    kind: ClassVar[str] = "multiclass"
    single_label: ClassVar[bool] = True
    probabilities: ClassVar[bool] = True
    smooths_labels: ClassVar[bool] = True
    headline_key: ClassVar[str] = "balanced_accuracy"
    report_sections: ClassVar[tuple[str, ...]] = ("classes",)

    # -- reading targets ------------------------------------------------------------------

    @classmethod
    def parse_targets(cls, columns: Sequence[str], texts: Sequence[Sequence[str]],
                      schema: TreeSchema | None = None) -> ParsedTargets:
        """Class names from one column (numbers sort as numbers: ``"1.0"`` reads ``"1"``)."""
        if len(columns) != 1:
            raise ConfigError(f"a {cls.kind} task reads one target column, not {len(columns)}: "
                              f"{list(columns)}")
        raw = [t[0].strip() for t in texts]
        present = sorted({v for v in raw if v.lower() not in NAN_TEXT},
                         key=(lambda v: float(v)) if all_numbers(raw) else str)
        classes = [class_name(v) for v in present]
        cls.check_classes(classes, f"column {columns[0]!r}")
        position = {v: i for i, v in enumerate(present)}
        targets = np.zeros(len(raw), dtype=np.int64)
        issues: list[TargetIssue] = []
        for j, v in enumerate(raw):
            if v.lower() in NAN_TEXT:
                issues.append((j, "missing target", f"{columns[0]} is empty"))
            else:
                targets[j] = position[v]
        return ParsedTargets(classes, targets, issues)

    def targets_from_text(self, labels: Sequence[str]) -> np.ndarray:
        """Class indices from class names; a ValueError names those of no class."""
        index = {c: i for i, c in enumerate(self.classes)}
        unknown = sorted(set(labels) - set(index))
        if unknown:
            raise ValueError(f"labels {unknown[:5]} are not classes of this model")
        return np.array([index[x] for x in labels], dtype=np.int64)

    # -- the model ------------------------------------------------------------------------

    def output_layer(self) -> nn.Module:
        from torch import nn

        return nn.Softmax(dim=1)

    def fit_statistics(self, targets: np.ndarray) -> None:
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

    def sample_weights(self, train_targets: np.ndarray) -> np.ndarray:
        return self.class_weights(train_targets)[train_targets.astype(np.int64)]

    # -- reading outputs ------------------------------------------------------------------

    def predicted_class(self, outputs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        return np.asarray(outputs).argmax(axis=1)

    def class_probabilities(self, outputs: np.ndarray) -> np.ndarray:
        return np.asarray(outputs)

    def image_row_outputs(self) -> list[str]:
        return output_columns(self.output_names, ROW_COLUMNS)

    def image_row_fields(self) -> list[str]:
        return ["true", "predicted", *self.image_row_outputs()]

    def image_row_values(self, target: Any, outputs: np.ndarray | None,
                         threshold: float) -> list[str]:
        truth = self.classes[int(target)]
        if outputs is None:
            return [truth, "", *("" for _ in self.output_names)]
        predicted = self.classes[int(self.predicted_class(outputs[None], threshold)[0])]
        return [truth, predicted, *(f"{v:.8f}" for v in outputs)]

    # -- scores ---------------------------------------------------------------------------

    def metrics(self, y_true: np.ndarray, outputs: np.ndarray, *, threshold: float = 0.5,
                derived_thresholds: Sequence[float] = (0.6, 0.9)) -> dict[str, Any]:
        return classification_metrics(y_true, outputs, self.classes, self.train_counts)

    @classmethod
    def format_metrics(cls, metrics: dict[str, Any], title: str = "") -> list[str]:
        return [format_classification(metrics, title)]

    # -- calibration: one temperature (Guo et al. 2017) ------------------------------------

    def fit_calibration(self, logits: np.ndarray, targets: np.ndarray) -> Calibration:
        n, k = logits.shape
        y = targets.astype(np.int64)
        scale = best_scale(lambda s: softmax_nll(logits * s, y))
        return Calibration("temperature", [scale] * k, [0.0] * k, fitted_on=n,
                           nll_before=softmax_nll(logits, y),
                           nll_after=softmax_nll(logits * scale, y))

    def calibration_nll(self, logits: np.ndarray, targets: np.ndarray) -> float:
        return softmax_nll(logits, targets.astype(np.int64))

    def calibration_events(self, outputs: np.ndarray, targets: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray]:
        probs = self.class_probabilities(outputs).astype(np.float64)
        return probs, np.eye(probs.shape[1])[np.asarray(targets, dtype=np.int64)]

    def prior_outputs(self, targets: np.ndarray) -> tuple[np.ndarray, str]:
        share = self.class_share(targets)
        return np.broadcast_to(share, (len(targets), len(share))), "training share of each class"

    def class_share(self, targets: np.ndarray) -> np.ndarray:
        """The training share of each class (of ``targets`` when no counts were recorded)."""
        counts = np.asarray(self.train_counts, dtype=np.float64)
        if counts.sum() == 0:
            counts = np.bincount(np.asarray(targets, dtype=np.int64),
                                 minlength=len(self.classes)).astype(np.float64)
        return counts / counts.sum()


def all_numbers(raw: Sequence[str]) -> bool:
    """Whether every non-missing value reads as a number."""
    def is_number(text: str) -> bool:
        try:
            float(text)
        except ValueError:
            return False
        return True

    return all(is_number(v) for v in raw if v.lower() not in NAN_TEXT)


def class_name(value: str) -> str:
    """``"1.0"`` -> ``"1"``, so numeric class names read as written in most tables."""
    try:
        number = float(value)
    except ValueError:
        return value
    return str(int(number)) if number.is_integer() else value


# -- metrics ----------------------------------------------------------------------------------


def _scores(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> dict[str, float]:
    labels = list(range(k))
    return {
        "accuracy": float(sk().accuracy_score(y_true, y_pred)),
        "balanced_accuracy": _balanced_accuracy(y_true, y_pred),
        "macro_f1": float(sk().f1_score(y_true, y_pred, labels=[c for c in labels
                                                            if (y_true == c).any()],
                                        average="macro", zero_division=0)),
    }


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    # scikit-learn warns about classes absent from y_true; the mean of per-class recall
    # over the classes present is what it computes anyway.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(sk().balanced_accuracy_score(y_true, y_pred))


def classification_metrics(y_true: Sequence[int] | np.ndarray, probs: np.ndarray,
                           classes: Sequence[str], train_counts: Sequence[int] | None = None,
                           ) -> dict[str, Any]:
    """Single-label metrics, the majority baseline beside them, and collapse warnings.

    Args:
        y_true: true class indices.
        probs: predicted probabilities, ``(n, k)`` with columns in ``classes`` order.
        classes: class names.
        train_counts: training images per class; the baseline answers the most frequent.
            Without them, the most frequent class of ``y_true`` is used.

    Returns:
        A JSON-ready dict: ``model`` and ``baseline`` scores (accuracy, balanced accuracy,
        macro F1), ``per_class`` precision/recall/F1/support, ``confusion_matrix`` (rows
        true, columns predicted), the predicted share per class, and ``warnings``.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    k = len(classes)
    y_pred = probs.argmax(axis=1)
    n = len(y_true)
    counts = (np.asarray(train_counts) if train_counts is not None and len(train_counts)
              else np.bincount(y_true, minlength=k))
    majority = int(np.argmax(counts))
    model = _scores(y_true, y_pred, k)
    baseline = _scores(y_true, np.full(n, majority), k)
    precision, recall, f1, support = sk().precision_recall_fscore_support(
        y_true, y_pred, labels=list(range(k)), zero_division=0)
    pred_share = np.bincount(y_pred, minlength=k) / max(n, 1)
    true_share = np.bincount(y_true, minlength=k) / max(n, 1)
    metrics: dict[str, Any] = {
        "task": "multiclass",
        "n": n,
        "classes": list(classes),
        "model": model,
        "baseline": {"kind": "majority class", "class": classes[majority], **baseline},
        "per_class": {
            name: {"precision": float(precision[c]), "recall": float(recall[c]),
                   "f1": float(f1[c]), "support": int(support[c]),
                   "predicted_share": float(pred_share[c]), "true_share": float(true_share[c])}
            for c, name in enumerate(classes)
        },
        "confusion_matrix": sk().confusion_matrix(y_true, y_pred, labels=list(range(k))).tolist(),
    }
    metrics["warnings"] = collapse_warnings(metrics)
    return metrics


def collapse_warnings(metrics: dict[str, Any]) -> list[str]:
    """The reasons to distrust a model's scores, in words; empty when there are none."""
    found: list[str] = []
    n = metrics["n"]
    if n == 0:
        return ["no images were evaluated"]
    per_class = metrics["per_class"]
    present = [c for c, v in per_class.items() if v["support"] > 0]
    top = max(per_class, key=lambda c: per_class[c]["predicted_share"])
    share = per_class[top]["predicted_share"]
    if len(present) > 1 and share >= COLLAPSE_SHARE and \
            share >= per_class[top]["true_share"] + COLLAPSE_EXCESS:
        found.append(
            f"MODEL COLLAPSE: {share:.0%} of the images were called {top!r}, which is only "
            f"{per_class[top]['true_share']:.0%} of the truth; the other classes are "
            "barely predicted at all, so accuracy here says little"
        )
    bal = metrics["model"]["balanced_accuracy"]
    base = metrics["baseline"]["balanced_accuracy"]
    margin = max(MIN_MARGIN, 2 * math.sqrt(max(bal * (1 - bal), 1e-12) / n))
    if len(present) > 1 and bal < base + margin:
        found.append(
            f"NOT BETTER THAN THE BASELINE: balanced accuracy {bal:.3f} is not clearly above "
            f"the majority-class baseline's {base:.3f} (needs at least +{margin:.3f} on "
            f"{n} images); the model has not learned to tell the classes apart"
        )
    return found


def format_classification(metrics: dict[str, Any], title: str = "") -> str:
    """A plain-text table: model beside baseline, per-class scores, confusion matrix."""
    lines: list[str] = []
    base = metrics["baseline"]
    header = title or f"{metrics['n']} images"
    lines.append(f"{header}")
    lines.append(f"  {'metric':<20}{'model':>10}{'baseline':>10}   "
                 f"(baseline: always {base['class']!r})")
    for key, label in (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"),
                       ("macro_f1", "macro F1")):
        lines.append(f"  {label:<20}{metrics['model'][key]:>10.3f}{base[key]:>10.3f}")
    width = max(8, *(len(c) for c in metrics["classes"]))
    lines.append("")
    lines.append(f"  {'class':<{width}}{'precision':>11}{'recall':>9}{'f1':>8}{'support':>9}"
                 f"{'predicted':>11}")
    for name, v in metrics["per_class"].items():
        lines.append(f"  {name:<{width}}{v['precision']:>11.3f}{v['recall']:>9.3f}"
                     f"{v['f1']:>8.3f}{v['support']:>9d}{v['predicted_share']:>10.0%} ")
    lines.append("")
    lines.append("  confusion matrix (rows: true class, columns: predicted)")
    cm = metrics["confusion_matrix"]
    cell = max(6, *(len(str(x)) + 2 for row in cm for x in row),
               *(min(len(c), 12) + 1 for c in metrics["classes"]))
    short = [c[:cell - 1] for c in metrics["classes"]]
    lines.append(f"  {'':<{width}}" + "".join(f"{s:>{cell}}" for s in short))
    for name, row in zip(metrics["classes"], cm, strict=True):
        lines.append(f"  {name:<{width}}" + "".join(f"{x:>{cell}d}" for x in row))
    return "\n".join(lines)
