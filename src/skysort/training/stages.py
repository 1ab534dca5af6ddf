"""The two stages of training, each set up and handed to the one loop (:func:`fit`).

1. **head**: the classification head on cached embeddings, in seconds;
2. **fine-tune**: the head and the unfrozen blocks on augmented images, AdamW with lower
   learning rates for earlier layers (layer-wise decay), warm-up then cosine, an
   exponential moving average of the weights, early stopping, and a checkpoint after
   every epoch so ``--resume`` can continue a run that was stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import sys
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from skysort.config import TrainConfig
from skysort.data.augment import BatchAugment
from skysort.data.batches import warm_pixel_cache
from skysort.data.loader import EpochSampler, image_loader
from skysort.data.sources import LabeledImages
from skysort.data.transforms import Preprocess, create_transform
from skysort.device import cpu_count, default_workers
from skysort.errors import DataError
from skysort.models.model import SkyModel
from skysort.models.plan import ResolvedPlan, resolve_epochs
from skysort.rundir import LAST_CHECKPOINT, PLAN, WEIGHTS_DIR
from skysort.tasks import Task
from skysort.training.budget import Budget, EpochPlan, epoch_guard, plan_epochs
from skysort.training.checkpoint import load_checkpoint, read_state
from skysort.training.distributed import Distributed
from skysort.training.loop import Progress, Stage, fit, lr_lambda
from skysort.training.timing import measure_precision, time_step


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def head_stage(model: SkyModel, task: Task, features: np.ndarray, targets: np.ndarray,
               part: Mapping[str, np.ndarray], cfg: TrainConfig, log: Any) -> Progress:
    """Stage 1: the head on cached embeddings; the best weights stay in ``model.head``."""
    x_val = torch.from_numpy(features[part["val"]])
    train_targets = targets[part["train"]]
    y_val = task.target_tensor(targets[part["val"]])
    loss_fn = task.loss_fn(train_targets, cfg.balance, cfg.label_smoothing or 0.0)
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
    stage = Stage(model.head, model.head, batches, steps, validate, targets[part["val"]],
                  loss_fn, optimizer, scheduler, epochs=cfg.epochs, patience=cfg.patience,
                  batch_bars=False)
    return fit(stage, task, Progress("head"), threshold=cfg.threshold, log=log)


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
    times lower (timm's layer-decay groups; 1, the default: all at ``finetune_lr``), no
    weight decay on biases and norms."""
    from timm.optim._param_groups import param_groups_layer_decay

    groups = param_groups_layer_decay(model.backbone, weight_decay=cfg.finetune_weight_decay,
                                      layer_decay=cfg.layer_decay)
    for group in groups:
        group["lr"] = cfg.finetune_lr * group.pop("lr_scale", 1.0)
    groups.append({"params": list(model.head.parameters()), "lr": cfg.finetune_lr,
                   "weight_decay": cfg.finetune_weight_decay})
    return torch.optim.AdamW(groups, lr=cfg.finetune_lr)


@dataclass
class _Batches:
    """Where fine-tuning's batches come from, and how the cores are shared out."""

    sampler: EpochSampler
    loader: Any
    val_loader: Any
    augment: BatchAugment
    whole_batches: bool
    cores: int
    workers: int
    threads: int


def finetune_stage(model: SkyModel, preprocess: Preprocess, task: Task, data: LabeledImages,
                   part: Mapping[str, np.ndarray], cfg: TrainConfig, device: torch.device,
                   run_dir: Path, log: Any, resume: bool, head_history: list[dict[str, Any]],
                   ddp: Distributed, cache: Path | None = None,
                   budget: Budget | None = None) -> Progress:
    """Stage 2: head and unfrozen blocks on augmented images, checkpointed every epoch.
    The returned history holds both stages. In a distributed run each process trains on
    its share of every epoch and gradients are averaged (:mod:`skysort.training.distributed`).

    Every image is decoded once into the pixel cache ``cache``
    (:func:`~skysort.models.plan.pixel_cache`; the embedding pass fills it as it decodes);
    epochs then read uint8 squares from it in this process, augment whole batches in torch
    (:class:`~skysort.data.augment.BatchAugment`) and give every core this process may
    use to the model: no worker competes with its threads.

    With a time ``budget`` the epochs are planned to end within it
    (:mod:`skysort.training.budget`); when not one fits, nothing is fine-tuned and the
    returned history is the head's.
    """
    seed_everything(cfg.seed + 1)  # a resumed run restores the generators' saved state
    targets = data.targets
    train_targets = targets[part["train"]]
    feed = _setup_batches(preprocess, task, data, part, cfg, ddp, cache)
    y_val = task.target_tensor(targets[part["val"]]).to(device)
    loss_fn = task.loss_fn(train_targets, cfg.balance, cfg.label_smoothing or 0.0)
    model.to(device).to(memory_format=torch.channels_last)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(feed.threads)
    autocast, plan = _setup_precision(model, task, cfg, device, loss_fn, preprocess.input_size,
                                      run_dir, resume, ddp, feed, cache)

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        feed.sampler.epoch = epoch
        for index, images, _ in feed.loader:
            if images is None:
                continue
            x = feed.augment(images, [(epoch, int(i)) for i in index]).to(device)
            yield x, task.target_tensor(train_targets[index.numpy()]).to(device)

    def validate(net: nn.Module) -> tuple[float, np.ndarray]:
        net.eval()
        logits = torch.zeros(len(part["val"]), task.num_outputs, device=device)
        with torch.inference_mode():
            for index, images, _ in feed.val_loader:
                if images is not None:
                    x = images.to(device).contiguous(memory_format=torch.channels_last)
                    with torch.autocast(device.type, dtype=autocast or torch.bfloat16,
                                        enabled=autocast is not None):
                        logits[index.to(device)] = net(x).float()
            return float(loss_fn(logits, y_val)), model.output(logits).cpu().numpy()

    steps = (len(feed.sampler) // cfg.finetune_batch_size if feed.whole_batches
             else math.ceil(len(feed.sampler) / cfg.finetune_batch_size))
    optimizer = finetune_optimizer(model, cfg)
    wanted = cfg.finetune_epochs or resolve_epochs(cfg.finetune, None, len(part["train"]))[0]
    cfg = dataclasses.replace(cfg, finetune_epochs=wanted)
    schedule = lr_lambda(cfg.finetune_warmup_epochs * steps, wanted * steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    ema = _setup_ema(model, cfg)
    progress = _setup_progress(model, optimizer, scheduler, ema, run_dir, resume, head_history)
    epochs, guard = wanted, None
    if budget is not None:
        epochs = _plan_budget(budget, plan, progress, model, task, loss_fn, cfg, autocast,
                              preprocess.input_size, len(feed.sampler), part, ddp, wanted)
        schedule.total_steps = min(schedule.total_steps, epochs * steps)
        guard = epoch_guard(budget, EpochPlan(**plan["time"]["plan"]), schedule, steps,
                            wanted, ddp.broadcast)
    if ddp.main:
        (run_dir / PLAN).write_text(json.dumps(plan, indent=2), encoding="utf-8")
    if epochs <= progress.epoch:  # the budget leaves no time for an epoch
        torch.set_num_threads(previous_threads)
        return progress
    # Every process validates the whole split and so keeps the same best weights; only
    # the first writes checkpoints. With a budget its guard ends the stage (it may
    # lengthen the schedule up to the settings' epochs).
    stage = Stage(model, ddp.wrap(model), batches, steps, validate, targets[part["val"]],
                  loss_fn, optimizer, scheduler, epochs=wanted if guard else epochs,
                  patience=cfg.finetune_patience, autocast=autocast, ema=ema,
                  checkpoint_dir=run_dir / WEIGHTS_DIR if ddp.main else None,
                  before_epoch=guard)
    try:
        return fit(stage, task, progress, threshold=cfg.threshold, log=log)
    finally:
        torch.set_num_threads(previous_threads)


def _plan_budget(budget: Budget, plan: dict[str, Any], progress: Progress, model: SkyModel,
                 task: Task, loss_fn: Any, cfg: TrainConfig, autocast: torch.dtype | None,
                 size: int, n_train: int, part: Mapping[str, np.ndarray], ddp: Distributed,
                 wanted: int) -> int:
    """The epoch fine-tuning ends after within ``budget``; the plan and its reasons are
    added to ``plan`` (``finetune_plan.json``) and said. A resumed run first counts what
    its earlier start spent: the time before fine-tuning and its finished epochs."""
    done = [r["time_s"] for r in progress.history if r["stage"] == "finetune"]
    earlier = plan.get("time", {})
    if progress.epoch and "before_finetune_s" in earlier:
        budget.spent_before(earlier["before_finetune_s"] + sum(done))
    step_s = plan["seconds_per_image"].get("bf16" if autocast is not None else "fp32") or \
        time_step(model, task, loss_fn, size, min(16, cfg.finetune_batch_size), autocast)
    epoch_plan = ddp.broadcast(plan_epochs(
        budget, wanted, progress.epoch, step_s, n_train, len(part["val"]),
        len(part["val"]) + len(part["test"])))
    print(epoch_plan.why, file=sys.stderr)
    if epoch_plan.epochs < wanted:
        budget.notes.append(epoch_plan.reason)
    plan["time"] = {"setting": budget.setting, "seconds": budget.seconds,
                    "before_finetune_s": earlier.get("before_finetune_s", budget.elapsed()),
                    "step_s_per_image": step_s, "plan": asdict(epoch_plan)}
    return epoch_plan.epochs


def _setup_batches(preprocess: Preprocess, task: Task, data: LabeledImages,
                   part: Mapping[str, np.ndarray], cfg: TrainConfig, ddp: Distributed,
                   cache: Path | None) -> _Batches:
    """The loaders of the training split (this process's share, whole batches where there
    are enough) and of the validation split. With a pixel cache, what the embedding pass
    did not fill is decoded into it first and batches are read in this process; without
    one, decoding workers take one core less than there are."""
    train_paths = [data.paths[i] for i in part["train"]]
    val_paths = [data.paths[i] for i in part["val"]]
    cores = cpu_count()
    pixels = create_transform(preprocess, training=True, cache_dir=cache)
    workers = cfg.workers
    if cache is not None:
        decoders = default_workers() if cfg.workers is None else cfg.workers
        # bad files: skipped below; the folder then trimmed to cache_max_gb (the estimate
        # that made room for the data may have fallen short), never these splits' files
        warm_pixel_cache(pixels, train_paths + val_paths, decoders,
                         max_bytes=cfg.cache_max_gb * 1e9)
        workers = 0 if cfg.workers is None else cfg.workers
    elif workers is None:
        workers = min(default_workers(), max(1, cores - 1)) if cores > 1 else 0
    train_targets = data.targets[part["train"]]
    weights = task.sample_weights(train_targets) if cfg.balance == "sampler" else None
    sampler = EpochSampler(len(train_paths), cfg.seed, weights, rank=ddp.rank,
                           world_size=ddp.world_size)
    augment = BatchAugment(preprocess, cfg.augment, cfg.seed)
    whole_batches = len(sampler) >= 2 * cfg.finetune_batch_size
    loader = image_loader(train_paths, pixels, batch_size=cfg.finetune_batch_size,
                          workers=workers, sampler=sampler, drop_last=whole_batches,
                          generator=torch.Generator().manual_seed(cfg.seed))
    val_loader = image_loader(val_paths, create_transform(preprocess, cache_dir=cache),
                              batch_size=cfg.finetune_batch_size, workers=workers)
    return _Batches(sampler, loader, val_loader, augment, whole_batches, cores, workers,
                    threads=max(1, cores - workers))


def _setup_precision(model: SkyModel, task: Task, cfg: TrainConfig, device: torch.device,
                     loss_fn: Any, size: int, run_dir: Path, resume: bool, ddp: Distributed,
                     feed: _Batches, cache: Path | None
                     ) -> tuple[torch.dtype | None, dict[str, Any]]:
    """The autocast dtype: the one a resumed run started with, else measured
    (:func:`~skysort.training.timing.measure_precision`); and the plan to write to
    ``finetune_plan.json`` with it and the share of the cores; says both on stderr."""
    plan = read_plan(run_dir) if resume else {}
    if "precision" in plan:  # a resumed run keeps the precision it started with
        autocast = torch.bfloat16 if plan["precision"] == "bf16" else None
        plan.setdefault("seconds_per_image", {})
    else:
        autocast, timings, why = measure_precision(model, task, cfg, device, loss_fn, size)
        autocast = ddp.broadcast(autocast)
        plan = {"cores": feed.cores, "threads": feed.threads, "workers": feed.workers,
                "pixel_cache": str(cache) if cache else None,
                "precision": "bf16" if autocast is not None else "fp32",
                "precision_why": why, "seconds_per_image": timings,
                "recipe": ResolvedPlan.read(run_dir).recipe}
    print(f"{feed.cores} core(s): {feed.threads} training thread(s), "
          + (f"{feed.workers} decoding worker(s)" if feed.workers
             else "decoding from the pixel cache" if cache else "decoding in this process")
          + f"; {plan.get('precision_why', plan['precision'])}", file=sys.stderr)
    return autocast, plan


def _setup_ema(model: SkyModel, cfg: TrainConfig) -> Any:
    """timm's exponential moving average of the weights, or None for ``ema_decay=0``."""
    from timm.utils import ModelEmaV3  # with timm's model zoo: imported only to fine-tune

    return ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True) if cfg.ema_decay else None


def _setup_progress(model: SkyModel, optimizer: torch.optim.Optimizer, scheduler: Any,
                    ema: Any, run_dir: Path, resume: bool, head_history: list[dict[str, Any]]
                    ) -> Progress:
    """Where fine-tuning starts: after the head's epochs, or, resuming, after the last
    finished epoch of ``last.safetensors`` (weights, optimizer, schedule, EMA, generators)."""
    progress = Progress("finetune", history=list(head_history))
    last = run_dir / WEIGHTS_DIR / LAST_CHECKPOINT
    if resume and last.is_file() and read_state(last).get("stage") == "finetune":
        progress = Progress(**load_checkpoint(
            last, model, optimizer, scheduler,
            extra={"ema": ema.module} if ema is not None else None))
        print(f"resuming fine-tuning after epoch {progress.epoch} from {last}", file=sys.stderr)
    return progress


def read_plan(run_dir: Path) -> dict[str, Any]:
    """What an earlier start of this run chose (``finetune_plan.json``), or nothing."""
    try:
        plan = json.loads((run_dir / PLAN).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return plan if isinstance(plan, dict) else {}
