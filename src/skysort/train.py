"""Training, top to bottom.

``train(DATA)`` reads the dataset, splits it, builds the backbone, computes (or reads
from the cache) every image's embedding, trains the head on them, keeps the weights of
the best validation epoch, evaluates them on the test split beside the majority
baseline, and writes everything into a run directory::

    runs/<name>/
      config.yaml        the resolved configuration
      model.safetensors  all weights (backbone and head)
      model.json         classes, backbone, preprocessing, skysort version
      split.csv          every image's split
      bad_files.csv      files that could not be read, and why
      history.csv        one row per epoch: losses, metrics, learning rate, time
      metrics.json       test-split metrics and baseline
"""

from __future__ import annotations

import csv
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler
from tqdm.auto import tqdm

from skysort.config import TrainConfig
from skysort.data.dataset import choose_task_kind, open_dataset
from skysort.data.sources import LabeledImages
from skysort.data.split import split_by_hash, write_split_csv
from skysort.data.tables import summarize_issues, write_label_issues
from skysort.embeddings import cached_embeddings, embedding_key
from skysort.errors import DataError
from skysort.metrics import format_metrics, headline, task_metrics, write_metrics
from skysort.models.backbones import create_backbone
from skysort.models.model import ModelInfo, SkyModel, save_model
from skysort.tasks import Task, make_task


@dataclass
class TrainResult:
    """What a training run produced."""

    run_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    bad_files: dict[str, str] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def make_run_dir(project: str | Path, name: str, exist_ok: bool) -> Path:
    """``project/name``, or ``name2``, ``name3`` ... when it exists (as Ultralytics does)."""
    base = Path(project)
    run_dir = base / name
    number = 2
    while run_dir.exists() and not exist_ok:
        run_dir = base / f"{name}{number}"
        number += 1
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def write_bad_files(path: Path, data: LabeledImages, bad: Mapping[int, str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "reason"])
        for i in sorted(bad):
            writer.writerow([data.relpath(data.paths[i]), bad[i]])


def lr_lambda(warmup_steps: int, total_steps: int):
    """Linear warm-up to the base rate, then cosine decay to zero."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def train(data: str | Path | LabeledImages | None = None, config: TrainConfig | None = None,
          **overrides: Any) -> TrainResult:
    """Trains a model on ``data`` and writes a run directory.

    Args:
        data: a class-folder tree (or one split into train/val/test), a folder with a
            label file, a CSV table, or :class:`~skysort.data.sources.LabeledImages`;
            defaults to ``config.data``.
        config: the settings; defaults to ``TrainConfig()``.
        **overrides: settings to change, e.g. ``epochs=50, name="mars", labels="t.csv"``.

    Returns:
        The run directory, test metrics, per-epoch history and the unreadable files.
    """
    cfg = (config or TrainConfig()).updated(overrides) if overrides else (config or TrainConfig())
    if data is not None and not isinstance(data, LabeledImages):
        cfg.data = str(data)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)

    # -- data ---------------------------------------------------------------------------
    dataset = choose_task_kind(data, cfg.task) if isinstance(data, LabeledImages) else \
        open_dataset(cfg.data_spec())
    cfg.data_root = str(dataset.root)
    splits = split_by_hash(dataset, cfg.split, cfg.seed)
    run_dir = make_run_dir(cfg.project, cfg.name, cfg.exist_ok)
    cfg.save(run_dir / "config.yaml")
    write_split_csv(run_dir / "split.csv", dataset, splits)
    write_label_issues(run_dir / "label_issues.csv", dataset.issues)
    if dataset.issues:
        print(f"left out while reading labels: {summarize_issues(dataset.issues)}; "
              f"see {run_dir / 'label_issues.csv'}")

    # -- backbone and embeddings ----------------------------------------------------------
    backbone = create_backbone(cfg.backbone, cfg.weights, cfg.input_size)
    key = embedding_key(backbone.name, backbone.weights_id, backbone.preprocess)
    features, bad = cached_embeddings(backbone.model, backbone.preprocess, key, dataset.paths,
                                      cache_dir=cfg.cache_dir, workers=cfg.workers,
                                      device=device)
    write_bad_files(run_dir / "bad_files.csv", dataset, bad)
    if bad:
        print(f"skipped {len(bad)} unreadable file(s); see {run_dir / 'bad_files.csv'}")
    part = split_indices(dataset, splits, bad)
    targets = dataset.targets
    task = make_task(dataset.task, dataset.classes, dataset.schema)
    task.fit_statistics(targets[part["train"]])
    _check_trainable(dataset, task, part)
    print(f"task: {task.kind} ({len(task.classes)} "
          f"{'classes' if task.kind in SINGLE_LABEL else 'outputs'}); images: train "
          f"{len(part['train'])}, val {len(part['val'])}, test {len(part['test'])}")

    # -- the head ---------------------------------------------------------------------------
    model = SkyModel(backbone.model, backbone.num_features, task, dropout=cfg.dropout)
    loss_fn = task.loss_fn(targets[part["train"]], cfg.balance, cfg.label_smoothing)
    history = fit_head(model.head, model.output, features, targets, part, task, loss_fn, cfg,
                       run_dir)

    info = ModelInfo(task=task, backbone=backbone.name, weights_id=backbone.weights_id,
                     num_features=backbone.num_features, preprocess=backbone.preprocess,
                     dropout=cfg.dropout, frozen_backbone=True, id_column=dataset.id_column,
                     target_columns=dataset.target_columns, threshold=cfg.threshold,
                     extra={"balance": cfg.balance, "embedding_key": key})
    save_model(model, info, run_dir)

    # -- test --------------------------------------------------------------------------------
    eval_split = "test" if len(part["test"]) else "val"
    with torch.no_grad():
        model.eval()
        outputs = model.output(model.head(torch.from_numpy(features[part[eval_split]]))).numpy()
    metrics = task_metrics(task, targets[part[eval_split]], outputs, threshold=cfg.threshold,
                           derived_thresholds=cfg.derived_thresholds)
    metrics["split"] = eval_split
    write_metrics(run_dir / "metrics.json", metrics)
    print(format_metrics(metrics, title=f"{eval_split} split: {metrics['n']} images"))
    return TrainResult(run_dir=run_dir, metrics=metrics, history=history,
                       bad_files={dataset.relpath(dataset.paths[i]): r for i, r in bad.items()})


SINGLE_LABEL = ("multiclass", "binary")


def split_indices(data: LabeledImages, splits: list[str], bad: Mapping[int, str]
                  ) -> dict[str, np.ndarray]:
    """Readable images per split. Training keeps repeated rows as the data gives them (a
    label file may repeat rare classes to up-sample them); validation and test count each
    file once."""
    out = {}
    for name in ("train", "val", "test"):
        index = [i for i, s in enumerate(splits) if s == name and i not in bad]
        if name != "train":
            first: dict[Path, int] = {}
            for i in index:
                first.setdefault(data.paths[i], i)
            index = sorted(first.values())
        out[name] = np.array(index, dtype=np.int64)
    return out


def _check_trainable(data: LabeledImages, task: Task, part: Mapping[str, np.ndarray]) -> None:
    if task.kind in SINGLE_LABEL:
        missing = [c for c, n in zip(task.classes, task.train_counts, strict=True) if n == 0]
        if missing:
            raise DataError(
                f"{data.root}: no readable training images for class(es) {missing}; "
                "check bad_files.csv and add images"
            )
    if len(part["train"]) == 0:
        raise DataError(f"{data.root}: no readable training images")
    if len(part["val"]) == 0:
        raise DataError(
            f"{data.root}: the validation split is empty; give a val fraction above 0 "
            "or a val/ folder"
        )


def fit_head(head: nn.Module, output: nn.Module, features: np.ndarray, targets: np.ndarray,
             part: Mapping[str, np.ndarray], task: Task,
             loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
             cfg: TrainConfig, run_dir: Path) -> list[dict[str, Any]]:
    """Trains ``head`` on cached embeddings; keeps the best validation epoch's weights.

    The loop: schedule -> step -> validate -> keep the best -> log, once per epoch, with
    early stopping after ``cfg.patience`` epochs without a better validation loss.
    """
    x_train = torch.from_numpy(features[part["train"]])
    y_train = task.target_tensor(targets[part["train"]])
    x_val = torch.from_numpy(features[part["val"]])
    y_val = task.target_tensor(targets[part["val"]])
    generator = torch.Generator().manual_seed(cfg.seed)
    sampler = None
    if cfg.balance == "sampler":
        weights = task.sample_weights(targets[part["train"]]).tolist()
        sampler = WeightedRandomSampler(weights, len(weights), generator=generator)
    loader = DataLoader(TensorDataset(x_train, y_train), batch_size=cfg.batch_size,
                        shuffle=sampler is None, sampler=sampler, generator=generator)
    optimizer = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(cfg.warmup_epochs * len(loader), steps))

    history: list[dict[str, Any]] = []
    best_loss, best_state, stale = math.inf, None, 0
    start = time.perf_counter()
    bar = tqdm(range(cfg.epochs), desc="training head", unit="epoch", dynamic_ncols=True)
    for epoch in bar:
        head.train()
        total, seen = 0.0, 0
        for xb, yb in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(head(xb), yb)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(xb)
            seen += len(xb)
        head.eval()
        with torch.no_grad():
            val_logits = head(x_val)
            val_loss = float(loss_fn(val_logits, y_val))
            val_outputs = output(val_logits).numpy()
        score_name, score, _ = headline(task_metrics(task, targets[part["val"]], val_outputs,
                                                     threshold=cfg.threshold))
        row = {"epoch": epoch + 1, "train_loss": total / max(seen, 1), "val_loss": val_loss,
               f"val_{score_name}": score, "lr": optimizer.param_groups[0]["lr"],
               "time_s": time.perf_counter() - start}
        history.append(row)
        bar.set_postfix(loss=f"{row['train_loss']:.4f}", val_loss=f"{val_loss:.4f}",
                        **{f"val_{score_name}": f"{score:.3f}" if score is not None else "n/a"})
        if val_loss < best_loss - 1e-6:
            best_loss, stale = val_loss, 0
            best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    bar.close()
    if best_state is not None:
        head.load_state_dict(best_state)
    _write_history(run_dir / "history.csv", history)
    return history


def _write_history(path: Path, history: list[dict[str, Any]]) -> None:
    if not history:
        return
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
