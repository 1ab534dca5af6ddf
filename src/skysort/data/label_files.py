"""Labels from label files of ``filename class_id`` lines, as the Mars HiRISE sets ship.

A label file (``filename class_id``), an optional class map (headerless ``id,name``) and
an optional split file (``filename class_id set``). Problems are recorded as
:class:`~skysort.data.tables.LabelIssue` rows, as for tables, and the row is left out.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from skysort.data.images import IMAGE_EXTENSIONS, image_suffix
from skysort.data.sources import SPLIT_ALIASES, LabeledImages
from skysort.data.tables import ImageIndex, LabelIssue, summarize_issues
from skysort.errors import DataError, LabelError


def read_label_file(labels: str | Path, images: str | Path | None = None, *,
                    classmap: str | Path | None = None,
                    split_file: str | Path | None = None) -> LabeledImages:
    """Reads ``filename class_id`` lines (the Mars HiRISE layout).

    Args:
        labels: the label file, one ``filename class_id`` per line.
        images: the image folder (searched recursively); by default the label file's folder.
        classmap: a headerless CSV of ``id,name`` lines naming the class ids.
        split_file: ``filename class_id set`` lines (set: train, val or test). Rows may
            repeat to up-sample rare classes; they are kept as the file says, and
            evaluation counts each file once.
    """
    labels = Path(labels).expanduser().resolve()
    folder = Path(images).expanduser().resolve() if images else labels.parent
    names = _read_classmap(Path(classmap)) if classmap else None
    index = ImageIndex(folder)
    issues: list[LabelIssue] = []
    if split_file is None and looks_like_label_file(labels) == 3:
        split_file, label_rows = labels, []  # only a split file: it holds the labels too
    else:
        label_rows = _read_lines(labels, 2)
    label_of: dict[str, str] = {}
    for line, (name, label) in label_rows:
        if name in label_of and label_of[name] != label:
            issues.append(LabelIssue("label conflict", line, name,
                                     f"labelled {label_of[name]} on an earlier line and {label} "
                                     "here; the first is kept"))
            continue
        label_of.setdefault(name, label)
    source_rows: list[tuple[int, str, str, str | None]]
    if split_file:
        source_rows = []
        for line, (name, label, set_name) in _read_lines(Path(split_file), 3):
            if name in label_of and label_of[name] != label:
                issues.append(LabelIssue("label conflict", line, name,
                                         f"{Path(split_file).name} says {label}, "
                                         f"{labels.name} says {label_of[name]}"))
                continue
            if set_name.lower() not in SPLIT_ALIASES:
                raise LabelError(f"{split_file}, line {line}: set {set_name!r} is not one of "
                                 "train, val, test")
            source_rows.append((line, name, label, SPLIT_ALIASES[set_name.lower()]))
    else:
        source_rows = [(line, name, label, None) for line, (name, label) in label_rows]
    if names is None:
        ids = {lab for lab in label_of.values()} | {r[2] for r in source_rows}
        names = {i: i for i in sorted(ids, key=lambda v: (len(v), v))}
    classes = [names[k] for k in names]
    position = {k: i for i, k in enumerate(names)}
    paths: list[Path] = []
    targets: list[int] = []
    splits: list[str] = []
    keys: list[str] = []
    for line, name, label, split in source_rows:
        where = f"{split_file if split is not None else labels}, line {line}"
        if label not in position:
            issues.append(LabelIssue("out of range", line, name,
                                     f"class id {label} is not in the class map "
                                     f"({', '.join(names)})"))
            continue
        path = index.find(name, None, where)
        if path is None:
            issues.append(LabelIssue("missing image", line, name, f"no file {name} in {folder}"))
            continue
        paths.append(path)
        targets.append(position[label])
        splits.append(split or "")
        keys.append(name)
    used = set(paths)
    for path in index.by_rel.values():
        if path not in used:
            issues.append(LabelIssue("no row", None, path.name,
                                     f"not named in {Path(split_file or labels).name}"))
    if not paths:
        raise LabelError(f"{labels}: no usable rows ({summarize_issues(issues)})")
    data = LabeledImages(root=folder, paths=paths, targets=np.array(targets, dtype=np.int64),
                         classes=classes, splits=splits if split_file else None, ids=keys)
    data.issues = issues
    return data


def _read_lines(path: Path, fields: int) -> list[tuple[int, list[str]]]:
    if not path.is_file():
        raise DataError(f"{path}: label file not found")
    out = []
    with open(path, encoding="utf-8", errors="surrogateescape") as fh:
        for line, text in enumerate(fh, start=1):
            parts = text.split()
            if not parts:
                continue
            if len(parts) != fields:
                raise LabelError(f"{path}, line {line}: expected {fields} fields "
                                 f"({'filename class_id' + (' set' if fields == 3 else '')}), "
                                 f"got {len(parts)}: {text.strip()!r}")
            out.append((line, parts))
    return out


def _read_classmap(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise DataError(f"{path}: class map not found")
    names: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as fh:
        for line, row in enumerate(csv.reader(fh), start=1):
            if not row or not "".join(row).strip():
                continue
            if len(row) != 2 or not row[0].strip().lstrip("-").isdigit():
                raise LabelError(f"{path}, line {line}: expected 'id,name' (no header), "
                                 f"got {','.join(row)!r}")
            names[row[0].strip()] = row[1].strip()
    return dict(sorted(names.items(), key=lambda kv: int(kv[0])))


def looks_like_label_file(path: Path) -> int:
    """2 or 3 for a ``filename class_id [set]`` file, else 0 (reads the first line)."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as fh:
            first = next((ln for ln in fh if ln.strip()), "")
    except (OSError, UnicodeDecodeError):
        return 0
    parts = first.split()
    if len(parts) in (2, 3) and image_suffix(parts[0]) in IMAGE_EXTENSIONS and \
            parts[1].lstrip("-").isdigit():
        return len(parts)
    return 0
