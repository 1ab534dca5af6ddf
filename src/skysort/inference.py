"""Running a trained model over image files: streaming, batched, never stopped by a bad file.

:class:`BatchDecoder` turns a stream of paths (of any length: a generator is never made
into a list) into batches of uint8 crops, decoded in worker processes a few batches ahead
of the model and returned in input order. :func:`iter_outputs` normalises each batch and
runs it through a *runner* (ONNX Runtime or torch: any function from a float32
``(n, 3, h, w)`` array to an output array), optionally averaging test-time augmentation
views, and yields ``(paths, outputs, errors)`` per batch so callers can write results as
they come, with memory that does not grow with the number of files.

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
from itertools import islice
from multiprocessing.context import BaseContext
from pathlib import Path

import numpy as np
import torch
from torch import nn

from skysort.data.loader import default_workers
from skysort.data.transforms import Preprocess, tta_views
from skysort.embeddings import cached_embeddings, embedding_key, torch_runner
from skysort.errors import ImageError
from skysort.models.model import ModelInfo, SkyModel

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


class BatchDecoder:
    """Decodes batches of files in ``workers`` processes, ahead of their use, in order.

    At most ``2 * workers + 1`` batches are in flight, so memory stays flat however many
    paths the stream holds. A worker that dies (a decoder crash) costs only its batch:
    those files are reported as unreadable and a fresh pool takes over.
    """

    def __init__(self, preprocess: Preprocess, batch_size: int = 32,
                 workers: int | None = None) -> None:
        self.preprocess = preprocess
        self.batch_size = batch_size
        self.workers = default_workers() if workers is None else workers

    def __call__(self, paths: Iterable[Path]) -> Iterator[tuple[list[Path], Decoded]]:
        chunks = _chunks(paths, self.batch_size)
        if self.workers == 0:
            for chunk in chunks:
                yield chunk, decode_chunk(self.preprocess, chunk)
            return
        context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
        pool = ProcessPoolExecutor(self.workers, mp_context=context)
        pending: collections.deque[tuple[list[Path], Future[Decoded]]] = collections.deque()
        try:
            for chunk in chunks:
                pending.append((chunk, pool.submit(decode_chunk, self.preprocess, chunk)))
                if len(pending) > 2 * self.workers:
                    chunk0, result, pool = self._take(pending, pool, context)
                    yield chunk0, result
            while pending:
                chunk0, result, pool = self._take(pending, pool, context)
                yield chunk0, result
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _take(self, pending: collections.deque, pool: ProcessPoolExecutor,
              context: BaseContext) -> tuple[list[Path], Decoded, ProcessPoolExecutor]:
        chunk, future = pending.popleft()
        try:
            return chunk, future.result(), pool
        except BrokenProcessPool:
            pool.shutdown(wait=False, cancel_futures=True)
            fresh = ProcessPoolExecutor(self.workers, mp_context=context)
            for i, (other, _) in enumerate(pending):  # resubmit what the dead pool held
                pending[i] = (other, fresh.submit(decode_chunk, self.preprocess, other))
            return chunk, (None, [], {i: "the decoder process crashed on this batch"
                                      for i in range(len(chunk))}), fresh


def iter_outputs(run: Runner, preprocess: Preprocess, paths: Iterable[Path], *,
                 num_outputs: int, batch_size: int = 32, workers: int | None = None,
                 tta: str | None = None) -> Iterator[tuple[list[Path], np.ndarray,
                                                             dict[int, str]]]:
    """Yields, per batch of paths: the paths, an ``(n, num_outputs)`` array of outputs
    (NaN rows for unreadable files) and the reason for each unreadable one, by position.

    Args:
        run: float32 images ``(b, 3, h, w)`` -> outputs ``(b, num_outputs)``.
        tta: average over test-time views for this augmentation preset (``sky``: the
            eight rotations and flips; ``photo``: a mirror); None for none.
    """
    for chunk, (pixels, good, bad) in BatchDecoder(preprocess, batch_size, workers)(paths):
        outputs = np.full((len(chunk), num_outputs), np.nan, dtype=np.float32)
        if pixels is not None:
            images = preprocess.normalize_batch(pixels)
            views = tta_views(images, tta) if tta else [images]
            outputs[good] = np.mean([run(v) for v in views], axis=0)
        yield chunk, outputs, bad


class Published(nn.Module):
    """A classifier with its output layer: images in, published outputs out."""

    def __init__(self, model: SkyModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.output(self.model(images))


def published_runner(model: SkyModel, device: torch.device | str = "cpu") -> Runner:
    """The model's published outputs as a function of a float32 NCHW array (torch)."""
    run = torch_runner(Published(model), device)
    return lambda images: run(torch.from_numpy(images))


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
