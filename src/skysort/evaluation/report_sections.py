"""The report's sections of each task kind's own figures (:mod:`skysort.evaluation.report`
assembles the page): classes (confusion, ROC and precision-recall curves, the worst
mistakes and each class's galleries), labels, vote fractions and vote counts. Each reads
``metrics.json`` and the per-image rows of the run's evaluation.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from skysort.evaluation.plots import (
    plot_fraction_agreement,
    plot_fraction_rmse,
    plot_fraction_scatter,
    plot_roc_pr,
    plot_vote_totals,
    vote_histogram,
)
from skysort.evaluation.render import figure_uri, thumbnail_uri
from skysort.tasks import Task
from skysort.tasks.dirichlet import question_totals
from skysort.tasks.fractions import DERIVED_CLASSES, derived_classes

#: Images per gallery at most: the worst mistakes, and each derived class.
GALLERY = 48
#: Per class: the most confident correct and the most confident wrong images, at most.
PER_CLASS = 8
#: Thumbnails of all classes' galleries together (then fewer per class, 2+2 at least).
PER_CLASS_TOTAL = 96


def plot(draw: Callable[[Any], Any]) -> str | None:
    """A plot of :mod:`skysort.evaluation.plots` in 256 colours: the same to the eye, a
    third of the bytes."""
    return figure_uri(draw, colors=256)


def classes_section(metrics: dict[str, Any], rows: list[dict[str, str]], root: Path,
                     task: Task) -> dict[str, Any]:
    classes = metrics["classes"]
    k = len(classes)
    cm = np.asarray(metrics["confusion_matrix"], dtype=np.int64)
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    pairs = sorted(((int(cm[i, j]), classes[i], classes[j]) for i in range(k) for j in range(k)
                    if i != j and cm[i, j]), reverse=True)[:8]
    good = [r for r in rows if not r.get("error")]
    probs = task.class_probabilities(_matrix(good, task.image_row_outputs()))
    truth = np.array([classes.index(r["true"]) for r in good], dtype=np.int64)
    predicted = np.array([classes.index(r["predicted"]) for r in good], dtype=np.int64)
    out: dict[str, Any] = {
        "classes": classes, "confusion": cm.tolist(),
        "confusion_share": share.round(3).tolist(), "pairs": pairs,
        "per_class": metrics["per_class"], "curves": None, "worst": [], "per_class_gallery": [],
    }
    if not good:
        return out
    which = [classes.index(c) for c in task.output_names]  # binary: the positive class
    out["curves"] = plot(lambda f: plot_roc_pr(
        [(classes[c], truth == c, probs[:, c]) for c in which], f))
    rows_idx = np.arange(len(good))
    p_true = probs[rows_idx, truth]
    p_pred = probs[rows_idx, predicted]
    wrong = np.flatnonzero(predicted != truth)
    worst = wrong[np.argsort(p_true[wrong], kind="stable")]  # highest loss -log p(true) first
    out["worst"] = _gallery(good, worst[:GALLERY], root, classes, truth, predicted, p_pred)
    side, shown = gallery_plan([int(((truth == c) != (predicted == c)).sum())
                                for c in range(k)])
    out["galleries_shown"] = {"side": side, "shown": len(shown), "classes": k}
    for c in shown:
        name = classes[c]
        right = np.flatnonzero((truth == c) & (predicted == c))
        right = right[np.argsort(-p_pred[right], kind="stable")][:side]
        mistaken = np.flatnonzero((predicted == c) & (truth != c))
        mistaken = mistaken[np.argsort(-p_pred[mistaken], kind="stable")][:side]
        out["per_class_gallery"].append({
            "name": name,
            "right": _gallery(good, right, root, classes, truth, predicted, p_pred),
            "wrong": _gallery(good, mistaken, root, classes, truth, predicted, p_pred)})
    return out


def gallery_plan(mistakes: list[int]) -> tuple[int, list[int]]:
    """``(images per side, classes shown)`` for per-class galleries of classes with
    ``mistakes`` (images of the class called otherwise, and others called it): at most
    :data:`PER_CLASS` correct and as many wrong per class, :data:`PER_CLASS_TOTAL` in all;
    when not every class fits, those with the most mistakes, shown in class order."""
    k = len(mistakes)
    side = min(PER_CLASS, max(2, PER_CLASS_TOTAL // max(2 * k, 1)))
    most = sorted(range(k), key=lambda c: -mistakes[c])  # stable: ties in class order
    return side, sorted(most[:PER_CLASS_TOTAL // (2 * side)])


def _matrix(rows: list[dict[str, str]], names: list[str]) -> np.ndarray:
    """``(rows, names)``: the per-image rows' numbers in columns ``names``."""
    return np.array([[float(r[c]) for c in names] for r in rows],
                    dtype=np.float64).reshape(-1, len(names))


def _output_columns(task: Task, names: list[str]) -> dict[str, str]:
    """Output name -> its column in the per-image rows (``prob_NAME`` where the name is
    another column's, :meth:`Task.image_row_outputs`)."""
    return {**{n: n for n in names},
            **dict(zip(task.output_names, task.image_row_outputs(), strict=True))}


def _gallery(rows: list[dict[str, str]], index: np.ndarray, root: Path, classes: list[str],
             truth: np.ndarray, predicted: np.ndarray, prob: np.ndarray) -> list[dict[str, Any]]:
    items = []
    for i in index:
        r = rows[int(i)]
        items.append({"path": r["path"], "uri": thumbnail_uri(root / r["path"]),
                      "true": classes[int(truth[i])], "predicted": classes[int(predicted[i])],
                      "probability": float(prob[i])})
    return items


def labels_section(metrics: dict[str, Any], rows: list[dict[str, str]], task: Task
                    ) -> dict[str, Any]:
    labels = metrics["labels"]
    column = _output_columns(task, labels)
    good = [r for r in rows if not r.get("error")]
    curves = [(c, np.array([float(r[f"true_{c}"]) > 0.5 for r in good]),
               np.array([float(r[column[c]]) for r in good])) for c in labels] if good else []
    return {"per_label": metrics["per_label"], "macro": metrics["model"]["macro_roc_auc"],
            "curves": plot(lambda f: plot_roc_pr(curves, f)) if curves else None}


def fractions_section(metrics: dict[str, Any], rows: list[dict[str, str]], root: Path,
                       model: dict[str, Any], task: Task) -> dict[str, Any]:
    columns, column = metrics["columns"], _output_columns(task, metrics["columns"])
    good = [r for r in rows if not r.get("error")]
    pred = _matrix(good, [column[c] for c in columns])
    true = _matrix(good, [f"true_{c}" for c in columns])
    out: dict[str, Any] = {
        "per_column": metrics["per_column"], "per_question": metrics.get("per_question", {}),
        "derived": metrics.get("derived_classes", {}),
        "bars": plot(lambda f: plot_fraction_rmse(metrics, f)),
        "scatter": plot(lambda f: plot_fraction_scatter(true, pred, columns, f)) if len(good)
        else None,
        "agreement": plot(lambda f: plot_fraction_agreement(true, pred, f)) if len(good)
        else None,
        "derived_gallery": [],
    }
    if metrics.get("derived_classes") and len(good):
        threshold = max(float(t) for t in metrics["derived_classes"])
        classes = derived_classes(pred, columns, threshold)
        truth = derived_classes(true, columns, threshold)
        for c, name in enumerate(DERIVED_CLASSES[:-1]):
            index = np.flatnonzero(classes == c)
            index = index[np.argsort(-pred[index].max(axis=1), kind="stable")][:GALLERY // 3]
            out["derived_gallery"].append({
                "name": name, "threshold": threshold, "count": int((classes == c).sum()),
                "images": [{"path": good[i]["path"], "uri": thumbnail_uri(root / good[i]["path"]),
                           "true": DERIVED_CLASSES[int(truth[i])], "predicted": name,
                           "probability": float(pred[i].max())} for i in index]})
    return out


def counts_section(metrics: dict[str, Any], rows: list[dict[str, str]], task: Task
                    ) -> dict[str, Any]:
    """Observed against expected vote fractions (where a question has votes) and the vote
    totals of the first root question; the scores are metrics.json's."""
    columns, column = metrics["columns"], _output_columns(task, metrics["columns"])
    good = [r for r in rows if not r.get("error")]
    pred = _matrix(good, [column[c] for c in columns])
    counts = _matrix(good, [f"true_{c}" for c in columns])
    questions = getattr(task.tree(), "questions", [])  # counts always have a tree
    index = {c: j for j, c in enumerate(columns)}
    votes = question_totals(counts, [[index[a] for a in q.answers] for q in questions])
    observed = np.divide(counts, votes, out=np.full_like(counts, np.nan), where=votes > 0)
    root = next(q for q in questions if q.parent is None)
    hist = vote_histogram(votes[:, index[root.answers[0]]])
    few = metrics["votes"]["few_votes_below"]
    return {"totals": plot(lambda f: plot_vote_totals(hist, root.name, f, few)),
            "scatter": plot(lambda f: plot_fraction_scatter(
                observed, pred, columns, f, "observed fraction")) if good else None}
