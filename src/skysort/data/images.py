"""Decoding survey images of any common format into 8-bit RGB.

One function, :func:`load_image`, turns a file into a ``PIL.Image`` in mode ``RGB``:

* JPEG, PNG, TIFF, BMP, WebP, GIF through Pillow; EXIF orientation is applied.
* Grayscale becomes three equal channels; palette and alpha images are composited onto
  black (the sky).
* 16-bit and floating-point images are scaled by their own range, never truncated to
  8 bits: grey ones through Pillow, RGB(A) ones (which Pillow would cut to their high
  byte, turning 12-bit data nearly black) through tifffile and pypng.
* FITS (``.fits``, ``.fit``, ``.fts``, optionally gzipped) through astropy, in
  :mod:`skysort.data.fits`: the bands of a cube, of one image extension each or of one
  file each (a path with ``{band}`` in its name), ordered blue to red by their header
  names, in one Lupton asinh composite that keeps colours.

:func:`load_pixels` gives the same as a uint8 array, or, for a model that takes every band
of a FITS image (``channels=all``), all its bands.

A file that cannot be read raises :class:`~skysort.errors.ImageError` with the reason, so
callers can skip it, list it in ``bad_files.csv`` and go on.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from skysort.data.fits import BAND_FIELD, FITS_EXTENSIONS, band_files, describe_fits
from skysort.data.fits_decode import FitsDecode, decode_fits
from skysort.errors import ImageError

PIL_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif"})
IMAGE_EXTENSIONS = PIL_EXTENSIONS | FITS_EXTENSIONS

#: Images with more pixels than this are refused (a decompression bomb, or a mosaic that
#: needs tiling before classification). 20k x 20k, a little above Pillow's warning level.
MAX_PIXELS = 400_000_000

def image_suffix(path: str | Path) -> str:
    """The lower-case extension of ``path``, with ``.gz`` kept for FITS (``.fits.gz``)."""
    name = Path(path).name.lower()
    for ext in FITS_EXTENSIONS:
        if name.endswith(ext):
            return ext
    return Path(name).suffix


def is_image_file(path: str | Path) -> bool:
    """True for a visible file with an image extension (``._*`` and dot-files are not)."""
    name = Path(path).name
    return not name.startswith(".") and image_suffix(name) in IMAGE_EXTENSIONS


def load_image(path: str | Path, min_size: int | None = None,
               fits: FitsDecode | None = None) -> Image.Image:
    """Reads one image file as 8-bit RGB.

    Args:
        path: the file (for FITS, also a per-band pattern ``J1234_{band}.fits``).
        min_size: when given, a JPEG much larger than this is decoded at a reduced scale
            (Pillow's draft mode) that keeps both sides at least ``min_size`` pixels.
        fits: how a FITS file becomes pixels (by default a per-image Lupton composite);
            always a colour composite here, whatever its ``channels``.

    Returns:
        A loaded ``PIL.Image`` in mode ``RGB``.

    Raises:
        ImageError: the file is empty, truncated, not an image, or too large to be safe.
    """
    path = Path(path)
    if image_suffix(path) in FITS_EXTENSIONS:
        if fits is not None and fits.channels != "rgb":
            fits = FitsDecode(stretch=fits.stretch)  # the colour composite people see
        return Image.fromarray(_fits_pixels(path, fits))
    return _load_pil(_checked(path), min_size)


def load_pixels(path: str | Path, min_size: int | None = None,
                fits: FitsDecode | None = None) -> np.ndarray:
    """An image file as ``(height, width, channels)`` uint8: RGB as :func:`load_image`
    gives it, or for a FITS file and ``fits.channels == "all"`` every chosen band, blue to
    red (``fits.n_channels`` of them).

    Raises:
        ImageError: as :func:`load_image`; also a file of another format or band count
            than a model with ``channels=all`` takes.
    """
    path = Path(path)
    if image_suffix(path) in FITS_EXTENSIONS:
        return _fits_pixels(path, fits)
    pixels = np.asarray(_load_pil(_checked(path), min_size))
    if fits is not None and fits.n_channels != 3:
        raise ImageError(f"{path}: an RGB image, but the model takes {fits.n_channels} bands "
                         "of a FITS image")
    return pixels


def _fits_pixels(path: Path, fits: FitsDecode | None) -> np.ndarray:
    if BAND_FIELD not in path.name:
        _checked(path)
    return decode_fits(path, MAX_PIXELS, fits)


def _checked(path: Path) -> Path:
    try:
        if path.stat().st_size == 0:
            raise ImageError(f"{path}: empty file (0 bytes)")
    except OSError as exc:
        raise ImageError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
    return path


T = TypeVar("T")


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's content, hex: what every cache of derived data is keyed by
    (never a modification time, which a copy or a restored backup can fake)."""
    path = Path(path)
    if BAND_FIELD in path.name:  # a per-band pattern: the digest of its files, by band
        try:
            files = band_files(path)
        except ImageError as exc:
            raise FileNotFoundError(str(exc)) from None
        parts = [f"{band}:{file_digest(file)}" for band, file in files]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def read_or_reason(read: Callable[[Path], T], path: str | Path) -> tuple[T | None, str]:
    """``(read(path), "")``, or ``(None, why)`` when the file cannot be read.

    The one place where a single bad file becomes a reason instead of an exception, for
    training, embedding, evaluation and prediction alike: an image that cannot be
    decoded, and a file that cannot be opened at all (vanished mid-run, no permission).
    """
    path = Path(path)
    try:
        return read(path), ""
    except ImageError as exc:
        return None, str(exc).removeprefix(f"{path}: ")
    except OSError as exc:
        return None, f"cannot read file ({exc.strerror or exc})"


def image_size(path: str | Path, min_size: int | None = None) -> tuple[int, int]:
    """``(width, height)`` of an image file, without decoding its pixels where the format
    allows (FITS files are read whole); with ``min_size``, the size (before an EXIF turn)
    :func:`load_image` decodes it to with that ``min_size``: a JPEG large enough for a
    reduced scale is smaller. Raises :class:`ImageError` like :func:`load_image`."""
    path = Path(path)
    if image_suffix(path) in FITS_EXTENSIONS:
        return load_image(path).size
    try:
        with Image.open(path) as img:
            if min_size and img.format == "JPEG" and not _deep_colour(img):
                img.draft("RGB", (min_size, min_size))
            return img.size
    except UnidentifiedImageError as exc:
        raise ImageError(f"{path}: not an image Pillow can identify") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"{path}: cannot decode image ({exc})") from exc


#: Bits per sample of Pillow's modes (what a file holds before skysort scales it to 8).
_MODE_BITS = {"1": 1, "I;16": 16, "I;16B": 16, "I;16L": 16, "I": 32, "F": 32}


def describe_image(path: str | Path) -> dict[str, object]:
    """What a file holds, read from its header without decoding its pixels: ``format``
    (``JPEG``, ``PNG``, ``FITS``, ...), ``mode`` (Pillow's, or ``BITPIX=-32`` for FITS),
    ``bits`` per sample, ``width`` and ``height``. Raises :class:`ImageError` like
    :func:`load_image`."""
    path = Path(path)
    if image_suffix(path) in FITS_EXTENSIONS:
        return describe_fits(path)
    try:
        with Image.open(path) as img:
            bits = _MODE_BITS.get(img.mode, 8)
            if _deep_colour(img):
                bits = 16
            return {"format": img.format or "unknown", "mode": img.mode, "bits": bits,
                    "width": img.size[0], "height": img.size[1]}
    except UnidentifiedImageError as exc:
        raise ImageError(f"{path}: not an image Pillow can identify") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"{path}: cannot decode image ({exc})") from exc


def _load_pil(path: Path, min_size: int | None) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > MAX_PIXELS:
                    raise ImageError(
                        f"{path}: {width}x{height} pixels is more than the {MAX_PIXELS:,} "
                        "that skysort reads safely; cut the image into tiles first"
                    )
                if _deep_colour(img):
                    return _load_deep(path, img.format)
                if min_size and img.format == "JPEG":
                    img.draft("RGB", (min_size, min_size))
                img.load()
                return to_rgb(ImageOps.exif_transpose(img))
    except ImageError:
        raise
    except UnidentifiedImageError as exc:
        if image_suffix(path) in (".tif", ".tiff"):  # float RGB and other TIFFs Pillow lacks
            return _load_deep(path, "TIFF")
        raise ImageError(f"{path}: not an image Pillow can identify") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{path}: too many pixels to decode safely ({exc})") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"{path}: cannot decode image ({exc})") from exc


def _deep_colour(img: Image.Image) -> bool:
    """Whether ``img`` holds colour samples of more than 8 bits, which Pillow would cut to
    8 (its RGB modes are 8-bit): a 16-bit RGB(A) TIFF or PNG."""
    if img.format == "TIFF":
        bits = getattr(img, "tag_v2", {}).get(258, (8,))
        bits = bits if isinstance(bits, tuple) else (bits,)
        return len(bits) >= 2 and max(bits) > 8
    if img.format == "PNG":
        return any(";16" in str(tile.args[0] if isinstance(tile.args, tuple) else tile.args)
                   for tile in getattr(img, "tile", []))
    return False


def _load_deep(path: Path, fmt: str | None) -> Image.Image:
    """A high-bit-depth colour image, scaled by its own range (all channels alike, so
    colours keep their ratios); an alpha channel is composited onto black."""
    try:
        if fmt == "PNG":
            import png

            width, height, rows, info = png.Reader(filename=str(path)).asDirect()
            planes = int(info["planes"])
            data = np.vstack([np.asarray(row, dtype=np.float64) for row in rows])
            data = data.reshape(height, width, planes)
            alpha_max = float(2 ** int(info["bitdepth"]) - 1)
        else:
            import tifffile

            data = np.asarray(tifffile.imread(path), dtype=np.float64)
            alpha_max = float(np.nanmax(data[..., -1])) if data.ndim == 3 else 1.0
    except Exception as exc:  # the codecs raise many types for a damaged file
        raise ImageError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from exc
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3 or data.shape[-1] not in (1, 2, 3, 4):
        raise ImageError(f"{path}: image data of shape {data.shape} is not grey, RGB or RGBA")
    if data.shape[-1] in (2, 4):  # grey or colour with alpha: composite onto black
        data = data[..., :-1] * (data[..., -1:] / max(alpha_max, 1e-12))
    rgb = stretch_linear(data)
    return Image.fromarray(np.repeat(rgb, 3, axis=-1) if rgb.shape[-1] == 1 else rgb)


def to_rgb(img: Image.Image) -> Image.Image:
    """Converts a decoded Pillow image of any mode to 8-bit RGB.

    High-bit-depth modes (``I;16``, ``I``, ``F``) are scaled by their own range; alpha and
    palette transparency are composited onto black.
    """
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        gray = stretch_linear(np.asarray(img, dtype=np.float64))
        return Image.fromarray(gray).convert("RGB")
    if img.mode == "P":  # palette PNGs and GIFs (the first frame of an animation)
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        if img.mode == "RGB":
            return img
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode in ("RGBX", "CMYK", "YCbCr", "LAB", "HSV", "L", "1"):
        return img.convert("RGB")
    if img.mode.startswith("I;16") or img.mode.startswith("BGR"):
        return img.convert("RGB")
    raise ImageError(f"unsupported image mode {img.mode!r}")


def stretch_linear(data: np.ndarray) -> np.ndarray:
    """Maps an array linearly from its own finite min..max range to uint8."""
    data = np.asarray(data, dtype=np.float64)
    finite = np.isfinite(data)
    if not finite.any():
        return np.zeros(data.shape, dtype=np.uint8)
    lo, hi = float(data[finite].min()), float(data[finite].max())
    scaled = (data - lo) / (hi - lo) if hi > lo else np.zeros_like(data)
    scaled = np.where(finite, scaled, 0.0)
    return np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)
