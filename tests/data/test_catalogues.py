"""Label tables and path catalogues as astropy writes them (FITS binary tables, ECSV,
VOTable, Parquet): each reads exactly as the same table written as CSV does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from PIL import Image

from skysort.data.inputs import expand_inputs, expand_rows
from skysort.data.tables import read_csv_table
from skysort.errors import DataError

FORMATS = {"fits": "fits", "fits.gz": "fits", "ecsv": "ascii.ecsv", "vot": "votable",
           "xml": "votable", "parquet": "parquet"}


def _images(folder: Path, ids: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(ids):
        Image.new("RGB", (8, 8), (10 * i, 0, 0)).save(folder / f"{name}.png")


def _both(tmp_path: Path, columns: dict[str, list], ext: str) -> tuple[Path, Path]:
    """The same table as a CSV (written as text, by hand) and in format ``ext``."""
    names = list(columns)
    lines = [",".join(names)] + [",".join(str(v) for v in row)
                                 for row in zip(*columns.values(), strict=True)]
    csv_path = tmp_path / "tables" / "labels.csv"
    csv_path.parent.mkdir()
    csv_path.write_text("\n".join(lines) + "\n")
    other = tmp_path / "tables" / f"labels.{ext}"
    Table(columns).write(other, format=FORMATS[ext])
    return csv_path, other


def _issues(data, table: Path, offset: int) -> list[tuple]:
    """Issues with the row as a CSV line (a table's row 1 is the CSV's line 2) and the
    table's name out of the detail."""
    return sorted((i.kind, i.id, None if i.row is None else i.row + offset,
                   i.detail.replace(table.name, "TABLE")) for i in data.issues)


TABLES = {
    "fractions": {"id": ["g0", "g1", "g2", "g3", "g4", "g5", "g5", "g9"],
                  "p": [0.25, 0.5, 1.0, 0.125, 0.75, 0.5, 0.5, 0.5],
                  "q": [0.75, 0.5, 0.0, 0.875, 0.25, 0.5, 0.5, 0.5]},
    "classes": {"id": ["g0", "g1", "g2", "g3", "g4", "g5", "g5", "g9"],
                "kind": ["spiral", "elliptical", "spiral", "merger", "spiral", "merger",
                         "spiral", "spiral"]},
}


@pytest.mark.parametrize("ext", list(FORMATS))
@pytest.mark.parametrize("kind", list(TABLES))
def test_every_format_reads_as_the_same_csv(tmp_path: Path, ext: str, kind: str) -> None:
    _images(tmp_path / "img", ["g0", "g1", "g2", "g3", "g4", "g5", "g6"])  # g9: none; g6: no row
    csv_path, other = _both(tmp_path, TABLES[kind], ext)
    want = read_csv_table(csv_path, tmp_path / "img")
    got = read_csv_table(other, tmp_path / "img")
    assert got.ids == want.ids == ["g0", "g1", "g2", "g3", "g4"]
    assert (got.task, got.classes) == (want.task, want.classes)
    np.testing.assert_array_equal(got.targets, want.targets)
    assert (got.id_column, got.target_columns) == (want.id_column, want.target_columns)
    assert [p.name for p in got.paths] == [p.name for p in want.paths]
    assert _issues(got, other, 1) == _issues(want, csv_path, 0)
    assert {(i.kind, i.id) for i in got.issues} == {
        ("duplicate id", "g5"), ("missing image", "g9"), ("no row", "g5.png"),
        ("no row", "g6.png")}


def test_a_fits_table_with_a_nan_target_and_a_missing_image(tmp_path: Path) -> None:
    ids = [f"g{i}" for i in range(8)]
    _images(tmp_path / "img", ids[:7])  # g7 has no image
    p = np.array([0.1, 0.2, np.nan, 0.4, 0.5, 0.6, 0.7, 0.8])
    # the table among its images is not an image without a row
    Table({"objid": ids, "p": p, "q": 1 - p}).write(tmp_path / "img" / "gz.fits")
    data = read_csv_table(tmp_path / "img" / "gz.fits")
    assert data.ids == ["g0", "g1", "g3", "g4", "g5", "g6"]
    np.testing.assert_allclose(data.targets[:, 0], [0.1, 0.2, 0.4, 0.5, 0.6, 0.7], rtol=1e-6)
    rows = {i.id: (i.kind, i.row) for i in data.issues}
    assert rows["g7"] == ("missing image", 8)
    assert rows["g2"][1] == 3 and set(rows) == {"g2", "g7"}
    nan_csv = tmp_path / "gz.csv"  # the same NaN in a CSV is the same issue
    nan_csv.write_text("objid,p,q\n" + "\n".join(f"{i},{a},{1 - a}" for i, a in zip(ids, p,
                                                                                 strict=True)))
    same = {i.id: i.kind for i in read_csv_table(nan_csv, tmp_path / "img").issues}
    assert same["g2"] == rows["g2"][0]


def test_a_table_with_a_2d_column_is_refused(tmp_path: Path) -> None:
    _images(tmp_path, ["a", "b"])
    Table({"id": ["a", "b"], "label": [0, 1], "spectrum": np.zeros((2, 5))}).write(
        tmp_path / "t.fits")
    with pytest.raises(DataError, match=r"column 'spectrum' holds \(5,\) values per row; .*"
                                        r"\['id', 'label'\]"):
        read_csv_table(tmp_path / "t.fits")


def test_a_fits_image_is_an_input_and_a_fits_table_a_catalogue(tmp_path: Path) -> None:
    fits.PrimaryHDU(np.zeros((8, 8), dtype=np.float32)).writeto(tmp_path / "img.fits")
    _images(tmp_path / "cut", ["a", "b"])
    Table({"file": [b"cut/a.png", b"cut/b.png"], "ra": [10.5, 11.25]}).write(
        tmp_path / "cat.fits")
    found = list(expand_inputs([tmp_path / "img.fits", tmp_path / "cat.fits"], "file"))
    assert found == [tmp_path / "img.fits", tmp_path / "cut/a.png", tmp_path / "cut/b.png"]
    rows = list(expand_rows([tmp_path / "cat.fits"], "file", ["ra"]))
    assert [v for _, v in rows] == [[10.5], [11.25]]
    with pytest.raises(DataError, match=r"no column\(s\) \['dec'\] to keep .*\['file', 'ra'\]"):
        list(expand_rows([tmp_path / "cat.fits"], "file", ["ra", "dec"]))
    with pytest.raises(DataError, match="needs catalogue inputs"):
        list(expand_rows([tmp_path / "img.fits"], "file", ["ra"]))
