"""Simulated multi-band survey cutouts as float32 FITS, with labels.

:func:`render_bands` draws the galaxies of :mod:`skysort.synth.galaxies` (the same GalSim
profile builders, PSFs and S/N definition) in any of the bands u, g, r, i, z, y and returns
sky-subtracted, calibrated-like fluxes (nanomaggy-like units: the r-band sky noise is about
0.01 per pixel) with Poisson and read noise, instead of an 8-bit composite. Each component
of a galaxy has its own spectral energy distribution: old stars (bulges, ellipticals,
lenticular disks) rise to the red, smooth disks are flat, arms, knots and tidal tails fall
to the red; galaxies.py's g, r, i colours (with their jitter) are kept exactly and
extended to u, z and y from the component's base SED. The PSF widens to the blue, and the
sky brightens and the throughput drops to the red, so z and y are the noisiest bands.

Bands are rendered independently of one another: the galaxy, its PSF, its neighbour and
each band's noise depend only on the random generator and the band's name, not on which
other bands are asked for, so the g, r, z planes of a 5-band cube are exactly the 3-band
cube of the same seed.

``colour_shift=("y", "z", 1.4)`` gives every component of the galaxy a y-band flux of 1.4
times its z-band flux: the colour-only classes of :func:`write_fits_set` (``colour_only``)
differ in nothing else. Beware that a 3-band composite of five bands sees y (see
:func:`skysort.data.fits.rgb_planes`: g, r and y of g, r, i, z, y); only an explicit choice
of bands without y (g, r, i or g, r, z) is blind to those classes.

:func:`write_fits_set` writes labelled class folders of such cutouts as cubes, one
extension per band, or one file per band, and optionally the Lupton JPEG copies an
astronomer would look at.

Everything is deterministic given the seed (or the :class:`numpy.random.Generator`).
"""

from __future__ import annotations

import csv
import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path

import galsim
import numpy as np
from PIL import Image

from skysort.data.fits import Bands, rgb_planes
from skysort.data.stretch import lupton_rgb
from skysort.errors import DataError
from skysort.synth.galaxies import (
    _BUILDERS,
    _DISK,
    _DUST,
    _OLD,
    _S0_DISK,
    _TAIL,
    _YOUNG,
    MORPHOLOGIES,
    PIXEL_SCALE,
    READ_NOISE,
    _angle,
    _gsparams,
    _neighbour,
    _Part,
    _psf,
    check_render,
    draw_snr,
)
from skysort.synth.sets import class_plan

#: The bands :func:`render_bands` knows, blue to red.
ALL_BANDS: tuple[str, ...] = ("u", "g", "r", "i", "z", "y")
#: The default bands: a Pan-STARRS / HSC / LSST-like g, r, i, z, y.
BANDS: tuple[str, ...] = ("g", "r", "i", "z", "y")
#: The bands of the JPEG copies (a Legacy Survey-like g, r, z composite).
JPEG_BANDS: tuple[str, ...] = ("g", "r", "z")
#: The colour-only classes: name -> y/z flux ratio of the whole galaxy.
COLOUR_CLASSES: dict[str, float] = {"zbright": 0.7, "ybright": 1.4}
LAYOUTS = ("cube", "extensions", "per-band")

_SKY = {"u": 150.0, "g": 350.0, "r": 500.0, "i": 700.0, "z": 900.0, "y": 1100.0}  # counts
_THROUGHPUT = {"u": 0.4, "g": 0.9, "r": 1.0, "i": 0.9, "z": 0.7, "y": 0.5}  # counts per flux
_PSF_SCALE = {"u": 1.12, "g": 1.08, "r": 1.0, "i": 0.95, "z": 0.92, "y": 0.9}  # FWHM vs r
_NOISE_R = 0.01  # r-band sky noise per pixel in output flux units (nanomaggy-like)

# Base SEDs (flux relative to r) in u, g, r, i, z, y; the g, r, i entries are galaxies.py's.
_SEDS: tuple[tuple[tuple[float, float, float], tuple[float, ...]], ...] = (
    (_OLD, (0.22, 0.62, 1.0, 1.25, 1.42, 1.50)),  # old stars: 4000 A break, red
    (_DISK, (0.60, 0.85, 1.0, 1.05, 1.08, 1.10)),  # smooth disks: mixed ages, flat
    (_S0_DISK, (0.35, 0.70, 1.0, 1.18, 1.30, 1.36)),  # lenticular disks: old, no SF
    (_YOUNG, (2.00, 1.50, 1.0, 0.75, 0.62, 0.56)),  # arms, knots: young, blue
    (_TAIL, (1.25, 1.15, 1.0, 0.90, 0.84, 0.80)),  # tidal tails: some star formation
    (_DUST, (1.90, 1.40, 1.0, 0.70, 0.55, 0.48)),  # absorption, stronger in the blue
    ((0.8, 1.0, 1.1), (0.50, 0.80, 1.0, 1.10, 1.15, 1.18)),  # neighbouring stars
)


def extend_colour(colour: Sequence[float]) -> dict[str, float]:
    """A component's g, r, i colour (as galaxies.py draws it) extended to u, z and y.

    The nearest base SED (in log g/r and i/r) gives u/g, z/i and y/i; the colour's own
    red-blue tilt against that base carries on into u, z and y, so a redder-than-usual
    bulge stays redder in z and y too.
    """
    g, r, i = (float(c) for c in colour)
    log = np.log(np.abs([g / r, i / r]) + 1e-12)
    base3, base = min(_SEDS, key=lambda s: float(np.sum(
        (log - np.log([s[0][0] / s[0][1], s[0][2] / s[0][1]])) ** 2)))
    tilt = (math.log(abs(i / r) / base3[2]) - math.log(abs(g / r) / base3[0])) / 2
    return {"u": g * base[0] / base[1] * math.exp(-0.6 * tilt), "g": g, "r": r, "i": i,
            "z": i * base[4] / base[3] * math.exp(0.4 * tilt),
            "y": i * base[5] / base[3] * math.exp(0.7 * tilt)}


def _draw(parts: list[tuple[galsim.GSObject, dict[str, float]]], band: str,
          psf: galsim.GSObject, size: int) -> np.ndarray:
    scene = galsim.Add([profile * sed[band] for profile, sed in parts])
    image = galsim.Convolve(scene, psf).drawImage(nx=size, ny=size, scale=PIXEL_SCALE,
                                                  method="auto")
    return image.array.astype(np.float64)


def _check_bands(bands: Sequence[str]) -> tuple[str, ...]:
    if isinstance(bands, str) or not bands:
        raise DataError(f"bands must be a sequence of band names, got {bands!r}")
    bands = tuple(bands)
    unknown = [b for b in bands if b not in ALL_BANDS]
    if unknown or len(set(bands)) < len(bands):
        raise DataError(f"bands must be distinct names from {', '.join(ALL_BANDS)}, "
                        f"got {bands!r}")
    return bands


def render_bands(kind: str, rng: np.random.Generator, size: int = 64,
                 bands: Sequence[str] = BANDS, snr: float | None = None,
                 colour_shift: tuple[str, str, float] | None = None) -> np.ndarray:
    """Renders one simulated multi-band survey cutout of a galaxy of the given morphology.

    Args:
        kind: One of :data:`~skysort.synth.galaxies.MORPHOLOGIES`.
        rng: Source of all randomness (shape, size, orientation, PSF, neighbour, noise).
        size: Side of the square cutout in pixels (at least 16).
        bands: Band names from :data:`ALL_BANDS`, in the order of the output planes.
        snr: Peak signal-to-noise ratio in the r band, as in
            :func:`~skysort.synth.galaxies.render_galaxy`; drawn log-uniformly from 5-200
            if None.
        colour_shift: ``(band, reference, ratio)``: every component of the galaxy (not its
            neighbour) gets ``ratio`` times its ``reference``-band flux in ``band``, e.g.
            ``("y", "z", 1.4)``; nothing else changes.

    Returns:
        float32 ``(len(bands), size, size)`` sky-subtracted fluxes in FITS row order
        (bottom row first), as they would be written to a FITS file.

    Raises:
        DataError: If an argument is not valid.
    """
    size, snr = check_render(kind, rng, size, snr)
    bands = _check_bands(bands)
    if colour_shift is not None:
        band, reference, ratio = colour_shift
        if band not in ALL_BANDS or reference not in ALL_BANDS or not (
                isinstance(ratio, numbers.Real) and math.isfinite(ratio) and ratio >= 0):
            raise DataError(f"colour_shift must be (band, reference band, ratio >= 0), "
                            f"got {colour_shift!r}")
    gsp = _gsparams(size)
    # The scene, drawn in the same order as render_galaxy, whatever the bands.
    extent = rng.uniform(0.15, 0.6) * size * PIXEL_SCALE
    built = _BUILDERS[kind](rng, extent / 4.5, gsp)
    turn, offset = _angle(rng) * 2, rng.uniform(-0.05, 0.05, 2) * size * PIXEL_SCALE
    parts = []
    for part in built:
        sed = extend_colour(part.colour)
        if colour_shift is not None:
            sed[colour_shift[0]] = float(colour_shift[2]) * sed[colour_shift[1]]
        parts.append((part.profile.rotate(turn).shift(*offset), sed))
    fwhm = rng.uniform(2.0, 4.0) * PIXEL_SCALE
    psf_shape = galsim.Shear(e=rng.uniform(0.0, 0.06), beta=_angle(rng))
    family = int(rng.integers(0, 4))
    neighbour: tuple[_Part, float] | None = None
    if rng.random() < 0.3:
        neighbour = _neighbour(rng, size, gsp)
    noise_seed = int(rng.integers(0, 2**63 - 1))

    def psf(band: str) -> galsim.GSObject:
        return _psf(family, fwhm * _PSF_SCALE[band], gsp).shear(psf_shape)

    # S/N is defined in r, as in render_galaxy, whether or not r is rendered.
    r_peak = max(float(np.clip(_draw(parts, "r", psf("r"), size), 0.0, None).max()), 1e-30)
    var0 = _SKY["r"] + READ_NOISE**2
    target = 0.5 * (snr**2 + math.sqrt(snr**4 + 4 * snr**2 * var0))
    gain = target / r_peak
    extra_scale = 0.0
    extra: list[tuple[galsim.GSObject, dict[str, float]]] = []
    if neighbour is not None:
        part, rel_peak = neighbour
        extra = [(part.profile, extend_colour(part.colour))]
        extra_peak = float(np.clip(_draw(extra, "r", psf("r"), size), 0.0, None).max())
        extra_scale = rel_peak * r_peak / max(extra_peak, 1e-30)
    to_flux = _NOISE_R / math.sqrt(var0)
    planes = []
    for band in bands:
        clean = np.clip(_draw(parts, band, psf(band), size), 0.0, None)
        if extra:
            clean = clean + extra_scale * np.clip(_draw(extra, band, psf(band), size), 0.0, None)
        noise = np.random.default_rng([noise_seed, ALL_BANDS.index(band)])
        expected = clean * gain * _THROUGHPUT[band] + _SKY[band]
        counts = noise.poisson(expected).astype(np.float64)
        counts += noise.normal(0.0, READ_NOISE, counts.shape) - _SKY[band]
        planes.append(counts / _THROUGHPUT[band] * to_flux)
    return np.stack(planes).astype(np.float32)


def jpeg_pixels(cube: np.ndarray, bands: Sequence[str],
                rgb_bands: Sequence[str] = JPEG_BANDS) -> np.ndarray:
    """The uint8 ``(size, size, 3)`` Lupton composite of ``rgb_bands`` of a cube, north up
    (:func:`~skysort.data.fits.rgb_planes`, then astropy's ``make_lupton_rgb`` scaled per
    image): what skysort's FITS reader shows of the cube's file with ``bands=g,r,z`` and
    no data-set-wide scale."""
    data = np.asarray(cube, dtype=np.float32).astype(np.float64)  # as read back from FITS
    rgb = lupton_rgb(*rgb_planes(Bands(names=tuple(bands), data=data), list(rgb_bands)))
    return np.ascontiguousarray(rgb[::-1])  # FITS rows run bottom-up


def _header(bands: Sequence[str]) -> list[tuple[str, object, str]]:
    cards: list[tuple[str, object, str]] = [
        (f"BAND{k}", band, f"band of plane {k}") for k, band in enumerate(bands)]
    cards += [("BANDS", "".join(bands), "bands of the planes, in order"),
              ("BUNIT", "nanomaggy", "simulated sky-subtracted flux"),
              ("PIXSCALE", PIXEL_SCALE, "arcsec per pixel"),
              ("ORIGIN", "skysort.synth.bands", "simulated with GalSim")]
    return cards


def _write(path_stem: Path, cube: np.ndarray, bands: Sequence[str], layout: str) -> None:
    from astropy.io import fits

    if layout == "cube":
        hdu = fits.PrimaryHDU(cube)
        for key, value, comment in _header(bands):
            hdu.header[key] = (value, comment)
        hdu.writeto(path_stem.with_name(path_stem.name + ".fits"), overwrite=True)
    elif layout == "extensions":
        primary = fits.PrimaryHDU()
        primary.header["ORIGIN"] = ("skysort.synth.bands", "simulated with GalSim")
        hdus = [primary]
        for band, plane in zip(bands, cube, strict=True):
            ext = fits.ImageHDU(plane, name=band)
            ext.header["FILTER"] = (band, "band of this extension")
            ext.header["BUNIT"] = ("nanomaggy", "simulated sky-subtracted flux")
            hdus.append(ext)
        fits.HDUList(hdus).writeto(path_stem.with_name(path_stem.name + ".fits"),
                                   overwrite=True)
    else:
        for band, plane in zip(bands, cube, strict=True):
            hdu = fits.PrimaryHDU(plane)
            hdu.header["FILTER"] = (band, "band of this file")
            hdu.header["BUNIT"] = ("nanomaggy", "simulated sky-subtracted flux")
            hdu.writeto(path_stem.with_name(f"{path_stem.name}_{band}.fits"), overwrite=True)


def jpeg_root(root: str | Path) -> Path:
    """Where :func:`write_fits_set` puts the JPEG copies of ``root``: ``<root>_jpeg``."""
    root = Path(root)
    return root.with_name(root.name + "_jpeg")


def write_fits_set(root: str | Path, counts: int | Mapping[str, int], *, size: int = 64,
                   bands: Sequence[str] = BANDS, layout: str = "cube", jpeg: bool = False,
                   seed: int = 0, colour_only: bool = False,
                   snr_range: tuple[float, float] = (5.0, 200.0),
                   jpeg_bands: Sequence[str] = JPEG_BANDS) -> Path:
    """Writes a labelled set of simulated multi-band galaxies as float32 FITS class folders.

    Files are ``root/<class>/<class>_<i:05d>.fits``: with ``layout="cube"`` one
    ``(bands, size, size)`` cube with ``BAND0``.. (and ``BANDS``) naming its planes; with
    ``"extensions"`` an empty primary HDU and one image extension per band (``EXTNAME`` and
    ``FILTER`` the band); with ``"per-band"`` one 2-D file per band,
    ``root/<class>/<class>_<i:05d>_<band>.fits`` (``FILTER`` the band), and a catalogue
    ``root/labels.csv`` (``id,class``, the id ``<class>/<class>_<i:05d>``) to train on
    them as one image each: ``skysort train root/labels.csv --images root
    --pattern '{id}_{band}.fits'`` (as class folders, each band's file would count as an
    image of its own). Image ``i`` of a class depends only on ``seed``, the class and
    ``i`` (not on ``bands`` or ``layout``).

    Args:
        root: Folder to write into (created if missing).
        counts: Images per class for every class, or a mapping from class to count. The
            classes are :data:`~skysort.synth.galaxies.MORPHOLOGIES`, or with
            ``colour_only`` :data:`COLOUR_CLASSES`.
        size: Side of each square image in pixels.
        bands: Band names from :data:`ALL_BANDS`.
        layout: ``"cube"``, ``"extensions"`` or ``"per-band"``.
        jpeg: Also write ``<root>_jpeg/<class>/<class>_<i:05d>.jpg`` (quality 90): the
            per-image Lupton composite of ``jpeg_bands`` (:func:`jpeg_pixels`), north up.
        seed: Seed for everything random.
        colour_only: Two classes, ``zbright`` and ``ybright``, with the same morphologies
            (drawn uniformly from all five), brightnesses and colours in every band but y,
            whose flux is 0.7 or 1.4 times z's over the whole galaxy.
        snr_range: Peak r-band S/N of each image is drawn log-uniformly from this range.
        jpeg_bands: The three bands of the JPEG copies (all must be in ``bands``).

    Returns:
        ``root`` as a Path.

    Raises:
        DataError: For an unknown class or band, a count below 1, a bad layout, size or
            S/N range.
    """
    classes = tuple(COLOUR_CLASSES) if colour_only else MORPHOLOGIES
    bands = _check_bands(bands)
    if layout not in LAYOUTS:
        raise DataError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 16:
        raise DataError(f"size must be an integer of at least 16 pixels, got {size!r}")
    low, high = (float(v) for v in snr_range)
    if not (0 < low <= high and math.isfinite(high)):
        raise DataError(f"snr_range must satisfy 0 < low <= high, got {snr_range!r}")
    if jpeg and not set(jpeg_bands) <= set(bands):
        raise DataError(f"the JPEG copies need bands {', '.join(jpeg_bands)}; "
                        f"bands is {', '.join(bands)}")
    plan = class_plan(counts, tuple(classes))
    root = Path(root)
    written: list[tuple[str, str]] = []
    for name, count in plan.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        if jpeg:
            (jpeg_root(root) / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            rng = np.random.default_rng([seed, classes.index(name) + 100 * colour_only, i])
            kind, shift = name, None
            if colour_only:
                # same draws in both classes: the morphology does not depend on the class
                kind = MORPHOLOGIES[int(np.random.default_rng([seed, 7, i]).integers(5))]
                shift = ("y", "z", COLOUR_CLASSES[name])
            cube = render_bands(kind, rng, size, bands, draw_snr(rng, low, high), shift)
            stem = f"{name}_{i:05d}"
            _write(folder / stem, cube, bands, layout)
            written.append((f"{name}/{stem}", name))
            if jpeg:
                Image.fromarray(jpeg_pixels(cube, bands, jpeg_bands)).save(
                    jpeg_root(root) / name / f"{stem}.jpg", format="JPEG", quality=90)
    if layout == "per-band":
        with open(root / "labels.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["id", "class"])
            writer.writerows(written)
    return root
