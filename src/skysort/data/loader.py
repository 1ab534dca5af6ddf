"""Decoding and preprocessing image files in worker processes.

:class:`ImageFiles` is a torch ``Dataset`` over paths that never raises for a bad file:
it yields the error message instead, so a batch with one damaged image still runs and
the caller lists the file in ``bad_files.csv``. Images are decoded when asked for, never
held in memory as a whole dataset.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from skysort.errors import ImageError

Transform = Callable[[Path], np.ndarray]


class ImageFiles(Dataset):
    """``(index, array or None, error or "")`` for each path."""

    def __init__(self, paths: Sequence[Path], transform: Transform) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, str]:
        try:
            return index, self.transform(self.paths[index]), ""
        except ImageError as exc:
            return index, None, str(exc).removeprefix(f"{self.paths[index]}: ")


def collate_images(items: list[tuple[int, np.ndarray | None, str]]
                   ) -> tuple[torch.Tensor, torch.Tensor | None, list[tuple[int, str]]]:
    """Stacks the good images of a batch; returns (their indices, images, bad (index, why))."""
    good = [(i, a) for i, a, _ in items if a is not None]
    bad = [(i, e) for i, a, e in items if a is None]
    index = torch.tensor([i for i, _ in good], dtype=torch.long)
    images = torch.from_numpy(np.stack([a for _, a in good])) if good else None
    return index, images, bad


def default_workers() -> int:
    """Decoding processes: one per core, at most 8, none on a one-core machine."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(8, cores or 1) if (cores or 1) > 1 else 0


def image_loader(paths: Sequence[Path], transform: Transform, batch_size: int,
                 workers: int | None = None, **kwargs: Any) -> DataLoader:
    """A DataLoader of ``(indices, images, bad)`` batches over ``paths``, in order."""
    workers = default_workers() if workers is None else workers
    return DataLoader(
        ImageFiles(paths, transform),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_images,
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
        **kwargs,
    )
