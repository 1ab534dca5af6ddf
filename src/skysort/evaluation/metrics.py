"""Metrics beside their baseline, for any task kind, and how they are shown on screen.

Every number skysort reports stands beside what a model that learned nothing would get;
which numbers, which baseline and which one heads them is the task kind's to say
(``Task.metrics``, ``Task.headline``, ``Task.format_metrics`` in :mod:`skysort.tasks`).
This module reads a metrics dict (live, or from ``metrics.json``) through the kind it
names, adds what probabilities are worth, and prints the warnings where nobody can miss
them.
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


def write_metrics(path: str | Path, metrics: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(metrics, indent=2), encoding="utf-8")


def format_metrics(metrics: dict[str, Any], title: str = "") -> str:
    """A plain-text report for any task kind, model beside baseline, warnings last."""
    lines = task_class(metrics["task"]).format_metrics(metrics, title)
    lines += format_probability_metrics(metrics)
    for warning in metrics.get("warnings", []):
        bar = "!" * 78
        lines += ["", bar, f"!! WARNING: {warning}", bar]
    return "\n".join(lines)
