"""Where images and their labels come from.

Every source produces a :class:`LabeledImages`: image paths, one target per image, the
class (or output column) names, and a split per image when the data says so.

Layouts read here:

* a folder per class, ``DATA/<class>/**/*.jpg`` (Keras / torchvision ``ImageFolder``);
* a tree already split, ``DATA/train|val|test/<class>/`` (Ultralytics; ``valid`` and
  ``validation`` are accepted for ``val``).

Hidden files, macOS ``._*`` resource forks and ``__MACOSX`` folders are ignored.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from skysort.data.images import is_image_file
from skysort.errors import DataError

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "test": "test", "testing": "test"}


@dataclass
class LabeledImages:
    """Images with one target each.

    Attributes:
        root: the data root; paths in ``split.csv`` are relative to it.
        paths: absolute image paths.
        targets: class indices (int64, shape ``(n,)``) for single-label data, or a float
            array ``(n, k)`` for multi-label and vote-fraction targets.
        classes: class names (single-label) or output column names, in output order.
        splits: ``"train"``/``"val"``/``"test"`` per image when the data fixes the split,
            else ``None``.
        ids: an identifier per image for prediction files (defaults to the relative path).
        task: the target kind (``"multiclass"`` for folder trees).
        issues: rows or files left out while reading labels (see
            :class:`skysort.data.tables.LabelIssue`).
        id_column: the id column of a label table, used to name it in prediction files.
        target_columns: the table's target columns, for prediction files in its layout.
        schema: the decision tree of vote-fraction targets, if any.
    """

    root: Path
    paths: list[Path]
    targets: np.ndarray
    classes: list[str]
    splits: list[str] | None = None
    ids: list[str] = field(default_factory=list)
    task: str = "multiclass"
    issues: list[Any] = field(default_factory=list)
    id_column: str | None = None
    target_columns: list[str] = field(default_factory=list)
    schema: Any = None

    def __post_init__(self) -> None:
        if not self.ids:
            self.ids = [self.relpath(p) for p in self.paths]

    def __len__(self) -> int:
        return len(self.paths)

    def relpath(self, path: Path) -> str:
        """``path`` relative to the data root, with forward slashes (stable across OSes)."""
        return Path(os.path.relpath(path, self.root)).as_posix()

    def subset(self, index: Sequence[int] | np.ndarray) -> LabeledImages:
        """The images at ``index``, in that order."""
        index = [int(i) for i in index]
        return LabeledImages(
            root=self.root,
            paths=[self.paths[i] for i in index],
            targets=self.targets[index],
            classes=list(self.classes),
            splits=[self.splits[i] for i in index] if self.splits is not None else None,
            ids=[self.ids[i] for i in index],
            task=self.task,
            id_column=self.id_column,
            target_columns=list(self.target_columns),
            schema=self.schema,
        )


def first_occurrences(paths: Sequence[Path]) -> list[int]:
    """Positions of the first occurrence of each path, in order: evaluation counts each
    file once, even where a label file repeats it to up-sample a rare class."""
    first: dict[Path, int] = {}
    for i, path in enumerate(paths):
        first.setdefault(path, i)
    return list(first.values())


def iter_image_files(folder: Path) -> Iterator[Path]:
    """Image files under ``folder``, recursively, sorted, skipping hidden files and folders.

    Symbolic links to folders are followed (data often lives on another disk), but no
    folder is entered twice: a link back up the tree (``a/loop -> ..``) or a second link
    to the same folder would list the same images again, in train and in test.
    """
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        try:
            stat = os.stat(dirpath)
        except OSError:
            continue
        if (stat.st_dev, stat.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((stat.st_dev, stat.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__MACOSX")))
        for name in sorted(filenames):
            if is_image_file(name):
                yield Path(dirpath) / name


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(
        (d for d in folder.iterdir() if d.is_dir() and not d.name.startswith((".", "__MACOSX"))),
        key=lambda d: d.name,
    )


def _split_dirs(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in _class_dirs(root):
        split = SPLIT_ALIASES.get(d.name.lower())
        if split is None:
            return {}
        if split in found:
            raise DataError(
                f"{root}: both {found[split].name!r} and {d.name!r} name the {split} split; "
                "keep one of them"
            )
        found[split] = d
    return found if "train" in found else {}


def read_class_folders(root: str | Path) -> LabeledImages:
    """Reads a folder-per-class tree, or one already split into train/val/test.

    Args:
        root: the data root.

    Returns:
        The images with class-index targets; ``splits`` is set for a pre-split tree.

    Raises:
        DataError: the root is missing or holds no images, or a class folder is empty.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"{root}: data root does not exist or is not a folder")
    split_dirs = _split_dirs(root)
    if split_dirs:
        return _read_split_tree(root, split_dirs)
    class_dirs = _class_dirs(root)
    if not class_dirs:
        loose = any(is_image_file(p.name) for p in root.iterdir())
        hint = (" (the images lie directly in it: put each class in its own sub-folder)"
                if loose else "")
        raise DataError(
            f"{root}: no class folders found{hint}; expected DATA/<class>/<image files> "
            "or DATA/train|val|test/<class>/<image files>"
        )
    classes = [d.name for d in class_dirs]
    paths: list[Path] = []
    targets: list[int] = []
    for index, class_dir in enumerate(class_dirs):
        files = list(iter_image_files(class_dir))
        if not files:
            raise DataError(
                f"{class_dir}: class folder {class_dir.name!r} holds no image files "
                f"(readable extensions: .jpg .png .tif .bmp .webp .fits ...); "
                "add images or remove the folder"
            )
        paths += files
        targets += [index] * len(files)
    return LabeledImages(root=root, paths=paths, targets=np.asarray(targets, dtype=np.int64),
                         classes=classes)


def _read_split_tree(root: Path, split_dirs: dict[str, Path]) -> LabeledImages:
    names: set[str] = set()
    for split_dir in split_dirs.values():
        names.update(d.name for d in _class_dirs(split_dir))
    classes = sorted(names)
    if not classes:
        raise DataError(f"{split_dirs['train']}: no class folders inside the split folders")
    paths: list[Path] = []
    targets: list[int] = []
    splits: list[str] = []
    for split, split_dir in sorted(split_dirs.items(), key=lambda kv: SPLITS.index(kv[0])):
        for index, name in enumerate(classes):
            class_dir = split_dir / name
            files = list(iter_image_files(class_dir)) if class_dir.is_dir() else []
            if split == "train" and not files:
                raise DataError(
                    f"{class_dir}: class {name!r} has no training images "
                    f"(it appears under {', '.join(sorted(split_dirs))}); every class needs some"
                )
            paths += files
            targets += [index] * len(files)
            splits += [split] * len(files)
    return LabeledImages(root=root, paths=paths, targets=np.asarray(targets, dtype=np.int64),
                         classes=classes, splits=splits)


def from_lists(paths: Sequence[str | Path], labels: Sequence[str],
               classes: Sequence[str] | None = None) -> LabeledImages:
    """Images and class labels given as two lists (``classes``: the class order, by
    default the sorted label names).

    Raises:
        DataError: the lists differ in length, are empty, or name missing files.
    """
    if len(paths) != len(labels):
        raise DataError(f"{len(paths)} paths but {len(labels)} labels; give one label per path")
    if not paths:
        raise DataError("no images given")
    resolved = [Path(p).expanduser().resolve() for p in paths]
    missing = [str(p) for p in resolved if not p.is_file()]
    if missing:
        raise DataError(f"{len(missing)} image file(s) not found, e.g. {missing[:3]}")
    classes = list(classes) if classes is not None else sorted({str(x) for x in labels})
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({str(x) for x in labels} - set(index))
    if unknown:
        raise DataError(f"labels {unknown[:5]} are not among the classes {classes}")
    root = Path(os.path.commonpath([str(p.parent) for p in resolved]))
    return LabeledImages(root=root, paths=resolved,
                         targets=np.array([index[str(x)] for x in labels], dtype=np.int64),
                         classes=classes)
