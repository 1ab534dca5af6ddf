"""Labels from tables: a CSV of ids and targets, and label files of ``filename label`` lines.

Readers here never mix a doubtful row into the data. Each problem is recorded as a
:class:`LabelIssue` (row number, id, what was wrong); the row is left out, the reader goes
on, and the run directory gets ``label_issues.csv``. The cases:

* ``missing image``: no image file for the row's id;
* ``no row``: an image in the folder that no row names (not used);
* ``duplicate id``: an id on more than one row (every such row is left out, since there
  is no telling which is right);
* ``missing target`` / ``out of range``: an empty or NaN target, a fraction outside
  [0, 1], a class id that the class map does not know;
* ``label conflict``: a split file that gives a file another class than the label file.

A path that would leave the data root (``../``, an absolute path) is an error, not an
issue: such a table cannot be trusted.
"""

from __future__ import annotations

import bisect
import csv
import io
import os
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skysort.data.catalogues import catalogue_format, read_catalogue
from skysort.data.fits import BAND_FIELD
from skysort.data.images import image_suffix
from skysort.data.sources import LabeledImages, iter_image_files
from skysort.errors import ConfigError, DataError, LabelError
from skysort.tasks import TreeSchema, table_kind, task_class, task_kinds
from skysort.tasks.detect import default_targets


@dataclass(frozen=True)
class LabelIssue:
    """One row (or file) left out, and why."""

    kind: str
    row: int | None
    id: str
    detail: str


def write_bad_files(path: Path, data: LabeledImages, bad: Mapping[int, str]) -> None:
    """``bad_files.csv``: each unreadable file (relative to the data) and why."""
    with open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "reason"])
        for i in sorted(bad):
            writer.writerow([data.relpath(data.paths[i]), bad[i]])


def write_label_issues(path: str | Path, issues: Sequence[LabelIssue]) -> None:
    with open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as fh:
        writer = csv.writer(fh)
        writer.writerow(["kind", "row", "id", "detail"])
        for issue in issues:
            writer.writerow([issue.kind, "" if issue.row is None else issue.row, issue.id,
                             issue.detail])


def summarize_issues(issues: Sequence[LabelIssue]) -> str:
    counts = Counter(i.kind for i in issues)
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))


class ImageIndex:
    """Every image file under a folder, found by relative path, by path without extension,
    or by file name."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.by_rel: dict[str, Path] = {}
        self.by_stem: dict[str, Path] = {}
        self.by_name: dict[str, list[Path]] = defaultdict(list)
        self._sorted: list[str] | None = None
        for path in iter_image_files(folder):
            rel = Path(os.path.relpath(path, folder)).as_posix()
            self.by_rel[rel] = path
            self.by_stem.setdefault(rel[: -len(image_suffix(rel))], path)
            self.by_name[path.name].append(path)

    def find(self, key: str, pattern: str | None, where: str) -> Path | None:
        """The image for ``key`` (an id, or a file name with a pattern ``{id}.png``); with
        ``{band}`` in the pattern (``{id}_{band}.fits``), the per-band pattern of its files
        when at least one band's file is there (a missing band is found when it is read)."""
        rel = pattern.format(id=key, band=BAND_FIELD) if pattern else key
        check_inside(self.folder, rel.replace(BAND_FIELD, "band"), where)
        if BAND_FIELD in rel:
            return self.folder / rel if self.band_files(rel) else None
        if rel in self.by_rel:
            return self.by_rel[rel]
        if pattern is None:
            if rel in self.by_stem:
                return self.by_stem[rel]
            names = self.by_name.get(rel, [])
            if len(names) == 1:
                return names[0]
        return None


    def band_files(self, rel: str) -> list[Path]:
        """The files under the folder that the per-band pattern ``rel`` names (found by
        prefix in the sorted relative paths, so each row costs a search, not a scan)."""
        if self._sorted is None:
            self._sorted = sorted(self.by_rel)
        head, _, tail = rel.partition(BAND_FIELD)
        found = []
        for name in self._sorted[bisect.bisect_left(self._sorted, head):]:
            if not name.startswith(head):
                break
            band = name[len(head):len(name) - len(tail)]
            if name.endswith(tail) and band and "/" not in band:
                found.append(self.by_rel[name])
        return found


def check_inside(root: Path, rel: str, where: str) -> None:
    """Raises LabelError when ``rel`` would point outside ``root`` (or at no file at all)."""
    if "\x00" in rel:
        raise LabelError(f"{where}: path {rel!r} holds a NUL character, which no file name "
                         "can hold")
    target = (root / rel).resolve()
    if os.path.isabs(rel) or not target.is_relative_to(root.resolve()):
        raise LabelError(f"{where}: path {rel!r} points outside the image folder {root}; "
                         "paths in a label table must stay inside the data root")


def sniff_delimiter(text: str) -> str:
    """The field separator of a CSV from its header line: ``,`` unless the header holds
    more ``;`` (as spreadsheets in many locales write) or tabs."""
    header = text.split("\n", 1)[0]
    counts = {d: header.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > counts[","] else ","


def read_csv_table(table: str | Path, images: str | Path | None = None, *,
                   id_column: str | None = None, targets: Sequence[str] | None = None,
                   pattern: str | None = None, task: str = "auto",
                   schema: TreeSchema | None = None) -> LabeledImages:
    """Reads a CSV of ids and targets and finds each id's image.

    Args:
        table: the CSV file (header row first), or a FITS binary table, ECSV, VOTable or
            Parquet file (:mod:`skysort.data.catalogues`; read as the CSV would be).
        images: the image folder; by default the table's folder.
        id_column: the id column; by default the first column.
        targets: target columns; by default every other column.
        pattern: how an id names its file relative to ``images``, e.g. ``"{id}.jpg"`` or
            ``"train/{id}.png"``; by default ``<id>`` with any image extension.
        task: ``auto`` (:func:`skysort.tasks.table_kind` decides), or a task kind.
        schema: the decision tree of vote fractions; the Galaxy Zoo 37-column tree is
            recognised from the columns.

    Returns:
        The rows that passed, with ``issues`` listing those that did not.
    """
    table = Path(table).expanduser().resolve()
    if not table.is_file():
        raise DataError(f"{table}: label table not found")
    folder = Path(images).expanduser().resolve() if images else table.parent
    if not folder.is_dir():
        raise DataError(f"{folder}: image folder not found")
    header, rows = read_catalogue(table) if catalogue_format(table) else _csv_rows(table)
    id_column = id_column or header[0]
    if id_column not in header:
        raise LabelError(f"{table}: no id column {id_column!r}; columns are {header}")
    names: list[str] | None = None  # the answers, where count columns are named otherwise
    if not targets:
        schema, names, targets = default_targets(header, id_column, task, schema)
    targets = list(targets)
    missing = [t for t in targets if t not in header]
    if missing or not targets:
        raise LabelError(f"{table}: target column(s) {missing or '(none)'} not found; "
                         f"columns are {header}")
    id_at = header.index(id_column)
    at = [header.index(t) for t in targets]
    issues: list[LabelIssue] = []

    id_counts = Counter(r[id_at].strip() for _, r in rows if len(r) > id_at)
    index = ImageIndex(folder)
    kept: list[tuple[int, str, Path, list[str]]] = []
    for line, row in rows:
        if len(row) != len(header):
            issues.append(LabelIssue("malformed row", line, row[0] if row else "",
                                     f"{len(row)} fields, the header has {len(header)}"))
            continue
        key = row[id_at].strip()
        if id_counts[key] > 1:
            issues.append(LabelIssue("duplicate id", line, key,
                                     f"id appears on {id_counts[key]} rows; all are left out"))
            continue
        path = index.find(key, pattern, f"{table}, row {line}")
        if path is None:
            expected = (pattern.format(id=key, band=BAND_FIELD) if pattern
                        else f"{key}.<image extension>")
            issues.append(LabelIssue("missing image", line, key, f"no file {expected} in "
                                     f"{folder}"))
            continue
        kept.append((line, key, path, [row[i] for i in at]))
    used = {p for _, _, p, _ in kept}
    used.update(f for p in list(used) if BAND_FIELD in p.name
                for f in index.band_files(Path(os.path.relpath(p, folder)).as_posix()))
    for path in index.by_rel.values():
        if path not in used and path != table:  # a FITS table among its images
            issues.append(LabelIssue("no row", None, path.name,
                                     f"{Path(os.path.relpath(path, folder)).as_posix()} is not "
                                     f"named in {table.name}"))
    kind, classes, values, schema, value_issues = _targets(table, names or targets, kept,
                                                           task, schema)
    issues += value_issues
    bad_rows = {i.row for i in value_issues}
    if len(bad_rows) > len(kept) / 2:
        first = value_issues[0]
        raise LabelError(f"{table}: {len(bad_rows)} of {len(kept)} rows hold targets a {kind} "
                         f"task cannot use ({_found(kept)}; row {first.row}: {first.kind}, "
                         f"{first.detail}); refusing to train on a remnant; check the table, "
                         "or choose task= (auto, " + ", ".join(task_kinds()) + ")")
    keep = [j for j, (line, *_) in enumerate(kept) if line not in bad_rows]
    if not keep:
        raise LabelError(f"{table}: no usable rows ({summarize_issues(issues)}); see the "
                         "reasons above and in label_issues.csv")
    data = LabeledImages(root=folder, paths=[kept[j][2] for j in keep], targets=values[keep],
                         classes=classes, ids=[kept[j][1] for j in keep], task=kind)
    data.issues = issues
    data.id_column = id_column
    data.target_columns = list(names or targets)
    data.schema = schema
    return data


def _csv_rows(table: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and the ``(line number, cells)`` of the rows that hold anything."""
    try:
        with open(table, newline="", encoding="utf-8-sig") as fh:
            text = fh.read()
    except UnicodeDecodeError as exc:
        raise LabelError(f"{table}: not UTF-8 text (byte {exc.start}); save the table as "
                         "UTF-8 CSV") from None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sniff_delimiter(text))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise LabelError(f"{table}: the table is empty") from None
    return header, [(n, r) for n, r in enumerate(reader, start=2) if any(c.strip() for c in r)]


def _found(kept: list[tuple[int, str, Path, list[str]]]) -> str:
    """What the target cells hold, in words: how many are whole numbers, fractions between
    0 and 1, other fractions, negative, or not numbers."""
    kinds: Counter[str] = Counter()
    for *_, cells in kept:
        for cell in cells:
            try:
                v = float(cell)
            except ValueError:
                kinds["not a number"] += 1
                continue
            kinds["negative" if v < 0 else "whole" if v.is_integer() else
                  "in (0, 1)" if v < 1 else "fractional above 1" if np.isfinite(v) else
                  "not a number"] += 1
    return "values found: " + ", ".join(f"{n} {k}" for k, n in kinds.most_common())


def _targets(table: Path, columns: list[str], kept: list[tuple[int, str, Path, list[str]]],
             task: str, schema: TreeSchema | None,
             ) -> tuple[str, list[str], np.ndarray, TreeSchema | None, list[LabelIssue]]:
    """Chooses the task kind (unless given) and lets it read the target text; the rows
    it cannot use become label issues."""
    texts = [r[3] for r in kept]
    if task == "auto":
        task, schema = table_kind(columns, texts, schema, str(table))
    kind = task_class(task)
    if schema is not None and not schema.matches(columns) and not kind.single_label:
        raise LabelError(f"{table}: the target columns {columns} do not match the answers of "
                         f"schema {schema.name!r}: {schema.columns}")
    try:
        parsed = kind.parse_targets(columns, texts, schema)
    except ConfigError as exc:
        raise LabelError(f"{table}: {exc}") from exc
    issues = [LabelIssue(what, kept[j][0], kept[j][1], detail)
              for j, what, detail in parsed.issues]
    return task, parsed.classes, parsed.values, parsed.schema, issues
