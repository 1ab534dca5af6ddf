"""The one training loop, for both stages: step, validate, keep the best, checkpoint, log.

A :class:`Stage` says what is trained on what (the head on cached embeddings, or the
network on augmented images) and for how long; :func:`fit` runs it, and a
:class:`Progress` records where it stands, which is what a checkpoint saves and a
resumed run restores.
"""

from __future__ import annotations

import csv
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from skysort.rundir import BEST_CHECKPOINT, LAST_CHECKPOINT, WEIGHTS_DIR
from skysort.tasks import Task
from skysort.training.checkpoint import load_checkpoint, read_state, save_checkpoint

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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


@dataclass
class Stage:
    """One stage of training: what is trained, on which batches, and for how long.

    Attributes:
        model: what is saved (the whole classifier, or the head alone).
        trainable: what is called on a batch; its frozen parts stay in eval mode.
        batches: ``batches(epoch)`` yields ``(inputs, targets)``; ``steps`` of them.
        validate: ``validate(module)`` returns the validation loss and published outputs.
        val_targets: the validation targets, for the task's headline score.
        monitor: ``"loss"`` (lower is better) or ``"score"`` (the task's headline).
        autocast: the autocast dtype (bfloat16), or None for float32.
        ema: an exponential moving average of the weights (timm's ``ModelEmaV3``), updated
            after every step; it is what is validated and kept as the best weights.
        checkpoint_dir: where ``last.safetensors`` and ``best.safetensors`` go; None
            keeps the best weights in memory only.
        batch_bars: a progress bar per epoch over its batches (with its ETA); else one
            bar over the epochs.
        before_epoch: called with the progress before every epoch; a true answer ends
            the stage there (a time budget, :mod:`skysort.training.budget`).
    """

    model: nn.Module
    trainable: nn.Module
    batches: Callable[[int], Iterable[Any]]
    steps: int
    validate: Callable[[nn.Module], tuple[float, np.ndarray]]
    val_targets: np.ndarray
    loss_fn: LossFn
    optimizer: torch.optim.Optimizer
    scheduler: Any
    epochs: int
    patience: int
    monitor: str = "loss"
    autocast: torch.dtype | None = None
    ema: Any = None
    checkpoint_dir: Path | None = None
    batch_bars: bool = True
    before_epoch: Callable[[Progress], bool] | None = None


@dataclass
class WarmupCosine:
    """The learning-rate factor at a step: a linear warm-up to the base rate, then a
    cosine decay to zero at ``total_steps``. An object, not a closure, so that a time
    budget can end the schedule sooner (``total_steps`` is changed) and a checkpoint
    keeps the change (``LambdaLR.state_dict`` holds the object's fields)."""

    warmup_steps: int
    total_steps: int

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def lr_lambda(warmup_steps: int, total_steps: int) -> WarmupCosine:
    """Linear warm-up to the base rate, then cosine decay to zero."""
    return WarmupCosine(warmup_steps, total_steps)


class CtrlC:
    """Notes a Ctrl-C (SIGINT) as well as raising KeyboardInterrupt as Python does, so
    that :meth:`check` raises it again where the first was swallowed: Python ignores an
    exception raised in its at-fork hooks, which a Ctrl-C hits when it arrives while a
    DataLoader starts its worker processes. Only the main thread can set the handler;
    elsewhere this does nothing."""

    def __init__(self) -> None:
        self.pressed = False
        self._old: Any = None

    def __enter__(self) -> CtrlC:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)

    def _handler(self, signum: int, frame: Any) -> None:
        self.pressed = True
        if callable(self._old):
            self._old(signum, frame)
        elif self._old != signal.SIG_IGN:
            raise KeyboardInterrupt

    def check(self) -> None:
        """Raises KeyboardInterrupt if a Ctrl-C came (and was not acted on)."""
        if self.pressed:
            raise KeyboardInterrupt


def fit(stage: Stage, task: Task, progress: Progress, *, threshold: float = 0.5,
        log: Callable[[dict[str, Any]], None] | None = None) -> Progress:
    """Runs ``stage`` from ``progress``: step through the batches, validate, keep the best,
    checkpoint, log; stop early after ``patience`` epochs without improvement. The model
    ends with the best epoch's weights."""
    s = stage
    best_state: dict[str, torch.Tensor] | None = None
    weights = s.checkpoint_dir
    if weights:
        weights.mkdir(exist_ok=True)
        if progress.epoch == 0:  # a best epoch of an earlier start is none of this one's
            (weights / BEST_CHECKPOINT).unlink(missing_ok=True)
    epoch_bar = tqdm(total=s.epochs, initial=progress.epoch, unit="epoch", dynamic_ncols=True,
                     desc=f"training {progress.stage}", disable=s.batch_bars, mininterval=1)
    with CtrlC() as ctrl_c:  # a Ctrl-C that a forking worker swallowed still stops
        for epoch in range(progress.epoch, s.epochs):
            if progress.stale >= s.patience or (s.before_epoch and s.before_epoch(progress)):
                break
            start = time.perf_counter()
            s.trainable.train()
            freeze_norms(s.trainable)
            total, seen = 0.0, 0
            bar = tqdm(s.batches(epoch), total=s.steps, unit="batch", dynamic_ncols=True,
                       desc=f"{progress.stage} {epoch + 1}/{s.epochs}", leave=False,
                       disable=not s.batch_bars, mininterval=1)
            for step, (inputs, targets) in enumerate(bar):
                with torch.autocast(inputs.device.type, dtype=s.autocast or torch.bfloat16,
                                    enabled=s.autocast is not None):
                    loss = s.loss_fn(s.trainable(inputs).float(), targets)
                s.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                s.optimizer.step()
                s.scheduler.step()
                if s.ema is not None:
                    s.ema.update(s.model, step=epoch * s.steps + step)
                ctrl_c.check()
                total += loss.item() * len(inputs)
                seen += len(inputs)
                bar.set_postfix(loss=f"{total / seen:.4f}", refresh=False)
            bar.close()
            kept = s.ema.module if s.ema is not None else s.model
            val_loss, outputs = s.validate(kept)
            ctrl_c.check()
            name, score, _ = task.headline(task.metrics(s.val_targets, outputs,
                                                        threshold=threshold))
            row = {"stage": progress.stage, "epoch": epoch + 1, "train_loss": total / max(seen, 1),
                   "val_loss": val_loss, f"val_{name}": score,
                   "lr": s.optimizer.param_groups[-1]["lr"], "time_s": time.perf_counter() - start}
            progress.history.append(row)
            epoch_bar.update()
            epoch_bar.set_postfix(val_loss=f"{val_loss:.4f}")
            if log:
                log(row)
            # Lower is better: the loss, an RMSE, or a score with its sign turned.
            if s.monitor == "loss" or score is None:
                value = val_loss
            else:
                value = score if task.lower_is_better else -score
            improved = progress.best is None or value < progress.best - 1e-6
            progress.epoch = epoch + 1
            if improved:
                progress.best, progress.stale = value, 0
                if weights:
                    save_checkpoint(weights / BEST_CHECKPOINT, kept, state=progress.to_dict())
                else:
                    best_state = {k: v.detach().clone() for k, v in kept.state_dict().items()}
            else:
                progress.stale += 1
            if weights:
                save_checkpoint(weights / LAST_CHECKPOINT, s.model, s.optimizer, s.scheduler,
                                progress.to_dict(),
                                extra={"ema": s.ema.module} if s.ema is not None else None)
    epoch_bar.close()
    if weights and (weights / BEST_CHECKPOINT).is_file():
        load_checkpoint(weights / BEST_CHECKPOINT, s.model, restore_rng=False)
    elif best_state is not None:
        s.model.load_state_dict(best_state)
    return progress


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of what a stage can change: the trainable weights and every buffer (the
    frozen weights stay as they are)."""
    kept = {n for n, p in model.named_parameters() if p.requires_grad}
    kept |= {n for n, _ in model.named_buffers()}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k in kept}


def keep_validated(model: nn.Module, run_dir: Path, history: list[dict[str, Any]],
                   before: dict[str, torch.Tensor] | None) -> list[dict[str, Any]]:
    """After Ctrl-C while fine-tuning: says how to resume and leaves ``model`` with
    validated weights: the best finished epoch's (``best.safetensors``), or when no epoch
    finished, ``before`` (:func:`trainable_state` of the head stage's model), never the
    half-updated ones. Returns the history the last checkpoint holds, or ``history``."""
    last, best = run_dir / WEIGHTS_DIR / LAST_CHECKPOINT, run_dir / WEIGHTS_DIR / BEST_CHECKPOINT
    if best.is_file():
        print(f"\ninterrupted: the last finished epoch is saved in {last}; continue with "
              f"skysort train --resume {run_dir}", file=sys.stderr)
        load_checkpoint(best, model, restore_rng=False)
        return list(read_state(last)["history"]) if last.is_file() else history
    print("\ninterrupted before the first fine-tuning epoch finished: the head stage's "
          f"model is kept; fine-tune again with skysort train --resume {run_dir}",
          file=sys.stderr)
    if before is not None:
        model.load_state_dict(before, strict=False)
    return history


def freeze_norms(module: nn.Module) -> None:
    """Batch norms keep their pretrained running statistics while fine-tuning: batches of
    32 on a CPU estimate them poorly, and the head warmed up on features computed with
    them (their scale and shift still learn)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def log_row(writer: Any) -> Callable[[dict[str, Any]], None]:
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


def write_history(path: Path, history: list[dict[str, Any]]) -> None:
    """``history.csv``: one row per epoch of both stages."""
    if not history:
        return
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    with open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
