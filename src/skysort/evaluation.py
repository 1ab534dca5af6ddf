"""``skysort evaluate``: a trained run's scores on its test split or any labelled data.

The run's own split comes from its ``split.csv`` (each file counted once, even when a
label file repeats it for training); other data is read like training data (a class-folder
tree, a label file or a table). The metrics per task kind, each beside its baseline, come
from :mod:`skysort.metrics`; they are written as JSON with a per-image CSV beside them.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from skysort.config import TrainConfig
from skysort.data.dataset import DataSpec, open_dataset
from skysort.data.sources import LabeledImages
from skysort.data.split import read_split_csv
from skysort.errors import DataError
from skysort.metrics import task_metrics, write_metrics
from skysort.tasks import Task


def unique_rows(paths: list[Path]) -> list[int]:
    """Indices of the first occurrence of each path (evaluation counts a file once)."""
    seen: set[Path] = set()
    keep = []
    for i, p in enumerate(paths):
        if p not in seen:
            seen.add(p)
            keep.append(i)
    return keep


def parse_targets(task: Task, labels: list[str], where: str) -> np.ndarray:
    """Targets from ``split.csv`` label text: a class name, or space-separated numbers."""
    if task.kind in ("multiclass", "binary"):
        index = {c: i for i, c in enumerate(task.classes)}
        unknown = sorted(set(labels) - set(index))
        if unknown:
            raise DataError(f"{where}: labels {unknown[:5]} are not classes of this model")
        return np.array([index[x] for x in labels], dtype=np.int64)
    return np.array([[float(v) for v in x.split()] for x in labels], dtype=np.float32)


def run_split(run_dir: Path, task: Task, split: str) -> tuple[LabeledImages, str]:
    """The images of one of the run's own splits (val if it has no test images)."""
    cfg = TrainConfig.from_yaml(run_dir / "config.yaml")
    rows = read_split_csv(run_dir / "split.csv")
    chosen = [r for r in rows if r["split"] == split]
    if not chosen and split == "test":
        split, chosen = "val", [r for r in rows if r["split"] == "val"]
    if not chosen:
        raise DataError(f"{run_dir / 'split.csv'}: no images in the {split!r} split")
    root = Path(cfg.data_root or cfg.data or ".")
    labeled = LabeledImages(root=root, paths=[root / r["path"] for r in chosen],
                            targets=parse_targets(task, [r["label"] for r in chosen],
                                                  str(run_dir / "split.csv")),
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
    if task.kind in ("multiclass", "binary"):
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
        The metrics, with baselines and any warnings.
    """
    from skysort.device import resolve_device
    from skysort.inference import model_outputs
    from skysort.models.model import load_model

    run_dir = Path(run)
    model, info = load_model(run_dir)
    cfg = TrainConfig.from_yaml(run_dir / "config.yaml")
    if data is None:
        labeled, used = run_split(run_dir, info.task, split)
    else:
        spec = data if isinstance(data, DataSpec) else DataSpec(data=str(data))
        labeled, used = other_data(spec, info.task)
    keep = unique_rows(labeled.paths)
    if len(keep) < len(labeled):
        labeled = labeled.subset(keep)
    outputs, bad = model_outputs(model, info, labeled.paths, cache_dir=cache_dir or cfg.cache_dir,
                                 workers=workers, device=resolve_device(device), tta=tta)
    good = np.array([i for i in range(len(labeled)) if i not in bad], dtype=np.int64)
    metrics = task_metrics(info.task, labeled.targets[good], outputs[good],
                           threshold=cfg.threshold if threshold is None else threshold,
                           derived_thresholds=derived_thresholds or cfg.derived_thresholds)
    metrics["split"] = used
    metrics["tta"] = tta
    metrics["data"] = str(labeled.root)
    metrics["unreadable_files"] = {labeled.relpath(labeled.paths[i]): r for i, r in bad.items()}
    if output is None:
        name = "metrics.json" if data is None and used == "test" else \
            f"metrics_{used if data is None else Path(str(getattr(data, 'data', data))).stem}.json"
        output = run_dir / name
    output = Path(output)
    write_metrics(output, metrics)
    write_eval_predictions(output.with_name(output.stem + "_predictions.csv"), labeled,
                           outputs, bad, info.task, metrics.get("threshold", 0.5))
    metrics["output"] = str(output)
    return metrics


def write_eval_predictions(path: Path, labeled: LabeledImages, outputs: np.ndarray,
                           bad: dict[int, str], task: Task, threshold: float = 0.5) -> None:
    """One row per evaluated image: path, truth, prediction, outputs, error."""
    names = task.output_names
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        single = task.kind in ("multiclass", "binary")
        head = ["path", "true", "predicted"] if single else ["path"]
        writer.writerow([*head, *names, *([] if single else [f"true_{c}" for c in names]),
                         "error"])
        for i, p in enumerate(labeled.paths):
            rel = labeled.relpath(p)
            if single:
                truth = task.classes[int(labeled.targets[i])]
                pred = "" if i in bad else \
                    task.classes[int(task.predicted_class(outputs[i:i + 1], threshold)[0])]
                values = ["" if i in bad else f"{v:.8f}" for v in outputs[i]]
                writer.writerow([rel, truth, pred, *values, bad.get(i, "")])
            else:
                values = ["" if i in bad else f"{v:.8f}" for v in outputs[i]]
                writer.writerow([rel, *values, *(f"{v:.8f}" for v in labeled.targets[i]),
                                 bad.get(i, "")])

