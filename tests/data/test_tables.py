"""Label tables and label files: every layout, and every malformed row reported, not mixed in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skysort.data.dataset import DataSpec, open_dataset
from skysort.data.label_files import read_label_file
from skysort.data.tables import read_csv_table
from skysort.errors import ConfigError, LabelError
from skysort.tasks.schema import galaxy_zoo_schema


def _img(path: Path, value: int = 0, size: int = 8, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (size, size), value if mode == "L" else (value, 0, 0)).save(path)


def _csv(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n")
    return path


def test_binary_name_label_table(tmp_path: Path) -> None:
    for i in range(1, 7):
        _img(tmp_path / "train" / f"{i}.jpg")
    table = _csv(tmp_path / "train_labels.csv", "name,invasive\n" +
                 "\n".join(f"{i},{i % 2}" for i in range(1, 7)))
    data = read_csv_table(table, tmp_path / "train")
    assert data.task == "binary" and data.classes == ["0", "1"]
    assert data.targets.tolist() == [1, 0, 1, 0, 1, 0]
    assert data.ids == ["1", "2", "3", "4", "5", "6"]
    assert (data.id_column, data.target_columns) == ("name", ["invasive"])
    assert data.issues == []


def test_string_classes_and_a_pattern(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        _img(tmp_path / "img" / f"{name}_cut.png")
    table = _csv(tmp_path / "t.csv", "id,kind\na,globular\nb,open\nc,asterism")
    data = read_csv_table(table, tmp_path / "img", pattern="{id}_cut.png")
    assert data.task == "multiclass" and data.classes == ["asterism", "globular", "open"]
    assert data.targets.tolist() == [1, 2, 0]


def test_multilabel_and_fraction_tables(tmp_path: Path) -> None:
    for i in range(4):
        _img(tmp_path / f"g{i}.png")
    multi = _csv(tmp_path / "m.csv", "id,bar,ring,dust\ng0,1,0,0\ng1,0,1,1\ng2,0,0,0\ng3,1,1,0")
    data = read_csv_table(multi)
    assert data.task == "multilabel" and data.classes == ["bar", "ring", "dust"]
    np.testing.assert_array_equal(data.targets[1], [0, 1, 1])
    frac = _csv(tmp_path / "f.csv", "id,p,q\ng0,0.2,0.8\ng1,0.5,0.5\ng2,1,0\ng3,0.25,0.75")
    data = read_csv_table(frac)
    assert data.task == "fractions" and data.schema is None
    np.testing.assert_allclose(data.targets[3], [0.25, 0.75])


def test_galaxy_zoo_columns_are_recognised_without_a_flag(tmp_path: Path) -> None:
    columns = galaxy_zoo_schema().columns
    rows = []
    for i in range(3):
        _img(tmp_path / "images" / f"{100000 + i}.jpg")
        rows.append(",".join([str(100000 + i)] + ["0.5"] * 37))
    table = _csv(tmp_path / "training_solutions_rev1.csv",
                 "GalaxyID," + ",".join(columns) + "\n" + "\n".join(rows))
    data = open_dataset(DataSpec(data=str(tmp_path / "images"), labels=str(table)))
    assert data.task == "fractions" and data.schema.name == "galaxy_zoo_37"
    assert data.classes == columns and data.id_column == "GalaxyID"


def test_every_malformed_row_is_reported_and_left_out(tmp_path: Path) -> None:
    for name in ("ok1", "ok2", "ok3", "ok4", "ok5", "dup", "nan", "high", "low", "text",
                 "norow"):
        _img(tmp_path / f"{name}.png")
    rows = """
id,p,q
ok1,0.3,0.7
missing,0.5,0.5
dup,0.1,0.9
dup,0.2,0.8
nan,,0.4
high,1.5,0.2
low,-0.2,0.9
text,abc,0.1
ok2,0.6,0.4
"""
    # 4 of the 6 rows with an image hold bad targets: refused, not trained on 2
    with pytest.raises(LabelError, match=r"4 of 6 rows hold targets a fractions task cannot "
                                         r"use \(values found: .*remnant"):
        read_csv_table(_csv(tmp_path / "most.csv", rows))
    table = _csv(tmp_path / "t.csv", rows + "ok3,0.2,0.8\nok4,0.9,0.1\nok5,0.5,0.5\n")
    data = read_csv_table(table)
    assert data.ids == ["ok1", "ok2", "ok3", "ok4", "ok5"]
    np.testing.assert_allclose(data.targets, [[0.3, 0.7], [0.6, 0.4], [0.2, 0.8], [0.9, 0.1],
                                              [0.5, 0.5]])
    got = sorted((i.kind, i.row, i.id) for i in data.issues)
    assert got == sorted([
        ("missing image", 3, "missing"),
        ("duplicate id", 4, "dup"), ("duplicate id", 5, "dup"),
        ("missing target", 6, "nan"),
        ("out of range", 7, "high"), ("out of range", 8, "low"),
        ("missing target", 9, "text"),
        ("no row", None, "dup.png"),
        ("no row", None, "norow.png"),
    ])
    high = next(i for i in data.issues if i.id == "high")
    assert "p=1.5" in high.detail and "[0, 1]" in high.detail


def test_multilabel_values_other_than_0_and_1(tmp_path: Path) -> None:
    for name in ("a", "b"):
        _img(tmp_path / f"{name}.png")
    table = _csv(tmp_path / "t.csv", "id,x,y\na,1,0\nb,2,0")
    data = read_csv_table(table, task="multilabel")
    assert data.ids == ["a"]
    assert [(i.kind, i.id) for i in data.issues] == [("out of range", "b")]


def test_paths_must_stay_inside_the_data_root(tmp_path: Path) -> None:
    _img(tmp_path / "outside.png")
    _img(tmp_path / "data" / "inside.png")
    table = _csv(tmp_path / "data" / "t.csv", "id,label\ninside,a\n../outside,b")
    with pytest.raises(LabelError, match=r"row 3: path '../outside' points outside"):
        read_csv_table(table)
    table = _csv(tmp_path / "data" / "t2.csv", "id,label\ninside,a\nx,b")
    with pytest.raises(LabelError, match="points outside"):
        read_csv_table(table, pattern="../{id}.png")


def test_table_errors_name_the_columns(tmp_path: Path) -> None:
    table = _csv(tmp_path / "t.csv", "id,label\na,b")
    with pytest.raises(LabelError, match=r"no id column 'name'; columns are \['id', 'label'\]"):
        read_csv_table(table, id_column="name")
    with pytest.raises(LabelError, match="target column"):
        read_csv_table(table, targets=["nope"])
    with pytest.raises(ConfigError, match="task='banana': must be auto or one of"):
        open_dataset(DataSpec(data=str(table), task="banana"))


def _hirise(root: Path) -> Path:
    """A HiRISE v3.2-like folder: 227x227 grayscale JPEGs, label file, class map, split file
    with repeated training rows, and __MACOSX clutter."""
    images = root / "map-proj-v3_2"
    names = {0: "other", 1: "crater", 2: "dark dune"}
    rows, split_rows = [], []
    for c in names:
        for i in range(5):
            name = f"ESP_0{c}{i}_RED-00{i}.jpg"
            _img(images / name, value=40 + 80 * c, size=227, mode="L")
            rows.append(f"{name} {c}")
            split = "train" if i < 3 else ("val" if i == 3 else "test")
            split_rows.append(f"{name} {c} {split}")
            if c > 0 and split == "train":
                split_rows.append(f"{name} {c} train")  # up-sampled rare class
    (root / "__MACOSX" / "map-proj-v3_2").mkdir(parents=True)
    for i in range(4):
        (root / "__MACOSX" / "map-proj-v3_2" / f"._ESP_00{i}_RED-00{i}.jpg").write_bytes(b"x")
    (images / "._ESP_000_RED-000.jpg").write_bytes(b"mac")
    (root / "labels-map-proj_v3_2.txt").write_text("\n".join(rows) + "\n")
    (root / "labels-map-proj_v3_2_train_val_test.txt").write_text("\n".join(split_rows) + "\n")
    (root / "landmarks_map-proj-v3_2_classmap.csv").write_text(
        "\n".join(f"{k},{v}" for k, v in names.items()) + "\n")
    return root


def test_hirise_layout_is_found_without_flags(tmp_path: Path) -> None:
    root = _hirise(tmp_path / "hirise")
    data = open_dataset(DataSpec(data=str(root)))
    assert data.classes == ["other", "crater", "dark dune"] and data.task == "multiclass"
    assert len(data) == 15 + 6  # six training rows repeated, as the file says
    assert data.splits.count("test") == 3 and data.splits.count("val") == 3
    assert data.splits.count("train") == 9 + 6
    assert data.issues == []
    crater_train = [p.name for p, t, s in zip(data.paths, data.targets, data.splits,
                                               strict=True) if t == 1 and s == "train"]
    assert len(crater_train) == 6 and len(set(crater_train)) == 3


def test_label_file_conflicts_and_missing_images(tmp_path: Path) -> None:
    root = _hirise(tmp_path / "h")
    split = root / "labels-map-proj_v3_2_train_val_test.txt"
    split.write_text(split.read_text() + "ESP_000_RED-000.jpg 2 train\nGONE.jpg 1 test\n")
    data = open_dataset(DataSpec(data=str(root)))
    kinds = sorted((i.kind, i.id) for i in data.issues)
    assert kinds == [("label conflict", "ESP_000_RED-000.jpg"), ("missing image", "GONE.jpg")]
    assert "GONE.jpg" not in [p.name for p in data.paths]


def test_label_file_without_class_map_and_bad_lines(tmp_path: Path) -> None:
    _img(tmp_path / "a.png")
    _img(tmp_path / "b.png")
    (tmp_path / "labels.txt").write_text("a.png 3\nb.png 10\n")
    data = read_label_file(tmp_path / "labels.txt")
    assert data.classes == ["3", "10"] and data.targets.tolist() == [0, 1]
    (tmp_path / "bad.txt").write_text("a.png 3\nb.png\n")
    with pytest.raises(LabelError, match=r"bad.txt, line 2: expected 2 fields"):
        read_label_file(tmp_path / "bad.txt")
