"""Copies across splits, as training checks them (``split_groups``).

``skysort train`` finds groups of copies (:mod:`~skysort.inspection.duplicates`) once the
embeddings are computed, and then, by ``split_groups``:

* ``warn`` (default): says how many groups lie in more than one split (a test image
  whose copy was trained on makes the test score optimistic), on screen and among the
  warnings of ``metrics.json``;
* ``duplicates``: moves each group whole into one split (that of its first image), so
  no copy of a validation or test image is trained on; a split the data gives itself
  (``train/``, ``val/``, ``test/`` folders, a split file) is kept and warned about;
* ``none``: no check (it decodes each image once more, the first time).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from skysort.data.sources import LabeledImages
from skysort.inspection.duplicates import DuplicateGroup, find_duplicates, keep_groups_together
from skysort.inspection.fingerprints import cached_fingerprints


def duplicate_groups(data: LabeledImages, features: np.ndarray, hashes: Sequence[str | None],
                     bad: Mapping[int, str], splits: Sequence[str], cache_dir: str | Path,
                     workers: int | None = None) -> list[DuplicateGroup]:
    """Groups of copies among the readable images, with their splits."""
    prints = cached_fingerprints(data.paths, hashes, cache_dir, workers)
    for i in bad:
        prints.info[i] = {}
    _, groups = find_duplicates(prints, features, splits=splits)
    return groups


def apply_split_groups(setting: str, data: LabeledImages, groups: Sequence[DuplicateGroup],
                       splits: list[str], say: bool = True) -> tuple[list[str], list[str]]:
    """``(splits, warnings)`` after ``split_groups=setting`` (see the module doc); a group
    leaks when its images lie in more than one of ``splits``."""
    leaks = [g for g in groups if len({splits[m] for m in g.members}) > 1]
    if not leaks:
        return splits, []
    images = sum(len(g.members) for g in leaks)
    example = ", ".join(data.relpath(data.paths[m]) for m in leaks[0].members[:2])
    if setting == "duplicates" and data.splits is None:
        moved = keep_groups_together(leaks, splits)
        changed = sum(a != b for a, b in zip(moved, splits, strict=True))
        if say:
            print(f"split_groups=duplicates: {len(leaks)} group(s) of copies kept in one "
                  f"split each ({changed} image(s) moved)")
        return moved, []
    hint = "the data gives its own split, which is kept" if setting == "duplicates" else \
        "train with split_groups=duplicates to keep each group in one split"
    warning = (f"{len(leaks)} group(s) of copies ({images} images, e.g. {example}) lie in more "
               f"than one split, so the test score is optimistic; {hint} (skysort inspect "
               "lists them)")
    if say:
        print(f"WARNING: {warning}")
    return splits, [warning]
