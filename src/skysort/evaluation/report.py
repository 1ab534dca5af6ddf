"""``report.html``: one self-contained page per run, rendered from the run's files.

:func:`write_report` reads what the run directory holds (``metrics.json`` or another
evaluation's ``metrics_<name>.json``, its per-image ``*_predictions.csv``, ``history.csv``,
``split.csv``, ``bad_files.csv``, ``label_issues.csv``, ``config.yaml``, ``model.json``,
``finetune_plan.json``) and the images the per-image rows name; it needs no model, so
``skysort report RUN`` redraws it years later. A file a run does not have (an older
run, a run stopped early) leaves its section out. Plots are matplotlib, galleries small
JPEG thumbnails, all embedded (:mod:`skysort.evaluation.render`); galleries are capped
(:mod:`skysort.evaluation.report_sections` draws each task kind's figures and galleries:
:data:`~skysort.evaluation.report_sections.GALLERY` mistakes,
:data:`~skysort.evaluation.report_sections.PER_CLASS_TOTAL` thumbnails over all classes),
so a large test split or many classes still give a page under 1 MB. Metrics of images that chose
the model (a run without a test split scores its validation split) say so at the top.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from skysort._version import __version__
from skysort.evaluation.metrics import not_held_out
from skysort.evaluation.plots import (
    plot_history,
    plot_reliability,
    plot_risk_coverage,
)
from skysort.evaluation.render import images_decoded_as, render
from skysort.evaluation.render import read_rows as _read_csv
from skysort.evaluation.report_sections import (
    classes_section,
    counts_section,
    fractions_section,
    labels_section,
    plot,
)
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
    sections = {"classes": lambda: classes_section(metrics, rows, root, task),
                "labels": lambda: labels_section(metrics, rows, task),
                "fractions": lambda: fractions_section(metrics, rows, root, model, task),
                "counts": lambda: counts_section(metrics, rows, task)}
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
    return {"curves": plot(lambda f: plot_history(history, f)),
            "stages": stages, "kept": {"stage": last, "epoch": int(kept[1]["epoch"])},
            "plan": plan}


def _probability_section(metrics: dict[str, Any]) -> dict[str, Any] | None:
    cal = metrics.get("calibration")
    if not cal:
        return None
    return {"calibration": cal, "risk": metrics.get("risk_coverage"),
            "sets": metrics.get("prediction_sets"),
            "reliability": plot(lambda f: plot_reliability(metrics, f)),
            "risk_plot": plot(lambda f: plot_risk_coverage(metrics, f))}


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
