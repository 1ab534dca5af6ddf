"""Training on several processes or GPUs with torch DistributedDataParallel.

``torchrun --nproc_per_node N -m skysort train DATA`` (or any launcher that sets
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``) starts N copies of the same training run.
:meth:`Distributed.from_env` joins them into one process group (NCCL on GPUs, gloo on
CPUs) and everything else follows from it:

* process 0 makes the run directory and writes every file in it; the others read it;
* process 0 computes the embeddings first and the others then read them from the cache;
* the head is trained on every process alike (seconds, and the same seed gives the same
  weights everywhere);
* fine-tuning splits each epoch's images evenly between the processes and averages the
  gradients (DDP); each process takes ``finetune_batch_size`` images per step, so the
  batch of one step is N times larger;
* every process validates the whole validation split, so all of them stop early at
  the same epoch without exchanging anything more;
* only process 0 prints, checkpoints, saves the model and evaluates it.

Without those variables (or with ``WORLD_SIZE=1``) nothing changes.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn

T = TypeVar("T")


@dataclass(frozen=True)
class Distributed:
    """This process's place in the process group (a group of one when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @classmethod
    def from_env(cls, device: torch.device) -> Distributed:
        """Joins the process group a launcher such as ``torchrun`` describes in the
        environment; a group of one when there is none."""
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls()
        import torch.distributed as dist

        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        if not dist.is_initialized():
            dist.init_process_group(backend)
        return cls(dist.get_rank(), dist.get_world_size(),
                   int(os.environ.get("LOCAL_RANK", "0")), backend)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Whether this is the process that writes files and prints."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """This process's own GPU (by its local rank) when training on GPUs."""
        if self.enabled and device.type == "cuda" and device.index is None:
            return torch.device("cuda", self.local_rank)
        return device

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def broadcast(self, value: T) -> T:
        """Process 0's ``value``, on every process."""
        if not self.enabled:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Process 0 runs the block first (filling a cache); the others after it."""
        if not self.main:
            self.barrier()
        yield
        if self.main:
            self.barrier()

    @contextlib.contextmanager
    def quiet_unless_main(self) -> Iterator[None]:
        """Silences the printing and progress bars of every process but process 0."""
        if self.main:
            yield
            return
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` with gradients averaged across the group (itself when alone)."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device = next(model.parameters()).device
        return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda"
                                       else None)

    def close(self) -> None:
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    def describe(self) -> str:
        return f"{self.world_size} processes ({self.backend})" if self.enabled else ""
