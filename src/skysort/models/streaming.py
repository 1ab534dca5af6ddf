"""Streaming a model over image files: batched, a few batches ahead, never stopped by a
bad file.

Batches of files are decoded in worker processes a few batches ahead of the model
(:mod:`skysort.data.batches`). :func:`iter_outputs` normalises each batch and
runs it through a *runner* (ONNX Runtime or torch: any function from a float32
``(n, c, h, w)`` array, ``c`` the preprocessing's channels, to an output array),
optionally averaging test-time augmentation views, and yields ``(paths, outputs,
errors)`` per batch so callers can write results as they come, with memory that does not
grow with the number of files. Given an exported
model (:class:`OnnxWorkerModel`) instead of a runner, each worker process decodes *and*
runs the model on its own batches, one core each: the fastest arrangement on a CPU.
:func:`torch_runner` makes a runner of a torch module.

Nothing here imports torch until a torch runner is made: ``skysort predict`` runs on ONNX
Runtime without it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from skysort.data.batches import CRASHED, BatchDecoder, Decoded, chunks, decode_chunk, ordered_map
from skysort.data.transforms import EvalTransform, tta_views
from skysort.device import default_workers

if TYPE_CHECKING:
    import torch

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


_SESSIONS: dict[tuple[str, str, str, str, int], Runner] = {}


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
    #: ``onnxruntime`` or ``openvino`` (:mod:`skysort.models.openvino`).
    backend: str = "onnxruntime"
    #: ``f32``; under OpenVINO also ``bf16`` or ``int8`` (``path`` is then the int8 IR).
    precision: str = "f32"

    def runner(self, threads: int | None = 1) -> Runner:
        """The model, loaded once per process, file content, backend and thread count."""
        key = (self.path, self.source, self.backend, self.precision, threads or 0)
        if key not in _SESSIONS:
            if self.backend == "openvino":
                from skysort.models.openvino import OpenVinoModule

                _SESSIONS[key] = OpenVinoModule(
                    self.path, "bf16" if self.precision == "bf16" else "f32", threads)
            else:
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
        run: float32 images ``(b, c, h, w)`` -> outputs ``(b, num_outputs)``, run here on
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


def torch_runner(model: torch.nn.Module, device: torch.device | str = "cpu"
                 ) -> Callable[[torch.Tensor], np.ndarray]:
    """Wraps a torch module as images -> float32 array, channels-last, no autograd."""
    import torch

    model.eval().to(device)
    model.to(memory_format=torch.channels_last)

    def run(images: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            x = images.to(device).contiguous(memory_format=torch.channels_last)
            return model(x).float().cpu().numpy()

    return run
