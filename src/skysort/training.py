"""Training, top to bottom.

``train(DATA)`` reads the dataset and splits it, builds the backbone, computes (or reads
from the cache) every image's embedding, and trains in up to two stages with one loop
(:func:`fit`):

1. **head**: the classification head on cached embeddings, in seconds;
2. **fine-tune** (when ``finetune`` is ``full`` or ``last:N``, or ``auto`` picks it): the
   head and the unfrozen blocks on augmented images, AdamW with lower learning rates for
   earlier layers (layer-wise decay), warm-up then cosine, early stopping, and a
   checkpoint after every epoch so ``--resume`` can continue a run that was stopped.

Then it keeps the best validation epoch's weights, evaluates them on the test split
beside the baseline, and writes the run directory::

    runs/<name>/
      config.yaml          the resolved configuration
      model.safetensors    the final weights (backbone and head); model.json describes them
      split.csv, bad_files.csv, label_issues.csv
      history.csv          one row per epoch of both stages; training_curves.png
      metrics.json         test metrics beside the baseline; confusion_matrix.png
      weights/             last.safetensors (with optimizer, scheduler and RNG state),
                           best.safetensors
      tensorboard/         event files (tensorboard --logdir runs)
"""

from __future__ import annotations

import csv
import math
import random
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from skysort.checkpoint import load_checkpoint, read_state, save_checkpoint
from skysort.config import TrainConfig
from skysort.data.dataset import choose_task_kind, open_dataset
from skysort.data.loader import EpochSampler, image_loader
from skysort.data.sources import LabeledImages
from skysort.data.split import read_split_csv, split_by_hash, write_split_csv
from skysort.data.tables import summarize_issues, write_label_issues
from skysort.data.transforms import EvalTransform, Preprocess, TrainTransform
from skysort.device import resolve_device, resolve_precision
from skysort.embeddings import cached_embeddings, default_cache_dir, embedding_key
from skysort.errors import DataError, RunError
from skysort.inference import model_outputs
from skysort.metrics import format_metrics, headline, task_metrics, write_metrics
from skysort.models.backbones import create_backbone, native_input_size
from skysort.models.model import ModelInfo, SkyModel, save_model
from skysort.parallel import Distributed
from skysort.report import plot_confusion, plot_history
from skysort.tasks import Task, make_task

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SINGLE_LABEL = ("multiclass", "binary")
#: With fewer training images than this, ``finetune=auto`` trains the head only.
AUTO_FINETUNE_MIN_IMAGES = 200


@dataclass
class TrainResult:
    """What a training run produced."""

    run_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    bad_files: dict[str, str] = field(default_factory=dict)
    #: False in every process of a distributed run but the first, which alone saves the
    #: model and evaluates it (``metrics`` is empty in the others).
    main: bool = True


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


def lr_lambda(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Linear warm-up to the base rate, then cosine decay to zero."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def finetune_plan(setting: str, n_train: int) -> tuple[str, int]:
    """``("head", 0)``, ``("full", 0)`` or ``("last", N)`` for a ``finetune`` setting."""
    if setting == "auto":
        if n_train < AUTO_FINETUNE_MIN_IMAGES:
            return "head", 0
        return "full", 0
    if setting in ("head", "full"):
        return setting, 0
    match = re.fullmatch(r"last:(\d+)", setting)
    if not match:
        raise DataError(f"finetune={setting!r}: use auto, head, full or last:N")
    return "last", int(match.group(1))


def choose_input_size(cfg: TrainConfig, data: LabeledImages, native: int, mode: str) -> int:
    """The input size: as set, the backbone's own for the head only, else fitted to the data.

    Fine-tuning on small cutouts need not upsample them: the median shorter side of a
    sample of images (after the centre cut), rounded to a multiple of 32, between 96 and
    the backbone's native size.
    """
    if cfg.input_size:
        return cfg.input_size
    if mode == "head":
        return native
    rng = np.random.default_rng(0)
    sample = rng.choice(len(data), size=min(64, len(data)), replace=False)
    sides = []
    for i in sample:
        try:
            with Image.open(data.paths[i]) as img:
                sides.append(min(img.size) * cfg.center_fraction)
        except Exception:  # an unreadable file; it is reported when decoded
            continue
    if not sides:
        return native
    size = 32 * round(statistics.median(sides) / 32)
    return int(min(native, max(96, size)))


# -- the loop -------------------------------------------------------------------------------


@dataclass
class Progress:
    """Where a stage stands: what a checkpoint saves and a resumed run restores."""

    stage: str
    epoch: int = 0
    best: float | None = None
    stale: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "epoch": self.epoch, "best": self.best,
                "stale": self.stale, "history": self.history}


def fit(model: nn.Module, trainable: nn.Module, batches: Callable[[int], Iterable[Any]],
        steps: int, validate: Callable[[nn.Module], tuple[float, np.ndarray]], loss_fn: LossFn,
        optimizer: torch.optim.Optimizer, scheduler: Any, task: Task, val_targets: np.ndarray,
        progress: Progress, *, epochs: int, patience: int, monitor: str, threshold: float,
        autocast: torch.dtype | None = None, run_dir: Path | None = None,
        log: Callable[[dict[str, Any]], None] | None = None, batch_bars: bool = True,
        ema: Any = None) -> Progress:
    """The training loop: step through the batches, validate, keep the best, checkpoint,
    log; stop early after ``patience`` epochs without improvement.

    Args:
        model: what is saved (the whole classifier, or the head alone).
        trainable: what is called on a batch; its frozen parts stay in eval mode.
        batches: ``batches(epoch)`` yields ``(inputs, targets)``.
        validate: ``validate(module)`` returns the validation loss and published outputs.
        monitor: ``"loss"`` (lower is better) or ``"score"`` (the task's headline).
        run_dir: where ``weights/last.safetensors`` and ``best.safetensors`` go; None
            keeps the best weights in memory only.
        batch_bars: a progress bar per epoch over its batches (with its ETA); else one
            bar over the epochs.
        ema: an exponential moving average of the weights (timm's ``ModelEmaV3``), updated
            after every step; it is what is validated and kept as the best weights.
    """
    best_state: dict[str, torch.Tensor] | None = None
    weights = run_dir / "weights" if run_dir else None
    if weights:
        weights.mkdir(exist_ok=True)
    epoch_bar = tqdm(total=epochs, initial=progress.epoch, unit="epoch", dynamic_ncols=True,
                     desc=f"training {progress.stage}", disable=batch_bars, mininterval=1)
    for epoch in range(progress.epoch, epochs):
        if progress.stale >= patience:
            break
        start = time.perf_counter()
        trainable.train()
        _freeze_norms(trainable)
        total, seen = 0.0, 0
        bar = tqdm(batches(epoch), total=steps, unit="batch", dynamic_ncols=True,
                   desc=f"{progress.stage} {epoch + 1}/{epochs}", leave=False,
                   disable=not batch_bars, mininterval=1)
        for step, (inputs, targets) in enumerate(bar):
            with torch.autocast(inputs.device.type, dtype=autocast or torch.bfloat16,
                                enabled=autocast is not None):
                loss = loss_fn(trainable(inputs).float(), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update(model, step=epoch * steps + step)
            total += loss.item() * len(inputs)
            seen += len(inputs)
            bar.set_postfix(loss=f"{total / seen:.4f}", refresh=False)
        bar.close()
        kept = ema.module if ema is not None else model
        val_loss, outputs = validate(kept)
        name, score, _ = headline(task_metrics(task, val_targets, outputs, threshold=threshold))
        row = {"stage": progress.stage, "epoch": epoch + 1, "train_loss": total / max(seen, 1),
               "val_loss": val_loss, f"val_{name}": score,
               "lr": optimizer.param_groups[-1]["lr"], "time_s": time.perf_counter() - start}
        progress.history.append(row)
        epoch_bar.update()
        epoch_bar.set_postfix(val_loss=f"{val_loss:.4f}")
        if log:
            log(row)
        # Lower is better: the loss, an RMSE, or a score with its sign turned.
        if monitor == "loss" or score is None:
            value = val_loss
        else:
            value = score if task.kind == "fractions" else -score
        improved = progress.best is None or value < progress.best - 1e-6
        progress.epoch = epoch + 1
        if improved:
            progress.best, progress.stale = value, 0
            if weights:
                save_checkpoint(weights / "best.safetensors", kept, state=progress.to_dict())
            else:
                best_state = {k: v.detach().clone() for k, v in kept.state_dict().items()}
        else:
            progress.stale += 1
        if weights:
            save_checkpoint(weights / "last.safetensors", model, optimizer, scheduler,
                            progress.to_dict(),
                            extra={"ema": ema.module} if ema is not None else None)
    epoch_bar.close()
    if weights and (weights / "best.safetensors").is_file():
        load_checkpoint(weights / "best.safetensors", model, restore_rng=False)
    elif best_state is not None:
        model.load_state_dict(best_state)
    return progress


def _freeze_norms(module: nn.Module) -> None:
    """Batch norms keep their pretrained running statistics while fine-tuning: batches of
    32 on a CPU estimate them poorly, and the head warmed up on features computed with
    them (their scale and shift still learn)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def _log_row(writer: Any) -> Callable[[dict[str, Any]], None]:
    """TensorBoard scalars for every epoch; a console line for each fine-tuning epoch."""

    def log(row: dict[str, Any]) -> None:
        step = row["epoch"] if row["stage"] == "head" else 1000 + row["epoch"]
        for key, value in row.items():
            if key not in ("stage", "epoch") and value is not None and writer is not None:
                writer.add_scalar(f"{row['stage']}/{key}", value, step)
        if row["stage"] != "head":
            scores = "  ".join(f"{k} {v:.4f}" for k, v in row.items()
                               if k.startswith(("train_", "val_")) and v is not None)
            print(f"{row['stage']} epoch {row['epoch']}: {scores}  ({row['time_s']:.0f} s)",
                  file=sys.stderr)

    return log


# -- stages ---------------------------------------------------------------------------------


def head_stage(model: SkyModel, task: Task, features: np.ndarray, targets: np.ndarray,
               part: Mapping[str, np.ndarray], cfg: TrainConfig, log: Any) -> Progress:
    """Stage 1: the head on cached embeddings; the best weights stay in ``model.head``."""
    x_val = torch.from_numpy(features[part["val"]])
    train_targets = targets[part["train"]]
    y_val = task.target_tensor(targets[part["val"]])
    loss_fn = task.loss_fn(train_targets, cfg.balance, cfg.label_smoothing)
    weights = task.sample_weights(train_targets) if cfg.balance == "sampler" else None
    sampler = EpochSampler(len(part["train"]), cfg.seed, weights)
    steps = math.ceil(len(part["train"]) / cfg.batch_size)

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        sampler.epoch = epoch
        order = part["train"][[i for i, _ in sampler]]
        for start in range(0, len(order), cfg.batch_size):
            chunk = order[start:start + cfg.batch_size]
            yield torch.from_numpy(features[chunk]), task.target_tensor(targets[chunk])

    def validate(head: nn.Module) -> tuple[float, np.ndarray]:
        head.eval()
        with torch.no_grad():
            logits = head(x_val)
            return float(loss_fn(logits, y_val)), model.output(logits).numpy()

    optimizer = torch.optim.AdamW(model.head.parameters(), lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(cfg.warmup_epochs * steps, cfg.epochs * steps))
    return fit(model.head, model.head, batches, steps, validate, loss_fn, optimizer, scheduler,
               task, targets[part["val"]], Progress("head"), epochs=cfg.epochs,
               patience=cfg.patience, monitor="loss", threshold=cfg.threshold, log=log,
               batch_bars=False)


def unfreeze(model: SkyModel, mode: str, stages: int) -> int:
    """Makes the last ``stages`` block groups (plus the final conv) trainable, or all of
    the backbone for ``full``; returns the number of trainable backbone tensors."""
    backbone = model.backbone
    for p in backbone.parameters():
        p.requires_grad = mode == "full"
    if mode == "last":
        blocks = list(getattr(backbone, "blocks", []))
        tail: list[nn.Module] = blocks[-stages:] if stages else []
        tail += [m for name in ("conv_head", "bn2", "head_conv", "norm", "fc_norm")
                 if isinstance(m := getattr(backbone, name, None), nn.Module)]
        if not blocks:
            raise DataError(f"finetune=last:{stages}: backbone {type(backbone).__name__} has no "
                            "'blocks' to unfreeze; use finetune=full or head")
        for module in tail:
            for p in module.parameters():
                p.requires_grad = True
    return sum(p.requires_grad for p in backbone.parameters())


def finetune_optimizer(model: SkyModel, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; the head at ``finetune_lr``, each earlier backbone layer ``layer_decay``
    times lower (timm's layer-decay groups), no weight decay on biases and norms."""
    from timm.optim._param_groups import param_groups_layer_decay

    groups = param_groups_layer_decay(model.backbone, weight_decay=cfg.finetune_weight_decay,
                                      layer_decay=cfg.layer_decay)
    for group in groups:
        group["lr"] = cfg.finetune_lr * group.pop("lr_scale", 1.0)
    groups.append({"params": list(model.head.parameters()), "lr": cfg.finetune_lr,
                   "weight_decay": cfg.finetune_weight_decay})
    return torch.optim.AdamW(groups, lr=cfg.finetune_lr)


def finetune_stage(model: SkyModel, preprocess: Preprocess, task: Task, data: LabeledImages,
                   part: Mapping[str, np.ndarray], cfg: TrainConfig, device: torch.device,
                   run_dir: Path, log: Any, resume: bool,
                   head_history: list[dict[str, Any]], ddp: Distributed) -> Progress:
    """Stage 2: head and unfrozen blocks on augmented images, checkpointed every epoch.
    The returned history holds both stages. In a distributed run each process trains on
    its share of every epoch and gradients are averaged (:mod:`skysort.parallel`)."""
    seed_everything(cfg.seed + 1)  # a resumed run restores the generators' saved state
    targets = data.targets
    train_paths = [data.paths[i] for i in part["train"]]
    train_targets = targets[part["train"]]
    weights = task.sample_weights(train_targets) if cfg.balance == "sampler" else None
    sampler = EpochSampler(len(train_paths), cfg.seed, weights, rank=ddp.rank,
                           world_size=ddp.world_size)
    resized_cache = str(Path(cfg.cache_dir or default_cache_dir()) / "resized")
    augment = TrainTransform(preprocess, cfg.augment, cfg.seed, resized_cache)
    whole_batches = len(sampler) >= 2 * cfg.finetune_batch_size
    loader = image_loader(train_paths, augment, batch_size=cfg.finetune_batch_size,
                          workers=cfg.workers, sampler=sampler, drop_last=whole_batches,
                          generator=torch.Generator().manual_seed(cfg.seed))
    val_loader = image_loader([data.paths[i] for i in part["val"]],
                              EvalTransform(preprocess, resized_cache),
                              batch_size=cfg.finetune_batch_size, workers=cfg.workers)
    y_val = task.target_tensor(targets[part["val"]]).to(device)
    loss_fn = task.loss_fn(train_targets, cfg.balance, cfg.label_smoothing)
    model.to(device).to(memory_format=torch.channels_last)
    autocast = resolve_precision(cfg.precision, device)

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        sampler.epoch = epoch
        for index, images, _ in loader:
            if images is None:
                continue
            images = images.to(device).contiguous(memory_format=torch.channels_last)
            yield images, task.target_tensor(train_targets[index.numpy()]).to(device)

    def validate(net: nn.Module) -> tuple[float, np.ndarray]:
        net.eval()
        logits = torch.zeros(len(part["val"]), task.num_outputs, device=device)
        with torch.inference_mode():
            for index, images, _ in val_loader:
                if images is not None:
                    x = images.to(device).contiguous(memory_format=torch.channels_last)
                    with torch.autocast(device.type, dtype=autocast or torch.bfloat16,
                                        enabled=autocast is not None):
                        logits[index.to(device)] = net(x).float()
            return float(loss_fn(logits, y_val)), model.output(logits).cpu().numpy()

    steps = (len(sampler) // cfg.finetune_batch_size if whole_batches
             else math.ceil(len(sampler) / cfg.finetune_batch_size))
    optimizer = finetune_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(cfg.finetune_warmup_epochs * steps, cfg.finetune_epochs * steps))
    from timm.utils import ModelEmaV3  # with timm's model zoo: imported only to fine-tune

    ema = ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True) if cfg.ema_decay else None
    progress = Progress("finetune", history=list(head_history))
    last = run_dir / "weights" / "last.safetensors"
    if resume and last.is_file() and read_state(last).get("stage") == "finetune":
        progress = Progress(**load_checkpoint(
            last, model, optimizer, scheduler,
            extra={"ema": ema.module} if ema is not None else None))
        print(f"resuming fine-tuning after epoch {progress.epoch} from {last}", file=sys.stderr)
    # Every process validates the whole split and so keeps the same best weights; only
    # the first writes checkpoints.
    progress = fit(model, ddp.wrap(model), batches, steps, validate, loss_fn, optimizer,
                   scheduler, task, targets[part["val"]], progress,
                   epochs=cfg.finetune_epochs, patience=cfg.finetune_patience, monitor="loss",
                   threshold=cfg.threshold, autocast=autocast,
                   run_dir=run_dir if ddp.main else None, log=log, ema=ema)
    return progress


# -- the whole run --------------------------------------------------------------------------


def train(data: str | Path | LabeledImages | None = None, config: TrainConfig | None = None,
          *, resume: str | Path | None = None, **overrides: Any) -> TrainResult:
    """Trains a model on ``data`` and writes a run directory.

    Args:
        data: a class-folder tree (or one split into train/val/test), a folder with a
            label file, a CSV table, or :class:`~skysort.data.sources.LabeledImages`;
            defaults to ``config.data``.
        config: the settings; defaults to ``TrainConfig()``.
        resume: a run directory to continue from its last checkpoint (its own settings
            are used; ``data`` and ``config`` must not be given).
        **overrides: settings to change, e.g. ``epochs=50, name="mars", labels="t.csv"``.

    Returns:
        The run directory, test metrics, per-epoch history and the unreadable files.
    """
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "config.yaml").is_file():
            raise RunError(f"{run_dir}: nothing to resume (config.yaml is missing)")
        cfg = TrainConfig.from_yaml(run_dir / "config.yaml")
    else:
        cfg = (config or TrainConfig()).updated(overrides) if overrides else \
            (config or TrainConfig())
        if data is not None and not isinstance(data, LabeledImages):
            cfg.data = str(data)
    device = resolve_device(cfg.device)
    ddp = Distributed.from_env(device)  # launched by torchrun: one of several processes
    try:
        with ddp.quiet_unless_main():
            return _train(data, cfg, None if resume is None else Path(resume),
                          ddp.device(device), ddp)
    finally:
        ddp.close()


def _train(data: str | Path | LabeledImages | None, cfg: TrainConfig, resume: Path | None,
           device: torch.device, ddp: Distributed) -> TrainResult:
    seed_everything(cfg.seed)

    # -- data ---------------------------------------------------------------------------
    dataset = choose_task_kind(data, cfg.task) if isinstance(data, LabeledImages) else \
        open_dataset(cfg.data_spec())
    cfg.data_root = str(dataset.root)
    splits = split_by_hash(dataset, cfg.split, cfg.seed)
    if resume is None:
        # Process 0 names the run directory (train, train2, ...); the others use its.
        run_dir = Path(ddp.broadcast(str(make_run_dir(cfg.project, cfg.name, cfg.exist_ok))
                                     if ddp.main else ""))
        if ddp.main:
            write_split_csv(run_dir / "split.csv", dataset, splits)
    else:
        run_dir = resume
        if [r["split"] for r in read_split_csv(run_dir / "split.csv")] != splits:
            raise RunError(f"{run_dir}: the data no longer splits as split.csv says; it "
                           "changed since the run started, so it cannot be resumed")
    if ddp.main:
        write_label_issues(run_dir / "label_issues.csv", dataset.issues)
    if dataset.issues:
        print(f"left out while reading labels: {summarize_issues(dataset.issues)}; "
              f"see {run_dir / 'label_issues.csv'}")
    mode, stages = finetune_plan(cfg.finetune, splits.count("train"))

    # -- backbone and embeddings ----------------------------------------------------------
    cfg.input_size = choose_input_size(cfg, dataset, native_input_size(cfg.backbone), mode)
    if ddp.main:
        cfg.save(run_dir / "config.yaml")
    backbone = create_backbone(cfg.backbone, cfg.weights, cfg.input_size, cfg.center_fraction)
    key = embedding_key(backbone.name, backbone.weights_id, backbone.preprocess)
    with ddp.main_first():  # the others then read the embeddings from the cache
        features, bad = cached_embeddings(backbone.model, backbone.preprocess, key,
                                          dataset.paths, cache_dir=cfg.cache_dir,
                                          workers=cfg.workers, device=device)
    if ddp.main:
        write_bad_files(run_dir / "bad_files.csv", dataset, bad)
    if bad:
        print(f"skipped {len(bad)} unreadable file(s); see {run_dir / 'bad_files.csv'}")
    part = split_indices(dataset, splits, bad)
    targets = dataset.targets
    task = make_task(dataset.task, dataset.classes, dataset.schema)
    task.fit_statistics(targets[part["train"]])
    _check_trainable(dataset, task, part)
    plan = "head only" if mode == "head" else \
        f"head, then fine-tuning ({'all layers' if mode == 'full' else f'last {stages} stages'}, " \
        f"{cfg.input_size} px, augment={cfg.augment})"
    if ddp.enabled and mode != "head":
        plan += f"; distributed over {ddp.describe()}, " \
                f"{len(part['train']) // ddp.world_size} training images each per epoch"
    print(f"task: {task.kind} ({len(task.classes)} "
          f"{'classes' if task.kind in SINGLE_LABEL else 'outputs'}); images: train "
          f"{len(part['train'])}, val {len(part['val'])}, test {len(part['test'])}; {plan}")

    # -- training -------------------------------------------------------------------------
    # Seeded again here: whether embeddings came from the cache or were computed (which
    # draws random numbers) must not change the head's initial weights or its dropout.
    seed_everything(cfg.seed)
    model = SkyModel(backbone.model, backbone.num_features, task, dropout=cfg.dropout)
    writer = _tensorboard(run_dir) if ddp.main else None
    log = _log_row(writer)
    last = run_dir / "weights" / "last.safetensors"
    resumable = resume is not None and last.is_file() and read_state(last).get("stage") == \
        "finetune"
    history: list[dict[str, Any]] = []
    if not resumable:
        history = head_stage(model, task, features, targets, part, cfg, log).history
    interrupted = False
    if mode != "head":
        unfreeze(model, mode, stages)
        try:
            history = finetune_stage(model, backbone.preprocess, task, dataset, part, cfg, device,
                                     run_dir, log, resumable, history, ddp).history
        except KeyboardInterrupt:
            interrupted = True
            print(f"\ninterrupted: the last finished epoch is saved in {last}; continue with "
                  f"skysort train --resume {run_dir}", file=sys.stderr)
            best = run_dir / "weights" / "best.safetensors"
            if best.is_file():
                history = read_state(last)["history"] if last.is_file() else history
                load_checkpoint(best, model, restore_rng=False)
    if not ddp.main:  # the first process saves and evaluates the model
        if interrupted:
            raise KeyboardInterrupt
        return TrainResult(run_dir=run_dir, metrics={}, history=history, main=False)
    _write_history(run_dir / "history.csv", history)
    plot_history(history, run_dir / "training_curves.png")
    if writer is not None:
        writer.close()

    info = ModelInfo(task=task, backbone=backbone.name, weights_id=backbone.weights_id,
                     num_features=backbone.num_features, preprocess=backbone.preprocess,
                     dropout=cfg.dropout, frozen_backbone=mode == "head",
                     id_column=dataset.id_column, target_columns=dataset.target_columns,
                     threshold=cfg.threshold,
                     extra={"balance": cfg.balance, "finetune": cfg.finetune,
                            "augment": cfg.augment, "embedding_key": key})
    model.to("cpu")
    save_model(model, info, run_dir)
    if interrupted:
        raise KeyboardInterrupt

    # -- test --------------------------------------------------------------------------------
    eval_split = "test" if len(part["test"]) else "val"
    chosen = part[eval_split]
    outputs, _ = model_outputs(model, info, [dataset.paths[i] for i in chosen],
                               cache_dir=cfg.cache_dir, workers=cfg.workers, device=device)
    metrics = task_metrics(task, targets[chosen], outputs, threshold=cfg.threshold,
                           derived_thresholds=cfg.derived_thresholds)
    metrics["split"] = eval_split
    write_metrics(run_dir / "metrics.json", metrics)
    plot_confusion(metrics, run_dir / "confusion_matrix.png")
    print(format_metrics(metrics, title=f"{eval_split} split: {metrics['n']} images"))
    return TrainResult(run_dir=run_dir, metrics=metrics, history=history,
                       bad_files={dataset.relpath(dataset.paths[i]): r for i, r in bad.items()})


def _tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional at run time
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


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


def _write_history(path: Path, history: list[dict[str, Any]]) -> None:
    if not history:
        return
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
