"""The two stages of training, each set up and handed to the one loop (:func:`fit`).

1. **head**: the classification head on cached embeddings, in seconds;
2. **fine-tune**: the head and the unfrozen blocks on augmented images, AdamW with lower
   learning rates for earlier layers (layer-wise decay), warm-up then cosine, an
   exponential moving average of the weights, early stopping, and a checkpoint after
   every epoch so ``--resume`` can continue a run that was stopped.
"""

from __future__ import annotations

import math
import random
import re
import statistics
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from skysort.config import TrainConfig
from skysort.data.images import image_size, read_or_reason
from skysort.data.loader import EpochSampler, image_loader
from skysort.data.sources import LabeledImages
from skysort.data.transforms import Preprocess, create_transform
from skysort.device import resolve_precision
from skysort.errors import DataError
from skysort.models.embeddings import default_cache_dir
from skysort.models.model import SkyModel
from skysort.rundir import LAST_CHECKPOINT, WEIGHTS_DIR
from skysort.tasks import Task
from skysort.training.checkpoint import load_checkpoint, read_state
from skysort.training.distributed import Distributed
from skysort.training.loop import Progress, Stage, fit, lr_lambda

#: With fewer training images than this, ``finetune=auto`` trains the head only.
AUTO_FINETUNE_MIN_IMAGES = 200


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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
    the backbone's native size. Sizes are read by the image reader, FITS files included;
    unreadable files are left out here and reported when they are decoded.
    """
    if cfg.input_size:
        return cfg.input_size
    if mode == "head":
        return native
    rng = np.random.default_rng(0)
    sample = rng.choice(len(data), size=min(64, len(data)), replace=False)
    sizes = [read_or_reason(image_size, data.paths[i])[0] for i in sample]
    sides = [min(size) * cfg.center_fraction for size in sizes if size is not None]
    if not sides:
        return native
    size = 32 * round(statistics.median(sides) / 32)
    return int(min(native, max(96, size)))


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
    its share of every epoch and gradients are averaged (:mod:`skysort.training.distributed`)."""
    seed_everything(cfg.seed + 1)  # a resumed run restores the generators' saved state
    targets = data.targets
    train_paths = [data.paths[i] for i in part["train"]]
    train_targets = targets[part["train"]]
    weights = task.sample_weights(train_targets) if cfg.balance == "sampler" else None
    sampler = EpochSampler(len(train_paths), cfg.seed, weights, rank=ddp.rank,
                           world_size=ddp.world_size)
    resized_cache = Path(cfg.cache_dir or default_cache_dir()) / "resized"
    augment = create_transform(preprocess, training=True, augment=cfg.augment, seed=cfg.seed,
                               cache_dir=resized_cache)
    whole_batches = len(sampler) >= 2 * cfg.finetune_batch_size
    loader = image_loader(train_paths, augment, batch_size=cfg.finetune_batch_size,
                          workers=cfg.workers, sampler=sampler, drop_last=whole_batches,
                          generator=torch.Generator().manual_seed(cfg.seed))
    val_loader = image_loader([data.paths[i] for i in part["val"]],
                              create_transform(preprocess, cache_dir=resized_cache),
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
    last = run_dir / WEIGHTS_DIR / LAST_CHECKPOINT
    if resume and last.is_file() and read_state(last).get("stage") == "finetune":
        progress = Progress(**load_checkpoint(
            last, model, optimizer, scheduler,
            extra={"ema": ema.module} if ema is not None else None))
        print(f"resuming fine-tuning after epoch {progress.epoch} from {last}", file=sys.stderr)
    # Every process validates the whole split and so keeps the same best weights; only
    # the first writes checkpoints.
    stage = Stage(model, ddp.wrap(model), batches, steps, validate, targets[part["val"]],
                  loss_fn, optimizer, scheduler, epochs=cfg.finetune_epochs,
                  patience=cfg.finetune_patience, autocast=autocast, ema=ema,
                  checkpoint_dir=run_dir / WEIGHTS_DIR if ddp.main else None)
    return fit(stage, task, progress, threshold=cfg.threshold, log=log)
