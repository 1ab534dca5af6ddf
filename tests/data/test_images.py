from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

from skysort.data import images
from skysort.data.images import is_image_file, load_image
from skysort.data.stretch import stretch_asinh
from skysort.errors import ImageError


def _rgb(size: int = 32) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return np.stack([xx * 255 // size, yy * 255 // size, np.full_like(xx, 128)],
                    axis=-1).astype(np.uint8)


@pytest.mark.parametrize("ext", [".jpg", ".png", ".tif", ".bmp", ".webp"])
def test_common_formats_decode_to_rgb(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"img{ext}"
    Image.fromarray(_rgb()).save(path)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (32, 32)
    # Lossless formats round-trip exactly; JPEG/WebP stay close.
    error = np.abs(np.asarray(img, dtype=int) - _rgb().astype(int)).mean()
    assert error < (6 if ext in (".jpg", ".webp") else 1e-9)


def test_grayscale_becomes_three_equal_channels(tmp_path: Path) -> None:
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    rgb = np.asarray(load_image(tmp_path / "g.png"))
    assert rgb.shape == (8, 8, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], gray)


def test_rgba_is_composited_onto_black(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0  # fully transparent pixel
    rgba[1, 1, 3] = 128  # half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    rgb = np.asarray(load_image(tmp_path / "a.png"))
    assert tuple(rgb[0, 0]) == (0, 0, 0)
    assert tuple(rgb[2, 2]) == (200, 0, 0)
    assert abs(int(rgb[1, 1, 0]) - round(200 * 128 / 255)) <= 1


def test_16bit_png_is_scaled_by_its_own_range(tmp_path: Path) -> None:
    # Values 1000..3000: truncating to the low byte would scramble them.
    data = np.linspace(1000, 3000, 64, dtype=np.uint16).reshape(8, 8)
    Image.fromarray(data).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as check:
        assert check.mode.startswith("I")
    rgb = np.asarray(load_image(tmp_path / "deep.png"))[..., 0].astype(float)
    expected = np.rint((data - 1000.0) / 2000.0 * 255)
    np.testing.assert_allclose(rgb, expected, atol=1)
    assert rgb.min() == 0 and rgb.max() == 255


def test_16bit_grey_and_rgb_tiffs_are_scaled_by_their_own_range(tmp_path: Path) -> None:
    import tifffile

    grey = np.linspace(1000, 3000, 64, dtype=np.uint16).reshape(8, 8)
    Image.fromarray(grey).save(tmp_path / "grey.tif")
    rgb = np.zeros((8, 8, 3), dtype=np.uint16)
    rgb[..., 0] = np.linspace(0, 4095, 64).reshape(8, 8)  # 12-bit data in 16-bit samples
    rgb[..., 1] = 2048
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    out = np.asarray(load_image(tmp_path / "grey.tif"))[..., 0].astype(float)
    np.testing.assert_allclose(out, np.rint((grey - 1000.0) / 2000.0 * 255), atol=1)
    out = np.asarray(load_image(tmp_path / "rgb.tif")).astype(float)
    # one range for all three channels, so colours keep their ratios
    np.testing.assert_allclose(out[..., 0], np.rint(rgb[..., 0] / 4095 * 255), atol=1)
    np.testing.assert_allclose(out[..., 1], round(2048 / 4095 * 255), atol=1)
    assert out[..., 2].max() == 0


def test_float_tiff_keeps_the_order_of_its_values(tmp_path: Path) -> None:
    data = np.linspace(-5.0, 7.0, 100, dtype=np.float32).reshape(10, 10)
    Image.fromarray(data, "F").save(tmp_path / "f.tif")
    rgb = np.asarray(load_image(tmp_path / "f.tif"))[..., 0]
    assert rgb.min() == 0 and rgb.max() == 255
    assert (np.diff(rgb.ravel().astype(int)) >= 0).all()  # order preserved


def test_fits_with_nan_and_inf_gets_a_robust_stretch(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(100.0, 5.0, (40, 40))
    data[20, 20] = 1e7  # a hot pixel must not flatten the image
    data[18:23, 18:23] += 400.0  # a source
    data[0, :5] = np.nan
    data[1, 0] = np.inf
    fits.PrimaryHDU(data).writeto(tmp_path / "sky.fits")
    rgb = np.asarray(load_image(tmp_path / "sky.fits"))
    assert rgb.shape == (40, 40, 3)
    flipped = rgb[::-1]  # FITS rows are bottom-up; load_image flips to display order
    assert (flipped[0, :5] == 0).all()  # NaN -> the dark end
    source = flipped[19, 19, 0]
    sky = np.median(flipped[30:, 30:, 0])
    assert source > sky + 100  # the source stands out despite the hot pixel
    assert sky < 40  # the sky level is the black point of the Lupton stretch


def test_fits_gz_and_extension_hdu(tmp_path: Path) -> None:
    data = np.arange(100, dtype=np.float32).reshape(10, 10)
    hdus = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data)])
    raw = tmp_path / "x.fits"
    hdus.writeto(raw)
    (tmp_path / "x.fits.gz").write_bytes(gzip.compress(raw.read_bytes()))
    img = load_image(tmp_path / "x.fits.gz")
    assert img.size == (10, 10)
    assert is_image_file(tmp_path / "x.fits.gz")


def test_stretch_asinh_maps_percentile_interval_to_full_range() -> None:
    data = np.linspace(0, 1000, 10001)
    out = stretch_asinh(data, percentiles=(1, 99))
    assert out[:50].max() == 0 and out[-50:].min() == 255
    assert (np.diff(out.astype(int)) >= 0).all()


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.jpg", b"", "empty file"),
        ("text.png", b"this is not an image\n" * 10, "not an image"),
    ],
)
def test_unreadable_files_raise_image_error(tmp_path: Path, name: str, content: bytes,
                                            reason: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageError, match=reason):
        load_image(path)


def test_truncated_jpeg_raises(tmp_path: Path) -> None:
    Image.fromarray(_rgb(128)).save(tmp_path / "full.jpg", quality=95)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="cannot decode"):
        load_image(tmp_path / "cut.jpg")


def test_too_many_pixels_is_refused_before_decoding(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    Image.fromarray(_rgb(64)).save(tmp_path / "big.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    with pytest.raises(ImageError, match="pixels"):
        load_image(tmp_path / "big.png")


def test_jpeg_draft_mode_decodes_large_files_at_reduced_scale(tmp_path: Path) -> None:
    Image.fromarray(np.tile(_rgb(64), (16, 16, 1))).save(tmp_path / "large.jpg")
    assert load_image(tmp_path / "large.jpg").size == (1024, 1024)
    reduced = load_image(tmp_path / "large.jpg", min_size=256)
    assert reduced.size == (256, 256)


def test_hidden_and_resource_fork_files_are_not_images() -> None:
    assert is_image_file("a/b/galaxy.JPG")
    assert not is_image_file("a/._galaxy.jpg")
    assert not is_image_file(".hidden.png")
    assert not is_image_file("notes.txt")
