from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skysort.data.sources import read_class_folders
from skysort.errors import DataError


def _touch_image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(path)


def test_class_folders_sorted_with_nested_files_and_clutter_ignored(tmp_path: Path) -> None:
    for rel in ["spiral/a.png", "spiral/sub/b.jpg", "elliptical/c.png", "elliptical/d.PNG"]:
        _touch_image(tmp_path / rel)
    (tmp_path / "spiral" / "._a.png").write_bytes(b"resource fork")
    (tmp_path / "spiral" / ".DS_Store").write_bytes(b"x")
    (tmp_path / "spiral" / "notes.txt").write_text("hi")
    _touch_image(tmp_path / "__MACOSX" / "spiral" / "x.png")
    _touch_image(tmp_path / ".hidden" / "y.png")
    data = read_class_folders(tmp_path)
    assert data.classes == ["elliptical", "spiral"]
    assert [data.relpath(p) for p in data.paths] == [
        "elliptical/c.png", "elliptical/d.PNG", "spiral/a.png", "spiral/sub/b.jpg"]
    np.testing.assert_array_equal(data.targets, [0, 0, 1, 1])
    assert data.splits is None


@pytest.mark.parametrize("val_name", ["val", "valid", "validation"])
def test_presplit_tree(tmp_path: Path, val_name: str) -> None:
    for rel in ["train/a/1.png", "train/a/2.png", "train/b/3.png", f"{val_name}/a/4.png",
                f"{val_name}/b/5.png", "test/b/6.png"]:
        _touch_image(tmp_path / rel)
    data = read_class_folders(tmp_path)
    assert data.classes == ["a", "b"]
    assert sorted(zip(data.ids, data.splits, data.targets.tolist(), strict=True)) == [
        ("test/b/6.png", "test", 1), ("train/a/1.png", "train", 0),
        ("train/a/2.png", "train", 0), ("train/b/3.png", "train", 1),
        (f"{val_name}/a/4.png", "val", 0), (f"{val_name}/b/5.png", "val", 1)]


def test_empty_class_names_the_folder(tmp_path: Path) -> None:
    _touch_image(tmp_path / "a" / "1.png")
    (tmp_path / "empty_class").mkdir()
    (tmp_path / "empty_class" / "readme.txt").write_text("no images")
    with pytest.raises(DataError, match="empty_class"):
        read_class_folders(tmp_path)


def test_root_without_class_folders(tmp_path: Path) -> None:
    _touch_image(tmp_path / "loose.png")
    with pytest.raises(DataError, match="own sub-folder"):
        read_class_folders(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        read_class_folders(tmp_path / "missing")


def test_presplit_class_without_training_images(tmp_path: Path) -> None:
    _touch_image(tmp_path / "train" / "a" / "1.png")
    _touch_image(tmp_path / "val" / "b" / "2.png")
    with pytest.raises(DataError, match="class 'b' has no training images"):
        read_class_folders(tmp_path)
