"""Labelling new images with a trained run, at survey scale.

``predict(RUN, inputs)`` streams the inputs (files, folders, globs, lists of paths,
catalogues; :mod:`skysort.data.inputs`), decodes them in worker processes a few batches
ahead of the model, runs the model (ONNX Runtime on a CPU by default, several times faster
than eager torch; torch on a GPU), and writes each batch's rows as it finishes
(:mod:`skysort.prediction.writers`): memory stays flat however many files there are, an unreadable
file becomes an error row, and ``resume=True`` continues an interrupted run without
losing or repeating a row.

:class:`Predictor` is the same in Python, scikit-learn style (``classes_``,
``predict_proba``, ``predict``).
"""

from __future__ import annotations

import sys
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from skysort.data.inputs import expand_rows
from skysort.data.transforms import create_transform
from skysort.device import auto_is_cpu, resolve_device
from skysort.errors import ConfigError, DataError
from skysort.models.conformal import check_coverage, in_sets, set_labels
from skysort.models.info import ModelInfo, read_model_info
from skysort.models.runners import OnnxWorkerModel, Runner, iter_outputs
from skysort.prediction.writers import Layout, Sink, provenance
from skysort.rundir import PREDICTIONS
from skysort.tasks import Task

if TYPE_CHECKING:
    from skysort.models.model import SkyModel

ENGINES = ("auto", "onnx", "openvino", "torch")


def check_count(name: str, value: int | None, low: int) -> None:
    """A ConfigError unless ``value`` is None or a whole number of at least ``low``."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or value < low):
        raise ConfigError(f"{name}={value!r}: must be a whole number of at least {low}")


@dataclass(frozen=True, eq=False)
class PredictionOptions:
    """What ``--coverage`` and ``--min-confidence`` ask of one model, checked against it
    (:meth:`check`): a :class:`Predictor` holds them, and its
    :class:`~skysort.prediction.writers.Layout` writes the columns they add.

    Attributes:
        coverage: add each image's conformal prediction set for this coverage.
        min_confidence: below this top probability, abstain (no prediction).
        set_thresholds: the sets' threshold per class for ``coverage`` (None without it).
    """

    coverage: float | None = None
    min_confidence: float | None = None
    set_thresholds: np.ndarray | None = None

    @classmethod
    def check(cls, info: ModelInfo, coverage: float | None = None,
              min_confidence: float | None = None) -> PredictionOptions:
        """The options for the model ``info`` describes, or a ConfigError: prediction sets
        and abstention need one class per image, and sets need the conformity scores a
        calibrated run keeps."""
        what = "--coverage" if coverage is not None else "--min-confidence"
        if (coverage is not None or min_confidence is not None) and not info.task.single_label:
            raise ConfigError(f"{what} needs a model with one class per image; this one "
                              f"predicts {info.task.kind} outputs")
        set_thresholds = None
        if coverage is not None:
            if info.conformal is None:
                check_coverage(coverage)  # a coverage out of range is named first
                raise ConfigError("--coverage: this run holds no conformity scores (it was "
                                  "trained before skysort kept them, or with an empty "
                                  "validation split); train it again")
            # checks the coverage, and computes the thresholds once for every image
            set_thresholds = info.conformal.thresholds(info.task.classes, coverage)
        if min_confidence is not None and not 0 <= min_confidence <= 1:
            raise ConfigError(f"min_confidence={min_confidence}: must lie in [0, 1]")
        return cls(coverage, min_confidence, set_thresholds)


def make_runner(predictor: Predictor, engine: str, device: str, precision: str = "auto"
                ) -> tuple[str, Runner | OnnxWorkerModel, str]:
    """(engine name, runner, a note of the choice): the exported model under ONNX Runtime
    for ``onnx``, under OpenVINO for ``openvino`` (at the fastest precision that passes
    :mod:`~skysort.prediction.engine_check`), run inside the decoding processes; ``auto``
    on a CPU: OpenVINO where it is installed, passes and measures faster, else ONNX
    Runtime; else the model in torch."""
    if engine not in ENGINES:
        raise ConfigError(f"engine {engine!r} is not one of {', '.join(ENGINES)}")
    if precision != "auto" and engine not in ("openvino", "auto"):
        raise ConfigError(f"--precision {precision}: reduced precision runs under "
                          "--engine openvino (or auto), not {engine}")
    if engine in ("onnx", "openvino") or (engine == "auto" and auto_is_cpu(device)):
        from skysort.models.export import onnx_with_source

        path, source = onnx_with_source(predictor.run)
        if engine == "onnx":
            return "onnx", OnnxWorkerModel(str(path), source), ""
        from skysort.prediction.engine_check import choose

        return choose(predictor.run, predictor.info, path, source, precision,
                      default_engine=engine == "auto")
    from skysort.models.model import published_runner

    return "torch", published_runner(predictor.model, resolve_device(device)), ""


class Predictor:
    """A trained model, ready to label image files.

    Attributes:
        classes_: class names (single-label tasks) or output column names (multi-label,
            vote fractions); :meth:`predict_proba` columns follow this order.
        engine: ``onnx`` or ``torch``, whichever runs the model.
        options: ``coverage`` and ``min_confidence``, checked against the model.
    """

    def __init__(self, run: str | Path, *, engine: str = "auto", device: str = "auto",
                 batch_size: int = 32, workers: int | None = None, tta: bool = False,
                 threads: int | None = None, coverage: float | None = None,
                 min_confidence: float | None = None, precision: str = "auto") -> None:
        """Args:
            run: the run directory.
            engine: ``auto`` (on a CPU: OpenVINO where installed, checked and faster, else
                ONNX Runtime; torch on a GPU), ``onnx``, ``openvino`` or ``torch``.
            precision: OpenVINO's: ``auto`` (bf16 where the CPU has it, else f32),
                ``f32``, ``bf16`` or ``int8``; a reduced one is used only after it passed
                its check against f32 (``RUN/engine_check.json``), else f32.
            workers: processes that decode (and, under ONNX Runtime, also run the model);
                default one per core; 0 does everything in this process.
            tta: average over the test-time views of the run's augmentation preset.
            threads: ONNX Runtime threads when the model runs in this process
                (``workers=0``); default every core.
            coverage, min_confidence: the prediction sets and abstention the rows written
                with this predictor hold (:func:`predict`); checked here, before the model
                is loaded.
        """
        check_count("batch_size", batch_size, 1)
        check_count("workers", workers, 0)
        check_count("threads", threads, 1)
        self.run = Path(run)
        self.info = read_model_info(self.run)
        self.task = self.info.task
        self.options = PredictionOptions.check(self.info, coverage, min_confidence)
        self.engine, self.runner, self.engine_note = make_runner(self, engine, device,
                                                                 precision)
        self.batch_size = batch_size
        self.workers = workers
        self.threads = threads
        self.tta = str(self.info.extra.get("augment", "sky")) if tta else None

    @cached_property
    def model(self) -> SkyModel:
        """The model in torch, loaded when first needed (ONNX Runtime needs only the
        exported file)."""
        from skysort.models.model import load_model

        return load_model(self.run)[0]

    @classmethod
    def load(cls, run: str | Path, **kwargs: object) -> Predictor:
        """Loads the model saved in a run directory."""
        return cls(run, **kwargs)  # type: ignore[arg-type]

    @property
    def classes_(self) -> list[str]:
        return list(self.task.classes)

    @property
    def single_label(self) -> bool:
        return self.task.single_label

    def iter_batches(self, paths: Iterable[Path]
                     ) -> Iterator[tuple[list[Path], np.ndarray, dict[int, str]]]:
        """``(paths, outputs, errors)`` per batch (:func:`~skysort.models.runners.iter_outputs`)."""
        return iter_outputs(self.runner, create_transform(self.info.preprocess), paths,
                            num_outputs=self.task.num_outputs, batch_size=self.batch_size,
                            workers=self.workers, tta=self.tta, threads=self.threads)

    def predict_outputs(self, paths: Sequence[str | Path]) -> np.ndarray:
        """The task's published outputs (for binary: P(positive)); NaN rows if unreadable."""
        parts = [out for _, out, _ in self.iter_batches(Path(p) for p in paths)]
        if not parts:
            return np.zeros((0, self.task.num_outputs), dtype=np.float32)
        return np.concatenate(parts)

    def predict_proba(self, paths: Sequence[str | Path]) -> np.ndarray:
        """Calibrated probabilities ``(n, len(classes_))`` (the run's calibration is part of
        the model): one per class for single-label tasks, one
        per output column otherwise (fractions for vote fractions); NaN rows for
        unreadable files."""
        outputs = self.predict_outputs(paths)
        return self.task.class_probabilities(outputs) if self.single_label else outputs

    def predict_set(self, paths: Sequence[str | Path], coverage: float = 0.9
                    ) -> list[list[str] | None]:
        """Conformal prediction sets: per file, the classes (most probable first) whose set
        holds the true class for a share ``coverage`` of images like the validation split's
        (:mod:`skysort.evaluation.conformal`); None for an unreadable file."""
        q = PredictionOptions.check(self.info, coverage, None).set_thresholds
        if q is None:
            raise TypeError(f"coverage={coverage!r}: expected a number")
        probs = self.predict_proba(paths)
        member = in_sets(probs, q)
        return [None if np.isnan(p).any() else set_labels(p, m, self.classes_)
                for p, m in zip(probs, member, strict=True)]

    def predict(self, paths: Sequence[str | Path]) -> np.ndarray:
        """Single-label: the predicted class per file (``""`` for unreadable files).
        Multi-label: a 0/1 matrix at the run's threshold. Fractions: the fractions."""
        outputs = self.predict_outputs(paths)
        if not self.single_label:
            return self.task.decisions(outputs, self.info.threshold)
        ok = ~np.isnan(outputs).any(axis=1)
        out = np.full(len(paths), "", dtype=object)
        names = np.array(self.classes_, dtype=object)
        out[ok] = names[self.task.predicted_class(outputs[ok], self.info.threshold)]
        return out


def predict(run: str | Path, inputs: Iterable[str | Path], output: str | Path | None = None,
            *, batch_size: int = 32, workers: int | None = None, device: str = "auto",
            engine: str = "auto", top_k: int = 5, quiet: bool = False, tta: bool = False,
            resume: bool = False, fmt: str | None = None, path_column: str = "path",
            coverage: float | None = None, min_confidence: float | None = None,
            keep_columns: Sequence[str] = (), precision: str = "auto") -> Path:
    """Labels every image named by ``inputs`` and writes the predictions file.

    Args:
        run: the run directory.
        inputs: files, folders, glob patterns, text files of paths, catalogues (CSV, FITS
            binary table, ECSV, VOTable, Parquet).
        output: the file to write (``.csv``, ``.parquet`` for a folder of Parquet parts,
            ``.fits`` or ``.ecsv`` for one table with the run's provenance in its
            metadata); by default ``RUN/predictions.csv``.
        engine, precision: as :class:`Predictor` takes them; the choice is printed first.
        top_k: for a single input image, how many classes to print.
        tta: average over test-time augmentation views (rotations and flips).
        resume: keep the rows an interrupted run already wrote and label only the rest.
        fmt: ``csv``, ``parquet``, ``fits`` or ``ecsv`` (default: from the output's suffix).
        path_column: the path column of a catalogue input.
        coverage: add each image's conformal prediction set for this coverage
            (``prediction_set``, ``set_size``).
        min_confidence: leave ``prediction`` empty, and mark ``abstained``, when the top
            probability is below this.
        keep_columns: catalogue columns to carry into every output row, after the first
            column (every input must then be a catalogue that has them).

    Returns:
        The output path.
    """
    check_count("top_k", top_k, 1)
    predictor = Predictor(run, engine=engine, device=device, batch_size=batch_size,
                          workers=workers, tta=tta, coverage=coverage,
                          min_confidence=min_confidence, precision=precision)
    if predictor.engine_note and not quiet:
        print(predictor.engine_note, file=sys.stderr)
    output = Path(output) if output else Path(run) / PREDICTIONS
    keep = list(keep_columns)
    layout = Layout(predictor.info, predictor.options, keep)
    sink = Sink(output, layout, fmt, resume=resume, meta=provenance(run, predictor.info))
    if sink.done and not quiet:
        print(f"resuming: {len(sink.done)} input(s) already in {output}", file=sys.stderr)
    kept: dict[Path, deque[list[Any]]] = defaultdict(deque)  # per path waiting, its values

    def todo() -> Iterator[Path]:
        for p, values in expand_rows(inputs, path_column, keep):
            if layout.key(p) not in sink.done:
                if keep:
                    kept[p].append(values)
                yield p

    seen = 0
    first: tuple[Path, np.ndarray | None, str] | None = None
    try:
        with tqdm(desc=f"predicting ({predictor.engine})", unit="img", dynamic_ncols=True,
                  disable=quiet, mininterval=1) as bar:
            for chunk, outputs, errors in predictor.iter_batches(todo()):
                for i, path in enumerate(chunk):
                    bad = errors.get(i, "")
                    sink.write(path, None if bad else outputs[i], bad,
                               kept[path].popleft() if keep else ())
                    if first is None:
                        first = (path, None if bad else outputs[i], bad)
                sink.flush()
                seen += len(chunk)
                bar.update(len(chunk))
    finally:
        sink.close()
    if seen == 0 and not sink.done:
        raise DataError(f"no image files found in {', '.join(map(str, inputs))}")
    if seen == 1 and first is not None and not quiet:
        path, out, why = first
        if out is None:
            print(f"{path}: cannot read image: {why}", file=sys.stderr)
        else:
            print_top_k(path, out, predictor.task, top_k)
    if sink.n_errors and not quiet:
        where = sink.errors_path if layout.table else output
        print(f"{sink.n_errors} file(s) could not be read; {where} gives the reasons",
              file=sys.stderr)
    return output


def print_top_k(path: Path, outputs: np.ndarray, task: Task, k: int) -> None:
    """Prints the ``k`` most probable classes (as TensorFlow's label_image does), or what a
    prediction file holds for a kind with no one class (e.g. vote fractions, or a count
    model's fractions and their intervals)."""
    print(f"{path}:")
    single = task.single_label
    values = task.class_probabilities(outputs[None])[0] if single else \
        task.table_values(outputs[None])[0]
    names = task.classes if single else task.table_columns(None)
    order = np.argsort(-values)[:k] if single else range(len(values))
    width = max([24, *(len(n) + 2 for n in names)])
    for c in order:
        print(f"  {names[c]:<{width}}{values[c]:.4f}")
