"""The images to label: files, folders, glob patterns, lists of paths and catalogues.

:func:`expand_inputs` yields paths one at a time, never building the whole list, so a
catalogue of millions of rows costs no more memory than one of ten. An input may be:

* an image file, or a folder (searched recursively, hidden files skipped);
* a glob pattern (``'survey/**/*.fits'``);
* a text file (``.txt``, ``.lst``) of one path per line;
* a catalogue with a path column (``path_column``, default ``path``): CSV, or a FITS
  binary table, ECSV, VOTable or Parquet file (:mod:`skysort.data.catalogues`; a FITS
  file is a catalogue when it holds a table before any image).

Relative paths inside a list or catalogue are read from the list's own folder.
:func:`expand_rows` also yields, per path, the catalogue cells of the columns to keep.
"""

from __future__ import annotations

import csv
import glob
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from skysort.data.catalogues import (
    catalogue_format,
    cell_texts,
    cell_values,
    is_fits_table,
    read_table,
)
from skysort.data.fits import BAND_FIELD
from skysort.data.images import is_image_file
from skysort.data.sources import iter_image_files
from skysort.errors import ConfigError, DataError

LIST_SUFFIXES = (".txt", ".lst", ".list")


def expand_inputs(inputs: Iterable[str | Path], path_column: str = "path") -> Iterator[Path]:
    """Image paths named by ``inputs``, in order; see the module doc for the kinds.

    Raises:
        DataError: an input is neither an existing path nor a pattern that matches, or a
            catalogue lacks its path column.
    """
    for path, _ in expand_rows(inputs, path_column):
        yield path


def is_catalogue(path: Path) -> bool:
    """Whether an input file is a catalogue of paths (rather than an image)."""
    fmt = catalogue_format(path)
    return path.suffix.lower() == ".csv" or (fmt is not None and (fmt != "fits" or
                                                                 is_fits_table(path)))


def expand_rows(inputs: Iterable[str | Path], path_column: str = "path",
                keep: Sequence[str] = ()) -> Iterator[tuple[Path, list[Any]]]:
    """As :func:`expand_inputs`, each path with the values of the catalogue columns
    ``keep`` on its row (as the catalogue types them; None where missing).

    Raises:
        DataError: as :func:`expand_inputs`; also a column to keep that a catalogue lacks,
            or an input that is no catalogue while columns are to be kept.
    """
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_file() and is_catalogue(path):
            yield from _read_catalogue(path, path_column, keep)
            continue
        if keep:
            raise DataError(f"{item}: --keep-columns {','.join(keep)} needs catalogue inputs "
                            "(CSV, FITS table, ECSV, VOTable, Parquet) with a path column")
        for found in _expand_one(item, path):
            yield found, []


def _expand_one(item: str | Path, path: Path) -> Iterator[Path]:
    if path.is_dir():
        yield from iter_image_files(path)
    elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
        yield from _read_list(path)
    elif path.is_file() or BAND_FIELD in path.name:  # a per-band pattern: read band by band
        yield path
    elif glob.has_magic(str(item)):
        found = False
        for match in sorted(glob.iglob(str(path), recursive=True)):
            m = Path(match)
            if m.is_dir():
                found = True
                yield from iter_image_files(m)
            elif is_image_file(m):
                found = True
                yield m
        if not found:
            raise DataError(f"{item}: the pattern matches no image files")
    else:
        raise DataError(f"{item}: no such file or folder")


def _read_list(path: Path) -> Iterator[Path]:
    with open(path, encoding="utf-8", errors="surrogateescape") as fh:
        for line in fh:
            text = line.strip()
            if text and not text.startswith("#"):
                yield _resolve(path.parent, text)


def _read_catalogue(path: Path, column: str, keep: Sequence[str]
                    ) -> Iterator[tuple[Path, list[Any]]]:
    if catalogue_format(path) is not None:
        table = read_table(path)
        _check_columns(path, column, keep, list(table.colnames))
        for name in (column, *keep):
            if table[name].ndim != 1:
                raise DataError(f"{path}: column {name!r} holds {table[name].shape[1:]} "
                                "values per row; name a column of one value per row")
        kept = [cell_values(table[name]) for name in keep]
        for i, text in enumerate(cell_texts(table[column])):
            if text.strip():
                yield _resolve(path.parent, text.strip()), [k[i] for k in kept]
        return
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as fh:
        reader = csv.DictReader(fh)
        _check_columns(path, column, keep, list(reader.fieldnames or []))
        for row in reader:
            if row[column]:
                yield _resolve(path.parent, row[column].strip()), [row[k] for k in keep]


def _check_columns(path: Path, column: str, keep: Sequence[str], names: list[str]) -> None:
    if column not in names:
        raise DataError(f"{path}: no path column {column!r} (columns: {names}); name it "
                        "with --path-column")
    missing = [k for k in keep if k not in names]
    if missing:
        raise DataError(f"{path}: no column(s) {missing} to keep (--keep-columns); columns "
                        f"are {names}")


def _resolve(base: Path, text: str) -> Path:
    p = Path(text).expanduser()
    return p if p.is_absolute() else base / p


# -- the scikit-learn estimators' X and y ----------------------------------------------


def array_paths(X: Any) -> tuple[list[str], Any]:
    """Image paths from a list, array, pandas Series or one-column DataFrame, and the
    pandas index to give predictions (None for other inputs)."""
    pandas = hasattr(X, "iloc")  # a Series or DataFrame
    index = X.index if pandas else None
    columns = getattr(X, "columns", None) if pandas else None
    if columns is not None:
        if len(columns) != 1:
            raise ConfigError(f"X has columns {list(columns)}; give the one column of image "
                              "paths, e.g. X=df['path']")
        X = X[columns[0]]
    values = np.asarray(X, dtype=object)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise ConfigError(f"X has shape {values.shape}; give a list (or one column) of image "
                          "file paths")
    return [str(v) for v in values], index


def _missing(value: Any) -> bool:
    return value is None or str(value) in ("<NA>", "NaT") or \
        (isinstance(value, float | np.floating) and bool(np.isnan(value)))


def array_labels(y: Any, n: int) -> np.ndarray:
    """The labels as one flat array, checked: one per path, none missing."""
    labels = np.asarray(y).ravel()
    if len(labels) != n:
        raise DataError(f"{n} image paths but {len(labels)} labels; give one label per path")
    missing = [i for i, v in enumerate(labels.tolist()) if _missing(v)]
    if missing:
        raise DataError(f"{len(missing)} label(s) missing (None or NaN), e.g. at position "
                        f"{missing[0]}; give every image a label, or leave it out")
    return labels


def as_frame(values: np.ndarray, columns: list[Any], index: Any) -> Any:
    """``values`` as a DataFrame indexed like the input when the input was pandas."""
    if index is None:
        return values
    import pandas as pd

    return pd.DataFrame(values, index=index, columns=columns)
