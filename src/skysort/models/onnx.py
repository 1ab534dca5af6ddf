"""ONNX export and ONNX Runtime sessions: the fast way to run a model on a CPU.

On a CPU, ONNX Runtime runs the EfficientNet-Lite backbones two to four times faster than
eager PyTorch. :func:`export_onnx` writes any module that takes a ``(batch, c, h, w)``
image tensor (``c`` = 3, or the bands of a FITS model), with a dynamic batch size;
:func:`cached_backbone_onnx` exports a frozen backbone once per embedding key into the
cache folder and reuses it.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from skysort.device import cpu_count

if TYPE_CHECKING:
    import torch
    from torch import nn

ONNX_OPSET = 17


def export_onnx(module: nn.Module, input_size: int, path: str | Path,
                metadata: dict[str, str] | None = None, output_name: str = "output",
                channels: int = 3) -> Path:
    """Exports ``module`` (in eval mode, on the CPU) to ``path``, written atomically.

    Args:
        module: takes a float tensor ``(batch, channels, input_size, input_size)``.
        input_size: the square input size.
        path: the ``.onnx`` file to write.
        metadata: key/value strings stored in the model (``metadata_props``).
        output_name: the name of the graph's output.
        channels: the input channels (3 but for FITS bands with ``channels="all"``).
    """
    import onnx
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    module = module.eval().to("cpu").to(memory_format=torch.contiguous_format)
    example = torch.zeros(1, channels, input_size, input_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(tmp), input_names=["image"],
                          output_names=[output_name], opset_version=ONNX_OPSET,
                          dynamic_axes={"image": {0: "batch"}, output_name: {0: "batch"}},
                          dynamo=False)
    if metadata:
        proto = onnx.load(str(tmp))
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(tmp))
    os.replace(tmp, path)
    return path


#: Images per ONNX Runtime call on a CPU. Small batches stay in the processor's caches:
#: for tf_efficientnet_lite0 at 224 px on 2 cores, 8 per call ran at 240 images/s and 32
#: per call at 190-200, and the session's memory grew with the batch (166 MB at 8, 530 MB
#: at 32).
CPU_BATCH = 8


def create_session(path: str | Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session with full graph optimisation.

    Memory-pattern planning is off: it plans per input shape and, with a dynamic batch,
    only adds memory (870 MB against 530 MB for a batch of 32) and time.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_mem_pattern = False
    options.intra_op_num_threads = threads or cpu_count()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxModule:
    """Calls an ONNX Runtime session like a module: float32 NCHW array in, array out,
    ``batch`` images per session call (:data:`CPU_BATCH`; None for all at once)."""

    def __init__(self, path: str | Path, threads: int | None = None,
                 batch: int | None = CPU_BATCH) -> None:
        self.path = Path(path)
        self.session = create_session(path, threads)
        self.input_name = self.session.get_inputs()[0].name
        self.batch = batch

    def __call__(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        if not isinstance(images, np.ndarray):  # a torch tensor on the CPU
            images = images.numpy()
        images = np.ascontiguousarray(images, np.float32)
        step = self.batch or len(images)
        if len(images) <= step:
            return self.session.run(None, {self.input_name: images})[0]
        return np.concatenate([self.session.run(None, {self.input_name: images[i:i + step]})[0]
                               for i in range(0, len(images), step)])


def cached_backbone_onnx(backbone: nn.Module, input_size: int, key: str,
                         cache_dir: Path, channels: int = 3) -> Path:
    """The backbone as an ONNX file, exported once per embedding key (which names the
    backbone, its weights and the preprocessing, channels included)."""
    path = cache_dir / "onnx" / f"{key}.onnx"
    if not path.is_file():
        export_onnx(backbone, input_size, path, output_name="features", channels=channels)
    return path
