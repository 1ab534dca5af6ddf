"""A corpus of unusual inputs, built by the tests themselves (tiny files, no network), each
with the outcome skysort must give it. Used by ``test_bad_input.py``."""

from __future__ import annotations

import gzip
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import png
import tifffile
from astropy.io import fits
from PIL import Image

#: The reason an unreadable file must be listed with, as a regular expression.
EMPTY = r"empty file \(0 bytes\)"
UNDECODABLE = r"cannot decode image"
NOT_AN_IMAGE = r"not an image Pillow can identify"
BAD_FITS = r"cannot read FITS"
TOO_BIG = r"pixels"
UNREADABLE = r"cannot read file"


def _jpeg(pixels: np.ndarray, **kwargs: object) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", **kwargs)
    return out.getvalue()


def _png(img: Image.Image, **kwargs: object) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG", **kwargs)
    return out.getvalue()


def _fits(*hdus: fits.hdu.base.ExtensionHDU) -> bytes:
    out = io.BytesIO()
    fits.HDUList(list(hdus)).writeto(out)
    return out.getvalue()


def _bomb_png() -> bytes:
    """A valid PNG header that claims 30000 x 30000 pixels (900 million)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def image_corpus(root: Path) -> dict[str, str | None]:
    """Writes one file per kind into ``root``; returns name -> None (must decode to an
    RGB image) or the reason (regex) it must be listed with."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    sky = rng.normal(100.0, 5.0, (24, 24)).astype(np.float32)
    jpeg, png_bytes = _jpeg(rgb), _png(Image.fromarray(rgb))
    tif = io.BytesIO()
    Image.fromarray(rgb).save(tif, format="TIFF")
    files: dict[str, tuple[bytes, str | None]] = {
        "zero.jpg": (b"", EMPTY),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], UNDECODABLE),
        "truncated.png": (png_bytes[: len(png_bytes) // 2], UNDECODABLE),
        "truncated.tif": (tif.getvalue()[: len(tif.getvalue()) // 3], UNDECODABLE),
        "truncated.fits": (_fits(fits.PrimaryHDU(sky))[:3000], BAD_FITS),
        "page.jpg": (b"<!DOCTYPE html><html><body>404 Not Found</body></html>", NOT_AN_IMAGE),
        "notes.png": (b"observing notes, not an image\n", NOT_AN_IMAGE),
        "bomb.png": (_bomb_png(), TOO_BIG),
        "cmyk.jpg": (b"", None),  # each b"" entry is written below
        "nan_inf.fits": (b"", None),
        "empty_primary.fits": (_fits(fits.PrimaryHDU(), fits.ImageHDU(sky)), None),
        "cube3.fits": (_fits(fits.PrimaryHDU(np.stack([sky, sky * 2, sky * 3]))), None),
        "cube5.fits": (_fits(fits.PrimaryHDU(np.stack([sky] * 5))), None),
        "cube4d.fits": (_fits(fits.PrimaryHDU(np.stack([[sky] * 3] * 2))), r"is not an image"),
        "table_only.fits": (_fits(fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
            [fits.Column(name="x", format="E", array=np.arange(3.0))])),
            r"no HDU with 2-D image data"),
        "constant.fits": (_fits(fits.PrimaryHDU(np.full((20, 20), 7.0))), None),
        "all_nan.fits": (_fits(fits.PrimaryHDU(np.full((20, 20), np.nan))),
                         r"no finite pixel values"),
        "compressed.fits.gz": (gzip.compress(_fits(fits.PrimaryHDU(sky))), None),
        "constant.png": (_png(Image.new("RGB", (16, 16), (9, 9, 9))), None),
        "one_pixel.png": (_png(Image.new("RGB", (1, 1), (200, 10, 10))), None),
        "bilevel.png": (_png(Image.fromarray(rgb[..., 0] > 128)), None),
        "palette.png": (_png(Image.fromarray(rgb).convert("P")), None),
        "palette_alpha.png": (_png(Image.fromarray(rgb).convert("P"), transparency=0), None),
        "grey_alpha.png": (_png(Image.fromarray(rgb[..., :2].copy(), "LA")), None),
        "rgba.png": (_png(Image.fromarray(np.dstack([rgb, rgb[..., :1]]), "RGBA")), None),
        "grey16.png": (_png(Image.fromarray((rng.random((20, 20)) * 4095).astype(np.uint16))),
                       None),
        "float.tif": (b"", None),
        "rgb12bit.tif": (b"", None),
        "rgb16.png": (b"", None),
        "still.gif": (b"", None),
        "animated.gif": (b"", None),
        "rotated.jpg": (b"", None),
        "picture.bmp": (b"", None),
        "picture.webp": (b"", None),
    }
    for name, (data, _) in files.items():
        (root / name).write_bytes(data)
    cmyk = Image.fromarray(rgb).convert("CMYK")
    cmyk.save(root / "cmyk.jpg", format="JPEG")
    hot = sky.copy()
    hot[0, :3] = np.nan
    hot[1, :3] = np.inf
    hot[2, :3] = -np.inf
    fits.PrimaryHDU(hot).writeto(root / "nan_inf.fits", overwrite=True)
    Image.fromarray(np.linspace(-3, 9, 400, dtype=np.float32).reshape(20, 20), "F").save(
        root / "float.tif")
    tifffile.imwrite(root / "rgb12bit.tif", (rng.random((20, 20, 3)) * 4095).astype(np.uint16),
                     photometric="rgb")
    deep = (rng.random((20, 20, 3)) * 4095).astype(np.uint16)
    png.from_array(deep.reshape(20, 60), "RGB;16").save(str(root / "rgb16.png"))
    Image.fromarray(rgb).convert("P").save(root / "still.gif")
    frames = [Image.fromarray(np.roll(rgb, i, axis=1)).convert("P") for i in range(3)]
    frames[0].save(root / "animated.gif", save_all=True, append_images=frames[1:])
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    Image.fromarray(rgb).save(root / "rotated.jpg", exif=exif)
    Image.fromarray(rgb).save(root / "picture.bmp")
    Image.fromarray(rgb).save(root / "picture.webp")
    return {name: why for name, (_, why) in files.items()}


def path_corpus(root: Path, outside: Path) -> dict[str, str | None]:
    """Odd names and links inside ``root`` (a folder of images of its own); returns the
    relative path of every file skysort must list -> None or the reason. Hidden files,
    ``._*`` resource forks and ``__MACOSX`` are not listed at all."""
    root.mkdir(parents=True, exist_ok=True)
    outside.mkdir(parents=True, exist_ok=True)
    good = _png(Image.new("RGB", (12, 12), (30, 160, 30)))
    expected: dict[str, str | None] = {}
    for name in ("with space.png", "ünïcödé ✓.png", "new\nline.png"):
        (root / name).write_bytes(good)
        expected[name] = None
    bad_bytes = os.fsdecode(b"latin1-\xe9t\xe9.png")  # not UTF-8: bytes from another system
    (root / bad_bytes).write_bytes(good)
    expected[bad_bytes] = None
    (outside / "elsewhere.png").write_bytes(good)
    (root / "linked.png").symlink_to(outside / "elsewhere.png")
    expected["linked.png"] = None
    (root / "dangling.png").symlink_to(root / "no-such-file.png")
    expected["dangling.png"] = UNREADABLE
    (root / "sub").mkdir()
    (root / "sub" / "inner.png").write_bytes(good)
    expected["sub/inner.png"] = None
    (root / "sub" / "loop").symlink_to("..")  # a link back up the tree
    (root / "folder.jpg").mkdir()  # a folder with an image's name
    (root / "folder.jpg" / "real.png").write_bytes(good)
    expected["folder.jpg/real.png"] = None
    (root / "._with space.png").write_bytes(b"\x00\x05\x16\x07 resource fork")
    (root / "__MACOSX").mkdir()
    (root / "__MACOSX" / "ghost.png").write_bytes(b"\x00\x05\x16\x07")
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / ".hidden.png").write_bytes(good)
    return expected
