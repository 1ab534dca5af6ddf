"""Streams of image files decoded in worker processes, a few batches ahead, in order.

:class:`BatchDecoder` turns a stream of paths (of any length: a generator is never made
into a list) into batches of uint8 crops, decoded in worker processes ahead of their use
and returned in input order; :func:`ordered_map` is the machinery, which also runs any
other per-batch work in the workers (an exported model, :mod:`skysort.models.runners`).
Memory stays flat however long the stream is, and a file that cannot be read becomes a
reason, never an exception.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from itertools import islice
from pathlib import Path
from typing import TypeVar

import numpy as np

from skysort.data.fingerprinting import keep_fingerprints
from skysort.data.images import file_digest, read_or_reason
from skysort.data.transforms import EvalTransform, TrainPixels, evict_pixel_cache, touch
from skysort.device import default_workers

#: ``(uint8 crops of the readable files or None, their positions, reason per other file)``
Decoded = tuple[np.ndarray | None, list[int], dict[int, str]]

CRASHED = "the decoder process crashed on this batch"


def decode_chunk(transform: EvalTransform, paths: Sequence[Path]) -> Decoded:
    """uint8 crops of the readable files, their positions in ``paths``, and the reason
    each other file could not be read; with a
    :class:`~skysort.data.fingerprinting.FingerprintingPreprocess`, the fingerprints of
    the files it decoded are then put into the fingerprint cache."""
    crops, good, bad = [], [], {}
    for i, path in enumerate(paths):
        crop, why = read_or_reason(transform.pixels, path)
        if crop is None:
            bad[i] = why
        else:
            crops.append(crop)
            good.append(i)
    keep_fingerprints(transform.preprocess)
    return (np.stack(crops) if crops else None), good, bad


def chunks(paths: Iterable[Path], size: int) -> Iterator[list[Path]]:
    """Lists of ``size`` paths (the last one shorter), read lazily from ``paths``."""
    it = iter(paths)
    while chunk := list(islice(it, size)):
        yield chunk


T = TypeVar("T")


def ordered_map(work: Callable[[list[Path]], T], batches: Iterable[list[Path]], workers: int,
                crashed: Callable[[list[Path]], T]) -> Iterator[tuple[list[Path], T]]:
    """``(batch, work(batch))`` for each batch, computed in ``workers`` processes ahead of
    their use and yielded in input order (in this process when ``workers`` is 0).

    At most ``2 * workers + 1`` batches are in flight, so memory stays flat however long
    the stream is. A worker that dies (a codec crash) costs only its batch, whose result
    is ``crashed(batch)``; a fresh pool takes over the rest.
    """
    if workers == 0:
        for batch in batches:
            yield batch, work(batch)
        return
    context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    pool = ProcessPoolExecutor(workers, mp_context=context)
    pending: collections.deque[tuple[list[Path], Future[T]]] = collections.deque()

    def take() -> tuple[list[Path], T]:
        nonlocal pool
        batch, future = pending.popleft()
        try:
            return batch, future.result()
        except BrokenProcessPool:
            pool.shutdown(wait=False, cancel_futures=True)
            pool = ProcessPoolExecutor(workers, mp_context=context)
            for i, (other, _) in enumerate(pending):  # resubmit what the dead pool held
                pending[i] = (other, pool.submit(work, other))
            return batch, crashed(batch)

    try:
        for batch in batches:
            pending.append((batch, pool.submit(work, batch)))
            if len(pending) > 2 * workers:
                yield take()
        while pending:
            yield take()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


class BatchDecoder:
    """Decodes batches of files in ``workers`` processes, ahead of their use, in order
    (see :func:`ordered_map`): ``(paths, (uint8 crops, positions, errors))`` per batch."""

    def __init__(self, transform: EvalTransform, batch_size: int = 32,
                 workers: int | None = None) -> None:
        self.transform = transform
        self.batch_size = batch_size
        self.workers = default_workers() if workers is None else workers

    def __call__(self, paths: Iterable[Path]) -> Iterator[tuple[list[Path], Decoded]]:
        def crashed(batch: list[Path]) -> Decoded:
            return None, [], dict.fromkeys(range(len(batch)), CRASHED)

        return ordered_map(partial(decode_chunk, self.transform),
                           chunks(paths, self.batch_size), self.workers, crashed)


def _warm_one(transform: TrainPixels, path: Path) -> str:
    """The name of ``path``'s pixel cache entry: marked used when there, else decoded
    into it ("" without a cache: decoded only to see that it can be)."""
    if transform.cache_dir is None:
        transform(path)
        return ""
    file = transform.preprocess.pixel_file(file_digest(path), transform.cache_dir)
    if file.is_file():
        touch(file)
    else:
        transform(path)
    return file.name


def _warm(transform: TrainPixels, batch: list[Path]) -> tuple[dict[int, str], list[str]]:
    reasons, names = {}, []
    for i, path in enumerate(batch):
        name, why = read_or_reason(partial(_warm_one, transform), path)
        if name is None:
            reasons[i] = why
        else:
            names.append(name)
    return reasons, names


def warm_pixel_cache(transform: TrainPixels, paths: Sequence[Path], workers: int,
                     batch_size: int = 16, max_bytes: float | None = None) -> dict[int, str]:
    """Puts every file's resized pixels into ``transform``'s pixel cache (decoding in
    ``workers`` processes the files that are not there yet); returns the reason for each
    file, by position, that cannot be read. With ``max_bytes``, the least recently used
    entries of other files are then removed until the cache holds at most that
    (:func:`~skysort.data.transforms.evict_pixel_cache`; never an entry of ``paths``)."""
    bad: dict[int, str] = {}
    names: set[str] = set()
    start = 0

    def crashed(batch: list[Path]) -> tuple[dict[int, str], list[str]]:
        return dict.fromkeys(range(len(batch)), CRASHED), []

    for batch, (reasons, done) in ordered_map(partial(_warm, transform),
                                              chunks(paths, batch_size), workers, crashed):
        bad.update({start + i: why for i, why in reasons.items()})
        names.update(done)
        start += len(batch)
    if max_bytes is not None and transform.cache_dir is not None:
        evict_pixel_cache(transform.cache_dir, max_bytes, keep=names)
    return bad
