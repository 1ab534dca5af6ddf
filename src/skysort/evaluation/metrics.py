"""Metrics for every task kind, each beside its baseline, and the warnings a person needs.

Every number skysort reports stands beside what a model that learned nothing would get:

* single-label classes: the majority-class baseline (always answer the class most
  frequent in training); binary tasks add ROC-AUC (baseline 0.5) and PR-AUC (baseline:
  the share of positives);
* multi-label: per-label ROC-AUC and its macro average (baseline 0.5);
* vote fractions: RMSE overall (the Kaggle Galaxy Zoo metric), per answer and per
  question, beside the mean predictor (the training mean of each column for every image);
  for the Galaxy Zoo tree also a "derived class" view (elliptical, spiral, barred spiral).

When a classifier's balanced accuracy is not clearly above its baseline, or it gives one
class to nearly every image, a warning is added and :func:`format_metrics` prints it where
nobody can miss it: the Mars HiRISE write-up that reported 80% accuracy by calling every
image "other" is the failure this guards against.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from skysort.evaluation.calibration import format_probability_metrics, residual_spread

#: A model "collapsed" when one class gets at least this share of its predictions...
COLLAPSE_SHARE = 0.9
#: ... and that share exceeds the class's true share by this much.
COLLAPSE_EXCESS = 0.05
#: Balanced accuracy must beat the baseline by at least this (or 2 standard errors).
MIN_MARGIN = 0.05


def _sk() -> Any:
    """scikit-learn's metrics, imported when first needed (a second off every start)."""
    import sklearn.metrics

    return sklearn.metrics


def _scores(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> dict[str, float]:
    labels = list(range(k))
    return {
        "accuracy": float(_sk().accuracy_score(y_true, y_pred)),
        "balanced_accuracy": _balanced_accuracy(y_true, y_pred),
        "macro_f1": float(_sk().f1_score(y_true, y_pred, labels=[c for c in labels
                                                             if (y_true == c).any()],
                                   average="macro", zero_division=0)),
    }


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    # scikit-learn warns about classes absent from y_true; the mean of per-class recall
    # over the classes present is what it computes anyway.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(_sk().balanced_accuracy_score(y_true, y_pred))


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
    precision, recall, f1, support = _sk().precision_recall_fscore_support(
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
        "confusion_matrix": _sk().confusion_matrix(y_true, y_pred, labels=list(range(k))).tolist(),
    }
    metrics["warnings"] = collapse_warnings(metrics)
    return metrics


def collapse_warnings(metrics: dict[str, Any]) -> list[str]:
    """The reasons to distrust a model's scores, in words; empty when there are none."""
    warnings: list[str] = []
    n = metrics["n"]
    if n == 0:
        return ["no images were evaluated"]
    per_class = metrics["per_class"]
    present = [c for c, v in per_class.items() if v["support"] > 0]
    top = max(per_class, key=lambda c: per_class[c]["predicted_share"])
    share = per_class[top]["predicted_share"]
    if len(present) > 1 and share >= COLLAPSE_SHARE and \
            share >= per_class[top]["true_share"] + COLLAPSE_EXCESS:
        warnings.append(
            f"MODEL COLLAPSE: {share:.0%} of the images were called {top!r}, which is only "
            f"{per_class[top]['true_share']:.0%} of the truth; the other classes are "
            "barely predicted at all, so accuracy here says little"
        )
    bal = metrics["model"]["balanced_accuracy"]
    base = metrics["baseline"]["balanced_accuracy"]
    margin = max(MIN_MARGIN, 2 * math.sqrt(max(bal * (1 - bal), 1e-12) / n))
    if len(present) > 1 and bal < base + margin:
        warnings.append(
            f"NOT BETTER THAN THE BASELINE: balanced accuracy {bal:.3f} is not clearly above "
            f"the majority-class baseline's {base:.3f} (needs at least +{margin:.3f} on "
            f"{n} images); the model has not learned to tell the classes apart"
        )
    return warnings


def write_metrics(path: str | Path, metrics: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(metrics, indent=2), encoding="utf-8")


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
    metrics["model"] = {"roc_auc": float(_sk().roc_auc_score(y_true, p)) if both else None,
                        "pr_auc": float(_sk().average_precision_score(y_true, p)) if both else None,
                        **metrics["model"]}
    metrics["baseline"] = {"roc_auc": 0.5, "pr_auc": prevalence, **metrics["baseline"]}
    if not both:
        metrics["warnings"].append("ROC-AUC and PR-AUC need both classes among the images; "
                                   "only one is present")
    return metrics


def multilabel_metrics(y_true: np.ndarray, probs: np.ndarray, labels: Sequence[str],
                       threshold: float = 0.5) -> dict[str, Any]:
    """Per-label ROC-AUC and its macro average over the labels where both values occur."""
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    per_label: dict[str, dict[str, Any]] = {}
    aucs = []
    for j, name in enumerate(labels):
        both = len(np.unique(y_true[:, j])) == 2
        auc = float(_sk().roc_auc_score(y_true[:, j], probs[:, j])) if both else None
        if auc is not None:
            aucs.append(auc)
        per_label[name] = {
            "roc_auc": auc,
            "pr_auc": (float(_sk().average_precision_score(y_true[:, j], probs[:, j]))
                       if both else None),
            "positives": int(y_true[:, j].sum()),
            "prevalence": float(y_true[:, j].mean()) if len(y_true) else 0.0,
            "f1": float(_sk().f1_score(y_true[:, j], probs[:, j] >= threshold, zero_division=0)),
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


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2))) if a.size else float("nan")


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
    model_rmse, base_rmse = _rmse(pred, y_true), _rmse(base, y_true)
    spread = residual_spread(y_true, pred, columns)
    metrics: dict[str, Any] = {
        "task": "fractions",
        "n": len(y_true),
        "columns": list(columns),
        "model": {"rmse": model_rmse},
        "baseline": {"kind": "training mean of each column", "rmse": base_rmse},
        "improvement_over_baseline": (1 - model_rmse / base_rmse) if base_rmse > 0 else None,
        "per_column": {c: {"rmse": _rmse(pred[:, j], y_true[:, j]),
                           "baseline_rmse": _rmse(base[:, j], y_true[:, j]),
                           "residual": spread[c]}
                       for j, c in enumerate(columns)},
        "warnings": [],
    }
    if schema is not None:
        index = {c: j for j, c in enumerate(columns)}
        metrics["per_question"] = {
            q.name: {"rmse": _rmse(pred[:, [index[a] for a in q.answers]],
                                   y_true[:, [index[a] for a in q.answers]]),
                     "baseline_rmse": _rmse(base[:, [index[a] for a in q.answers]],
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


#: Galaxy Zoo answers the derived classes are read from.
GALAXY_ZOO_RULES_COLUMNS = ("Class1.1", "Class3.1", "Class3.2", "Class4.1")
DERIVED_CLASSES = ("elliptical", "spiral", "barred spiral", "other")


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


def task_metrics(task: Any, y_true: np.ndarray, outputs: np.ndarray, *, threshold: float = 0.5,
                 derived_thresholds: Sequence[float] = (0.6, 0.9)) -> dict[str, Any]:
    """The metrics for ``task``'s kind (a :class:`~skysort.tasks.Task`)."""
    if task.kind == "multiclass":
        return classification_metrics(y_true, outputs, task.classes, task.train_counts)
    if task.kind == "binary":
        return binary_metrics(y_true, outputs[:, 0], task.classes, task.train_counts, threshold)
    if task.kind == "multilabel":
        return multilabel_metrics(y_true, outputs, task.classes, threshold)
    return fraction_metrics(y_true, outputs, task.classes, task.train_mean, task.schema,
                            derived_thresholds)


def headline(metrics: dict[str, Any]) -> tuple[str, float | None, float | None]:
    """The one number to watch for this kind: (name, model, baseline)."""
    kind = metrics["task"]
    key = {"multiclass": "balanced_accuracy", "binary": "roc_auc",
           "multilabel": "macro_roc_auc", "fractions": "rmse"}[kind]
    return key, metrics["model"].get(key), metrics["baseline"].get(key)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.{digits}f}"


def format_metrics(metrics: dict[str, Any], title: str = "") -> str:
    """A plain-text report for any task kind, model beside baseline, warnings last."""
    kind = metrics["task"]
    lines: list[str] = []
    if kind in ("multiclass", "binary"):
        if kind == "binary":
            lines.append(title or f"{metrics['n']} images")
            lines.append(f"  {'metric':<20}{'model':>10}{'baseline':>10}")
            for key, label in (("roc_auc", "ROC-AUC"), ("pr_auc", "PR-AUC")):
                lines.append(f"  {label:<20}{_fmt(metrics['model'][key]):>10}"
                             f"{_fmt(metrics['baseline'][key]):>10}")
            lines.append(f"  (below: the images called {metrics['classes'][1]!r} when its "
                         f"probability is at least {metrics['threshold']:g})")
            title = ""
        lines.append(format_classification(metrics, title))
    elif kind == "multilabel":
        lines.append(title or f"{metrics['n']} images")
        lines.append(f"  macro ROC-AUC {_fmt(metrics['model']['macro_roc_auc'])} over "
                     f"{metrics['model']['labels_with_auc']} labels (baseline 0.500)")
        width = max(8, *(len(c) for c in metrics["labels"]))
        lines.append(f"  {'label':<{width}}{'ROC-AUC':>9}{'PR-AUC':>9}{'F1':>8}{'positives':>11}")
        for name, v in metrics["per_label"].items():
            lines.append(f"  {name:<{width}}{_fmt(v['roc_auc']):>9}{_fmt(v['pr_auc']):>9}"
                         f"{_fmt(v['f1']):>8}{v['positives']:>11d}")
    else:
        lines.append(title or f"{metrics['n']} images")
        gain = metrics["improvement_over_baseline"]
        lines.append(f"  {'metric':<22}{'model':>10}{'baseline':>10}   (baseline: the training "
                     "mean of each column)")
        lines.append(f"  {'RMSE (all answers)':<22}{_fmt(metrics['model']['rmse'], 5):>10}"
                     f"{_fmt(metrics['baseline']['rmse'], 5):>10}   "
                     f"{'' if gain is None else f'{gain:.1%} below the baseline'}")
        for name, v in metrics.get("per_question", {}).items():
            lines.append(f"  {name[:22]:<22}{_fmt(v['rmse'], 5):>10}"
                         f"{_fmt(v['baseline_rmse'], 5):>10}")
        if "max_tree_error" in metrics["model"]:
            lines.append(f"  predictions obey the tree: largest gap between a question's answers "
                         f"and its parent {metrics['model']['max_tree_error']:.1e}")
        for t, v in metrics.get("derived_classes", {}).items():
            lines.append(f"  derived class (threshold {t}): accuracy {_fmt(v['accuracy'])}, "
                         f"baseline {_fmt(v['baseline_accuracy'])}; true counts "
                         f"{v['true_counts']}")
    lines += format_probability_metrics(metrics)
    for warning in metrics.get("warnings", []):
        bar = "!" * 78
        lines += ["", bar, f"!! WARNING: {warning}", bar]
    return "\n".join(lines)
