"""Scoring a model on labelled images: the one function that training (on its test split)
and ``skysort evaluate`` (on any split or data) both call.

:func:`score_images` runs the model over the images (each file counted once), computes
the metrics of the task's kind beside their baseline (:mod:`skysort.evaluation.metrics`),
and writes them as JSON with one row per image beside it (``<name>_predictions.csv``:
path, truth, prediction, outputs, and why a file could not be read).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from skysort.data.sources import LabeledImages, first_occurrences
from skysort.evaluation.calibration import calibration_report, risk_coverage
from skysort.evaluation.conformal import COVERAGES, coverage_report, prediction_sets
from skysort.evaluation.metrics import write_metrics
from skysort.models.info import ModelInfo
from skysort.models.runners import model_outputs
from skysort.tasks import Task

if TYPE_CHECKING:
    import torch

    from skysort.models.model import SkyModel


def predictions_path(metrics_path: Path) -> Path:
    """Where the per-image rows of a metrics file go: ``metrics.json`` ->
    ``metrics_predictions.csv``."""
    return metrics_path.with_name(metrics_path.stem + "_predictions.csv")


def score_images(model: SkyModel, info: ModelInfo, labeled: LabeledImages, output: Path, *,
                 used: str, threshold: float, derived_thresholds: Sequence[float],
                 cache_dir: str | Path | None = None, workers: int | None = None,
                 device: torch.device | str = "cpu", tta: bool = False,
                 warnings: Sequence[str] = ()) -> dict[str, Any]:
    """Scores ``model`` on ``labeled``, writes ``output`` and its per-image CSV.

    Args:
        used: which images these are (``test``, ``val``, ``all``...), recorded as ``split``.
        threshold: the binary decision threshold.
        derived_thresholds: Galaxy Zoo derived-class thresholds.
        tta: average the outputs over the test-time views of the run's augmentation.
        warnings: said about the data before scoring (copies across splits), kept with
            the metrics' own.

    Returns:
        The metrics (beside the baseline, with warnings), as written to ``output``.
    """
    keep = first_occurrences(labeled.paths)
    if len(keep) < len(labeled):
        labeled = labeled.subset(keep)
    both, bad = model_outputs(model, info, labeled.paths, cache_dir=cache_dir,
                              workers=workers, device=device, tta=tta, which="both")
    k = info.task.num_outputs
    outputs, uncalibrated = both[:, :k], both[:, k:]
    good = np.array([i for i in range(len(labeled)) if i not in bad], dtype=np.int64)
    metrics = info.task.metrics(labeled.targets[good], outputs[good], threshold=threshold,
                                derived_thresholds=derived_thresholds)
    metrics.update(probability_metrics(info, labeled.targets[good], outputs[good],
                                       uncalibrated[good], threshold))
    metrics["warnings"] += metrics.get("calibration", {}).get("warnings", []) + list(warnings)
    metrics["split"] = used
    metrics["tta"] = tta
    metrics["data"] = str(labeled.root)
    metrics["unreadable_files"] = {labeled.relpath(labeled.paths[i]): r for i, r in bad.items()}
    write_metrics(output, metrics)
    write_image_rows(predictions_path(output), labeled, outputs, bad, info.task,
                     metrics.get("threshold", 0.5))
    return metrics


def probability_metrics(info: ModelInfo, targets: np.ndarray, outputs: np.ndarray,
                        uncalibrated: np.ndarray, threshold: float) -> dict[str, Any]:
    """What the probabilities are worth: ``calibration`` (beside the uncalibrated outputs
    and the class prior), and for single-label tasks ``risk_coverage`` (accuracy of the
    most confident images) and ``prediction_sets`` (coverage and set sizes at
    :data:`~skysort.evaluation.conformal.COVERAGES`). Vote fractions have none of these."""
    task = info.task
    if not task.probabilities:
        return {}
    out: dict[str, Any] = {"calibration": calibration_report(task, targets, outputs,
                                                             uncalibrated, info.calibration)}
    if not task.single_label:
        return out
    probs = task.class_probabilities(outputs)
    predicted = task.predicted_class(outputs, threshold)
    rows = np.arange(len(probs))
    out["risk_coverage"] = risk_coverage(probs[rows, predicted], predicted == targets)
    if info.conformal is not None:
        kept = info.conformal
        out["prediction_sets"] = {
            "score": kept.score, "fitted_on": kept.n,
            "by_coverage": {f"{c:g}": {
                **coverage_report(prediction_sets(probs, kept, task.classes, c),
                                  targets, task.classes, c),
                **_mode(kept.too_rare(task.classes, c))} for c in COVERAGES}}
    return out


def _mode(rare: list[str]) -> dict[str, Any]:
    """How the sets' thresholds were set: per class, or pooled when classes were too rare."""
    return {"mode": "marginal" if rare else "per class", "too_rare": rare}


def write_image_rows(path: Path, labeled: LabeledImages, outputs: np.ndarray,
                     bad: dict[int, str], task: Task, threshold: float = 0.5) -> None:
    """One row per evaluated image: path, truth, prediction, outputs, error."""
    with open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", *task.image_row_fields(), "error"])
        for i, p in enumerate(labeled.paths):
            values = task.image_row_values(labeled.targets[i], None if i in bad else outputs[i],
                                           threshold)
            writer.writerow([labeled.relpath(p), *values, bad.get(i, "")])
