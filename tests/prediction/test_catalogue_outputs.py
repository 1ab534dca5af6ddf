"""Predictions from catalogues in astropy's formats, written as FITS or ECSV tables with the
run's provenance, and catalogue columns carried into every row (``--keep-columns``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

import skysort
from skysort.cli import main
from skysort.errors import ConfigError, DataError
from skysort.prediction.predictor import predict
from tests.conftest import write_color_folders


@pytest.fixture(scope="module")
def run_and_catalogues(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small head-only run and, beside its images, the same catalogue as CSV, FITS and
    ECSV: a path column (relative), ra, dec and a name."""
    work = tmp_path_factory.mktemp("catalogues")
    data = write_color_folders(work / "data", per_class=6, size=32, seed=3)
    run = skysort.train(data, project=str(work / "runs"), name="c", epochs=3,
                        finetune="head").run_dir
    paths = sorted(p.relative_to(work).as_posix() for p in data.rglob("*.png"))[::2]
    rng = np.random.default_rng(0)
    columns = {"file": paths, "ra": rng.uniform(0, 360, len(paths)),
               "dec": rng.uniform(-90, 90, len(paths)),
               "name": [f"obj {i}" for i in range(len(paths))]}
    with open(work / "cat.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows(zip(*[[repr(float(v)) if isinstance(v, float) else v for v in col]
                               for col in columns.values()], strict=True))
    Table(columns).write(work / "cat.fits")
    Table(columns).write(work / "cat.ecsv")
    return run, work


def _text(values) -> list[str]:
    """A text column as str (FITS text reads back as bytes)."""
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_fits_and_ecsv_catalogues_and_outputs_match_the_csv(
        run_and_catalogues: tuple[Path, Path]) -> None:
    run, work = run_and_catalogues
    ref = _csv_rows(predict(run, [work / "cat.csv"], work / "ref.csv", path_column="file",
                            quiet=True, workers=0))
    assert len(ref) == 9
    info = json.loads((run / "model.json").read_text())
    for cat, out in (("cat.fits", "out.fits"), ("cat.ecsv", "out.ecsv"),
                     ("cat.fits", "out2.ecsv"), ("cat.ecsv", "out2.fits")):
        predict(run, [work / cat], work / out, path_column="file", quiet=True, workers=0)
        table = Table.read(work / out)
        assert table.colnames == list(ref[0]), out
        assert _text(table["path"]) == [r["path"] for r in ref]
        assert _text(table["prediction"]) == [r["prediction"] for r in ref]
        for name in ["probability", *info["task"]["classes"]]:
            np.testing.assert_allclose(np.asarray(table[name], dtype=float),
                                       [float(r[name]) for r in ref], atol=2e-8)
        assert table.meta["BACKBONE"] == info["backbone"]["name"]
        assert table.meta["TASK"] == info["task"]["kind"] == "multiclass"
        assert table.meta["SKYSORT"] == skysort.__version__
        assert Path(table.meta["RUNDIR"]) == run.resolve()
        assert table.meta["DATE"][:2] == "20"


def test_keep_columns_carry_the_catalogues_values(run_and_catalogues: tuple[Path, Path]
                                                  ) -> None:
    run, work = run_and_catalogues
    given = Table.read(work / "cat.ecsv")
    for cat, out in (("cat.fits", "keep.csv"), ("cat.csv", "keep2.csv")):
        rows = _csv_rows(predict(run, [work / cat], work / out, path_column="file", quiet=True,
                                 workers=0, keep_columns=["ra", "dec", "name"]))
        assert list(rows[0])[:4] == ["path", "ra", "dec", "name"]
        assert [float(r["ra"]) for r in rows] == list(given["ra"])  # exact, not rounded
        assert [float(r["dec"]) for r in rows] == list(given["dec"])
        assert [r["name"] for r in rows] == list(given["name"])
    assert main(["predict", str(run), str(work / "cat.ecsv"), "--path-column", "file",
                 "--keep-columns", "ra, name", "-o", str(work / "keep.fits"),
                 "--workers", "0"]) == 0
    table = Table.read(work / "keep.fits")
    assert table.colnames[:3] == ["path", "ra", "name"]
    assert table["ra"].dtype.kind == "f" and list(table["ra"]) == list(given["ra"])
    assert _text(table["name"]) == list(given["name"])


def test_bad_requests_are_refused(run_and_catalogues: tuple[Path, Path]) -> None:
    run, work = run_and_catalogues
    with pytest.raises(DataError, match=r"no column\(s\) \['z'\] to keep .*'ra', 'dec'"):
        predict(run, [work / "cat.fits"], work / "x.csv", path_column="file", quiet=True,
                workers=0, keep_columns=["ra", "z"])
    with pytest.raises(ConfigError, match="--resume needs a csv or parquet output"):
        predict(run, [work / "cat.fits"], work / "x.fits", path_column="file", quiet=True,
                resume=True)
    with pytest.raises(ConfigError, match="already have such columns"):
        predict(run, [work / "cat.fits"], work / "x.csv", path_column="file", quiet=True,
                keep_columns=["path"])
