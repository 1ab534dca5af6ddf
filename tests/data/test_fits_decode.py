"""How a model decodes FITS images: per-band files, every band as a channel, one
data-set-wide Lupton scale, and the settings that choose them."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.visualization import make_lupton_rgb

from skysort.config import TrainConfig
from skysort.data.fits import read_fits_bands
from skysort.data.fits_decode import FitsDecode, decode_fits, fit_decode
from skysort.data.images import MAX_PIXELS, file_digest, load_image, load_pixels
from skysort.data.stretch import lupton_bands, lupton_parameters
from skysort.data.tables import read_csv_table
from skysort.errors import ConfigError, ImageError

SIZE = 40
BANDS = ("g", "r", "i", "z", "y")


def _planes(rng: np.random.Generator, fluxes: tuple[float, ...], sky: float = 100.0,
            noise: float = 2.0) -> list[np.ndarray]:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    blob = np.exp(-((xx - 20) ** 2 + (yy - 20) ** 2) / (2 * 3.0**2))
    return [rng.normal(sky, noise, (SIZE, SIZE)) + f * blob for f in fluxes]


def _cube(path: Path, planes: list[np.ndarray], names: tuple[str, ...] = BANDS) -> Path:
    hdu = fits.PrimaryHDU(np.stack(planes).astype(np.float32))
    for i, name in enumerate(names[:len(planes)]):
        hdu.header[f"BAND{i}"] = name
    hdu.writeto(path)
    return path


def _per_band(folder: Path, stem: str, planes: list[np.ndarray],
              names: tuple[str, ...]) -> Path:
    for plane, name in zip(planes, names, strict=True):
        header = fits.Header([("FILTER", name)])
        fits.PrimaryHDU(plane.astype(np.float32), header=header).writeto(
            folder / f"{stem}_{name}.fits")
    return folder / f"{stem}_{{band}}.fits"


def _lupton_by_hand(planes: list[np.ndarray], minimum: list[float], stretch: float,
                    q: float) -> np.ndarray:
    """Lupton et al. (2004) for n bands, written out: x_c = (b_c - min_c) asinh(Q I / s) /
    (I asinh(0.1 Q) / 0.1), I the mean band; then scaled down where one passes 1."""
    data = np.stack([p - m for p, m in zip(planes, minimum, strict=True)], axis=-1)
    out = np.zeros_like(data)
    for y in range(data.shape[0]):
        for x in range(data.shape[1]):
            intensity = data[y, x].mean()
            if intensity <= 0:
                continue
            f = math.asinh(q * intensity / stretch) * 0.1 / math.asinh(0.1 * q)
            pixel = np.clip(data[y, x] * f / intensity, 0, None)
            out[y, x] = pixel / pixel.max() if pixel.max() > 1 else pixel
    return np.rint(out * 255).astype(int)


def test_per_band_files_read_as_one_cube(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    planes = _planes(rng, (300.0, 200.0, 100.0))
    cube = _cube(tmp_path / "cube.fits", planes, ("g", "r", "z"))
    pattern = _per_band(tmp_path, "obj", [planes[2], planes[0], planes[1]], ("z", "g", "r"))
    bands = read_fits_bands(pattern, MAX_PIXELS)  # found on disk, ordered blue to red
    assert bands.names == ("g", "r", "z")
    np.testing.assert_array_equal(bands.data, read_fits_bands(cube, MAX_PIXELS).data)
    np.testing.assert_array_equal(np.asarray(load_image(pattern)), np.asarray(load_image(cube)))
    before = file_digest(pattern)  # the cache key: every band's content
    (tmp_path / "obj_r.fits").write_bytes((tmp_path / "obj_g.fits").read_bytes())
    assert file_digest(pattern) != before


def test_a_missing_band_file_is_named(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    pattern = _per_band(tmp_path, "obj", _planes(rng, (300.0, 200.0)), ("g", "r"))
    with pytest.raises(ImageError, match=r"obj_\{band\}\.fits: no file obj_z\.fits \(band z\)"):
        decode_fits(pattern, MAX_PIXELS, FitsDecode(bands=("g", "r", "z")))
    with pytest.raises(ImageError, match="no file matches this per-band pattern"):
        load_image(tmp_path / "other_{band}.fits")


def test_a_label_table_names_per_band_files_by_pattern(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    images = tmp_path / "images"
    images.mkdir()
    for stem in ("a", "b", "c"):
        _per_band(images, stem, _planes(rng, (300.0, 200.0, 100.0)), ("g", "r", "z"))
    (images / "c_z.fits").unlink()  # c lacks a band: found, and unreadable when decoded
    (tmp_path / "labels.csv").write_text("id,label\na,x\nb,y\nc,x\nd,y\n")
    data = read_csv_table(tmp_path / "labels.csv", images, pattern="{id}_{band}.fits")
    assert sorted(p.name for p in data.paths) == ["a_{band}.fits", "b_{band}.fits",
                                                 "c_{band}.fits"]
    assert [(i.kind, i.id) for i in data.issues] == [("missing image", "d")]  # no "no row"
    decode = FitsDecode(bands=("g", "r", "z"))
    with pytest.raises(ImageError, match=r"no file c_z\.fits"):
        load_pixels(images / "c_{band}.fits", fits=decode)


def test_every_band_as_a_channel_blue_to_red(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    fluxes = (50.0, 100.0, 150.0, 200.0, 400.0)
    planes = _planes(rng, fluxes)
    path = _cube(tmp_path / "five.fits", planes[::-1], BANDS[::-1])  # stored red to blue
    decode = FitsDecode(channels="all")
    pixels = load_pixels(path, fits=FitsDecode(channels="all", count=5))
    assert pixels.shape == (SIZE, SIZE, 5) and pixels.dtype == np.uint8
    data = [p.astype(np.float32).astype(np.float64) for p in planes]
    minimum, stretch, q = lupton_parameters(data)
    expected = _lupton_by_hand(data, list(minimum), stretch, q)[::-1]  # north up
    assert np.abs(pixels.astype(int) - expected).max() <= 1
    assert pixels[SIZE - 21, 20, 4] > pixels[SIZE - 21, 20, 0]  # y brighter than g
    chosen = load_pixels(path, fits=FitsDecode(channels="all", bands=("z", "g")))
    assert chosen.shape == (SIZE, SIZE, 2)
    with pytest.raises(ImageError, match="5 bands, but the model takes 3"):
        load_pixels(path, fits=FitsDecode(channels="all", count=3))
    assert decode.n_channels == 3 and FitsDecode(bands=BANDS, channels="all").n_channels == 5
    rgb = tmp_path / "photo.png"
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(rgb)
    with pytest.raises(ImageError, match="an RGB image, but the model takes 5 bands"):
        load_pixels(rgb, fits=FitsDecode(channels="all", count=5))


def test_three_bands_by_the_general_formula_are_make_lupton_rgb() -> None:
    rng = np.random.default_rng(4)
    r, g, b = _planes(rng, (320.0, 200.0, 80.0))
    scale = lupton_parameters([r, g, b])
    expected = make_lupton_rgb(r, g, b, minimum=list(scale[0]), stretch=scale[1], Q=scale[2])
    assert np.abs(lupton_bands([r, g, b], scale).astype(int) - expected.astype(int)).max() <= 1


def test_one_data_set_scale_keeps_faint_galaxies_faint(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    paths = []
    for i, flux in enumerate([40.0, 80.0, 160.0, 320.0, 640.0, 1280.0] * 2):
        paths.append(_cube(tmp_path / f"{i}.fits", _planes(rng, (flux, flux, flux)),
                           ("g", "r", "z")))
    broken = _planes(rng, (100.0, 100.0, 100.0))
    for plane in broken:
        plane[0:10] = np.nan
        plane[30, 30] = 1e9  # a saturated star
    paths.append(_cube(tmp_path / "broken.fits", broken, ("g", "r", "z")))
    decode = fit_decode(paths, FitsDecode(), MAX_PIXELS)
    assert decode.scale is not None and 1.0 <= decode.Q <= 30.0
    again = fit_decode(paths[:-1], FitsDecode(), MAX_PIXELS)
    assert decode.scale == pytest.approx(again.scale, rel=0.3)  # one bad frame moves little
    centre = [load_pixels(p, fits=decode)[SIZE - 21, 20].mean() for p in paths[:6]]
    assert all(a < b for a, b in itertools.pairwise(centre) if b < 250)
    assert centre[0] < 0.6 * centre[3]  # 8 times fainter: half as bright, or less ...
    per_image = [load_pixels(p)[SIZE - 21, 20].mean() for p in paths[:6]]
    assert min(per_image) > 200  # ... where each image's own scale makes all bright
    # the sky: one sky sigma near SKY_NOISE_LEVEL of full scale, not black, not grey
    sky = load_pixels(paths[0], fits=decode)[:8, :8].astype(float)
    assert 1.0 < sky.mean() + sky.std() < 40.0


def test_settings_are_checked_and_saved() -> None:
    decode = FitsDecode(bands=("g", "r", "z"), channels="all", stretch="lupton", scale=2.5,
                        Q=6.0)
    assert FitsDecode.from_dict(decode.to_dict()) == decode
    for bad, message in [({"channels": "five"}, "channels='five': use one of rgb, all"),
                         ({"stretch": "log"}, "stretch='log': use one of lupton, percentile"),
                         ({"bands": "g,g"}, "bands=g,g: name each band once")]:
        with pytest.raises(ConfigError, match=message):
            TrainConfig().updated(bad)
    with pytest.raises(ConfigError, match="unknown FITS decoding keys"):
        FitsDecode.from_dict({"colour": 1})
    assert TrainConfig().updated({"bands": "g, r,z"}).bands == ("g", "r", "z")


def test_the_percentile_stretch_stays_an_option(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    path = _cube(tmp_path / "grz.fits", _planes(rng, (40.0, 40.0, 40.0)), ("g", "r", "z"))
    own = load_pixels(path, fits=FitsDecode(stretch="percentile"))
    assert own.shape == (SIZE, SIZE, 3) and own.max() == 255  # each band to its own top
