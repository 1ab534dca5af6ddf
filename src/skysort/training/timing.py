"""Measured training steps: the precision fine-tuning runs in, and the step time a time
budget plans with (:mod:`skysort.training.budget`)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from skysort.config import TrainConfig
from skysort.device import resolve_precision
from skysort.models.model import SkyModel
from skysort.tasks import Task

#: ``precision=auto`` takes bfloat16 over float32 only when its measured training step is
#: at least this many times faster. A change of numerics changes the model, so it must
#: not hang on a coin flip of timings: two default runs of one command on one machine
#: timed bfloat16 at 0.95x and 1.10x float32 and trained different models; a real gain
#: (bfloat16 on AMX at 224 px) is well above this margin.
BF16_MARGIN = 1.25


def time_step(model: SkyModel, task: Task, loss_fn: Any, size: int, batch: int,
              autocast: torch.dtype | None, repeats: int = 3) -> float:
    """Seconds per image of a forward and backward pass of ``model`` at ``size`` px in
    ``autocast`` (None: float32), the fastest of ``repeats`` after one to warm up.
    Weights, batch-norm statistics and random generators are left as they were; the
    gradients are cleared."""
    images = torch.zeros(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    shape, dtype = ((batch,), np.int64) if task.single_label else \
        ((batch, task.num_outputs), np.float32)
    targets = task.target_tensor(np.zeros(shape, dtype=dtype))
    device = next(model.parameters()).device
    images, targets = images.to(device), targets.to(device)
    was_training = model.training
    model.eval()  # batch norms must not learn from zeros
    runs = []
    with torch.random.fork_rng():
        for _ in range(repeats + 1):
            start = time.perf_counter()
            with torch.autocast(device.type, dtype=autocast or torch.bfloat16,
                                enabled=autocast is not None):
                loss = loss_fn(model(images).float(), targets)
            loss.backward()
            runs.append(time.perf_counter() - start)
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return min(runs[1:]) / batch


def measure_precision(model: SkyModel, task: Task, cfg: TrainConfig, device: torch.device,
                      loss_fn: Any, size: int
                      ) -> tuple[torch.dtype | None, dict[str, float], str]:
    """``(autocast dtype, seconds per image measured, why)``. ``precision=auto``: where
    the processor has native bfloat16, times a few forward and backward passes of the
    actual model at the actual input size in float32 and in bfloat16, and takes bfloat16
    only when it is :data:`BF16_MARGIN` times faster."""
    native = resolve_precision(cfg.precision, device)
    if cfg.precision != "auto":
        return native, {}, f"precision={cfg.precision} as set"
    if native is None:
        return None, {}, "fp32: this processor has no native bf16"
    if device.type != "cpu":
        return native, {}, f"bf16: native on {device.type}"
    batch = min(8, cfg.finetune_batch_size)
    timings = {name: time_step(model, task, loss_fn, size, batch, dtype)
               for name, dtype in (("fp32", None), ("bf16", torch.bfloat16))}
    ratio = timings["fp32"] / timings["bf16"]
    chosen = torch.bfloat16 if ratio >= BF16_MARGIN else None
    why = (f"{'bf16' if chosen else 'fp32'}: bf16 measured {ratio:.2f}x fp32's speed, "
           f"{'at least' if chosen else 'under'} the {BF16_MARGIN}x a change of numerics "
           f"needs; pin it with precision={'bf16' if chosen else 'fp32'}")
    return chosen, timings, why
