"""Stable, stratified train/val/test splits.

An image's split is decided by a hash of its path relative to the data root and the seed
(as TensorFlow's ``retrain.py`` does), not by its position in a shuffled list. So:

* the same data and seed always give the same split, on any machine;
* adding images later never moves the ones already there;
* within each class the hash spreads images over the splits in the requested proportions
  (stratified in expectation).

Small classes get one correction: a class of at least three images that the hash left
with no validation or no test image gives one up, from the image whose hash lies nearest
to that split. Only such tiny classes can see an image move when data is added.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from skysort.data.sources import SPLITS, LabeledImages
from skysort.errors import ConfigError, DataError
from skysort.tasks import task_class

MIN_PER_CLASS = 3


def hash_unit(key: str, seed: int = 0) -> float:
    """A number in [0, 1) fixed by ``key`` and ``seed``, uniform over keys."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1):
        raise ConfigError(
            f"split fractions {list(fractions)} must be three non-negative numbers "
            "(train, val, test) that sum to 1, e.g. 0.7 0.15 0.15"
        )
    return float(fractions[0]), float(fractions[1]), float(fractions[2])


def split_by_hash(data: LabeledImages, fractions: Sequence[float] = (0.7, 0.15, 0.15),
                  seed: int = 0) -> list[str]:
    """Assigns each image to ``train``, ``val`` or ``test``.

    A pre-split dataset keeps its splits; if it has no validation images, they are taken
    from its training images by hash, in proportion ``val / (train + val)``.

    Args:
        data: the images; single-label data is stratified by class.
        fractions: train, val and test fractions.
        seed: changes the assignment; the same seed always gives the same split.

    Returns:
        One split name per image.

    Raises:
        DataError: a class has too few images to appear in all three splits.
    """
    train_f, val_f, test_f = _check_fractions(fractions)
    units = np.array([hash_unit(data.relpath(p), seed) for p in data.paths])
    if data.splits is not None:
        splits = list(data.splits)
        if "val" not in splits:
            val_share = val_f / (train_f + val_f) if train_f + val_f > 0 else 0.15
            splits = ["val" if s == "train" and u >= 1 - val_share else s
                      for s, u in zip(splits, units, strict=True)]
        return splits
    bounds = np.array([train_f, train_f + val_f])
    codes = np.searchsorted(bounds, units, side="right")
    if task_class(data.task).single_label and data.targets.ndim == 1:
        for index, name in enumerate(data.classes):
            members = np.flatnonzero(data.targets == index)
            if 0 < len(members) < MIN_PER_CLASS:
                raise DataError(
                    f"{data.root / name if (data.root / name).is_dir() else data.root}: class "
                    f"{name!r} has {len(members)} image(s); at least {MIN_PER_CLASS} are needed "
                    "to split it into train, val and test (add images, or give a split)"
                )
            _ensure_each_split(codes, members, units, (val_f, test_f))
    return [SPLITS[c] for c in codes]


def _ensure_each_split(codes: np.ndarray, members: np.ndarray, units: np.ndarray,
                       shares: tuple[float, float]) -> None:
    """Moves one image into an empty val (code 1) or test (code 2) split of a class (a
    class with no images has nothing to move)."""
    if not len(members):
        return
    for code, share in ((2, shares[1]), (1, shares[0])):
        if share == 0 or (codes[members] == code).any():
            continue
        # Candidates come from the largest split, so no split is emptied by the move.
        counts = np.bincount(codes[members], minlength=3)
        donor = int(np.argmax(counts))
        pool = members[codes[members] == donor]
        codes[pool[np.argmax(units[pool])]] = code


def write_split_csv(path: str | Path, data: LabeledImages, splits: Sequence[str]) -> None:
    """Writes ``split.csv``: relative path, id, label, split; one row per image."""
    with open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "id", "label", "split"])
        for i, (p, s) in enumerate(zip(data.paths, splits, strict=True)):
            writer.writerow([data.relpath(p), data.ids[i], describe_target(data, i), s])


def describe_target(data: LabeledImages, index: int) -> str:
    """A readable label for one image: its class name, or the list of its targets."""
    target = data.targets[index]
    if np.ndim(target) == 0:
        return data.classes[int(target)]
    return " ".join(f"{v:.6g}" for v in np.asarray(target, dtype=float))


def read_split_csv(path: str | Path) -> list[dict[str, str]]:
    """Reads a ``split.csv`` written by :func:`write_split_csv`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: split file not found")
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as fh:
        rows = list(csv.DictReader(fh))
    if rows and not {"path", "label", "split"} <= set(rows[0]):
        raise DataError(f"{path}: expected columns path, id, label, split")
    return rows
