from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.visualization import make_lupton_rgb

from skysort.data.fits import (
    Bands,
    band_wavelength,
    read_fits_bands,
    rgb_planes,
)
from skysort.data.images import MAX_PIXELS, load_image
from skysort.data.stretch import lupton_parameters, lupton_rgb
from skysort.errors import ImageError

SIZE = 48


def _blob(x: float, y: float, flux: float, sigma: float = 2.5) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    return flux * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))


def _sky(rng: np.random.Generator, level: float = 100.0, noise: float = 2.0) -> np.ndarray:
    return rng.normal(level, noise, (SIZE, SIZE))


def _write(path: Path, *hdus: fits.hdu.base.ExtensionHDU) -> Path:
    fits.HDUList(list(hdus)).writeto(path)
    return path


def _cube(path: Path, planes: list[np.ndarray], **keywords: str) -> Path:
    hdu = fits.PrimaryHDU(np.stack(planes).astype(np.float32))
    for key, value in keywords.items():
        hdu.header[key] = value
    return _write(path, hdu)


def _rgb(path: Path) -> np.ndarray:
    """The loaded image as int, back in FITS row order (the loader flips rows)."""
    return np.asarray(load_image(path), dtype=int)[::-1]


def _only_in_first_plane(rng: np.random.Generator, n: int = 3) -> list[np.ndarray]:
    planes = [_sky(rng) for _ in range(n)]
    planes[0] = planes[0] + _blob(24, 24, 300.0)
    return planes


@pytest.mark.parametrize("keywords", [
    {"BAND1": "r", "BAND2": "g", "BAND3": "z"},  # one-based per-plane keywords
    {"BAND0": "r", "BAND1": "g", "BAND2": "z"},  # zero-based, as Legacy Survey cutouts
    {"FILTER1": "DECam r", "FILTER2": "DECam g", "FILTER3": "DECam z"},
    {"BANDS": "rgz"},
])
def test_cube_bands_named_in_the_header_are_ordered_blue_to_red(
        tmp_path: Path, keywords: dict[str, str]) -> None:
    rng = np.random.default_rng(1)
    r_plane, g_plane, z_plane = _sky(rng), _sky(rng) + _blob(24, 24, 300.0), _sky(rng)
    path = _cube(tmp_path / "rgz.fits", [r_plane, g_plane, z_plane], **keywords)
    bands = read_fits_bands(path, MAX_PIXELS)
    assert [band_wavelength(n) for n in bands.names] == [477.0, 623.0, 905.0]
    np.testing.assert_array_equal(bands.data[0], g_plane.astype(np.float32))
    rgb = _rgb(path)
    assert rgb[24, 24, 2] == 255 and rgb[24, 24, 0] < 100  # the g source is blue, not red


def test_a_reversed_cube_and_an_unnamed_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    planes = _only_in_first_plane(rng)  # the source is in plane 0
    reversed_cube = _cube(tmp_path / "zrg.fits", planes, BAND1="z", BAND2="r", BAND3="g")
    unnamed = _cube(tmp_path / "plain.fits", planes)  # a survey cube runs blue to red
    assert read_fits_bands(reversed_cube, MAX_PIXELS).names == ("g", "r", "z")
    red_source, blue_source = _rgb(reversed_cube)[24, 24], _rgb(unnamed)[24, 24]
    assert red_source[0] == 255 and red_source[2] < 100
    assert blue_source[2] == 255 and blue_source[0] < 100


def test_one_band_per_extension_named_by_filter(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    z, g, r = _sky(rng) + _blob(24, 24, 300.0), _sky(rng), _sky(rng)
    hdus = [fits.PrimaryHDU()]
    for name, data in (("z", z), ("g", g), ("r", r)):
        hdus.append(fits.ImageHDU(data, header=fits.Header([("FILTER", name)])))
    hdus.append(fits.ImageHDU(np.ones((SIZE, SIZE)), name="WHT"))  # a weight map: skipped
    hdus.append(fits.ImageHDU(np.ones((8, 8)), name="THUMB"))  # another shape: ignored
    path = _write(tmp_path / "ext.fits", *hdus)
    bands = read_fits_bands(path, MAX_PIXELS)
    assert bands.names == ("g", "r", "z")
    np.testing.assert_array_equal(bands.data[2], z)
    rgb = _rgb(path)
    assert rgb[24, 24, 0] == 255 and rgb[24, 24, 2] < 100  # z is the reddest band


@pytest.mark.parametrize(("names", "chosen"), [
    (["r"], ("r", "r", "r")),
    (["z", "g"], ("z", None, "g")),  # blue = bluest, red = reddest, green = their mean
    (["g", "r", "i", "z"], ("z", "r", "g")),
    # the ends and the band nearest their geometric-mean wavelength
    (["u", "g", "r", "i", "z", "y"], ("y", "r", "u")),
    (["p1", "p2", "p3", "p4", "p5", "p6"], ("p6", "p3", "p1")),  # unknown: file order
])
def test_one_to_six_bands_make_a_composite(tmp_path: Path, names: list[str],
                                           chosen: tuple[str, str | None, str]) -> None:
    rng = np.random.default_rng(4)
    planes = [_sky(rng) + _blob(24, 24, 100.0 * (i + 1)) for i in range(len(names))]
    if len(names) == 1:
        header = fits.Header([("FILTER", names[0])])
        path = _write(tmp_path / "one.fits", fits.PrimaryHDU(planes[0], header=header))
    else:
        keywords = {f"BAND{i + 1}": name for i, name in enumerate(names)}
        path = _cube(tmp_path / "many.fits", planes, **keywords)
    bands = read_fits_bands(path, MAX_PIXELS)
    by_name = dict(zip(bands.names, bands.data, strict=True))
    red, green, blue = rgb_planes(bands)
    np.testing.assert_array_equal(red, by_name[chosen[0]])
    np.testing.assert_array_equal(blue, by_name[chosen[2]])
    mean = (by_name[chosen[0]] + by_name[chosen[2]]) / 2
    np.testing.assert_array_equal(green, mean if chosen[1] is None else by_name[chosen[1]])
    rgb = _rgb(path)
    assert rgb.shape == (SIZE, SIZE, 3) and rgb[24, 24].max() == 255
    if len(names) == 1:
        assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()


def test_bands_can_be_chosen_by_name() -> None:
    data = np.arange(3 * 4 * 4, dtype=float).reshape(3, 4, 4)
    bands = Bands(names=("g", "r", "z"), data=data)
    red, green, blue = rgb_planes(bands, wanted=["Z", "g"])
    np.testing.assert_array_equal(red, data[2])
    np.testing.assert_array_equal(green, (data[0] + data[2]) / 2)
    np.testing.assert_array_equal(blue, data[0])
    with pytest.raises(ImageError, match=r"band 'i' is not in this FITS file \(it has 'g'"):
        rgb_planes(bands, wanted=["i"])


def test_nan_inf_and_a_saturated_pixel_do_not_blow_the_image(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    clean = [_sky(rng) + _blob(24, 24, f) for f in (150.0, 250.0, 350.0)]
    dirty = [plane.copy() for plane in clean]
    for plane in dirty:
        plane[0:4, 0:4] = np.nan
        plane[5, 0:3] = (np.inf, -np.inf, np.nan)
        plane[40, 40] = 1e9  # a saturated star's core / a hot pixel
    rgb_clean = _rgb(_cube(tmp_path / "clean.fits", clean))
    rgb_dirty = _rgb(_cube(tmp_path / "dirty.fits", dirty))
    assert rgb_dirty[0:4, 0:4].max() <= 10  # NaN is sky: black
    assert rgb_dirty[24, 24].max() == 255 and np.median(rgb_dirty[10:30, 36:46]) < 30
    away = np.ones((SIZE, SIZE), dtype=bool)
    away[0:6, 0:6] = away[38:43, 38:43] = False
    change = np.abs(rgb_dirty - rgb_clean)
    assert change[18:31, 18:31].max() <= 2  # the galaxy is as without them
    # and so is the sky, but for a few noise pixels whose total is near 0 (where
    # Lupton's colour of noise flips) after a sky level moved a hair
    assert change[away].mean() < 0.5 and np.percentile(change[away], 99) <= 2


def test_the_composite_is_astropys_make_lupton_rgb(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    g, r, z = (_sky(rng) + _blob(20, 28, f) + _blob(30, 14, 400 - f, 4.0)
               for f in (80.0, 200.0, 320.0))
    path = _cube(tmp_path / "grz.fits", [g, r, z], BANDS="grz")
    g, r, z = (plane.astype(np.float32).astype(np.float64) for plane in (g, r, z))
    minimum, stretch, q = lupton_parameters([z, r, g])
    assert len(minimum) == 3 and abs(minimum[1] - 100.0) < 1.0  # the sky level
    expected = make_lupton_rgb(z, r, g, minimum=list(minimum), stretch=stretch, Q=q)
    assert np.abs(_rgb(path) - expected.astype(int)).max() <= 1
    assert np.abs(lupton_rgb(z, r, g) - expected.astype(int)).max() <= 1


def test_colours_are_kept(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    red_object, blue_object = _blob(14, 24, 1.0), _blob(34, 24, 1.0)
    g = _sky(rng) + 60 * red_object + 300 * blue_object
    r = _sky(rng) + 150 * red_object + 150 * blue_object
    z = _sky(rng) + 300 * red_object + 60 * blue_object
    rgb = _rgb(_cube(tmp_path / "two.fits", [g, r, z])).astype(float) + 1.0
    red_ratio = rgb[24, 14, 0] / rgb[24, 14, 2]
    blue_ratio = rgb[24, 34, 0] / rgb[24, 34, 2]
    assert red_ratio > 3 and blue_ratio < 1 / 3


def test_a_faint_galaxy_stays_fainter_than_a_bright_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    both = [_sky(rng) + _blob(14, 24, 800.0) + _blob(34, 24, 40.0) for _ in range(3)]
    rgb = _rgb(_cube(tmp_path / "both.fits", both))
    assert rgb[24, 14].min() >= 250 and rgb[24, 34].max() < 128
    # Apart, with one set of parameters (what a data-set-wide scale will pass in).
    bright = [_sky(rng) + _blob(24, 24, 800.0) for _ in range(3)]
    faint = [_sky(rng) + _blob(24, 24, 40.0) for _ in range(3)]
    shared = lupton_parameters(bright)
    assert lupton_rgb(*bright, parameters=shared)[24, 24].min() >= 250
    assert lupton_rgb(*faint, parameters=shared)[24, 24].max() < 128


def test_data_that_is_not_a_stack_of_planes_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "4d.fits", fits.PrimaryHDU(np.zeros((2, 3, 8, 8))))
    with pytest.raises(ImageError, match=r"of shape \(2, 3, 8, 8\) is not an image"):
        load_image(path)


@pytest.mark.parametrize(("name", "nm"), [
    ("g", 477.0), ("DECam z", 905.0), ("HSC-G", 477.0), ("y", 990.0), ("NISP Y", 1080.0),
    ("Ks", 2150.0), ("VIS", 715.0), ("GALEX NUV", 231.0), ("H-alpha", 656.0), ("V", 551.0),
    ("F814W", None), ("", None),
])
def test_band_wavelengths(name: str, nm: float | None) -> None:
    assert band_wavelength(name) == nm
