"""The answers of a labelling session: ``labels.csv``, a table ``skysort train --labels``
reads as it is (an id column of paths relative to the image folder, a ``label`` column).

Every answer reaches the disk as it is given: one CSV line appended in one ``write``,
flushed and fsynced, so Ctrl-C, ``kill -9`` or a browser reload never loses one. Undo
rewrites the file whole through :func:`skysort.rundir.atomic_write` (a temporary file,
fsync, ``os.replace``), leaving the old file or the new one, never half: the file always
holds exactly the answers that stand, with no tombstone that a reader would need to know
about (``read_csv_table`` leaves out every row of an id that is repeated). An existing
label table (``id,label``, a header of two columns or more) is appended to in its own
columns, so new answers merge with the labels it already holds.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import IO

from skysort.errors import ConfigError, LabelError
from skysort.rundir import atomic_write

#: The header of a new answer file: the id column (``read_csv_table``'s default is the
#: first column) and the target.
HEADER = ("path", "label")


class AnswerFile:
    """``labels.csv``: read once, then appended to one answer at a time.

    Args:
        path: the CSV; created with :data:`HEADER` when missing or empty.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = _hold_lock(self.path)
        self.header: list[str] = list(HEADER)
        #: The rows as they stand, in file order (each a list of cells).
        self.rows: list[list[str]] = []
        self._read()
        self.id_at = 0
        self.label_at = (self.header.index("label") if "label" in self.header[1:]
                         else 1)

    def _read(self) -> None:
        if not self.path.is_file() or self.path.stat().st_size == 0:
            atomic_write(self.path, _line(self.header).encode("utf-8"))
            return
        try:
            text = self.path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise LabelError(f"{self.path}: not UTF-8 text (byte {exc.start}); give a new "
                             "--out file, or save this one as UTF-8 CSV") from None
        lines = list(csv.reader(io.StringIO(text, newline="")))
        header = [h.strip() for h in lines[0]] if lines else []
        if len(header) < 2:
            raise LabelError(f"{self.path}: a label table needs a header of an id column and a "
                             f"label column (found {header}); give a new --out file")
        self.header = header
        self.rows = [r for r in lines[1:] if any(c.strip() for c in r)]
        if not text.endswith(("\n", "\r")):  # a line cut short by a crash: end it first
            with open(self.path, "a", encoding="utf-8", newline="") as fh:
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())

    def start(self, rows: list[tuple[str, str]]) -> None:
        """Fills an answer file that holds no row yet with ``(id, label)`` rows, whole or
        not at all."""
        assert not self.rows, "start() fills a new answer file only"
        cells = [[key, label] for key, label in rows]
        atomic_write(self.path, "".join(_line(r) for r in [self.header, *cells]).encode("utf-8"))
        self.rows = cells

    def close(self) -> None:
        """Lets another session write the file (the lock is also let go at exit)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def labels(self) -> dict[str, str]:
        """Label by id of every row (the last one where an id repeats)."""
        return {r[self.id_at].strip(): r[self.label_at] if len(r) > self.label_at else ""
                for r in self.rows if r}

    def append(self, key: str, label: str) -> None:
        """Appends one answer: one line, one write, flushed and fsynced."""
        row = [""] * len(self.header)
        row[self.id_at], row[self.label_at] = key, label
        with open(self.path, "a", encoding="utf-8", newline="") as fh:
            fh.write(_line(row))
            fh.flush()
            os.fsync(fh.fileno())
        self.rows.append(row)

    def remove(self, key: str) -> bool:
        """Removes the last row of ``key`` (rewriting the file atomically); False when no
        row names it."""
        for i in range(len(self.rows) - 1, -1, -1):
            if self.rows[i] and self.rows[i][self.id_at].strip() == key:
                rows = self.rows[:i] + self.rows[i + 1:]
                atomic_write(self.path, "".join(_line(r) for r in [self.header, *rows])
                             .encode("utf-8"))
                self.rows = rows
                return True
        return False


def _hold_lock(path: Path) -> IO[bytes] | None:
    """An exclusive lock on ``.<name>.lock`` beside the answer file, held while the file
    is open: two sessions writing one file would undo each other's answers. None where
    the system has no ``flock`` (Windows)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return None
    lock = open(path.with_name(f".{path.name}.lock"), "ab")  # noqa: SIM115 - held open
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        raise ConfigError(f"{path}: another skysort label is writing it; stop that one "
                          "first (its page shows the same images)") from None
    return lock


def _line(cells: list[str] | tuple[str, ...]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(cells)
    return buffer.getvalue()


def image_key(path: Path, root: Path) -> str:
    """The id of an image in the answer file: its path relative to ``root``, with ``/``."""
    return Path(os.path.relpath(path, root)).as_posix()


def image_root(paths: list[Path], out: Path) -> Path:
    """The folder the answer file's paths are relative to: the answer file's own folder
    when every image lies under it (then ``skysort train --labels labels.csv`` needs no
    ``--images``), else the deepest folder holding them all."""
    folder = out.resolve().parent
    if all(p.resolve().is_relative_to(folder) for p in paths):
        return folder
    return Path(os.path.commonpath([str(p.resolve().parent) for p in paths]))
