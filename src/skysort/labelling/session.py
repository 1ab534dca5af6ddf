"""What a labelling session knows, apart from the web: the images to label
(``to_label.csv`` as ``skysort suggest`` writes it), the classes, the answers so far
(:class:`~skysort.labelling.answers.AnswerFile`), which image comes next, and an image's
look-alikes.

Images already answered in the answer file are skipped at start, so a second run resumes
where the first stopped. Skipped images (``s``) come back after the others; undo (``u``)
takes back the last answer that stands in the file (this run's or, after a restart, the
previous run's) and shows that image again.
"""

from __future__ import annotations

import contextlib
import csv
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from skysort.data.images import image_suffix, load_image, read_or_reason
from skysort.errors import ConfigError, DataError
from skysort.labelling.answers import AnswerFile, image_key, image_root

#: Look-alikes shown beside the image, and how many images (in rank order) they are
#: searched among.
NEIGHBOURS = 4
NEIGHBOUR_POOL = 256


@dataclass(frozen=True)
class Item:
    """One row of ``to_label.csv``."""

    index: int
    path: Path
    key: str
    prediction: str = ""
    probability: str = ""
    reason: str = ""
    rank: str = ""


def read_to_label(table: str | Path) -> list[tuple[Path, dict[str, str]]]:
    """The rows of ``to_label.csv`` (``path`` absolute or relative to the table), in rank
    order when every row has a numeric ``rank``, else in file order; a path listed twice
    counts once."""
    table = Path(table).expanduser()
    if not table.is_file():
        raise DataError(f"{table}: no such file; give the CSV that `skysort suggest` wrote")
    with open(table, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if "path" not in (reader.fieldnames or []):
            raise DataError(f"{table}: no 'path' column (columns are {reader.fieldnames}); "
                            "give the CSV that `skysort suggest` wrote")
        rows = [r for r in reader if (r.get("path") or "").strip()]
    if not rows:
        raise DataError(f"{table}: no images listed")
    with contextlib.suppress(KeyError, TypeError, ValueError):  # else the file's order
        rows.sort(key=lambda r: float(r["rank"]))
    seen: set[Path] = set()
    found = []
    for row in rows:
        path = Path(row["path"].strip()).expanduser()
        path = (path if path.is_absolute() else table.parent / path).resolve()
        if path not in seen:
            seen.add(path)
            found.append((path, row))
    return found


def run_classes(run: str | Path) -> list[str]:
    """The classes of a trained run (its ``model.json``); single-label runs only."""
    from skysort.models.info import read_model_info

    task = read_model_info(run).task
    if not task.single_label:
        raise ConfigError(f"{run}: a {task.kind} model; labelling gives one class per image, "
                          "so give --classes a,b,c or a single-label run")
    return list(task.classes)


def run_labels(run: str | Path) -> list[tuple[Path, str]]:
    """Every image a trained run was given (``split.csv``: train, validation and test)
    with its label, each image once."""
    from skysort.data.split import read_split_csv
    from skysort.models.plan import ResolvedPlan
    from skysort.rundir import SPLIT, require

    root = Path(ResolvedPlan.read(Path(run)).data_root or ".")
    found: dict[Path, str] = {}
    for r in read_split_csv(require(Path(run), SPLIT)):
        found.setdefault((root / r["path"]).resolve(), r["label"])
    return list(found.items())


class Session:
    """The images, the classes and the answers, behind one lock (the server is threaded).

    Args:
        to_label: ``to_label.csv``.
        out: the answer file (appended to; created when missing).
        classes: the class names, in the order of their keys 1-9.
        root: the folder the answer file's paths are relative to (default:
            :func:`~skysort.labelling.answers.image_root`).
        known: images labelled already, with their labels (a run's: :func:`run_labels`):
            a new answer file starts with them, so the next ``skysort train --labels``
            trains on the old labels and the new answers together.
    """

    def __init__(self, to_label: str | Path, out: str | Path, classes: Sequence[str],
                 root: str | Path | None = None,
                 known: Sequence[tuple[Path, str]] = ()) -> None:
        self.classes = [c.strip() for c in classes if c.strip()]
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ConfigError(f"classes {list(classes)}: give at least two distinct class "
                              "names (--classes a,b,c, or --run RUN)")
        self.out = Path(out).expanduser().resolve()
        if not self.out.parent.is_dir():
            raise ConfigError(f"--out {out}: no folder {self.out.parent} to write it in")
        rows = read_to_label(to_label)
        paths = [p for p, _ in rows]
        self.answers = AnswerFile(self.out)
        try:
            if known and not self.answers.rows:  # a new answer file starts with them
                self._place([*paths, *(p for p, _ in known)], root)
                self.answers.start([(image_key(p, self.root), label) for p, label in known])
            else:
                self._place(paths, root)
        except ConfigError:
            self.answers.close()
            raise
        self.items = [Item(i, path, image_key(path, self.root), row.get("prediction") or "",
                           row.get("probability") or "", row.get("reason") or "",
                           row.get("rank") or "")
                      for i, (path, row) in enumerate(rows)]
        self.by_key = {item.key: item for item in self.items}
        self.by_index = {item.index: item for item in self.items}
        self.alias = aliases(self.items)
        self.lock = threading.Lock()
        self.skipped: list[str] = []
        self._signatures: dict[int, np.ndarray | None] = {}
        #: per image, the run's labelled look-alikes (:meth:`set_lookalikes`), and the
        #: labelled images they name: the only other files the page may show
        self.lookalikes: list[list[Any]] = [[] for _ in self.items]
        self.labelled: list[Path] = []

    def set_lookalikes(self, found: Sequence[Sequence[Any]]) -> None:
        """Each item's labelled look-alikes (:class:`~skysort.inspection.similarity_index.
        Match` rows, in the order of ``to_label.csv``)."""
        at: dict[str, int] = {}
        for i, matches in enumerate(found):
            self.lookalikes[i] = [(at.setdefault(m.path, len(at)), m) for m in matches]
        self.labelled = [Path(p) for p in at]

    def _place(self, paths: list[Path], root: str | Path | None) -> None:
        """Chooses the folder the answer file's paths are relative to (``self.root``)."""
        self.root = Path(root).expanduser().resolve() if root else image_root(paths, self.out)
        if root and not all(p.is_relative_to(self.root) for p in paths):
            outside = next(p for p in paths if not p.is_relative_to(self.root))
            raise ConfigError(f"--images {root}: {outside} is not under it; give the folder "
                              "that holds every image to label")
        if not root and self.answers.rows and self.root != self.out.parent:
            raise ConfigError(f"{self.out} holds labels already, and the images to label are "
                              f"not all under its folder {self.out.parent}; pass --images "
                              "FOLDER, the folder its paths are relative to")

    def close(self) -> None:
        """Lets another session write the answer file."""
        self.answers.close()

    # what stands
    def answered(self) -> dict[str, str]:
        """Label by key of the images of ``to_label.csv`` that are answered (also under
        another id an earlier table gave them: :func:`aliases`)."""
        return {key: label for raw, label in self.answers.labels().items()
                if (key := self.alias.get(raw))}

    def current(self) -> Item | None:
        """The image to show: the first unanswered one not skipped, else the first
        skipped one; None when every image is answered."""
        done = self.answered()
        pending = [i for i in self.items if i.key not in done]
        if not pending:
            return None
        fresh = [i for i in pending if i.key not in self.skipped]
        if fresh:
            return fresh[0]
        return min(pending, key=lambda i: self.skipped.index(i.key))

    def last_answer(self) -> str | None:
        """The key undo would take back: the last row of the file written as this module
        writes them (an image to label by its key; a row an earlier table gave under
        another id is never undone)."""
        at = self.answers.id_at
        for row in reversed(self.answers.rows):
            if len(row) > at and row[at].strip() in self.by_key:
                return row[at].strip()
        return None

    # what a person does
    def answer(self, key: str, label: str) -> None:
        """Records ``label`` for ``key``; an image already answered or a label that is not
        a class is refused (ValueError), so a doubled key press never writes twice."""
        with self.lock:
            if label not in self.classes:
                raise ValueError(f"{label!r} is not a class ({', '.join(self.classes)})")
            if key not in self.by_key or key in self.answered():
                raise ValueError(f"{key!r} is not an image waiting for an answer")
            self.answers.append(key, label)
            if key in self.skipped:
                self.skipped.remove(key)

    def skip(self, key: str) -> None:
        """Puts ``key`` behind the other unanswered images."""
        with self.lock:
            if key in self.by_key:
                if key in self.skipped:
                    self.skipped.remove(key)
                self.skipped.append(key)

    def undo(self) -> str | None:
        """Takes back the last answer; its image is shown next. None when none stands."""
        with self.lock:
            key = self.last_answer()
            if key is None:
                return None
            self.answers.remove(key)
            self.skipped = [k for k in self.skipped if k != key]
            # shown first; a new list, never sorted in place under a reader's feet
            self.items = sorted(self.items, key=lambda i: (i.key != key, i.index))
            return key

    # look-alikes
    def neighbours(self, item: Item, k: int = NEIGHBOURS) -> list[Item]:
        """The ``k`` images of the first :data:`NEIGHBOUR_POOL` (by rank) that look most
        like ``item``, by a 12x12 colour thumbnail: a quick look at what else is waiting
        that is framed alike (the run's labelled look-alikes, by embedding, come from
        :mod:`skysort.labelling.lookalikes`)."""
        own = self._signature(item)
        if own is None:
            return []
        pool = [self.by_index[i] for i in range(min(len(self.items), NEIGHBOUR_POOL))]
        scored = [(float(own @ sig), other) for other in pool if other.index != item.index
                  if (sig := self._signature(other)) is not None]
        scored.sort(key=lambda pair: -pair[0])
        return [other for _, other in scored[:k]]

    def _signature(self, item: Item) -> np.ndarray | None:
        if item.index not in self._signatures:
            image, _ = read_or_reason(load_image, item.path)
            sig = None
            if image is not None:
                pixels = np.asarray(image.resize((12, 12)), dtype=float).ravel()
                pixels -= pixels.mean()
                norm = float(np.linalg.norm(pixels))
                sig = pixels / norm if norm > 0 else None
            self._signatures[item.index] = sig
        return self._signatures[item.index]

    def state(self) -> dict[str, Any]:
        """What the page shows, as JSON."""
        with self.lock:
            item = self.current()
            done = self.answered()
            last = self.last_answer()
        near = self.neighbours(item) if item is not None else []
        return {
            "item": None if item is None else _item_json(item) | {"skipped": item.key in
                                                                  self.skipped},
            "neighbours": [_item_json(n) | {"label": done.get(n.key, "")} for n in near],
            "labelled": [] if item is None else [
                {"index": j, "name": Path(m.path).name, "path": m.path, "label": m.label,
                 "similarity": round(m.similarity, 3)} for j, m in self.lookalikes[item.index]],
            "answered": len(done), "total": len(self.items),
            "last": None if last is None else {"key": last, "label": done.get(last, "")},
            "out": str(self.out), "train": self.train_command(),
        }

    def train_command(self) -> str:
        """How ``skysort train`` reads the answers."""
        if self.root == self.out.parent:
            return f"skysort train {self.out}"
        return f"skysort train {self.root} --labels {self.out}"


def aliases(items: Sequence[Item]) -> dict[str, str]:
    """The ids by which a label table may already name each image, as ``skysort train``
    finds them (:class:`skysort.data.tables.ImageIndex` without ``--pattern``): its path
    relative to the image folder, that path without the extension, its file name where no
    other image to label has it."""
    names = Counter(i.path.name for i in items)
    found: dict[str, str] = {}
    for item in items:
        if names[item.path.name] == 1:
            found.setdefault(item.path.name, item.key)
    for item in items:
        found[item.key[: len(item.key) - len(image_suffix(item.key))]] = item.key
    for item in items:
        found[item.key] = item.key
    return found


def _item_json(item: Item) -> dict[str, Any]:
    return {"index": item.index, "key": item.key, "name": item.path.name,
            "prediction": item.prediction, "probability": item.probability,
            "reason": item.reason, "rank": item.rank}
