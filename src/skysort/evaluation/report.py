"""``report.html``: one self-contained page per run, rendered from the run's files.

:func:`write_report` reads what the run directory holds (``metrics.json`` or another
evaluation's ``metrics_<name>.json``, its per-image ``*_predictions.csv``, ``history.csv``,
``split.csv``, ``bad_files.csv``, ``label_issues.csv``, ``config.yaml``, ``model.json``,
``finetune_plan.json``) and the images the per-image rows name; it needs no model, so
``skysort report RUN`` redraws it years later. A file a run does not have (an older
run, a run stopped early) leaves its section out. Plots are matplotlib, galleries small
JPEG thumbnails, all embedded (:mod:`skysort.evaluation.render`); galleries are capped
(:data:`GALLERY` mistakes, :data:`PER_CLASS_TOTAL` thumbnails over all classes), so a large
test split or many classes still give a page under 1 MB. Metrics of images that chose
the model (a run without a test split scores its validation split) say so at the top.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from skysort._version import __version__
from skysort.evaluation.metrics import not_held_out
from skysort.evaluation.plots import (
    plot_fraction_agreement,
    plot_fraction_rmse,
    plot_fraction_scatter,
    plot_history,
    plot_reliability,
    plot_risk_coverage,
    plot_roc_pr,
    plot_vote_totals,
    vote_histogram,
)
from skysort.evaluation.render import figure_uri, images_decoded_as, render, thumbnail_uri
from skysort.evaluation.render import read_rows as _read_csv
from skysort.rundir import (
    BAD_FILES,
    CONFIG,
    HISTORY,
    LABEL_ISSUES,
    METRICS,
    MODEL_JSON,
    PLAN,
    REPORT,
    RESOLVED,
    SPLIT,
)
from skysort.tasks import Task, task_class, task_from_dict
from skysort.tasks.dirichlet import question_totals
from skysort.tasks.fractions import DERIVED_CLASSES, derived_classes

#: Images per gallery at most: the worst mistakes, and each derived class.
GALLERY = 48
#: Per class: the most confident correct and the most confident wrong images, at most.
PER_CLASS = 8
#: Thumbnails of all classes' galleries together (then fewer per class, 2+2 at least).
PER_CLASS_TOTAL = 96
#: Rows of bad files and label issues shown (the CSVs hold them all).
FIRST_ROWS = 10


def report_path(metrics_path: Path) -> Path:
    """``metrics.json`` -> ``report.html``; ``metrics_<name>.json`` -> ``report_<name>.html``."""
    if metrics_path.name == METRICS:
        return metrics_path.with_name(REPORT)
    return metrics_path.with_name(f"report_{metrics_path.stem.removeprefix('metrics_')}.html")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        return None


def write_report(run: str | Path, metrics_path: str | Path | None = None,
                 output: str | Path | None = None) -> Path:
    """Renders the report of ``run`` (for ``metrics_path``, default its ``metrics.json``).
    Returns:
        The page written: ``output``, or ``report.html`` (``report_<name>.html`` beside
        ``metrics_<name>.json``).
    """
    from skysort.errors import RunError

    run = Path(run)
    metrics_file = Path(metrics_path) if metrics_path else run / METRICS
    metrics = _read_json(metrics_file)
    if metrics is None:
        raise RunError(f"{metrics_file}: no metrics to report (train the run to the end, or "
                       "run skysort evaluate first)")
    missing = [k for k in ("task", "model", "baseline") if k not in metrics] \
        if isinstance(metrics, dict) else ["task", "model", "baseline"]
    if missing:
        raise RunError(f"{metrics_file}: not a metrics file (no {', '.join(map(repr, missing))}"
                       f" key{'s' if len(missing) > 1 else ''}); give the metrics.json or "
                       "metrics_<name>.json that skysort train or skysort evaluate wrote")
    out = Path(output) if output else report_path(metrics_file)
    rows = _read_csv(metrics_file.with_name(metrics_file.stem + "_predictions.csv")) or []
    config = _read_yaml(run / CONFIG)
    model = _read_json(run / MODEL_JSON) or {}
    root = Path(metrics.get("data") or (_read_json(run / RESOLVED) or {}).get("data_root")
                or config.get("data_root") or ".")  # config.yaml: a run from before resolved.json
    task = _task(metrics, model)
    name, value, base = task.headline(metrics)
    sections = {"classes": lambda: _classes_section(metrics, rows, root, task),
                "labels": lambda: _labels_section(metrics, rows, task),
                "fractions": lambda: _fractions_section(metrics, rows, root, model, task),
                "counts": lambda: _counts_section(metrics, rows, task)}
    pre = model.get("preprocess")
    with images_decoded_as(pre.get("fits") if isinstance(pre, dict) else None):  # as seen
        context: dict[str, Any] = {
            "title": f"skysort report: {run.name}",
            "run": str(run), "kind": task.kind, "metrics": metrics,
            "headline": {"name": name.replace("_", " "), "value": value, "baseline": base,
                         "lower_is_better": task.lower_is_better},
            "warnings": metrics.get("warnings", []),
            "not_held_out": not_held_out(metrics),
            "data": _data_section(run, metrics, config),
            "training": _training_section(run),
            # the sections the task's kind has (Task.report_sections); the others stay empty
            **{section: draw() if section in task.report_sections else None
               for section, draw in sections.items()},
            "probabilities": _probability_section(metrics),
            "provenance": _provenance(run, metrics, config, model),
        }
        return render("report.html.j2", context, out)


def _plot(draw: Callable[[Any], Any]) -> str | None:
    """A plot of :mod:`skysort.evaluation.plots` in 256 colours: the same to the eye, a
    third of the bytes."""
    return figure_uri(draw, colors=256)


def _task(metrics: dict[str, Any], model: dict[str, Any]) -> Task:
    """The task the metrics were measured for: the run's own (``model.json``), or one of
    the metrics' kind over the classes or columns they name."""
    saved = model.get("task")
    if isinstance(saved, dict) and saved.get("kind") == metrics["task"]:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            return task_from_dict(saved)
    names = metrics.get("classes") or metrics.get("labels") or metrics.get("columns") or []
    return task_class(metrics["task"]).create(list(names))


def write_report_or_say_why(run: Path, metrics_path: Path | None = None) -> Path | None:
    """:func:`write_report` at the end of a run or an evaluation, whose results are written
    already: a page that cannot be drawn is said on stderr, and never fails the run."""
    try:
        return write_report(run, metrics_path)
    except Exception as exc:  # a view of files already written; they stay valid
        print(f"could not write the report ({type(exc).__name__}: {exc}); the run's files "
              f"are complete; try again with: skysort report {run}", file=sys.stderr)
        return None


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


# -- sections -----------------------------------------------------------------------------


def _data_section(run: Path, metrics: dict[str, Any], config: dict[str, Any]
                  ) -> dict[str, Any]:
    split_rows = _read_csv(run / SPLIT)
    bad = _read_csv(run / BAD_FILES)
    # the images each split trained or was scored on: split.csv lists unreadable files too
    unreadable = {r.get("path") for r in bad or []}
    counts: dict[str, Counter[str]] = {}
    left_out: Counter[str] = Counter()
    for r in split_rows or []:
        per = counts.setdefault(r["split"], Counter())
        if r["path"] in unreadable:
            left_out[r["split"]] += 1
        else:
            per[r["label"]] += 1
    classes = sorted({c for per in counts.values() for c in per})
    single = task_class(metrics["task"]).single_label
    issues = _read_csv(run / LABEL_ISSUES)
    return {
        "splits": [s for s in ("train", "val", "test") if s in counts],
        "classes": classes if single else [],
        "counts": {s: dict(c) for s, c in counts.items()},
        "totals": {s: sum(c.values()) for s, c in counts.items()},
        "left_out": {s: left_out[s] for s in ("train", "val", "test") if left_out[s]},
        "split_rule": (f"given by the data ({config.get('split_file') or 'train/val/test'})"
                       if config.get("split_file") else
                       f"by a hash of each path and seed {config.get('seed', 0)}, fractions "
                       f"{', '.join(f'{v:g}' for v in config.get('split', []))} "
                       "(or the data's own train/val/test folders)") if config else None,
        "bad": bad, "bad_first": (bad or [])[:FIRST_ROWS],
        "issues": issues, "issues_first": (issues or [])[:FIRST_ROWS],
        "unreadable_in_evaluation": len(metrics.get("unreadable_files", {})),
    }


def _training_section(run: Path) -> dict[str, Any] | None:
    history = _read_csv(run / HISTORY)
    if not history:
        return None
    for row in history:
        for k, v in row.items():
            if k != "stage":
                with contextlib.suppress(TypeError, ValueError):
                    row[k] = float(v)  # type: ignore[assignment]
    stages: dict[str, dict[str, Any]] = {}
    for i, row in enumerate(history):
        s = stages.setdefault(str(row.get("stage", "head")), {"epochs": 0, "seconds": 0.0,
                                                              "first": i})
        s["epochs"] += 1
        s["seconds"] += float(row.get("time_s") or 0.0)
    last = list(stages)[-1]
    in_last = [(i, r) for i, r in enumerate(history) if str(r.get("stage", "head")) == last]
    kept = min(in_last, key=lambda ir: float(ir[1]["val_loss"]))  # the loop keeps the lowest
    plan = _read_json(run / PLAN)
    return {"curves": _plot(lambda f: plot_history(history, f)),
            "stages": stages, "kept": {"stage": last, "epoch": int(kept[1]["epoch"])},
            "plan": plan}


def _classes_section(metrics: dict[str, Any], rows: list[dict[str, str]], root: Path,
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
    out["curves"] = _plot(lambda f: plot_roc_pr(
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


def _labels_section(metrics: dict[str, Any], rows: list[dict[str, str]], task: Task
                    ) -> dict[str, Any]:
    labels = metrics["labels"]
    column = _output_columns(task, labels)
    good = [r for r in rows if not r.get("error")]
    curves = [(c, np.array([float(r[f"true_{c}"]) > 0.5 for r in good]),
               np.array([float(r[column[c]]) for r in good])) for c in labels] if good else []
    return {"per_label": metrics["per_label"], "macro": metrics["model"]["macro_roc_auc"],
            "curves": _plot(lambda f: plot_roc_pr(curves, f)) if curves else None}


def _fractions_section(metrics: dict[str, Any], rows: list[dict[str, str]], root: Path,
                       model: dict[str, Any], task: Task) -> dict[str, Any]:
    columns, column = metrics["columns"], _output_columns(task, metrics["columns"])
    good = [r for r in rows if not r.get("error")]
    pred = _matrix(good, [column[c] for c in columns])
    true = _matrix(good, [f"true_{c}" for c in columns])
    out: dict[str, Any] = {
        "per_column": metrics["per_column"], "per_question": metrics.get("per_question", {}),
        "derived": metrics.get("derived_classes", {}),
        "bars": _plot(lambda f: plot_fraction_rmse(metrics, f)),
        "scatter": _plot(lambda f: plot_fraction_scatter(true, pred, columns, f)) if len(good)
        else None,
        "agreement": _plot(lambda f: plot_fraction_agreement(true, pred, f)) if len(good)
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


def _counts_section(metrics: dict[str, Any], rows: list[dict[str, str]], task: Task
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
    return {"totals": _plot(lambda f: plot_vote_totals(hist, root.name, f, few)),
            "scatter": _plot(lambda f: plot_fraction_scatter(
                observed, pred, columns, f, "observed fraction")) if good else None}


def _probability_section(metrics: dict[str, Any]) -> dict[str, Any] | None:
    cal = metrics.get("calibration")
    if not cal:
        return None
    return {"calibration": cal, "risk": metrics.get("risk_coverage"),
            "sets": metrics.get("prediction_sets"),
            "reliability": _plot(lambda f: plot_reliability(metrics, f)),
            "risk_plot": _plot(lambda f: plot_risk_coverage(metrics, f))}


def _provenance(run: Path, metrics: dict[str, Any], config: dict[str, Any],
                model: dict[str, Any]) -> dict[str, Any]:
    backbone = model.get("backbone", {})
    return {
        "version": __version__, "trained_with": model.get("skysort_version"),
        "backbone": backbone.get("name") or config.get("backbone"),
        "weights": backbone.get("weights_id") or config.get("weights"),
        "data": metrics.get("data"), "split": metrics.get("split"), "n": metrics.get("n"),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
                   f"Python {platform.python_version()}",
        "settings": {k: v for k, v in config.items() if v is not None},
        "reproduce": f"skysort train {config.get('data', 'DATA')} --config "
                     f"{run / CONFIG}" if config else None,
    }
