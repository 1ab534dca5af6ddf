"""One entry point for every data layout: :func:`open_dataset`.

It reads the layout a :class:`DataSpec` points at and decides the task kind:

* ``DATA/`` with class folders (or ``train|val|test/`` folders): single-label classes;
  two classes make a binary task;
* ``DATA/`` holding a ``filename class_id`` label file (and perhaps a class map CSV and a
  ``filename class_id set`` split file), as the Mars HiRISE landmark set: found without
  flags;
* a CSV table (``--labels table.csv``, or ``DATA`` itself a ``.csv``) of an id column and
  target columns: binary, multi-class, multi-label or vote fractions, from the values;
  the Kaggle Galaxy Zoo columns are recognised, any other tree needs ``--schema``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from skysort.data.label_files import looks_like_label_file, read_label_file
from skysort.data.sources import LabeledImages, read_class_folders
from skysort.data.tables import read_csv_table
from skysort.errors import ConfigError, DataError
from skysort.tasks import classes_kind, load_schema, task_class, task_kinds


@dataclass
class DataSpec:
    """Where the images and labels are, and how to read them (all optional but ``data``)."""

    data: str | None = None
    labels: str | None = None
    images: str | None = None
    id_column: str | None = None
    targets: tuple[str, ...] | None = None
    pattern: str | None = None
    classmap: str | None = None
    split_file: str | None = None
    task: str = "auto"
    schema: str | None = None


def _find_hirise_files(root: Path) -> tuple[Path | None, Path | None, Path | None]:
    """(label file, split file, class map) lying directly in ``root``, if any."""
    labels = split = classmap = None
    for path in sorted(root.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        if path.suffix.lower() == ".txt":
            fields = looks_like_label_file(path)
            if fields == 2 and labels is None:
                labels = path
            elif fields == 3 and split is None:
                split = path
        elif path.suffix.lower() == ".csv" and "classmap" in path.name.lower():
            classmap = path
    return labels or split, split, classmap


def open_dataset(spec: DataSpec) -> LabeledImages:
    """Reads the labelled images ``spec`` describes; see the module doc for the layouts."""
    if spec.task not in ("auto", *task_kinds()):
        raise ConfigError(f"task={spec.task!r}: must be auto or one of "
                          f"{', '.join(task_kinds())}")
    if not spec.data:
        raise ConfigError("no data given: pass DATA (a folder or a label table)")
    path = Path(spec.data).expanduser()
    if not path.exists():
        raise DataError(f"{path}: data not found (give a folder of class folders, a folder "
                        "with a label file, or a CSV table)")
    labels = Path(spec.labels).expanduser() if spec.labels else None
    images = Path(spec.images).expanduser() if spec.images else None
    if labels is None and path.is_file():
        labels = path
    elif images is None and path.is_dir() and labels is not None:
        images = path
    if labels is None:
        found, split_file, classmap = _find_hirise_files(path)
        if found is None:
            data = read_class_folders(path)
        else:
            data = read_label_file(found, images or path,
                                   classmap=spec.classmap or classmap,
                                   split_file=spec.split_file or split_file)
    elif looks_like_label_file(labels):
        data = read_label_file(labels, images, classmap=spec.classmap,
                               split_file=spec.split_file)
    else:
        schema = load_schema(spec.schema) if spec.schema else None
        data = read_csv_table(labels, images, id_column=spec.id_column, targets=spec.targets,
                              pattern=spec.pattern, task=spec.task, schema=schema)
    return choose_task_kind(data, spec.task)


def choose_task_kind(data: LabeledImages, task: str) -> LabeledImages:
    """Two classes read from folders or label files make a binary task unless told not to."""
    if not task_class(data.task).single_label:
        if task not in ("auto", data.task):
            raise ConfigError(f"task={task}: these targets are {data.task}; they cannot be "
                              f"read as {task}")
        return data
    if task == "auto":
        task = classes_kind(data.classes)
    if not task_class(task).single_label:
        raise ConfigError(f"task={task}: these are single-label classes ({data.classes})")
    task_class(task).check_classes(data.classes, f"task={task}")
    data.task = task
    return data


def check_two_classes(data: LabeledImages) -> None:
    """A classifier needs two classes at least. With one, say what was found and what was
    probably meant, instead of training a model that scores 1.000 beside a baseline of
    1.000 (a Galaxy Zoo folder given without ``--labels`` reads as one class, "images")."""
    if not task_class(data.task).single_label or len(data.classes) >= 2:
        return
    found = f"one class, {data.classes[0]!r} ({len(data)} images)" if data.classes else \
        "no classes"
    if data.id_column is not None:
        raise DataError(f"{data.root}: the label column(s) {data.target_columns} hold {found}; "
                        "a classifier needs at least two (vote fractions? give their columns "
                        "with --targets)")
    tables = sorted(p.name for p in Path(data.root).glob("*.csv")) if Path(data.root).is_dir() \
        else []
    if tables:
        where = Path(data.root) / (data.classes[0] if data.classes else "")
        raise DataError(f"{data.root}: found {found}; a classifier needs at least two. If "
                        f"{tables[0]} holds the labels, pass it: skysort train {where} "
                        f"--labels {Path(data.root) / tables[0]}")
    raise DataError(f"{data.root}: found {found}; a classifier needs at least two: put each "
                    "class's images in a folder of its own (DATA/<class>/*.jpg), or give a "
                    "label table with --labels")
