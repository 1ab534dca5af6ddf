"""Labelling new images with a trained run, and the CSV that pipelines expect.

``predict(RUN, inputs)`` expands files, folders and glob patterns lazily, runs the model
in batches and writes one CSV row per input as results arrive::

    path,prediction,probability,<class 1>,...,<class k>,error

An unreadable file gets a row with its error and empty probabilities; the run goes on.
:class:`Predictor` is the same in Python, scikit-learn style (``classes_``,
``predict_proba``, ``predict``).
"""

from __future__ import annotations

import csv
import glob
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from skysort.data.images import image_suffix, is_image_file
from skysort.data.sources import iter_image_files
from skysort.errors import DataError
from skysort.inference import iter_outputs
from skysort.models.model import ModelInfo, SkyModel, load_model
from skysort.tasks import Task
from skysort.train import resolve_device

FIXED_COLUMNS = ("path", "prediction", "probability", "error")
#: Decimals written per value: rounding error stays far below the 1e-6 to which written
#: vote fractions still obey their tree.
DECIMALS = 8


def expand_inputs(inputs: Iterable[str | Path]) -> Iterator[Path]:
    """Image paths named by files, folders (recursively) and glob patterns, in order.

    Raises:
        DataError: an input is neither an existing path nor a pattern that matches.
    """
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            yield from iter_image_files(path)
        elif path.is_file():
            yield path
        elif glob.has_magic(str(item)):
            matches = sorted(glob.iglob(str(path), recursive=True))
            if not matches:
                raise DataError(f"{item}: the pattern matches no files")
            for match in matches:
                m = Path(match)
                if m.is_dir():
                    yield from iter_image_files(m)
                elif is_image_file(m):
                    yield m
        else:
            raise DataError(f"{item}: no such file or folder")


class Predictor:
    """A trained model, ready to label image files.

    Attributes:
        classes_: class names (single-label tasks) or output column names (multi-label,
            vote fractions); :meth:`predict_proba` columns follow this order.
    """

    def __init__(self, model: SkyModel, info: ModelInfo, *, device: str = "auto",
                 batch_size: int = 32, workers: int | None = None) -> None:
        self.model = model
        self.info = info
        self.task = info.task
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.workers = workers

    @classmethod
    def load(cls, run: str | Path, **kwargs: object) -> Predictor:
        """Loads the model saved in a run directory."""
        model, info = load_model(run)
        return cls(model, info, **kwargs)  # type: ignore[arg-type]

    @property
    def classes_(self) -> list[str]:
        return list(self.task.classes)

    @property
    def single_label(self) -> bool:
        return self.task.kind in ("multiclass", "binary")

    def predict_outputs(self, paths: Sequence[str | Path]) -> np.ndarray:
        """The task's published outputs (for binary: P(positive)); NaN rows if unreadable."""
        outputs = np.full((len(paths), self.task.num_outputs), np.nan, dtype=np.float32)
        for index, out, _ in self.iter_batches([Path(p) for p in paths]):
            outputs[index] = out
        return outputs

    def predict_proba(self, paths: Sequence[str | Path]) -> np.ndarray:
        """Probabilities ``(n, len(classes_))``: one per class for single-label tasks, one
        per output column otherwise (fractions for vote fractions); NaN rows for
        unreadable files."""
        outputs = self.predict_outputs(paths)
        return self.task.class_probabilities(outputs) if self.single_label else outputs

    def predict(self, paths: Sequence[str | Path]) -> np.ndarray:
        """Single-label: the predicted class per file (``""`` for unreadable files).
        Multi-label: a 0/1 matrix at the run's threshold. Fractions: the fractions."""
        outputs = self.predict_outputs(paths)
        ok = ~np.isnan(outputs).any(axis=1)
        if not self.single_label:
            return (outputs >= self.info.threshold).astype(np.int64) \
                if self.task.kind == "multilabel" else outputs
        out = np.full(len(paths), "", dtype=object)
        names = np.array(self.classes_, dtype=object)
        out[ok] = names[self.task.predicted_class(outputs[ok], self.info.threshold)]
        return out

    def iter_batches(self, paths: Sequence[Path]
                     ) -> Iterator[tuple[list[int], np.ndarray, list[tuple[int, str]]]]:
        return iter_outputs(self.model, self.info, paths, batch_size=self.batch_size,
                            workers=self.workers, device=self.device)


def file_id(path: Path) -> str:
    """The id a file stands for in a table: its name without the image extension."""
    return path.name[: -len(image_suffix(path))] if image_suffix(path) else path.name


class PredictionWriter:
    """Writes prediction rows in the layout that fits the model's training data.

    * Trained from a table (``id_column`` known): the submission layout, the id column
      then one column per output: ``name,invasive`` for a binary task, ``GalaxyID,
      Class1.1,...`` for vote fractions (input order and naming). Unreadable files
      cannot fill such a row; they go to ``<output>_errors.csv`` instead.
    * Otherwise: ``path,prediction,probability,<one column per class>,error``.
    """

    def __init__(self, fh: Any, info: ModelInfo, errors_path: Path) -> None:
        self.info = info
        self.task = info.task
        self.table = info.id_column is not None
        self.writer = csv.writer(fh)
        self.errors_path = errors_path
        self.errors: list[tuple[str, str]] = []
        if self.table:
            names = (info.target_columns[:1] if self.task.kind == "binary" and
                     info.target_columns else self.task.output_names)
            self.writer.writerow([info.id_column, *names])
        else:
            names = [f"prob_{c}" if c in FIXED_COLUMNS else c for c in self.task.classes]
            self.writer.writerow(["path", "prediction", "probability", *names, "error"])

    def write(self, path: Path, outputs: np.ndarray | None, error: str = "") -> None:
        if outputs is None:
            self.errors.append((str(path), error))
            if not self.table:
                self.writer.writerow([str(path), "", "", *[""] * len(self.task.classes), error])
            return
        if self.table:
            self.writer.writerow([file_id(path), *(f"{v:.{DECIMALS}f}" for v in outputs)])
            return
        probs = self.task.class_probabilities(outputs[None])[0]
        top = int(self.task.predicted_class(outputs[None], self.info.threshold)[0])
        self.writer.writerow([str(path), self.task.classes[top], f"{probs[top]:.{DECIMALS}f}",
                              *(f"{v:.{DECIMALS}f}" for v in probs), ""])

    def finish(self) -> None:
        """Writes the errors file of the table layout, if any file could not be read."""
        if self.table and self.errors:
            with open(self.errors_path, "w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh)
                writer.writerow(["path", "error"])
                writer.writerows(self.errors)


def predict(run: str | Path, inputs: Iterable[str | Path], output: str | Path | None = None,
            *, batch_size: int = 32, workers: int | None = None, device: str = "auto",
            top_k: int = 5, quiet: bool = False) -> Path:
    """Labels every image named by ``inputs`` and writes the predictions CSV.

    Args:
        run: the run directory.
        inputs: files, folders and glob patterns.
        output: the CSV to write; by default ``RUN/predictions.csv``.
        top_k: for a single input image, how many classes to print.

    Returns:
        The CSV path.
    """
    predictor = Predictor.load(run, device=device, batch_size=batch_size, workers=workers)
    paths = list(expand_inputs(inputs))
    if not paths:
        raise DataError(f"no image files found in {', '.join(map(str, inputs))}")
    output = Path(output) if output else Path(run) / "predictions.csv"
    output.parent.mkdir(parents=True, exist_ok=True)
    errors_path = output.with_name(f"{output.stem}_errors.csv")
    errors_path.unlink(missing_ok=True)
    with open(output, "w", newline="", encoding="utf-8") as fh, \
            tqdm(total=len(paths), desc="predicting", unit="img", dynamic_ncols=True,
                 disable=quiet) as bar:
        writer = PredictionWriter(fh, predictor.info, errors_path)
        for index, outputs, errors in predictor.iter_batches(paths):
            rows = {i: (paths[i], out, "") for i, out in zip(index, outputs, strict=True)}
            rows.update({i: (paths[i], None, why) for i, why in errors})
            for i in sorted(rows):
                writer.write(*rows[i])
            bar.update(len(rows))
            if len(paths) == 1 and index and not quiet:
                print_top_k(paths[0], outputs[0], predictor.task, top_k)
            elif len(paths) == 1 and errors:
                print(f"{paths[0]}: cannot read image: {errors[0][1]}", file=sys.stderr)
    writer.finish()
    if writer.errors and not quiet:
        where = errors_path if writer.table else output
        print(f"{len(writer.errors)} file(s) could not be read; {where} gives the reasons",
              file=sys.stderr)
    return output


def print_top_k(path: Path, outputs: np.ndarray, task: Task, k: int) -> None:
    """Prints the ``k`` most probable classes (as TensorFlow's label_image does), or the
    outputs of a multi-label or vote-fraction model."""
    print(f"{path}:")
    single = task.kind in ("multiclass", "binary")
    values = task.class_probabilities(outputs[None])[0] if single else outputs
    names = task.classes if single else task.output_names
    order = np.argsort(-values)[:k] if single else range(len(values))
    for c in order:
        print(f"  {names[c]:<24}{values[c]:.4f}")
