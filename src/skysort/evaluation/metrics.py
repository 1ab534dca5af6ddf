"""Metrics beside their baseline, for any task kind, and how they are shown on screen.

Every number skysort reports stands beside what a model that learned nothing would get;
which numbers, which baseline and which one heads them is the task kind's to say
(``Task.metrics``, ``Task.headline``, ``Task.format_metrics`` in :mod:`skysort.tasks`).
This module reads a metrics dict (live, or from ``metrics.json``) through the kind it
names, adds what probabilities are worth, and prints the warnings where nobody can miss
them, and whether the images scored were held out (``held_out``, with a ``note`` when
they chose the model: a run without a test split scores its validation split).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from skysort.evaluation.calibration import format_probability_metrics
from skysort.tasks import task_class


def headline(metrics: dict[str, Any]) -> tuple[str, float | None, float | None]:
    """The one number to watch for the metrics' kind: (name, model, baseline)."""
    return task_class(metrics["task"]).headline(metrics)


#: What a run's own split that took part in training did: said where its scores appear.
NOT_HELD_OUT = {
    "val": "scored on the validation split, which chose the model and fitted the "
           "calibration: not held out; give a test split (a test fraction in split=, e.g. "
           "split=0.7,0.15,0.15, a test/ folder, or test rows in the split file) for "
           "held-out figures",
    "train": "scored on the training split, which the model was fitted on: not held out",
}


def write_metrics(path: str | Path, metrics: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(metrics, indent=2), encoding="utf-8")


def mark_held_out(metrics: dict[str, Any], path: str | Path, of_run: bool = True) -> None:
    """Sets ``held_out`` (and, when false, the one-line ``note``) in ``metrics`` and
    writes them to ``path`` again. The run's own validation and training splits are not
    held out; its test split and other data (``of_run=False``) are."""
    note = NOT_HELD_OUT.get(metrics.get("split", "")) if of_run else None
    metrics["held_out"] = note is None
    metrics.pop("note", None)
    if note:
        metrics["note"] = note
    write_metrics(path, metrics)


def not_held_out(metrics: dict[str, Any]) -> str | None:
    """The note of metrics scored on images that took part in training, else None; a
    metrics file from before ``held_out`` was written is judged by its split."""
    split = str(metrics.get("split", ""))
    if metrics.get("held_out", split not in NOT_HELD_OUT):
        return None
    return str(metrics.get("note") or NOT_HELD_OUT.get(split, f"scored on the {split} split: "
                                                            "not held out"))


def format_metrics(metrics: dict[str, Any], title: str = "") -> str:
    """A plain-text report for any task kind, model beside baseline, warnings last; the
    title and the probabilities say when the images scored were not held out."""
    note = not_held_out(metrics)
    if note:
        title = f"{title or str(metrics['n']) + ' images'} (not held out)"
    lines = task_class(metrics["task"]).format_metrics(metrics, title)
    probabilities = format_probability_metrics(metrics)
    if note and probabilities:  # ECE and coverage measured where they were fitted
        probabilities[1:1] = [f"  (measured on the {metrics['split']} split, not held out)"]
    lines += probabilities
    bar = "!" * 78
    for warning in metrics.get("warnings", []):
        lines += ["", bar, f"!! WARNING: {warning}", bar]
    if note:
        lines += ["", bar, f"!! NOT HELD OUT: {note}", bar]
    return "\n".join(lines)
