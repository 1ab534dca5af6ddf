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

import numpy as np
from tqdm.auto import tqdm

from skysort.data.images import is_image_file
from skysort.data.sources import iter_image_files
from skysort.errors import DataError
from skysort.inference import iter_outputs
from skysort.models.model import ModelInfo, SkyModel, load_model
from skysort.train import resolve_device

FIXED_COLUMNS = ("path", "prediction", "probability", "error")


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
        classes_: the class names; :meth:`predict_proba` columns follow this order.
    """

    def __init__(self, model: SkyModel, info: ModelInfo, *, device: str = "auto",
                 batch_size: int = 32, workers: int | None = None) -> None:
        self.model = model
        self.info = info
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
        return list(self.info.task.classes)

    def predict_proba(self, paths: Sequence[str | Path]) -> np.ndarray:
        """Class probabilities, ``(n, k)``; rows of unreadable files are NaN."""
        outputs = np.full((len(paths), len(self.classes_)), np.nan, dtype=np.float32)
        for index, out, _ in self.iter_batches([Path(p) for p in paths]):
            outputs[index] = out
        return outputs

    def predict(self, paths: Sequence[str | Path]) -> np.ndarray:
        """The most probable class name per file (``""`` for unreadable files)."""
        probs = self.predict_proba(paths)
        names = np.array(self.classes_, dtype=object)
        ok = ~np.isnan(probs).any(axis=1)
        out = np.full(len(paths), "", dtype=object)
        out[ok] = names[probs[ok].argmax(axis=1)]
        return out

    def iter_batches(self, paths: Sequence[Path]
                     ) -> Iterator[tuple[list[int], np.ndarray, list[tuple[int, str]]]]:
        return iter_outputs(self.model, self.info, paths, batch_size=self.batch_size,
                            workers=self.workers, device=self.device)


def csv_columns(classes: Sequence[str]) -> list[str]:
    """The CSV header; a class named like a fixed column gets a ``prob_`` prefix."""
    names = [f"prob_{c}" if c in FIXED_COLUMNS else c for c in classes]
    return ["path", "prediction", "probability", *names, "error"]


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
    classes = predictor.classes_
    paths = list(expand_inputs(inputs))
    if not paths:
        raise DataError(f"no image files found in {', '.join(map(str, inputs))}")
    output = Path(output) if output else Path(run) / "predictions.csv"
    output.parent.mkdir(parents=True, exist_ok=True)
    n_bad = 0
    with open(output, "w", newline="", encoding="utf-8") as fh, \
            tqdm(total=len(paths), desc="predicting", unit="img", dynamic_ncols=True,
                 disable=quiet) as bar:
        writer = csv.writer(fh)
        writer.writerow(csv_columns(classes))
        for index, probs, errors in predictor.iter_batches(paths):
            rows: dict[int, list[str]] = {}
            for i, p in zip(index, probs, strict=True):
                top = int(np.argmax(p))
                rows[i] = [str(paths[i]), classes[top], f"{p[top]:.6f}",
                           *(f"{v:.6f}" for v in p), ""]
            for i, why in errors:
                rows[i] = [str(paths[i]), "", "", *[""] * len(classes), why]
            n_bad += len(errors)
            writer.writerows(rows[i] for i in sorted(rows))
            bar.update(len(rows))
            if len(paths) == 1 and index and not quiet:
                print_top_k(paths[0], probs[0], classes, top_k)
            elif len(paths) == 1 and errors:
                print(f"{paths[0]}: cannot read image: {errors[0][1]}", file=sys.stderr)
    if n_bad and not quiet:
        print(f"{n_bad} file(s) could not be read; their rows in {output} give the reason",
              file=sys.stderr)
    return output


def print_top_k(path: Path, probs: np.ndarray, classes: Sequence[str], k: int) -> None:
    """Prints the ``k`` most probable classes, as TensorFlow's label_image does."""
    print(f"{path}:")
    for c in np.argsort(-probs)[:k]:
        print(f"  {classes[c]:<24}{probs[c]:.4f}")
