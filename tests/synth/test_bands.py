"""Tests for the simulated multi-band FITS cutouts: shapes, determinism, band names read back
blue to red, the file layouts, the JPEG copies, and that the colour-only classes differ in
y/z and in nothing else."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

from skysort.data.fits import Bands, read_fits_bands, rgb_planes
from skysort.data.stretch import lupton_rgb
from skysort.errors import DataError
from skysort.synth.bands import (
    BANDS,
    COLOUR_CLASSES,
    extend_colour,
    jpeg_root,
    render_bands,
    write_fits_set,
)
from skysort.synth.galaxies import _DISK, _OLD, _YOUNG, MORPHOLOGIES

MAX_PIXELS = 10**6


def _files(root: Path, pattern: str = "*/*.fits") -> list[Path]:
    return sorted(root.glob(pattern))


@pytest.mark.parametrize("kind", MORPHOLOGIES)
def test_render_shapes_and_dtypes(kind: str) -> None:
    cube = render_bands(kind, np.random.default_rng(1), 32, snr=50.0)
    assert cube.shape == (5, 32, 32) and cube.dtype == np.float32
    assert np.isfinite(cube).all()
    r = cube[1]
    border = np.concatenate([r[:4].ravel(), r[-4:].ravel()])
    assert abs(float(np.median(border))) < 0.01  # sky-subtracted
    assert r.max() > 10 * border.std()  # a galaxy above the noise


def test_render_is_deterministic_and_bands_independent() -> None:
    a = render_bands("spiral", np.random.default_rng(5), 32)
    b = render_bands("spiral", np.random.default_rng(5), 32)
    c = render_bands("spiral", np.random.default_rng(6), 32)
    grz = render_bands("spiral", np.random.default_rng(5), 32, bands=("g", "r", "z"))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(a[[0, 1, 3]], grz)  # the same galaxy and noise in every band


def test_components_have_their_own_colours() -> None:
    old, disk, young = (extend_colour(c) for c in (_OLD, _DISK, _YOUNG))
    assert old["g"] == _OLD[0] and old["i"] == _OLD[2]  # galaxies.py's g, r, i kept
    for sed in (old, disk, young):
        assert sed["r"] == 1.0
    assert old["u"] < disk["u"] < young["u"] and old["y"] > disk["y"] > young["y"]
    assert old["u"] < old["g"] < old["r"] < old["i"] < old["z"] < old["y"]
    assert young["u"] > young["g"] > young["r"] > young["i"] > young["z"] > young["y"]


def test_bad_arguments() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(DataError, match="bands"):
        render_bands("spiral", rng, 32, bands=("g", "K"))
    with pytest.raises(DataError, match="bands"):
        render_bands("spiral", rng, 32, bands="gri")
    with pytest.raises(DataError, match="colour_shift"):
        render_bands("spiral", rng, 32, colour_shift=("y", "q", 1.0))
    with pytest.raises(DataError, match="kind"):
        render_bands("quasar", rng, 32)
    with pytest.raises(DataError, match="layout"):
        write_fits_set("unused", 1, layout="tiles")
    with pytest.raises(DataError, match="class"):
        write_fits_set("unused", {"zbright": 1})
    with pytest.raises(DataError, match="JPEG"):
        write_fits_set("unused", 1, bands=("g", "r", "i"), jpeg=True)


def test_cube_names_read_back_blue_to_red(tmp_path: Path) -> None:
    order = ("z", "g", "y", "r")  # written in this order, read back by wavelength
    root = write_fits_set(tmp_path / "set", {"spiral": 2, "merger": 1}, size=24, bands=order,
                          seed=3)
    files = _files(root)
    assert [f.relative_to(root).as_posix() for f in files] == [
        "merger/merger_00000.fits", "spiral/spiral_00000.fits", "spiral/spiral_00001.fits"]
    with fits.open(files[1]) as hdus:
        raw = hdus[0].data
        assert raw.dtype == np.dtype(">f4") and raw.shape == (4, 24, 24)
        assert [hdus[0].header[f"BAND{k}"] for k in range(4)] == list(order)
    bands = read_fits_bands(files[1], MAX_PIXELS)
    assert bands.names == ("g", "r", "z", "y")
    assert np.array_equal(bands.data, raw[[1, 3, 0, 2]].astype(np.float64))
    again = write_fits_set(tmp_path / "again", {"spiral": 2}, size=24, bands=order, seed=3)
    assert fits.getdata(_files(again)[0]).tobytes() == raw.tobytes()  # deterministic


def test_extensions_layout(tmp_path: Path) -> None:
    root = write_fits_set(tmp_path / "ext", {"elliptical": 1}, size=24, layout="extensions")
    (path,) = _files(root)
    with fits.open(path) as hdus:
        assert [h.header.get("FILTER") for h in hdus[1:]] == list(BANDS)
    bands = read_fits_bands(path, MAX_PIXELS)
    assert bands.names == BANDS and bands.data.shape == (5, 24, 24)
    cube = write_fits_set(tmp_path / "cube", {"elliptical": 1}, size=24)
    assert np.array_equal(read_fits_bands(_files(cube)[0], MAX_PIXELS).data, bands.data)


def test_per_band_layout_writes_one_file_per_band(tmp_path: Path) -> None:
    root = write_fits_set(tmp_path / "pb", {"edge_on": 2}, size=24, layout="per-band",
                          bands=("g", "r", "z"))
    names = [f.name for f in _files(root)]
    assert names == [f"edge_on_{i:05d}_{b}.fits" for i in range(2) for b in ("g", "r", "z")]
    assert (root / "labels.csv").read_text().splitlines() == [
        "id,class", "edge_on/edge_on_00000,edge_on", "edge_on/edge_on_00001,edge_on"]
    cube = read_fits_bands(_files(write_fits_set(tmp_path / "c", {"edge_on": 2}, size=24,
                                                 bands=("g", "r", "z")))[0], MAX_PIXELS)
    for k, band in enumerate(("g", "r", "z")):
        one = read_fits_bands(root / "edge_on" / f"edge_on_00000_{band}.fits", MAX_PIXELS)
        assert one.names == (band,) and one.data.shape == (1, 24, 24)
        assert np.array_equal(one.data[0], cube.data[k])
    together = read_fits_bands(root / "edge_on" / "edge_on_00000_{band}.fits", MAX_PIXELS)
    assert together.names == ("g", "r", "z") and np.array_equal(together.data, cube.data)


def test_jpeg_copy_is_the_lupton_composite_north_up(tmp_path: Path) -> None:
    root = write_fits_set(tmp_path / "set", {"merger": 2}, size=32, jpeg=True, seed=1)
    copies = _files(jpeg_root(root), "*/*.jpg")
    assert [c.relative_to(jpeg_root(root)).as_posix() for c in copies] == [
        "merger/merger_00000.jpg", "merger/merger_00001.jpg"]
    for path, copy in zip(_files(root), copies, strict=True):
        bands = read_fits_bands(path, MAX_PIXELS)
        rgb = lupton_rgb(*rgb_planes(bands, ["g", "r", "z"])).astype(float)
        jpeg = np.asarray(Image.open(copy)).astype(float)
        assert jpeg.shape == (32, 32, 3)
        # JPEG's 4:2:0 chroma subsampling smears the pixel-scale colour noise: compare
        # the luminance, where quality 90 keeps each pixel within a few levels
        luma = np.array([0.299, 0.587, 0.114])
        flipped = np.abs((jpeg - rgb[::-1]) @ luma).mean()
        unflipped = np.abs((jpeg - rgb) @ luma).mean()
        assert flipped < 6.0 and flipped < unflipped / 3  # rows flipped: north up
        default = lupton_rgb(*rgb_planes(Bands(bands.names, bands.data)))  # g, r, y
        assert not np.array_equal(default, rgb.astype(np.uint8))  # z, not y, is red


def _band_ratios(root: Path, name: str) -> np.ndarray:
    """Per galaxy: g/r, i/r, z/r and y/z of the flux in a central aperture."""
    rows = []
    for path in _files(root / name, "*.fits"):
        data = read_fits_bands(path, MAX_PIXELS).data
        centre = data[:, 6:-6, 6:-6].sum(axis=(1, 2))
        g, r, i, z, y = centre
        rows.append((g / r, i / r, z / r, y / z))
    return np.array(rows)


def test_colour_only_classes_differ_only_in_y_over_z(tmp_path: Path) -> None:
    n = 30
    root = write_fits_set(tmp_path / "colour", n, size=32, colour_only=True, seed=2,
                          snr_range=(30.0, 100.0))
    assert sorted(p.name for p in root.iterdir()) == sorted(COLOUR_CLASSES)
    z_bright, y_bright = _band_ratios(root, "zbright"), _band_ratios(root, "ybright")
    diff = y_bright.mean(axis=0) - z_bright.mean(axis=0)
    # the standard error of each difference of class means, from the samples themselves
    se = np.sqrt(y_bright.var(axis=0, ddof=1) / n + z_bright.var(axis=0, ddof=1) / n)
    assert (np.abs(diff[:3]) < 4 * se[:3]).all(), (diff, se)  # g/r, i/r, z/r: the same
    assert diff[3] > 10 * se[3], (diff, se)  # y/z: 1.4 against 0.7
    assert np.median(z_bright[:, 3]) == pytest.approx(0.7, rel=0.15)
    assert np.median(y_bright[:, 3]) == pytest.approx(1.4, rel=0.15)
