"""The pixel cache is bounded by ``cache_max_gb``: what it holds of the data in use counts
as had, and room is made by removing the least recently used files of other data first,
never the data's own. Sizes are checked with ``os.stat``, entries found by what appears
in the folder as each image is cached (not by the code's own key)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skysort.data.batches import warm_pixel_cache
from skysort.data.transforms import (
    EvalTransform,
    Preprocess,
    create_transform,
    evict_pixel_cache,
)
from skysort.models.plan import pixel_cache

PRE = Preprocess(input_size=16, crop_pct=1.0)  # resized to a 16 px shorter side
#: pixel_cache's estimate of one missing image: 16 x 24 (3:2) x 3 bytes.
ESTIMATE = 16 * 24 * 3
ANCIENT = 1_000_000.0  # a modification time long before the test ran


def images(folder: Path, n: int, seed: int, shape: tuple[int, int] = (16, 16)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(
            folder / f"{i}.png")
        paths.append(folder / f"{i}.png")
    return paths


def sizes(folder: Path) -> dict[str, int]:
    return {f.name: os.stat(f).st_size for f in folder.iterdir() if f.suffix == ".npy"}


def cache_one_by_one(paths: list[Path], folder: Path) -> list[str]:
    """Caches each file in turn; the name of the entry that appeared for each."""
    names = []
    for path in paths:
        before = set(sizes(folder)) if folder.is_dir() else set()
        EvalTransform(PRE, str(folder))(path)
        (new,) = set(sizes(folder)) - before
        names.append(new)
    return names


def warm(paths: list[Path], folder: Path, max_bytes: float | None = None) -> None:
    assert not warm_pixel_cache(create_transform(PRE, training=True, cache_dir=folder),
                                paths, workers=0, max_bytes=max_bytes)


def stale(folder: Path, n: int, size: int = 1000) -> list[str]:
    """``n`` entries of other data, oldest first (names in no particular order)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"{h:040x}.npy" for h in np.random.default_rng(9).integers(0, 2**62, n)]
    for age, name in enumerate(names):
        (folder / name).write_bytes(b"x" * size)
        os.utime(folder / name, (ANCIENT + age, ANCIENT + age))
    return names


def test_a_second_run_counts_what_the_cache_holds_of_its_data_as_had(
        tmp_path: Path) -> None:
    paths = images(tmp_path / "data", 4, seed=0)
    limit = 6000  # bytes: the data takes 4 x 896, over half of it
    folder = pixel_cache(str(tmp_path), limit / 1e9, PRE, paths)
    assert folder == tmp_path / "pixels"
    warm(paths, folder)
    held = sizes(folder)
    assert len(held) == 4 and limit / 2 < sum(held.values()) <= limit
    # train after train (or after inspect): the cache holds it all, nothing is needed
    assert pixel_cache(str(tmp_path), limit / 1e9, PRE, paths) == folder
    assert pixel_cache(str(tmp_path), limit / 1e9, PRE, paths[::-1] + paths[:1]) == folder
    assert sizes(folder) == held


def test_room_is_made_by_removing_the_least_recently_used_files_of_other_data(
        tmp_path: Path) -> None:
    folder = tmp_path / "pixels"
    old = images(tmp_path / "old", 6, seed=1)
    names = cache_one_by_one(old, folder)
    for i, name in enumerate(names):  # the last cached is the least recently used...
        os.utime(folder / name, (ANCIENT - i, ANCIENT - i))
    EvalTransform(PRE, str(folder))(old[5])  # ...until it is read again
    assert os.stat(folder / names[5]).st_mtime > ANCIENT
    size = os.stat(folder / names[0]).st_size
    assert set(sizes(folder).values()) == {size}  # 16 x 16 x 3 bytes and the header
    lru = [names[4], names[3], names[2], names[1], names[0], names[5]]

    new = images(tmp_path / "new", 4, seed=2)
    limit = 8000
    # Room for 4 estimated images: the oldest go until the rest fits beside them.
    gone = math.ceil((6 * size - (limit - 4 * ESTIMATE)) / size)
    assert gone == 3
    assert pixel_cache(str(tmp_path), limit / 1e9, PRE, new) == folder
    assert set(sizes(folder)) == set(lru[gone:])
    warm(new, folder, max_bytes=limit)
    held = sizes(folder)
    assert set(lru[gone:]) < set(held) and len(held) == 3 + 4
    assert sum(os.stat(folder / name).st_size for name in held) <= limit


def test_an_estimate_that_falls_short_is_trimmed_once_the_cache_is_filled(
        tmp_path: Path) -> None:
    folder = tmp_path / "pixels"
    others = stale(folder, 3)
    wide = images(tmp_path / "wide", 2, seed=3, shape=(16, 96))  # 16 x 96: 6:1, not 3:2
    limit = 10_000
    assert limit >= 3 * 1000 + 2 * ESTIMATE  # the estimate fits beside the others...
    assert pixel_cache(str(tmp_path), limit / 1e9, PRE, wide) == folder
    assert set(sizes(folder)) == set(others)
    warm(wide, folder, max_bytes=limit)
    held = sizes(folder)
    assert 3 * 1000 + sum(held.values()) > limit  # ...the files do not: the others go
    assert len(held) == 2 and not set(others) & set(held)
    assert sum(os.stat(folder / name).st_size for name in held) <= limit


def test_the_files_of_the_data_in_use_are_never_removed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "pixels"
    data = images(tmp_path / "data", 4, seed=4)
    own = cache_one_by_one(data[:2], folder)
    for name in own:  # older than any other entry
        os.utime(folder / name, (ANCIENT - 100, ANCIENT - 100))
    others = stale(folder, 4)
    size = os.stat(folder / own[0]).st_size
    limit = 6000
    # 2 held + 2 estimated fit; others go, oldest first, until the folder fits too
    assert limit >= 2 * size + 2 * ESTIMATE
    gone = math.ceil((2 * size + 4000 - (limit - 2 * ESTIMATE)) / 1000)
    assert pixel_cache(str(tmp_path), limit / 1e9, PRE, data) == folder
    assert set(sizes(folder)) == set(own) | set(others[gone:])
    assert all(os.stat(folder / name).st_mtime > ANCIENT for name in own)  # marked used

    # a bound below what the data alone takes: no cache, and nothing removed
    before = sizes(folder)
    assert pixel_cache(str(tmp_path), (2 * size + 2 * ESTIMATE - 1) / 1e9, PRE, data) is None
    assert "decoding every image every epoch" in capsys.readouterr().err
    assert sizes(folder) == before
    # filled past a bound it cannot meet: every other entry goes, none of the data's
    warm(data, folder, max_bytes=100)
    assert len(sizes(folder)) == 4 and set(own) < set(sizes(folder))


def test_eviction_tolerates_entries_that_vanish_meanwhile(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "pixels"
    names = stale(folder, 5)
    ghost = folder / f"{0:040x}.npy"  # listed, then evicted by another process
    glob, stat = Path.glob, Path.stat

    def listed(self: Path, pattern: str) -> list[Path]:
        return [*glob(self, pattern), ghost]

    def stat_then_vanish(self: Path, **kwargs: bool) -> os.stat_result:
        result = stat(self, **kwargs)
        if self.name == names[0]:  # removed by another process between stat and unlink
            os.remove(self)
        return result

    monkeypatch.setattr(Path, "glob", listed)
    monkeypatch.setattr(Path, "stat", stat_then_vanish)
    assert evict_pixel_cache(folder, 2500, keep={names[1]}) == (3, 3000)
    monkeypatch.undo()
    assert set(sizes(folder)) == {names[1], names[4]}
