"""Decoding and preprocessing image files in worker processes.

:class:`ImageFiles` is a torch ``Dataset`` over paths that never raises for a bad file:
it yields the error message instead, so a batch with one damaged image still runs and
the caller lists the file in ``bad_files.csv``. Images are decoded when asked for, never
held in memory as a whole dataset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from skysort.data.images import read_or_reason
from skysort.device import default_workers


class ImageFiles(Dataset):
    """``(index, array or None, error or "")`` for each path.

    Indexed by an int (evaluation), or by ``(index, epoch)`` from :class:`EpochSampler`
    (training), in which case the transform gets ``(path, (epoch, index))`` so that its
    random augmentation is fixed by the seed, the epoch and the image.
    """

    def __init__(self, paths: Sequence[Path], transform: Callable[..., np.ndarray]) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[int, np.ndarray | None, str]:
        if isinstance(item, int):
            return (item, *read_or_reason(self.transform, self.paths[item]))
        index, epoch = item
        return (index, *read_or_reason(lambda p: self.transform(p, (epoch, index)),
                                       self.paths[index]))


def shard(order: list[Any], rank: int, world_size: int) -> list[Any]:
    """This process's share of an epoch's order: every ``world_size``-th item from
    ``rank``, after dropping the few at the end that would make the shares unequal (each
    process of a distributed run must take the same number of steps)."""
    usable = len(order) // world_size * world_size
    return order[:usable][rank::world_size]


class EpochSampler(Sampler):
    """``(index, epoch)`` pairs in an order fixed by ``(seed, epoch)``: a permutation, or
    draws with replacement by ``weights`` (balanced sampling). Set :attr:`epoch` before
    each epoch; resuming at epoch k replays exactly the order of an uninterrupted run.
    In a distributed run each process takes its equal share of that order
    (:func:`shard`)."""

    def __init__(self, n: int, seed: int, weights: np.ndarray | None = None, *,
                 rank: int = 0, world_size: int = 1) -> None:
        self.n, self.seed, self.epoch = n, seed, 0
        self.rank, self.world_size = rank, world_size
        # Normalised in float64: float32 weights summed in float32 miss 1 by enough for
        # numpy's choice() to refuse them (a crash with a few thousand images).
        w = None if weights is None else np.asarray(weights, dtype=np.float64)
        self.weights = None if w is None else w / w.sum()

    def __len__(self) -> int:
        return self.n // self.world_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = (rng.permutation(self.n) if self.weights is None
                 else rng.choice(self.n, size=self.n, replace=True, p=self.weights))
        return iter([(int(i), self.epoch) for i in shard(order.tolist(), self.rank,
                                                         self.world_size)])


def collate_images(items: list[tuple[int, np.ndarray | None, str]]
                   ) -> tuple[torch.Tensor, torch.Tensor | None, list[tuple[int, str]]]:
    """Stacks the good images of a batch; returns (their indices, images, bad (index, why))."""
    good = [(i, a) for i, a, _ in items if a is not None]
    bad = [(i, e) for i, a, e in items if a is None]
    index = torch.tensor([i for i, _ in good], dtype=torch.long)
    images = torch.from_numpy(np.stack([a for _, a in good])) if good else None
    return index, images, bad


def image_loader(paths: Sequence[Path], transform: Callable[..., np.ndarray], batch_size: int,
                 workers: int | None = None, sampler: Sampler | None = None,
                 **kwargs: Any) -> DataLoader:
    """A DataLoader of ``(indices, images, bad)`` batches over ``paths``: in order, or in
    the order of ``sampler`` (an :class:`EpochSampler` for training)."""
    workers = default_workers() if workers is None else workers
    return DataLoader(
        ImageFiles(paths, transform),
        batch_size=batch_size,
        shuffle=False,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_images,
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
        **kwargs,
    )
