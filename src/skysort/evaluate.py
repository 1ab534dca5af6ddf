"""Metrics with their baselines, and the loud warning when a model has collapsed.

Every number skysort reports stands beside what a model that learned nothing would get:
for single-label classes, the majority-class baseline (always answer the class that was
most frequent in training). When a model's balanced accuracy is not clearly above that
baseline, or it gives one class to nearly every image, :func:`classification_metrics`
adds a warning, and :func:`format_metrics` prints it where nobody can miss it: the Mars
HiRISE write-up that reported 80% accuracy by calling every image "other" is the failure
this guards against.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from skysort.config import TrainConfig
from skysort.data.sources import LabeledImages, read_class_folders
from skysort.data.split import read_split_csv
from skysort.errors import DataError

#: A model "collapsed" when one class gets at least this share of its predictions...
COLLAPSE_SHARE = 0.9
#: ... and that share exceeds the class's true share by this much.
COLLAPSE_EXCESS = 0.05
#: Balanced accuracy must beat the baseline by at least this (or 2 standard errors).
MIN_MARGIN = 0.05


def _scores(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> dict[str, float]:
    labels = list(range(k))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": _balanced_accuracy(y_true, y_pred),
        "macro_f1": float(f1_score(y_true, y_pred, labels=[c for c in labels
                                                             if (y_true == c).any()],
                                   average="macro", zero_division=0)),
    }


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    # scikit-learn warns about classes absent from y_true; the mean of per-class recall
    # over the classes present is what it computes anyway.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(balanced_accuracy_score(y_true, y_pred))


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
    precision, recall, f1, support = precision_recall_fscore_support(
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
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=list(range(k))).tolist(),
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


def format_metrics(metrics: dict[str, Any], title: str = "") -> str:
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
    for warning in metrics.get("warnings", []):
        bar = "!" * 78
        lines += ["", bar, f"!! WARNING: {warning}", bar]
    return "\n".join(lines)


def labeled_for_run(run_dir: Path, classes: Sequence[str], data: str | Path | None,
                    split: str) -> tuple[LabeledImages, str]:
    """The images to evaluate: the run's own ``split`` rows, or a labelled folder."""
    if data is None:
        cfg = TrainConfig.from_yaml(run_dir / "config.yaml")
        rows = read_split_csv(run_dir / "split.csv")
        chosen = [r for r in rows if r["split"] == split]
        if not chosen and split == "test":
            split, chosen = "val", [r for r in rows if r["split"] == "val"]
        if not chosen:
            raise DataError(f"{run_dir / 'split.csv'}: no images in the {split!r} split")
        root = Path(cfg.data or ".")
        index = {c: i for i, c in enumerate(classes)}
        labeled = LabeledImages(root=root, paths=[root / r["path"] for r in chosen],
                                targets=np.array([index[r["label"]] for r in chosen]),
                                classes=list(classes), ids=[r["id"] for r in chosen])
        return labeled, split
    labeled = read_class_folders(data)
    if labeled.splits is not None and "test" in labeled.splits:
        labeled = labeled.subset([i for i, s in enumerate(labeled.splits) if s == "test"])
        split = "test"
    else:
        split = "all"
    unknown = sorted(set(labeled.classes) - set(classes))
    if unknown:
        raise DataError(
            f"{labeled.root}: class folder(s) {unknown} are not classes of this model; "
            f"the model knows {list(classes)}"
        )
    remap = np.array([list(classes).index(c) for c in labeled.classes], dtype=np.int64)
    labeled.targets = remap[labeled.targets]
    labeled.classes = list(classes)
    return labeled, split


def evaluate(run: str | Path, data: str | Path | None = None, *, split: str = "test",
             output: str | Path | None = None, cache_dir: str | Path | None = None,
             workers: int | None = None, device: str = "auto") -> dict[str, Any]:
    """Evaluates a trained run on its test split, or on any labelled folder.

    Args:
        run: the run directory written by training.
        data: a folder-per-class tree (its ``test`` split if it is a pre-split tree);
            by default the run's own ``split`` images.
        split: which of the run's splits to use when ``data`` is not given.
        output: where to write the metrics JSON; by default ``RUN/metrics.json`` for the
            run's own test split, else ``RUN/metrics_<folder>.json``. Per-image
            predictions go beside it (``*_predictions.csv``).

    Returns:
        The metrics, with the baseline and any collapse warnings.
    """
    from skysort.inference import model_outputs
    from skysort.models.model import load_model
    from skysort.train import resolve_device

    run_dir = Path(run)
    model, info = load_model(run_dir)
    labeled, used = labeled_for_run(run_dir, info.task.classes, data, split)
    outputs, bad = model_outputs(model, info, labeled.paths, cache_dir=cache_dir,
                                 workers=workers, device=resolve_device(device))
    good = np.array([i for i in range(len(labeled)) if i not in bad], dtype=np.int64)
    metrics = classification_metrics(labeled.targets[good], outputs[good], info.task.classes,
                                     info.task.train_counts)
    metrics["split"] = used
    metrics["data"] = str(labeled.root)
    metrics["unreadable_files"] = {labeled.relpath(labeled.paths[i]): r for i, r in bad.items()}
    if output is None:
        name = "metrics.json" if data is None and used == "test" else \
            f"metrics_{Path(data).name if data else used}.json"
        output = run_dir / name
    output = Path(output)
    write_metrics(output, metrics)
    write_eval_predictions(output.with_name(output.stem + "_predictions.csv"), labeled,
                           outputs, bad, info.task.classes)
    metrics["output"] = str(output)
    return metrics


def write_eval_predictions(path: Path, labeled: LabeledImages, outputs: np.ndarray,
                           bad: dict[int, str], classes: Sequence[str]) -> None:
    """One row per evaluated image: path, true and predicted class, probabilities."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "true", "predicted", "probability", *classes, "error"])
        for i, p in enumerate(labeled.paths):
            true = classes[int(labeled.targets[i])]
            if i in bad:
                writer.writerow([labeled.relpath(p), true, "", "", *[""] * len(classes), bad[i]])
                continue
            probs = outputs[i]
            top = int(np.argmax(probs))
            writer.writerow([labeled.relpath(p), true, classes[top], f"{probs[top]:.6f}",
                             *(f"{v:.6f}" for v in probs), ""])
