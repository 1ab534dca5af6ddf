"""``skysort evaluate``: a trained run's scores on its test split or any labelled data.

The run's own split comes from its ``split.csv`` (each file counted once, even when a
label file repeats it for training); other data is read like training data (a class-folder
tree, a label file or a table). The metrics per task kind, each beside its baseline, come
from :mod:`skysort.evaluation.metrics`; they are written as JSON with a per-image CSV beside them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from skysort.config import TrainConfig
from skysort.data.dataset import DataSpec, open_dataset
from skysort.data.sources import LabeledImages
from skysort.data.split import read_split_csv
from skysort.errors import ConfigError, DataError
from skysort.evaluation.metrics import mark_held_out
from skysort.evaluation.plots import plot_scores
from skysort.evaluation.report import write_report_or_say_why
from skysort.evaluation.scoring import score_images
from skysort.models.plan import ResolvedPlan
from skysort.rundir import CONFIG, METRICS, SPLIT, require
from skysort.tasks import Task


def parse_targets(task: Task, labels: list[str], where: str) -> np.ndarray:
    """Targets from ``split.csv`` label text: a class name, or space-separated numbers."""
    try:
        return task.targets_from_text(labels)
    except ValueError as exc:
        raise DataError(f"{where}: {exc}") from exc


def run_split(run_dir: Path, task: Task, split: str) -> tuple[LabeledImages, str]:
    """The images of one of the run's own splits (val if it has no test images)."""
    cfg = TrainConfig.from_yaml(require(run_dir, CONFIG))
    rows = read_split_csv(require(run_dir, SPLIT))
    chosen = [r for r in rows if r["split"] == split]
    if not chosen and split == "test":
        split, chosen = "val", [r for r in rows if r["split"] == "val"]
    if not chosen:
        raise DataError(f"{run_dir / SPLIT}: no images in the {split!r} split")
    root = Path(ResolvedPlan.read(run_dir).data_root or cfg.data or ".")
    labeled = LabeledImages(root=root, paths=[root / r["path"] for r in chosen],
                            targets=parse_targets(task, [r["label"] for r in chosen],
                                                  str(run_dir / SPLIT)),
                            classes=list(task.classes), ids=[r["id"] for r in chosen])
    return labeled, split


def other_data(spec: DataSpec, task: Task) -> tuple[LabeledImages, str]:
    """Labelled data other than the run's: its test split if it has one, else all of it."""
    spec.task = task.kind
    labeled = open_dataset(spec)
    used = "all"
    if labeled.splits is not None and "test" in labeled.splits:
        labeled = labeled.subset([i for i, s in enumerate(labeled.splits) if s == "test"])
        used = "test"
    if task.single_label:
        unknown = sorted(set(labeled.classes) - set(task.classes))
        if unknown:
            raise DataError(f"{labeled.root}: class(es) {unknown} are not classes of this "
                            f"model; it knows {task.classes}")
        remap = np.array([task.classes.index(c) for c in labeled.classes], dtype=np.int64)
        labeled.targets = remap[labeled.targets]
    else:
        missing = sorted(set(task.classes) - set(labeled.classes))
        if missing:
            raise DataError(f"{labeled.root}: the table lacks column(s) {missing} that this "
                            "model predicts")
        order = [labeled.classes.index(c) for c in task.classes]
        labeled.targets = labeled.targets[:, order]
    labeled.classes = list(task.classes)
    return labeled, used


def evaluate(run: str | Path, data: str | Path | DataSpec | None = None, *,
             split: str = "test", output: str | Path | None = None,
             cache_dir: str | Path | None = None, workers: int | None = None,
             device: str = "auto", threshold: float | None = None,
             derived_thresholds: tuple[float, ...] | None = None,
             tta: bool = False) -> dict[str, Any]:
    """Evaluates a trained run on its test split, or on other labelled data.

    Args:
        run: the run directory written by training.
        data: a class-folder tree, label file or table (a path, or a
            :class:`~skysort.data.dataset.DataSpec` for tables with options); by default
            the run's own ``split`` images.
        split: which of the run's splits to use when ``data`` is not given.
        output: the metrics JSON; by default ``RUN/metrics.json`` for the run's test split,
            else ``RUN/metrics_<name>.json``. Per-image outputs go beside it
            (``*_predictions.csv``).
        threshold: binary decision threshold (default: the run's).
        derived_thresholds: Galaxy Zoo derived-class thresholds (default: the run's).
        tta: average the outputs over test-time augmentation views (rotations and flips
            for a ``sky`` run, a mirror for a ``photo`` run).

    Returns:
        The metrics, with baselines and any warnings, and ``held_out``: false for the
        run's own validation split (which ``split="test"`` falls back to when the run has
        no test images) or training split, with a ``note`` saying why.
    """
    from skysort.device import resolve_device
    from skysort.models.model import load_model

    if threshold is not None and not 0 < threshold < 1:
        raise ConfigError(f"threshold={threshold}: must lie strictly between 0 and 1")
    if workers is not None and workers < 0:
        raise ConfigError(f"workers={workers}: must be 0 or more")
    run_dir = Path(run)
    model, info = load_model(run_dir)
    cfg = TrainConfig.from_yaml(require(run_dir, CONFIG))
    if data is None:
        labeled, used = run_split(run_dir, info.task, split)
    else:
        spec = data if isinstance(data, DataSpec) else DataSpec(data=str(data))
        labeled, used = other_data(spec, info.task)
    if output is None:
        name = METRICS if data is None and used == "test" else \
            f"metrics_{used if data is None else Path(str(getattr(data, 'data', data))).stem}.json"
        output = run_dir / name
    metrics = score_images(model, info, labeled, Path(output), used=used,
                           threshold=info.threshold if threshold is None else threshold,
                           derived_thresholds=derived_thresholds or cfg.derived_thresholds,
                           cache_dir=cache_dir or cfg.cache_dir, workers=workers,
                           device=resolve_device(device), tta=tta)
    # the run's val split (its stand-in for a missing test split) chose the model: said so
    mark_held_out(metrics, Path(output), of_run=data is None)
    metrics["output"] = str(output)
    metrics["plots"] = [str(p) for p in plot_scores(metrics, Path(output))]
    page = write_report_or_say_why(run_dir, Path(output))
    metrics["report"] = str(page) if page else None
    return metrics
