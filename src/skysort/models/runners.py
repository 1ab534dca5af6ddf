"""Running a trained model over image files: streaming, batched, never stopped by a bad file.

Batches of files are decoded in worker processes a few batches ahead of the model
(:mod:`skysort.data.batches`). :func:`iter_outputs` normalises each batch and
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

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from skysort.data.batches import CRASHED, BatchDecoder, Decoded, chunks, decode_chunk, ordered_map
from skysort.data.transforms import EvalTransform, create_transform, tta_views
from skysort.device import default_workers
from skysort.models.info import ModelInfo

if TYPE_CHECKING:
    import torch

    from skysort.models.model import SkyModel

Runner = Callable[[np.ndarray], np.ndarray]


def batch_outputs(run: Runner, transform: EvalTransform, decoded: Decoded, count: int,
                  num_outputs: int, tta: str | None) -> np.ndarray:
    """``(count, num_outputs)`` outputs for a decoded batch: NaN rows for the files that
    could not be read, the model's outputs (averaged over the test-time views of ``tta``)
    for the others."""
    pixels, good, _ = decoded
    outputs = np.full((count, num_outputs), np.nan, dtype=np.float32)
    if pixels is not None:
        images = transform.normalize_batch(pixels)
        views = tta_views(images, tta) if tta else [images]
        outputs[good] = np.mean([run(v) for v in views], axis=0)
    return outputs


_SESSIONS: dict[tuple[str, str, int], Runner] = {}


@dataclass(frozen=True)
class OnnxWorkerModel:
    """An exported model that every worker process loads for itself, with one thread.

    On a CPU this is the fastest arrangement: each core decodes a batch and runs the
    model on it, with no contention between decoding and the model's thread pool, and
    only the outputs cross between processes. With no workers, the model runs here on
    every core.
    """

    path: str
    #: What the file was exported from (:func:`~skysort.models.export.run_digest`): a
    #: file exported again under the same name is a new session, never a stale one.
    source: str = ""

    def runner(self, threads: int | None = 1) -> Runner:
        """The model, loaded once per process, file content and thread count."""
        key = (self.path, self.source, threads or 0)
        if key not in _SESSIONS:
            from skysort.models.onnx import OnnxModule

            _SESSIONS[key] = OnnxModule(self.path, threads)
        return _SESSIONS[key]


Outputs = tuple[np.ndarray, dict[int, str]]


def outputs_chunk(model: OnnxWorkerModel, transform: EvalTransform, num_outputs: int,
                  tta: str | None, paths: list[Path]) -> Outputs:
    """Decodes and runs one batch inside a worker: ``(outputs, errors)``."""
    decoded = decode_chunk(transform, paths)
    return (batch_outputs(model.runner(), transform, decoded, len(paths), num_outputs, tta),
            decoded[2])


def iter_outputs(run: Runner | OnnxWorkerModel, transform: EvalTransform, paths: Iterable[Path],
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
        workers = default_workers() if workers is None else workers
        if workers == 0:
            run = run.runner(threads)
        else:
            def crashed(chunk: list[Path]) -> Outputs:
                return (np.full((len(chunk), num_outputs), np.nan, dtype=np.float32),
                        dict.fromkeys(range(len(chunk)), CRASHED))

            work = partial(outputs_chunk, run, transform, num_outputs, tta)
            for chunk, (outputs, bad) in ordered_map(work, chunks(paths, batch_size),
                                                     workers, crashed):
                yield chunk, outputs, bad
            return
    for chunk, decoded in BatchDecoder(transform, batch_size, workers)(paths):
        yield (chunk, batch_outputs(run, transform, decoded, len(chunk), num_outputs, tta),
               decoded[2])


def model_outputs(model: SkyModel, info: ModelInfo, paths: Sequence[Path], *,
                  cache_dir: str | Path | None = None, batch_size: int = 32,
                  workers: int | None = None, device: torch.device | str = "cpu",
                  tta: bool = False, runner: Runner | None = None,
                  kind: str = "published") -> tuple[np.ndarray, dict[int, str]]:
    """Outputs for every file (NaN rows for unreadable ones) and the reasons they failed.

    With a frozen backbone (and no TTA) the embeddings come from, and go to, the
    embedding cache, so evaluating right after training costs only the head. Otherwise
    ``runner`` (default: the model in torch) runs over the decoded files.

    Args:
        kind: ``published`` (the calibrated outputs), ``logits``, or ``both``: the
            calibrated outputs and then the uncalibrated ones, side by side (each averaged
            over test-time views as prediction averages them).
    """
    import torch

    from skysort.models.embeddings import cached_embeddings, embedding_key
    from skysort.models.model import OUTPUT_KINDS, head_outputs, published_runner

    if kind not in OUTPUT_KINDS:
        raise ValueError(f"kind={kind!r}: one of {OUTPUT_KINDS}")
    width = info.task.num_outputs * (2 if kind == "both" else 1)
    outputs = np.full((len(paths), width), np.nan, dtype=np.float32)
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
                outputs[good] = head_outputs(model, logits, kind).float().cpu().numpy()
        return outputs, bad
    if runner is not None and kind != "published":
        raise ValueError("a given runner gives published outputs only")
    run = runner or published_runner(model, device, kind)
    failed: dict[int, str] = {}
    start = 0
    preset = str(info.extra.get("augment", "sky")) if tta else None
    for chunk, out, errors in iter_outputs(run, create_transform(info.preprocess), paths,
                                           num_outputs=width,
                                           batch_size=batch_size, workers=workers, tta=preset):
        outputs[start:start + len(chunk)] = out
        failed.update({start + i: why for i, why in errors.items()})
        start += len(chunk)
    return outputs, failed
