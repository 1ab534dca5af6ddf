"""Running a trained model over image files: streaming, batched, never stopped by a bad file.

:class:`BatchDecoder` turns a stream of paths (of any length: a generator is never made
into a list) into batches of uint8 crops, decoded in worker processes a few batches ahead
of the model and returned in input order. :func:`iter_outputs` normalises each batch and
runs it through a *runner* (ONNX Runtime or torch: any function from a float32
``(n, 3, h, w)`` array to an output array), optionally averaging test-time augmentation
views, and yields ``(paths, outputs, errors)`` per batch so callers can write results as
they come, with memory that does not grow with the number of files. Given an exported
model (:class:`OnnxWorkerModel`) instead of a runner, each worker process decodes *and*
runs the model on its own batches, one core each: the fastest arrangement on a CPU.

:func:`model_outputs` collects the outputs for a list of files, reading backbone
embeddings from the cache when the backbone was never trained.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from skysort.data.transforms import Preprocess, tta_views
from skysort.device import cpu_count, default_workers
from skysort.errors import ImageError
from skysort.models.info import ModelInfo

if TYPE_CHECKING:
    import torch

    from skysort.models.model import SkyModel

Runner = Callable[[np.ndarray], np.ndarray]
Decoded = tuple[np.ndarray | None, list[int], dict[int, str]]


def decode_chunk(preprocess: Preprocess, paths: Sequence[Path]) -> Decoded:
    """uint8 crops of the readable files, their positions in ``paths``, and the reason
    each other file could not be read."""
    crops, good, bad = [], [], {}
    for i, path in enumerate(paths):
        try:
            crops.append(preprocess.pixels(path))
            good.append(i)
        except ImageError as exc:
            bad[i] = str(exc).removeprefix(f"{path}: ")
        except OSError as exc:  # vanished, unreadable: any single-file failure
            bad[i] = f"cannot read file ({exc})"
    return (np.stack(crops) if crops else None), good, bad


def _chunks(paths: Iterable[Path], size: int) -> Iterator[list[Path]]:
    it = iter(paths)
    while chunk := list(islice(it, size)):
        yield chunk


T = TypeVar("T")


def ordered_map(work: Callable[[list[Path]], T], chunks: Iterable[list[Path]], workers: int,
                crashed: Callable[[list[Path]], T]) -> Iterator[tuple[list[Path], T]]:
    """``(chunk, work(chunk))`` for each chunk, computed in ``workers`` processes ahead of
    their use and yielded in input order (in this process when ``workers`` is 0).

    At most ``2 * workers + 1`` chunks are in flight, so memory stays flat however long
    the stream is. A worker that dies (a codec crash) costs only its chunk, whose result
    is ``crashed(chunk)``; a fresh pool takes over the rest.
    """
    if workers == 0:
        for chunk in chunks:
            yield chunk, work(chunk)
        return
    context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    pool = ProcessPoolExecutor(workers, mp_context=context)
    pending: collections.deque[tuple[list[Path], Future[T]]] = collections.deque()

    def take() -> tuple[list[Path], T]:
        nonlocal pool
        chunk, future = pending.popleft()
        try:
            return chunk, future.result()
        except BrokenProcessPool:
            pool.shutdown(wait=False, cancel_futures=True)
            pool = ProcessPoolExecutor(workers, mp_context=context)
            for i, (other, _) in enumerate(pending):  # resubmit what the dead pool held
                pending[i] = (other, pool.submit(work, other))
            return chunk, crashed(chunk)

    try:
        for chunk in chunks:
            pending.append((chunk, pool.submit(work, chunk)))
            if len(pending) > 2 * workers:
                yield take()
        while pending:
            yield take()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


CRASHED = "the decoder process crashed on this batch"


class BatchDecoder:
    """Decodes batches of files in ``workers`` processes, ahead of their use, in order
    (see :func:`ordered_map`): ``(paths, (uint8 crops, positions, errors))`` per batch."""

    def __init__(self, preprocess: Preprocess, batch_size: int = 32,
                 workers: int | None = None) -> None:
        self.preprocess = preprocess
        self.batch_size = batch_size
        self.workers = default_workers() if workers is None else workers

    def __call__(self, paths: Iterable[Path]) -> Iterator[tuple[list[Path], Decoded]]:
        def crashed(chunk: list[Path]) -> Decoded:
            return None, [], dict.fromkeys(range(len(chunk)), CRASHED)

        return ordered_map(partial(decode_chunk, self.preprocess),
                           _chunks(paths, self.batch_size), self.workers, crashed)


def batch_outputs(run: Runner, preprocess: Preprocess, decoded: Decoded, count: int,
                  num_outputs: int, tta: str | None) -> np.ndarray:
    """``(count, num_outputs)`` outputs for a decoded batch: NaN rows for the files that
    could not be read, the model's outputs (averaged over the test-time views of ``tta``)
    for the others."""
    pixels, good, _ = decoded
    outputs = np.full((count, num_outputs), np.nan, dtype=np.float32)
    if pixels is not None:
        images = preprocess.normalize_batch(pixels)
        views = tta_views(images, tta) if tta else [images]
        outputs[good] = np.mean([run(v) for v in views], axis=0)
    return outputs


_SESSIONS: dict[tuple[str, int], Runner] = {}


@dataclass(frozen=True)
class OnnxWorkerModel:
    """An exported model that every worker process loads for itself, with one thread.

    On a CPU this is the fastest arrangement: each core decodes a batch and runs the
    model on it, with no contention between decoding and the model's thread pool, and
    only the outputs cross between processes. With no workers, the model runs here on
    every core.
    """

    path: str

    def runner(self, threads: int | None = 1) -> Runner:
        """The model, loaded once per process and thread count."""
        key = (self.path, threads or 0)
        if key not in _SESSIONS:
            from skysort.models.onnx import OnnxModule

            _SESSIONS[key] = OnnxModule(self.path, threads)
        return _SESSIONS[key]


Outputs = tuple[np.ndarray, dict[int, str]]


def outputs_chunk(model: OnnxWorkerModel, preprocess: Preprocess, num_outputs: int,
                  tta: str | None, paths: list[Path]) -> Outputs:
    """Decodes and runs one batch inside a worker: ``(outputs, errors)``."""
    decoded = decode_chunk(preprocess, paths)
    return (batch_outputs(model.runner(), preprocess, decoded, len(paths), num_outputs, tta),
            decoded[2])


def model_workers() -> int:
    """Processes that each decode and run the model: one per core, at most 32."""
    return min(32, cpu_count()) if cpu_count() > 1 else 0


def iter_outputs(run: Runner | OnnxWorkerModel, preprocess: Preprocess, paths: Iterable[Path],
                 *, num_outputs: int, batch_size: int = 32, workers: int | None = None,
                 tta: str | None = None, threads: int | None = None
                 ) -> Iterator[tuple[list[Path], np.ndarray, dict[int, str]]]:
    """Yields, per batch of paths: the paths, an ``(n, num_outputs)`` array of outputs
    (NaN rows for unreadable files) and the reason for each unreadable one, by position.

    Args:
        run: float32 images ``(b, 3, h, w)`` -> outputs ``(b, num_outputs)``, run here on
            batches decoded by worker processes; or an :class:`OnnxWorkerModel`, run
            inside the workers themselves (default: one per core).
        tta: average over test-time views for this augmentation preset (``sky``: the
            eight rotations and flips; ``photo``: a mirror); None for none.
        threads: ONNX Runtime threads for an :class:`OnnxWorkerModel` run in this
            process (``workers=0``); default every core.
    """
    if isinstance(run, OnnxWorkerModel):
        workers = model_workers() if workers is None else workers
        if workers == 0:
            run = run.runner(threads)
        else:
            def crashed(chunk: list[Path]) -> Outputs:
                return (np.full((len(chunk), num_outputs), np.nan, dtype=np.float32),
                        dict.fromkeys(range(len(chunk)), CRASHED))

            work = partial(outputs_chunk, run, preprocess, num_outputs, tta)
            for chunk, (outputs, bad) in ordered_map(work, _chunks(paths, batch_size),
                                                     workers, crashed):
                yield chunk, outputs, bad
            return
    for chunk, decoded in BatchDecoder(preprocess, batch_size, workers)(paths):
        yield (chunk, batch_outputs(run, preprocess, decoded, len(chunk), num_outputs, tta),
               decoded[2])


def model_outputs(model: SkyModel, info: ModelInfo, paths: Sequence[Path], *,
                  cache_dir: str | Path | None = None, batch_size: int = 32,
                  workers: int | None = None, device: torch.device | str = "cpu",
                  tta: bool = False, runner: Runner | None = None
                  ) -> tuple[np.ndarray, dict[int, str]]:
    """Outputs for every file (NaN rows for unreadable ones) and the reasons they failed.

    With a frozen backbone (and no TTA) the embeddings come from, and go to, the
    embedding cache, so evaluating right after training costs only the head. Otherwise
    ``runner`` (default: the model in torch) runs over the decoded files.
    """
    import torch

    from skysort.embeddings import cached_embeddings, embedding_key
    from skysort.models.model import published_runner

    outputs = np.full((len(paths), info.task.num_outputs), np.nan, dtype=np.float32)
    if info.frozen_backbone and not tta and runner is None:
        key = embedding_key(info.backbone, info.weights_id, info.preprocess)
        feats, bad = cached_embeddings(model.backbone, info.preprocess, key, paths,
                                       cache_dir=cache_dir, batch_size=batch_size,
                                       workers=workers, device=device)
        good = np.array([i for i in range(len(paths)) if i not in bad], dtype=np.int64)
        if len(good):
            model.eval()
            with torch.inference_mode():
                logits = model.head(torch.from_numpy(feats[good]).to(device))
                outputs[good] = model.output(logits).float().cpu().numpy()
        return outputs, bad
    run = runner or published_runner(model, device)
    failed: dict[int, str] = {}
    start = 0
    preset = str(info.extra.get("augment", "sky")) if tta else None
    for chunk, out, errors in iter_outputs(run, info.preprocess, paths,
                                           num_outputs=info.task.num_outputs,
                                           batch_size=batch_size, workers=workers, tta=preset):
        outputs[start:start + len(chunk)] = out
        failed.update({start + i: why for i, why in errors.items()})
        start += len(chunk)
    return outputs, failed
