from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from skysort.data.sources import LabeledImages
from skysort.data.split import read_split_csv, split_by_hash, write_split_csv
from skysort.errors import ConfigError, DataError


def _fake(root: Path, counts: dict[str, int], start: int = 0) -> LabeledImages:
    paths, targets = [], []
    for c, (name, n) in enumerate(sorted(counts.items())):
        paths += [root / name / f"{i:05d}.jpg" for i in range(start, start + n)]
        targets += [c] * n
    return LabeledImages(root=root, paths=paths, targets=np.array(targets),
                         classes=sorted(counts))


def test_split_is_stratified_and_near_the_requested_fractions(tmp_path: Path) -> None:
    data = _fake(tmp_path, {"a": 2000, "b": 400})
    splits = split_by_hash(data, (0.7, 0.15, 0.15), seed=0)
    for c in (0, 1):
        share = Counter(s for s, t in zip(splits, data.targets, strict=True) if t == c)
        n = sum(share.values())
        tolerance = 4 * np.sqrt(0.15 * 0.85 / n)  # four binomial standard errors
        assert abs(share["train"] / n - 0.7) < tolerance
        assert abs(share["val"] / n - 0.15) < tolerance
        assert abs(share["test"] / n - 0.15) < tolerance


def test_same_seed_same_split_other_seed_other_split(tmp_path: Path) -> None:
    data = _fake(tmp_path, {"a": 300, "b": 300})
    assert split_by_hash(data, seed=1) == split_by_hash(data, seed=1)
    differ = sum(x != y for x, y in zip(split_by_hash(data, seed=1), split_by_hash(data, seed=2),
                                         strict=True))
    assert differ > 100


def test_adding_images_never_moves_existing_ones(tmp_path: Path) -> None:
    before = _fake(tmp_path, {"a": 200, "b": 150})
    after = _fake(tmp_path, {"a": 260, "b": 190})  # same names first, new ones after
    old = dict(zip(before.paths, split_by_hash(before), strict=True))
    new = dict(zip(after.paths, split_by_hash(after), strict=True))
    assert all(new[p] == s for p, s in old.items())


def test_split_depends_on_relative_path_not_location(tmp_path: Path) -> None:
    one = _fake(tmp_path / "copy1", {"a": 50, "b": 50})
    two = _fake(tmp_path / "elsewhere" / "copy2", {"a": 50, "b": 50})
    assert split_by_hash(one) == split_by_hash(two)


def test_small_classes_still_get_val_and_test_images(tmp_path: Path) -> None:
    data = _fake(tmp_path, {"big": 100, "tiny": 3, "small": 6})
    splits = split_by_hash(data)
    for c in range(3):
        got = Counter(s for s, t in zip(splits, data.targets, strict=True) if t == c)
        assert got["train"] >= 1 and got["val"] >= 1 and got["test"] >= 1


def test_too_few_images_to_split_is_an_error_naming_the_class(tmp_path: Path) -> None:
    data = _fake(tmp_path, {"big": 100, "rare": 2})
    with pytest.raises(DataError, match="'rare' has 2 image"):
        split_by_hash(data)


def test_presplit_data_keeps_its_split_and_carves_val_from_train(tmp_path: Path) -> None:
    data = _fake(tmp_path, {"a": 400})
    data.splits = ["train"] * 300 + ["test"] * 100
    splits = split_by_hash(data, (0.7, 0.15, 0.15))
    assert splits[300:] == ["test"] * 100
    n_val = splits[:300].count("val")
    assert 20 < n_val < 70  # about 0.15 / 0.85 of 300 = 53
    data.splits = ["train"] * 200 + ["val"] * 100 + ["test"] * 100
    assert split_by_hash(data) == data.splits


def test_bad_fractions(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sum to 1"):
        split_by_hash(_fake(tmp_path, {"a": 10}), (0.5, 0.2, 0.2))


def test_split_csv_round_trip(tmp_path: Path) -> None:
    data = _fake(tmp_path, {"a": 5, "b": 5})
    splits = split_by_hash(data)
    write_split_csv(tmp_path / "split.csv", data, splits)
    rows = read_split_csv(tmp_path / "split.csv")
    assert [r["path"] for r in rows] == [data.relpath(p) for p in data.paths]
    assert [r["label"] for r in rows] == ["a"] * 5 + ["b"] * 5
    assert [r["split"] for r in rows] == splits


def test_a_class_with_no_images_gets_no_split_and_breaks_none(tmp_path: Path) -> None:
    data = _fake(tmp_path, {"a": 40, "b": 30})
    data = LabeledImages(root=tmp_path, paths=data.paths, targets=data.targets,
                         classes=["a", "b", "c"])  # "c" named, never seen
    splits = split_by_hash(data, seed=0)
    assert len(splits) == 70
    for c in (0, 1):
        assert {s for s, t in zip(splits, data.targets, strict=True) if t == c} == \
            {"train", "val", "test"}
