"""Prediction files: the layout that fits the model, as CSV, Parquet, FITS or ECSV.

Layouts (:class:`Layout`):

* a model trained from a table (its id column is known) writes the submission layout:
  the id column, then one column per output, in the input's order and naming
  (``GalaxyID,Class1.1,...``; ``name,invasive`` with the probability). A file that
  cannot be read cannot fill such a row; it goes to ``<output>_errors.csv``;
* otherwise ``path,prediction,probability,<one column per class>,error``, an unreadable
  file getting a row with its error; a kind with no one class per image (vote fractions
  or counts fitted by :class:`~skysort.ImageRegressor`) writes ``path``, its table
  columns (:meth:`~skysort.tasks.Task.table_columns`) and ``error``.

Sinks write rows as they arrive. ``resume=True`` first reads what an earlier, interrupted
run wrote (skipping a half-written last line) and reports those inputs as done, so a
resumed run ends with exactly one row per input. Parquet output is a folder of part
files, each written whole and renamed into place. A FITS binary table or an ECSV file is
written whole when the run ends, with the run's provenance in its metadata
(:func:`provenance`); such a run cannot be resumed. Columns kept from a catalogue input
(``keep``) follow the first column.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from skysort._version import __version__
from skysort.data.catalogues import TABLE_OUTPUTS, write_catalogue
from skysort.data.images import image_suffix
from skysort.errors import ConfigError
from skysort.models.conformal import in_sets, set_labels
from skysort.models.info import ModelInfo
from skysort.tasks.base import output_columns

if TYPE_CHECKING:
    from skysort.prediction.predictor import PredictionOptions

FIXED_COLUMNS = ("path", "prediction", "probability", "error")
#: Decimals written per value: rounding stays far below the 1e-6 to which written vote
#: fractions still obey their tree.
DECIMALS = 8
OUTPUT_FORMATS = ("csv", "parquet", "fits", "ecsv")
#: Formats written whole at the end, as one astropy table.
TABLE_FORMATS = ("fits", "ecsv")


def file_id(path: Path) -> str:
    """The id a file stands for in a table: its name without the image extension."""
    suffix = image_suffix(path)
    return path.name[: -len(suffix)] if suffix else path.name


#: Columns that ``--coverage`` and ``--min-confidence`` add.
SET_COLUMNS = ("prediction_set", "set_size")
ABSTAINED = "abstained"
#: Between the class names of a prediction set.
SET_SEPARATOR = "|"


class Layout:
    """Columns and rows for one model's predictions.

    Args:
        options: the predictor's options, checked against ``info`` when it was built
            (:class:`~skysort.prediction.predictor.PredictionOptions`). With a coverage,
            the conformal prediction set (``prediction_set``: class names joined by ``|``,
            most probable first; ``set_size``); with a minimum confidence, below it leave
            ``prediction`` empty and set ``abstained`` to 1.
    """

    def __init__(self, info: ModelInfo, options: PredictionOptions | None = None,
                 keep: Sequence[str] = ()) -> None:
        self.info = info
        self.task = info.task
        self.table = info.id_column is not None
        self.min_confidence = options.min_confidence if options else None
        self.set_thresholds = options.set_thresholds if options else None
        extra = [*(SET_COLUMNS if self.set_thresholds is not None else ()),
                 *((ABSTAINED,) if self.min_confidence is not None else ())]
        if self.table:
            names = self.task.table_columns(info.target_columns)
            self.columns = [str(info.id_column), *names, *extra]
        elif not self.task.single_label:  # no class to name: the outputs as in a table
            names = output_columns(self.task.table_columns(info.target_columns), FIXED_COLUMNS)
            self.columns = ["path", *names, *extra, "error"]
        else:
            names = output_columns(self.task.classes, FIXED_COLUMNS)
            self.columns = ["path", "prediction", "probability", *names, *extra, "error"]
        self.keep = list(keep)
        clash = [k for k in self.keep if k in self.columns]
        if clash:
            raise ConfigError(f"--keep-columns {clash}: the predictions already have such "
                              f"columns ({self.columns}); keep other columns")
        self.columns[1:1] = self.keep

    def _extra(self, probs: np.ndarray | None, top: int) -> list[Any]:
        """The values of the set and abstention columns (None for an unreadable file)."""
        values: list[Any] = []
        if self.set_thresholds is not None:
            if probs is None:
                values += [None, None]
            else:
                names = set_labels(probs, in_sets(probs[None], self.set_thresholds)[0],
                                   self.task.classes)
                values += [SET_SEPARATOR.join(names), len(names)]
        if self.min_confidence is not None:
            values.append(None if probs is None else
                          int(float(probs[top]) < self.min_confidence))
        return values

    def key(self, path: Path) -> str:
        """What identifies an input in the output (its id, or its path)."""
        return file_id(path) if self.table else str(path)

    def row(self, path: Path, outputs: np.ndarray | None, error: str = "") -> list[Any] | None:
        """The output row, or None for an unreadable file in the table layout."""
        if outputs is None or np.isnan(outputs).any():
            if self.table:
                return None
            if not self.task.single_label:
                return [str(path), *[None] * (len(self.columns) - 2), error]
            return [str(path), "", None, *[None] * len(self.task.classes),
                    *self._extra(None, 0), error]
        if not self.task.single_label:
            values = [round(float(v), DECIMALS) for v in self.task.table_values(outputs[None])[0]]
            return [file_id(path), *values] if self.table else [str(path), *values, ""]
        probs = self.task.class_probabilities(outputs[None])[0]
        top = int(self.task.predicted_class(outputs[None], self.info.threshold)[0])
        extra = self._extra(probs, top)
        if self.table:
            return [file_id(path), *(round(float(v), DECIMALS) for v in outputs), *extra]
        abstain = self.min_confidence is not None and extra[-1] == 1
        return [str(path), "" if abstain else self.task.classes[top],
                round(float(probs[top]), DECIMALS),
                *(round(float(v), DECIMALS) for v in probs), *extra, ""]


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{DECIMALS}f}"
    return str(value)


def output_format(output: Path) -> str:
    """``csv``, ``parquet``, ``fits`` or ``ecsv`` from the output's name; any other suffix
    is refused rather than filled with text of another format."""
    suffix = output.suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    if suffix in ("", ".csv"):
        return "csv"
    if suffix in TABLE_OUTPUTS:
        return TABLE_OUTPUTS[suffix]
    raise ConfigError(f"{output}: cannot write predictions as {suffix!r}; name the output "
                      "*.fits, *.ecsv, *.csv or *.parquet, or choose --format "
                      f"{'|'.join(OUTPUT_FORMATS)}")


def provenance(run: str | Path, info: ModelInfo) -> dict[str, str]:
    """What a FITS or ECSV prediction table records of where it came from."""
    return {"RUNDIR": str(Path(run).resolve()), "SKYSORT": __version__,
            "BACKBONE": info.backbone, "TASK": info.task.kind,
            "DATE": datetime.now(UTC).isoformat(timespec="seconds")}


def parquet_text(value: Any) -> Any:
    """Parquet strings must be UTF-8: a path whose name is not (bytes from another
    system) is written with those bytes as ``\\xNN`` escapes."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return os.fsencode(value).decode("utf-8", "backslashreplace")
    return value


class Sink:
    """Writes rows to CSV, Parquet, FITS or ECSV; the unreadable files of the table layout
    go to ``<output>_errors.csv``. ``meta`` (:func:`provenance`) goes into a FITS or ECSV
    table's metadata."""

    def __init__(self, output: Path, layout: Layout, fmt: str | None = None,
                 resume: bool = False, rows_per_part: int = 50_000,
                 meta: dict[str, str] | None = None) -> None:
        self.fmt = fmt or output_format(output)
        if self.fmt not in OUTPUT_FORMATS:
            raise ConfigError(f"output format {self.fmt!r} is not one of "
                              f"{', '.join(OUTPUT_FORMATS)}")
        if resume and self.fmt in TABLE_FORMATS:
            raise ConfigError(f"{output}: --resume needs a csv or parquet output; a {self.fmt} "
                              "table is written whole at the end, so an interrupted run left "
                              "nothing to resume")
        self.meta = meta or {}
        self.output, self.layout = output, layout
        self.errors_path = output.with_name(f"{output.stem}_errors.csv")
        self.rows_per_part = rows_per_part
        self.done: set[str] = set()
        self.n_rows = self.n_errors = 0
        self._buffer: list[list[Any]] = []
        self._part = 0
        output.parent.mkdir(parents=True, exist_ok=True)
        if resume:
            self._read_done()
        elif self.fmt == "csv":
            output.unlink(missing_ok=True)
            self.errors_path.unlink(missing_ok=True)
        if resume:
            self._check_columns()
        if self.fmt in TABLE_FORMATS:
            self.errors_path.unlink(missing_ok=True)
        elif self.fmt == "csv":
            fresh = not output.is_file() or output.stat().st_size == 0
            self._fh = open(output, "a", newline="", encoding="utf-8",  # noqa: SIM115
                            errors="surrogateescape")
            self._csv = csv.writer(self._fh)
            if fresh:
                self._csv.writerow(layout.columns)
        else:
            output.mkdir(exist_ok=True)
            if not resume:
                for old in output.glob("part-*.parquet"):
                    old.unlink()
                self.errors_path.unlink(missing_ok=True)
            self._part = len(list(output.glob("part-*.parquet")))
        self._errors_fh: Any = None

    # -- resuming --------------------------------------------------------------------------

    def _check_columns(self) -> None:
        """A resumed run must write the columns the interrupted one did (the same
        ``--coverage`` and ``--min-confidence``), or its rows would not fit the header."""
        found: list[str] | None = None
        if self.fmt == "csv" and self.output.is_file():
            with open(self.output, newline="", encoding="utf-8", errors="surrogateescape") as fh:
                found = next(csv.reader(fh), None)
        elif self.fmt == "parquet" and self.output.is_dir():
            parts = sorted(self.output.glob("part-*.parquet"))
            if parts:
                import pyarrow.parquet as pq

                found = list(pq.read_schema(parts[0]).names)
        if found is not None and found != self.layout.columns:
            raise ConfigError(f"{self.output}: written with the columns {found}, and this run "
                              f"would write {self.layout.columns}; resume with the options of "
                              "the interrupted run (--coverage, --min-confidence), or write "
                              "to a new file")

    def _read_done(self) -> None:
        if self.fmt == "csv" and self.output.is_file():
            _truncate_partial_line(self.output)
            with open(self.output, newline="", encoding="utf-8", errors="surrogateescape") as fh:
                reader = csv.reader(fh)
                next(reader, None)
                self.done.update(row[0] for row in reader if row)
        elif self.fmt == "parquet" and self.output.is_dir():
            import pyarrow.parquet as pq

            for part in sorted(self.output.glob("part-*.parquet")):
                column = pq.read_table(part, columns=[self.layout.columns[0]]).column(0)
                self.done.update(str(v) for v in column.to_pylist())
        if self.errors_path.is_file():
            _truncate_partial_line(self.errors_path)
            with open(self.errors_path, newline="", encoding="utf-8",
                      errors="surrogateescape") as fh:
                reader = csv.reader(fh)
                next(reader, None)
                self.done.update(self.layout.key(Path(row[0])) for row in reader if row)

    # -- writing ---------------------------------------------------------------------------

    def write(self, path: Path, outputs: np.ndarray | None, error: str = "",
              kept: Sequence[Any] = ()) -> None:
        """One input's row; ``kept``: its values of the layout's kept catalogue columns."""
        row = self.layout.row(path, outputs, error)
        if error or outputs is None:
            self.n_errors += 1
        if row is None:
            self._write_error(path, error)
            return
        self.n_rows += 1
        if self.fmt == "csv":  # numbers as the catalogue gave them, not rounded
            kept = ["" if v is None else str(v) for v in kept]
        row[1:1] = kept
        if self.fmt in TABLE_FORMATS:
            self._buffer.append(row)
        elif self.fmt == "csv":
            self._csv.writerow([_csv_value(v) for v in row])
        else:
            self._buffer.append(row)
            if len(self._buffer) >= self.rows_per_part:
                self._flush_part()

    def flush(self) -> None:
        """Makes the rows written so far durable (called after every batch)."""
        if self.fmt == "csv":
            self._fh.flush()
        if self._errors_fh is not None:
            self._errors_fh.flush()

    def _write_error(self, path: Path, error: str) -> None:
        if self._errors_fh is None:
            fresh = not self.errors_path.is_file()
            self._errors_fh = open(self.errors_path, "a", newline="",  # noqa: SIM115
                                   encoding="utf-8", errors="surrogateescape")
            if fresh:
                csv.writer(self._errors_fh).writerow(["path", "error"])
        csv.writer(self._errors_fh).writerow([str(path), error])

    def _flush_part(self) -> None:
        if not self._buffer:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = list(zip(*self._buffer, strict=True))
        table = pa.table({name: [parquet_text(v) for v in values] for name, values in
                          zip(self.layout.columns, columns, strict=True)})
        final = self.output / f"part-{self._part:05d}.parquet"
        tmp = final.with_name(f".{final.name}.tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, final)
        self._part += 1
        self._buffer = []

    def close(self) -> None:
        if self.fmt in TABLE_FORMATS:
            write_catalogue(self.output, self.fmt, self.layout.columns, self._buffer, self.meta)
            self._buffer = []
        elif self.fmt == "csv":
            self._fh.close()
        else:
            self._flush_part()
        if self._errors_fh is not None:
            self._errors_fh.close()


def _truncate_partial_line(path: Path) -> None:
    """Cuts a CSV file back to its last complete record (what a kill mid-write leaves),
    also when the cut falls inside a quoted field that holds a newline."""
    with open(path, "rb+") as fh:
        data = fh.read()
        text = data.decode("utf-8", "surrogateescape")
        lines = re.findall(r"[^\n]*\n|[^\n]+$", text)
        consumed = 0

        def feed() -> Iterator[str]:
            nonlocal consumed
            for line in lines:
                consumed += len(line)
                yield line

        end = 0
        try:
            for _ in csv.reader(feed(), strict=True):
                if text[consumed - 1:consumed] == "\n":
                    end = consumed
        except csv.Error:  # a quoted field the kill cut short
            pass
        keep = len(text[:end].encode("utf-8", "surrogateescape"))
        if keep < len(data):
            fh.truncate(keep)


def read_predictions(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a prediction file or Parquet folder, as dicts (for tests and scripts)."""
    path = Path(path)
    if path.suffix.lower() in TABLE_OUTPUTS:
        from astropy.table import Table

        table = Table.read(path)
        return [dict(zip(table.colnames, row, strict=True)) for row in table.iterrows()]
    if path.is_dir() or path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows: list[dict[str, Any]] = []
        for part in sorted(path.glob("part-*.parquet")):
            rows += pq.read_table(part).to_pylist()
        return rows
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as fh:
        return list(csv.DictReader(fh))
