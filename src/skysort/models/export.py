"""``skysort export``: a trained run as one ONNX file that needs no run directory.

The graph takes a batch of preprocessed images (``float32``, ``(batch, 3, size, size)``,
dynamic batch) and returns what the task publishes: class probabilities, the positive
class's probability, label probabilities, or vote fractions that obey the decision tree.
Everything needed to use it travels in its metadata under the key ``skysort``: the task
and its classes or answer columns, the preprocessing (input size, resize ratio,
interpolation, mean, std, centre cut), the id column of a table-trained model, and the
skysort version. :func:`read_onnx_info` reads it back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skysort.errors import ConfigError, RunError
from skysort.models.info import ModelInfo
from skysort.rundir import MODEL_FILE, ONNX_FILE, require

if TYPE_CHECKING:
    from skysort.models.model import SkyModel

EXPORT_FORMATS = ("onnx",)


def export_run(run: str | Path, fmt: str = "onnx", output: str | Path | None = None) -> Path:
    """Writes the run's model as ONNX (default ``RUN/model.onnx``); returns the path."""
    from skysort.models.model import load_model

    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"format {fmt!r} is not one of {', '.join(EXPORT_FORMATS)}")
    model, info = load_model(run)
    out = Path(output) if output else Path(run) / ONNX_FILE
    return export_model(model, info, out)


def export_model(model: SkyModel, info: ModelInfo, output: Path) -> Path:
    from skysort.models.model import Published
    from skysort.models.onnx import export_onnx

    metadata = {"skysort": json.dumps(info.to_dict())}
    return export_onnx(Published(model.eval()), info.preprocess.input_size, output, metadata,
                       output_name="outputs")


def onnx_for_run(run: str | Path) -> Path:
    """The run's ONNX file, exported now if missing or older than its weights."""
    run = Path(run)
    weights, onnx_file = require(run, MODEL_FILE), run / ONNX_FILE
    if onnx_file.is_file() and os.path.getmtime(onnx_file) >= os.path.getmtime(weights):
        return onnx_file
    return export_run(run, output=onnx_file)


def read_onnx_info(path: str | Path) -> ModelInfo:
    """The :class:`~skysort.models.model.ModelInfo` stored in an exported file."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    meta: dict[str, Any] = {p.key: p.value for p in proto.metadata_props}
    if "skysort" not in meta:
        raise RunError(f"{path}: not exported by skysort (no 'skysort' metadata)")
    return ModelInfo.from_dict(json.loads(meta["skysort"]))
