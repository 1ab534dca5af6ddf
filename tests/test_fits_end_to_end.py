"""FITS survey cutouts from training to prediction: the data-set-wide Lupton scale saved
with the model and used again, per-band files named by a pattern, a missing band file
listed and not fatal, and every band into the network (``channels=all``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

import skysort
from skysort.data.fits_decode import FitsDecode
from skysort.data.images import load_pixels
from skysort.prediction.predictor import predict

SIZE = 32
FIVE = ("g", "r", "i", "z", "y")


def _galaxy(rng: np.random.Generator, colour: str, n_bands: int) -> np.ndarray:
    """A blob of random size and brightness over noisy sky; ``red`` ones brighter in the
    redder bands, ``blue`` ones in the bluer."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    sigma = rng.uniform(1.5, 5.0)
    blob = np.exp(-((xx - 16 - rng.normal(0, 1)) ** 2 + (yy - 16) ** 2) / (2 * sigma**2))
    flux = rng.uniform(30, 600)
    slope = np.linspace(0.4, 1.6, n_bands)
    weights = slope if colour == "red" else slope[::-1]
    return np.stack([rng.normal(50.0, 2.0, (SIZE, SIZE)) + flux * w * blob for w in weights])


def _write_cube(path: Path, cube: np.ndarray, names: tuple[str, ...]) -> Path:
    hdu = fits.PrimaryHDU(cube.astype(np.float32))
    for i, name in enumerate(names):
        hdu.header[f"BAND{i}"] = name
    path.parent.mkdir(parents=True, exist_ok=True)
    hdu.writeto(path)
    return path


@pytest.fixture(scope="module")
def survey(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Class folders of g,r,z cubes, 5-band cubes beside them, and per-band files of
    three more galaxies (one without its z file)."""
    root = tmp_path_factory.mktemp("survey")
    rng = np.random.default_rng(0)
    for colour in ("red", "blue"):
        for i in range(14):
            cube = _galaxy(rng, colour, 5)
            _write_cube(root / "five" / colour / f"{colour}{i}.fits", cube, FIVE)
            _write_cube(root / "three" / colour / f"{colour}{i}.fits", cube[[0, 1, 3]],
                        ("g", "r", "z"))
    loose = root / "loose"
    loose.mkdir()
    for stem, colour in (("a", "red"), ("b", "blue"), ("c", "red")):
        cube = _galaxy(rng, colour, 3)
        for band, plane in zip(("g", "r", "z"), cube, strict=True):
            header = fits.Header([("FILTER", band)])
            fits.PrimaryHDU(plane.astype(np.float32), header=header).writeto(
                loose / f"{stem}_{band}.fits")
    (loose / "c_z.fits").unlink()
    return root


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_the_data_set_scale_is_fitted_saved_and_used_again(survey: Path,
                                                           tmp_path: Path) -> None:
    run = skysort.train(survey / "three", project=str(tmp_path), name="grz", epochs=5,
                        finetune="head").run_dir
    saved = json.loads((run / "model.json").read_text())["preprocess"]["fits"]
    decode = FitsDecode.from_dict(saved)
    assert decode.channels == "rgb" and decode.scale is not None and decode.scale > 0
    # predict decodes with the saved scale: the pixels the model sees are those of the
    # decoding saved with it, not a per-image scale
    image = survey / "three" / "red" / "red0.fits"
    assert not np.array_equal(load_pixels(image, fits=decode), load_pixels(image))
    catalogue = survey / "cat.fits"  # paths relative to the catalogue
    Table({"file": ["three/red/red1.fits", "loose/a_{band}.fits", "loose/c_{band}.fits"],
           "ra": [10.0, 11.0, 12.0]}).write(catalogue)
    out = predict(run, [str(catalogue)], tmp_path / "p.csv", path_column="file",
                  keep_columns=["ra"], workers=0)
    rows = _rows(out)  # every row kept, the unreadable one with its error
    assert [Path(r["path"]).name for r in rows] == ["red1.fits", "a_{band}.fits",
                                                   "c_{band}.fits"]
    assert [float(r["ra"]) for r in rows] == [10.0, 11.0, 12.0]
    assert [bool(r["prediction"]) for r in rows] == [True, True, False]
    assert "no file c_z.fits (band z)" in rows[2]["error"]
    assert (run / "report.html").stat().st_size > 10_000


def test_every_band_reaches_the_network(survey: Path, tmp_path: Path) -> None:
    run = skysort.train(survey / "five", project=str(tmp_path), name="all", epochs=5,
                        finetune="head", channels="all").run_dir
    info = json.loads((run / "model.json").read_text())["preprocess"]
    assert tuple(info["fits"]["bands"]) == FIVE and len(info["mean"]) == 5
    out = predict(run, [str(survey / "five" / "red"), str(survey / "three" / "red" /
                                                             "red0.fits")],
                  tmp_path / "p.csv", workers=0)
    rows = _rows(out)
    assert len(rows) == 15 and sum(bool(r["prediction"]) for r in rows) == 14
    assert "band 'i' is not in this FITS file (it has 'g', 'r', 'z')" in rows[-1]["error"]
