"""FITS images: bands read by name, ordered blue to red, and how they become pixels.

A FITS image holds its bands as a cube (one HDU of ``n`` planes), one band per image
extension (every 2-D image HDU of the first one's shape; weight, mask and error extensions
are skipped), or one file per band: a path with ``{band}`` in it (``J1234_{band}.fits``)
stands for the files of every band, found on disk or named by ``bands=``.
:func:`read_fits_bands` reads them with their names, from the header: ``FILTER``/``BAND`` of
each extension, or for a cube per-plane keywords (``BAND0..``, ``BAND1..``, ``FILTER1..``,
or ``BANDS = 'grz'`` as Legacy Survey cutouts write). Named bands are ordered by wavelength
(:func:`band_wavelength` knows the usual optical and near-infrared ones); unnamed or
unknown bands keep the file's order, which for a survey cube (Legacy Survey g, r, z)
already runs blue to red.

:func:`rgb_planes` chooses three bands for the composite (the bluest goes to blue): one
band is grey; two are blue = bluest, red = reddest, green = their mean; three are all;
four and more are the bluest, the reddest and the one nearest in log wavelength to their
geometric mean (g, r, z of g, r, i, z; the middle one in file order when unnamed).

How a model turns these bands into pixels is :mod:`skysort.data.fits_decode`.
"""

from __future__ import annotations

import glob
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from skysort.errors import ImageError

#: The placeholder of a per-band file pattern.
BAND_FIELD = "{band}"

#: Effective wavelengths (nm) of the usual bands, as named in headers. Exact (case-sensitive)
#: names first: ``y`` is Pan-STARRS/HSC/LSST, ``Y`` Euclid/VISTA; ``I``/``R``/``U`` Johnson.
_WAVELENGTH_NM = {
    "FUV": 153.0, "NUV": 231.0,
    "u": 356.0, "U": 365.0, "B": 445.0, "g": 477.0, "V": 551.0, "r": 623.0, "R": 658.0,
    "VIS": 715.0, "i": 763.0, "I": 806.0, "z": 905.0, "y": 990.0, "Y": 1080.0,
    "J": 1250.0, "H": 1650.0, "Ks": 2150.0, "K": 2200.0, "Halpha": 656.0, "OIII": 501.0,
}
#: The same, case-insensitively (the lower-case survey names win: ``y``, ``i``, ``r``, ``u``).
_WAVELENGTH_LOWER = {name.lower(): nm for name, nm in
                     sorted(_WAVELENGTH_NM.items(), key=lambda item: item[0].islower())}

#: Extensions that hold something other than a band's pixels (by ``EXTNAME``).
_NOT_A_BAND = frozenset({"WHT", "WEIGHT", "WEIGHTS", "IVAR", "INVVAR", "VAR", "VARIANCE",
                         "ERR", "ERROR", "SIGMA", "RMS", "NOISE", "MASK", "DQ", "FLAGS",
                         "BPM", "BADPIX", "CTX", "CON", "EXP", "EXPTIME", "EXPMAP", "PSF",
                         "MODEL", "RESIDUAL", "BKG", "BACKGROUND"})


#: File name endings read as FITS (lower case; ``.gz``: gzip-compressed).
FITS_EXTENSIONS = frozenset({".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz"})


def is_fits_name(name: str) -> bool:
    """Whether a file name ends as a FITS file does (any case)."""
    return name.lower().endswith(tuple(FITS_EXTENSIONS))

@dataclass(frozen=True)
class Bands:
    """The bands of one FITS image, blue to red.

    Attributes:
        names: each band's name from the header, ``""`` where it has none.
        data: ``(n, height, width)`` float64 pixels in FITS row order (bottom row first).
    """

    names: tuple[str, ...]
    data: np.ndarray


def band_wavelength(name: str) -> float | None:
    """Effective wavelength (nm) of a band named as headers name it (``g``, ``DECam r``,
    ``HSC-I``, ``Ks``, ``NUV``, ``VIS``); None for a name it does not know."""
    tokens = [t for t in re.split(r"[\s_\-./:,;()]+", name) if t]
    for token in ["".join(tokens), *tokens]:  # "H-alpha" is Halpha before it is H
        if token in _WAVELENGTH_NM:
            return _WAVELENGTH_NM[token]
        if token.lower() in _WAVELENGTH_LOWER:
            return _WAVELENGTH_LOWER[token.lower()]
    return None


def blue_to_red(names: Sequence[str]) -> list[int]:
    """Indices of ``names`` ordered by wavelength when every name is known, else the
    file's order (a survey cube's planes already run blue to red)."""
    waves = [w for name in names if (w := band_wavelength(name)) is not None]
    if len(waves) < len(names):
        return list(range(len(names)))
    return sorted(range(len(names)), key=lambda i: (waves[i], i))


def read_fits_bands(path: str | Path, max_pixels: int, bands: Sequence[str] = ()) -> Bands:
    """Reads a FITS image's bands with their names, ordered blue to red.

    Args:
        path: a FITS file, or a per-band pattern with ``{band}`` in its name.
        max_pixels: the most pixels a band may have.
        bands: for a pattern, the bands whose files must all be there (by default every
            file the pattern matches); ignored for a single file.

    Raises:
        ImageError: no 2-D image data, more than ``max_pixels`` pixels a band, data that
            is not a stack of 2-D planes, no finite value at all, a band file missing or of
            another shape, or a damaged file.
    """
    path = Path(path)
    if BAND_FIELD in path.name:
        names: list[str] = []
        planes: list[np.ndarray] = []
        for band, file in band_files(path, bands):
            one = _read_hdus(file, max_pixels)
            if one.data.shape[0] != 1:
                raise ImageError(f"{file}: a per-band file holds {one.data.shape[0]} bands, "
                                 "not one")
            if planes and one.data.shape[1:] != planes[0].shape:
                raise ImageError(f"{file}: {one.data.shape[2]}x{one.data.shape[1]} pixels, "
                                 f"but band {names[0]!r} has {planes[0].shape[1]}x"
                                 f"{planes[0].shape[0]}")
            names.append(band)
            planes.append(one.data[0])
        data = np.stack(planes)
    else:
        read = _read_hdus(path, max_pixels)
        names, data = list(read.names), read.data
    if not np.isfinite(data).any():
        raise ImageError(f"{path}: FITS data has no finite pixel values (all NaN or inf)")
    order = blue_to_red(names)
    return Bands(names=tuple(names[i] for i in order), data=data[order])


def band_files(pattern: Path, bands: Sequence[str] = ()) -> list[tuple[str, Path]]:
    """``(band, file)`` of a per-band pattern (``J1234_{band}.fits``): the ``bands`` named,
    each of which must exist, or every file that matches (band names from the file names).

    Raises:
        ImageError: a named band's file is missing, or no file matches.
    """
    head, _, tail = pattern.name.partition(BAND_FIELD)
    if bands:
        found = [(band, pattern.with_name(f"{head}{band}{tail}")) for band in bands]
        missing = [f"{file.name} (band {band})" for band, file in found if not file.is_file()]
        if missing:
            raise ImageError(f"{pattern}: no file {', '.join(missing)}")
        return found
    found = [(file.name[len(head):len(file.name) - len(tail)], file)
             for file in sorted(pattern.parent.glob(f"{glob.escape(head)}*{glob.escape(tail)}"))
             if len(file.name) > len(head) + len(tail)]
    if not found:
        raise ImageError(f"{pattern}: no file matches this per-band pattern")
    return found


def _read_hdus(path: Path, max_pixels: int) -> Bands:
    """The bands of one file, in the file's order (see :func:`read_fits_bands`)."""
    from astropy.io import fits

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "may have been truncated": raised below
            with fits.open(path, memmap=False) as hdus:
                images = [h for h in hdus if h.is_image and len(h.shape) >= 2]
                if not images:
                    raise ImageError(f"{path}: FITS file has no HDU with 2-D image data")
                first = images[0]
                shape = tuple(int(n) for n in first.shape)
                _check_shape(path, shape, max_pixels)
                if math.prod(shape[:-2]) > 1:  # a cube: its planes are the bands
                    data = np.asarray(first.data, dtype=np.float64).reshape(-1, *shape[-2:])
                    names = _cube_band_names(first.header, data.shape[0])
                else:  # one band per image extension
                    hdus_used = [h for h in images if tuple(h.shape) == first.shape
                                 and str(h.header.get("EXTNAME", "")).upper() not in _NOT_A_BAND]
                    hdus_used = hdus_used or [first]
                    data = np.stack([np.asarray(h.data, dtype=np.float64).reshape(shape[-2:])
                                     for h in hdus_used])
                    names = [_header_band(h.header) for h in hdus_used]
    except ImageError:
        raise
    except FileNotFoundError as exc:
        raise ImageError(f"{path}: no such file") from exc
    except Exception as exc:  # astropy raises many types for a damaged file
        raise ImageError(f"{path}: cannot read FITS ({type(exc).__name__}: {exc})") from exc
    return Bands(names=tuple(names), data=data)


def describe_fits(path: str | Path) -> dict[str, object]:
    """``format``, ``mode`` (``BITPIX=-32``), ``bits``, ``width`` and ``height`` of a FITS
    file's first image HDU, from its header; raises :class:`ImageError` like the loader."""
    from astropy.io import fits

    path = Path(path)
    if BAND_FIELD in path.name:  # a per-band pattern: its first band's file
        path = band_files(path)[0][1]
    try:
        with fits.open(path, memmap=False) as hdus:
            hdu = next((h for h in hdus if h.is_image and len(h.shape) >= 2), None)
            if hdu is None:
                raise ImageError(f"{path}: FITS file has no HDU with 2-D image data")
            bitpix = int(hdu.header.get("BITPIX", 0))
            height, width = hdu.shape[-2:]
    except ImageError:
        raise
    except Exception as exc:  # astropy raises many types for a damaged file
        raise ImageError(f"{path}: cannot read FITS ({type(exc).__name__}: {exc})") from exc
    return {"format": "FITS", "mode": f"BITPIX={bitpix}", "bits": abs(bitpix),
            "width": int(width), "height": int(height)}


def rgb_planes(bands: Bands, wanted: Sequence[str] | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(red, green, blue)`` planes for a composite of ``bands`` (see the module's notes).

    Args:
        bands: as :func:`read_fits_bands` returns them, blue to red.
        wanted: names of the bands to use instead of all (matched case-insensitively if
            not exactly); more than three are reduced to three as above.

    Raises:
        ImageError: a wanted band that the file does not have.
    """
    index = list(range(len(bands.names)))
    if wanted:
        index = sorted(find_band(bands.names, name) for name in wanted)
    if len(index) > 3:
        waves = [w for i in index if (w := band_wavelength(bands.names[i])) is not None]
        if len(waves) == len(index):
            mid_nm = math.sqrt(waves[0] * waves[-1])
            middle = min(range(1, len(index) - 1),
                         key=lambda k: abs(math.log(waves[k] / mid_nm)))
        else:
            middle = (len(index) - 1) // 2
        index = [index[0], index[middle], index[-1]]
    planes = [bands.data[i] for i in index]
    if len(planes) == 1:
        return planes[0], planes[0], planes[0]
    if len(planes) == 2:
        return planes[1], (planes[0] + planes[1]) / 2.0, planes[0]
    return planes[2], planes[1], planes[0]


def _check_shape(path: Path, shape: tuple[int, ...], max_pixels: int) -> None:
    height, width = shape[-2:]  # from the header, before reading any data
    if sum(n > 1 for n in shape[:-2]) > 1:
        raise ImageError(f"{path}: FITS data of shape {shape} is not an image "
                         "(expected 2-D bands, one per HDU or the planes of one cube)")
    if width * height > max_pixels:
        raise ImageError(f"{path}: {width}x{height} pixels is more than the {max_pixels:,} "
                         "that skysort reads safely; cut the image into tiles first")


def _header_band(header: Any) -> str:
    for key in ("FILTER", "BAND"):
        if str(header.get(key, "")).strip():
            return str(header[key]).strip()
    return ""


def _cube_band_names(header: Any, n: int) -> list[str]:
    """Per-plane names of a cube: ``BAND0..``/``BAND1..``/``FILTER0..``/``FILTER1..``, or
    ``BANDS`` (``'grz'`` or ``'g,r,z'``); ``""`` each when the header has none."""
    for key in ("BAND", "FILTER"):
        for start in (0, 1):
            names = [str(header.get(f"{key}{start + i}", "")).strip() for i in range(n)]
            if all(names):
                return names
    bands = str(header.get("BANDS", "")).strip()
    parts = [p for p in re.split(r"[\s,;]+", bands) if p]
    if len(parts) == n:
        return parts
    if len(bands) == n:
        return list(bands)
    return [""] * n


def find_band(names: Sequence[str], wanted: str) -> int:
    for match in (lambda n: n == wanted, lambda n: n.lower() == wanted.lower()):
        found = [i for i, name in enumerate(names) if match(name)]
        if found:
            return found[0]
    have = ", ".join(repr(n) for n in names if n) or "no named bands"
    raise ImageError(f"band {wanted!r} is not in this FITS file (it has {have})")
