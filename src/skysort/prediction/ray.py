"""Prediction on Ray: the same predictor as Ray Data batch inference, on many machines.

``predict_on_ray(RUN, inputs, OUT)`` lists the inputs, makes a Ray Dataset of their paths,
and maps it through a pool of actors, each holding one copy of the model (ONNX Runtime
on a CPU node, torch on a GPU node), with the same decoding, preprocessing and output
rows as :func:`skysort.prediction.predictor.predict`. Results are written as shards into the folder
``OUT`` (``*.csv`` or ``*.parquet``); unreadable files go to ``OUT_errors`` with the
reason. ``address=None`` starts a local Ray instance; ``address="auto"`` or
``"ray://head:10001"`` joins an existing cluster, whose nodes need skysort installed and
the images on a path they all see (a shared file system or object-store mount).

Ray is an optional dependency: ``pip install "skysort[ray]"``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from skysort.data.inputs import expand_inputs
from skysort.errors import ConfigError, DataError

ERROR = "_error"


class RayPredictor:
    """One model replica inside a Ray actor: a batch of paths -> a batch of output rows."""

    def __init__(self, run: str, engine: str = "auto", coverage: float | None = None,
                 min_confidence: float | None = None, precision: str = "auto") -> None:
        from skysort.prediction.predictor import Predictor
        from skysort.prediction.writers import Layout

        # Each actor decodes and runs the model in its own process, on the one CPU Ray
        # gives it; Ray runs many actors side by side.
        self.predictor = Predictor(run, engine=engine, workers=0, threads=1,
                                   coverage=coverage, min_confidence=min_confidence,
                                   precision=precision)
        self.layout = Layout(self.predictor.info, self.predictor.options)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        """The layout's columns, plus ``_error`` (why a file could not be read, or "")."""
        paths = [Path(p) for p in batch["path"]]
        columns: dict[str, list[Any]] = {c: [] for c in [*self.layout.columns, ERROR]}
        for chunk, outputs, errors in self.predictor.iter_batches(paths):
            for i, path in enumerate(chunk):
                why = errors.get(i, "")
                row = self.layout.row(path, None if why else outputs[i], why)
                if row is None:  # the table layout has no place for an unreadable file
                    row = [str(path), *[None] * (len(self.layout.columns) - 1)]
                for name, value in zip([*self.layout.columns, ERROR], [*row, why], strict=True):
                    columns[name].append(value)
        return columns


def predict_on_ray(run: str | Path, inputs: Iterable[str | Path], output: str | Path | None,
                   *, address: str | None = None, batch_size: int = 32, fmt: str | None = None,
                   path_column: str = "path", actors: int | None = None,
                   engine: str = "auto", coverage: float | None = None,
                   min_confidence: float | None = None, precision: str = "auto") -> Path:
    """Labels the inputs with Ray Data; returns the output folder of shards.

    Args:
        run: the run directory (on a path every Ray node can read).
        inputs: as for :func:`skysort.prediction.predictor.predict`.
        output: the folder to write shards into (default ``RUN/predictions_ray``).
        address: a Ray cluster to join; None starts a local instance.
        fmt: ``csv`` (default) or ``parquet``.
        actors: model replicas (default: one per CPU of the cluster, at most 8).
        coverage, min_confidence, engine, precision: as for
            :func:`skysort.prediction.predictor.predict`; the engine is chosen (and
            OpenVINO's precision checked, once) here before Ray starts, and every actor
            reads that check from the run.
    """
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("--engine ray needs Ray: pip install 'skysort[ray]'") from exc
    from skysort.prediction.predictor import Predictor

    # the options, the engine and its check, before Ray starts
    info = Predictor(run, engine=engine, workers=0, coverage=coverage,
                     min_confidence=min_confidence, precision=precision).info
    fmt = fmt or ("parquet" if output and str(output).endswith(".parquet") else "csv")
    if fmt not in ("csv", "parquet"):
        raise ConfigError(f"output format {fmt!r} is not csv or parquet")
    paths = [str(p.resolve()) for p in expand_inputs(inputs, path_column)]
    if not paths:
        raise DataError(f"no image files found in {', '.join(map(str, inputs))}")
    out = Path(output) if output else Path(run) / "predictions_ray"
    errors_out = out.with_name(out.name + "_errors")
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        replicas = actors or max(1, min(8, cpus))
        dataset = ray.data.from_items([{"path": p} for p in paths],
                                      override_num_blocks=max(1, min(len(paths) // batch_size,
                                                                     4 * replicas)))
        rows = dataset.map_batches(RayPredictor, fn_constructor_kwargs={
            "run": str(Path(run).resolve()), "engine": engine, "coverage": coverage,
            "min_confidence": min_confidence, "precision": precision}, batch_size=batch_size,
            concurrency=replicas, num_cpus=1, batch_format="numpy").materialize()
        if info.id_column is None:  # error rows belong in the output
            _write(rows.drop_columns([ERROR]), out, fmt)
        else:
            _write(rows.filter(lambda r: not r[ERROR]).drop_columns([ERROR]), out, fmt)
            bad = rows.filter(lambda r: bool(r[ERROR]))
            if bad.count():
                first = bad.columns()[0]
                _write(bad.select_columns([first, ERROR]).rename_columns(
                    {first: "path", ERROR: "error"}), errors_out, "csv")
    finally:
        if started:
            ray.shutdown()
    return out


def _write(dataset: Any, folder: Path, fmt: str) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    if fmt == "parquet":
        dataset.write_parquet(str(folder))
    else:
        dataset.write_csv(str(folder))
