"""``skysort export``: a trained run as one ONNX file that needs no run directory.

The graph takes a batch of preprocessed images (``float32``, ``(batch, C, size, size)``,
dynamic batch; ``C`` = 3, or the FITS bands of a ``channels="all"`` model) and returns
what the task publishes: class probabilities, the positive class's probability, label
probabilities, or vote fractions that obey the decision tree. Everything needed to use it
travels in its metadata under the key ``skysort``: the task and its classes or answer
columns, the preprocessing (input size, resize ratio, interpolation, mean, std, centre
cut, FITS decoding and channels), the id column of a table-trained model, and the
skysort version. :func:`read_onnx_info` reads it back.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from skysort.errors import ConfigError, RunError
from skysort.models.info import ModelInfo
from skysort.rundir import MODEL_FILE, MODEL_JSON, ONNX_FILE, damaged, require

if TYPE_CHECKING:
    from skysort.models.model import SkyModel

EXPORT_FORMATS = ("onnx",)
#: The metadata key that records which run files an exported graph came from.
SOURCE_KEY = "skysort_source"


def run_digest(run: str | Path) -> str:
    """SHA-256 over the run's weights and ``model.json``: what an export is keyed by."""
    digest = hashlib.sha256()
    for name in (MODEL_FILE, MODEL_JSON):
        with open(require(run, name), "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def export_run(run: str | Path, fmt: str = "onnx", output: str | Path | None = None, *,
               source: str | None = None) -> Path:
    """Writes the run's model as ONNX (default ``RUN/model.onnx``); returns the path.
    ``source`` is the run's :func:`run_digest` when the caller has it already."""
    from skysort.models.model import load_model

    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"format {fmt!r} is not one of {', '.join(EXPORT_FORMATS)}")
    source = source or run_digest(run)
    model, info = load_model(run)
    out = Path(output) if output else Path(run) / ONNX_FILE
    return export_model(model, info, out, source)


def export_model(model: SkyModel, info: ModelInfo, output: Path, source: str = "") -> Path:
    from skysort.models.model import Published
    from skysort.models.onnx import export_onnx

    metadata = {"skysort": json.dumps(info.to_dict()), SOURCE_KEY: source}
    return export_onnx(Published(model.eval()), info.preprocess.input_size, output, metadata,
                       output_name="outputs", channels=info.preprocess.channels)


def onnx_for_run(run: str | Path) -> Path:
    """The run's ONNX file, exported again unless it was exported from the weights and
    ``model.json`` the run holds now (by content, never by modification times)."""
    return onnx_with_source(run)[0]


def onnx_with_source(run: str | Path) -> tuple[Path, str]:
    """:func:`onnx_for_run` and the :func:`run_digest` it was checked against (the run's
    files are hashed once)."""
    run = Path(run)
    onnx_file, source = run / ONNX_FILE, run_digest(run)
    if onnx_file.is_file() and onnx_metadata(onnx_file).get(SOURCE_KEY) == source:
        return onnx_file, source
    return export_run(run, output=onnx_file, source=source), source


def onnx_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of an ONNX file; empty when it cannot be read."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # a damaged file: the caller exports it again
        return {}
    return {p.key: p.value for p in proto.metadata_props}


def read_onnx_info(path: str | Path) -> ModelInfo:
    """The :class:`~skysort.models.model.ModelInfo` stored in an exported file."""
    if not Path(path).is_file():
        raise RunError(f"{path}: no such ONNX file")
    meta = onnx_metadata(path)
    if "skysort" not in meta:
        raise RunError(f"{path}: not an ONNX file exported by skysort (no 'skysort' metadata)")
    try:
        return ModelInfo.from_dict(json.loads(meta["skysort"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise damaged(path, exc) from exc
