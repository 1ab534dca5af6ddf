"""OpenVINO: the exported model on Intel's CPU runtime, in f32, bf16 or int8.

OpenVINO reads the ONNX file ``skysort export`` writes as it is. Its CPU plugin runs
EfficientNet-Lite's depthwise convolutions faster than ONNX Runtime in f32, and in bf16 on
a CPU with native bf16 (AVX-512 BF16 or AMX) about twice as fast again. int8 weights and
activations come from NNCF's post-training quantization (:func:`quantize_int8`), written
as an OpenVINO IR (``.xml`` + ``.bin``) beside the run.

Reduced precision changes outputs: nothing here decides whether a precision may be used;
:mod:`skysort.prediction.engine_check` scores it against f32 first. Nothing imports
``openvino`` until a model is loaded: it is an optional extra (``pip install
skysort[openvino]``).
"""

from __future__ import annotations

import importlib.util
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from skysort.device import cpu_count
from skysort.models.onnx import CPU_BATCH

#: The precisions an OpenVINO model can run in.
PRECISIONS = ("f32", "bf16", "int8")
#: NNCF's calibration images, at most (its own default subset).
CALIBRATION_IMAGES = 300
#: Images per timed batch (:func:`run_timed`).
TIMED_BATCH = 16


def available() -> bool:
    """Whether OpenVINO is installed (the ``openvino`` extra)."""
    return importlib.util.find_spec("openvino") is not None


def quantization_available() -> bool:
    """Whether NNCF (int8 post-training quantization) is installed too."""
    return available() and importlib.util.find_spec("nncf") is not None


def native_precisions() -> list[str]:
    """The precisions this CPU runs natively, as OpenVINO's CPU plugin reports them:
    always ``f32``; ``bf16`` with AVX-512 BF16 or AMX; ``int8`` (emulated with AVX2 and
    fastest with VNNI or AMX)."""
    import openvino as ov

    caps = set(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    return ["f32", *(["bf16"] if "BF16" in caps else []), *(["int8"] if "INT8" in caps else [])]


def cpu_description() -> str:
    """This CPU and what OpenVINO's CPU plugin can do on it, with OpenVINO's version: a
    check of an engine holds for all three."""
    import openvino as ov

    core = ov.Core()
    name = core.get_property("CPU", "FULL_DEVICE_NAME")
    caps = ",".join(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    return f"{name} [{caps}] on {platform.machine()}; openvino {ov.__version__}"


def run_timed(runs: dict[str, Callable[[np.ndarray], np.ndarray]], images: np.ndarray
              ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Each runner's outputs for ``images``, and its images per second, measured on the
    same batches of :data:`TIMED_BATCH` images, interleaved (after one warm-up call each):
    the images over the median seconds per batch, so a burst of another process's load
    falls on one batch of every runner, not on one runner."""
    for run in runs.values():
        run(images[:1])
    outputs: dict[str, list[np.ndarray]] = {k: [] for k in runs}
    seconds: dict[str, list[float]] = {k: [] for k in runs}
    for start in range(0, len(images), TIMED_BATCH):
        batch = images[start:start + TIMED_BATCH]
        for name, run in runs.items():
            begin = time.perf_counter()
            outputs[name].append(run(batch))
            seconds[name].append((time.perf_counter() - begin) / len(batch))
    return ({k: np.concatenate(v) for k, v in outputs.items()},
            {k: round(1 / statistics.median(v), 1) for k, v in seconds.items()})


class OpenVinoModule:
    """A compiled OpenVINO model called like a module: float32 NCHW array in, array out,
    ``batch`` images per call.

    Args:
        path: an ONNX file, or an OpenVINO IR ``.xml`` (the int8 model).
        precision: ``f32`` or ``bf16`` (the inference precision hint; an int8 IR runs its
            quantized layers in int8 and the rest in f32).
        threads: CPU threads (default every core); one stream, so a worker process
            holding one thread never competes with the others; threads are not pinned
            to cores (the operating system places each process's thread).
    """

    def __init__(self, path: str | Path, precision: str = "f32", threads: int | None = None,
                 batch: int | None = CPU_BATCH) -> None:
        import openvino as ov
        import openvino.properties as props
        import openvino.properties.hint as hints

        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: one of {', '.join(PRECISIONS)}")
        self.path = Path(path)
        self.precision = precision
        core = ov.Core()
        config: dict[str, Any] = {
            props.inference_num_threads: threads or cpu_count(),
            props.num_streams: 1,
            hints.inference_precision: ov.Type.bf16 if precision == "bf16" else ov.Type.f32,
            hints.performance_mode: hints.PerformanceMode.LATENCY,
            # OpenVINO pins its threads to cores from the first: worker processes of one
            # thread each would all share core 0 (two ran at half speed each, measured)
            hints.enable_cpu_pinning: False,
        }
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.batch = batch

    def _run(self, images: np.ndarray) -> np.ndarray:
        result = self.request.infer({0: images})
        return np.array(result[self.compiled.output(0)], dtype=np.float32)

    def __call__(self, images: Any) -> np.ndarray:
        if not isinstance(images, np.ndarray):  # a torch tensor on the CPU
            images = images.numpy()
        images = np.ascontiguousarray(images, np.float32)
        step = self.batch or len(images)
        if len(images) <= step:
            return self._run(images)
        return np.concatenate([self._run(images[i:i + step])
                               for i in range(0, len(images), step)])


def high_precision_scope(model: Any) -> list[str]:
    """The layers int8 leaves in f32: the first convolution (it sees the raw pixels, with
    their full dynamic range) and the last matrix product (the head, whose outputs are
    the probabilities), by their names in the OpenVINO graph."""
    ops = list(model.get_ordered_ops())
    convs = [op for op in ops if op.get_type_name() == "Convolution"]
    heads = [op for op in ops if op.get_type_name() == "MatMul"]
    return [op.get_friendly_name() for op in (convs[:1] + heads[-1:])]


def quantize_int8(onnx_path: str | Path, calibration: Iterable[np.ndarray], output: str | Path,
                  *, keep_ends: bool = True, fast_bias_correction: bool = False,
                  preset: str = "performance", subset_size: int = CALIBRATION_IMAGES) -> Path:
    """NNCF post-training int8 quantization of an exported model, written as an IR.

    Args:
        onnx_path: the exported model (f32).
        calibration: float32 ``(1, c, h, w)`` arrays, preprocessed as the model expects
            (a few hundred of the run's training images).
        output: the ``.xml`` to write (its ``.bin`` beside it), atomically.
        keep_ends: keep the first convolution and the head in f32
            (:func:`high_precision_scope`).
        fast_bias_correction: NNCF's default; the full correction (False) kept 99.5% of
            top-1 labels on skysort's EfficientNet-Lite0 where the fast one kept 96.2%.
        preset: NNCF's ``performance`` (symmetric activations) or ``mixed``
            (asymmetric activations: zero points for the non-negative ReLU6 outputs).
    """
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(onnx_path))
    items = list(calibration)
    scope = nncf.IgnoredScope(names=high_precision_scope(model)) if keep_ends else None
    quantized = nncf.quantize(model, nncf.Dataset(items), subset_size=min(subset_size, len(items)),
                              fast_bias_correction=fast_bias_correction,
                              preset=nncf.QuantizationPreset(preset), ignored_scope=scope)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.stem}.{os.getpid()}.tmp.xml")
    ov.save_model(quantized, str(tmp), compress_to_fp16=False)
    os.replace(tmp.with_suffix(".bin"), output.with_suffix(".bin"))
    os.replace(tmp, output)
    return output
