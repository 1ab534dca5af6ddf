"""How a FITS image's float bands become 8-bit pixels: one stretch for all bands.

:func:`lupton_bands` is the asinh stretch of Lupton et al. (2004, PASP 116, 133) for any
number of bands: each band's sky level is subtracted, the total intensity ``I`` (the mean of
the bands) is mapped by ``asinh(Q I / stretch)``, and every band is multiplied by the same
factor ``f(I) / I``, so band ratios (colours) survive; where a band would pass full
brightness all bands are scaled down together, so a saturated star keeps its hue. For three
bands it is astropy's ``make_lupton_rgb`` (:func:`lupton_rgb`, which calls it); the same
formula runs for 1, 2, 4 or more bands when every band goes into the network.

The scale is ``(minimum, stretch, Q)``. Per image (:func:`lupton_parameters`) the brightest
part of each image reaches full brightness; per data set (:func:`data_set_scale`, fitted once
from training images and saved with the model's preprocessing) one ``stretch`` and ``Q`` hold
for every image, so a faint galaxy stays fainter than a bright one; each image's sky level is
still its own (sky backgrounds differ from exposure to exposure).

:func:`stretch_asinh` is the older per-band stretch (each band between its own percentiles;
colours and relative brightness are lost), kept as ``stretch=percentile``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from skysort.errors import ImageError

#: Percentiles of the finite pixel values that :func:`stretch_asinh` maps to 0 and 1.
FITS_PERCENTILES = (0.5, 99.8)

#: The percentile of an image's total intensity that the Lupton stretch maps to full
#: brightness: a percentile, not the maximum, so a hot pixel or a saturated star cannot
#: darken the rest.
LUPTON_PERCENTILE = 99.5

#: Lupton's asinh softening ``Q`` per image: how far faint light is lifted against bright
#: light (towards 0 the stretch is linear). 4 shows a galaxy's outskirts while the sky stays
#: dark.
LUPTON_Q = 4.0

#: For a data-set-wide scale: the grey level (of 1) that one standard deviation of the sky
#: noise in the total intensity is lifted to: visible, but dark.
SKY_NOISE_LEVEL = 0.02

#: astropy's ``LuptonAsinhStretch`` constant: ``y = asinh(Q x / stretch) frac / asinh(frac Q)``.
_FRAC = 0.1

Scale = tuple[Sequence[float], float, float]


def stretch_for(bright: float, Q: float) -> float:
    """The ``stretch`` that maps total intensity ``bright`` to full brightness at ``Q``."""
    return Q * bright / math.sinh(math.asinh(_FRAC * Q) / _FRAC)


def sky_levels(planes: Sequence[np.ndarray]) -> tuple[list[float], list[float]]:
    """Each plane's sky level and sky noise (sigma-clipped median and standard deviation
    of its finite pixels; 0 and 0 for a plane with none)."""
    from astropy.stats import sigma_clipped_stats

    levels, noises = [], []
    for plane in planes:
        finite = np.asarray(plane)[np.isfinite(plane)]
        _, median, std = (sigma_clipped_stats(finite, sigma=3.0, maxiters=5) if finite.size
                          else (0.0, 0.0, 0.0))
        levels.append(float(median))
        noises.append(float(std))
    return levels, noises


def total_intensity(planes: Sequence[np.ndarray], minimum: Sequence[float]) -> np.ndarray:
    """The mean of the sky-subtracted planes (NaN and inf count as sky)."""
    return np.mean([as_sky(p, m) - m for p, m in zip(planes, minimum, strict=True)], axis=0)


def lupton_parameters(planes: Sequence[np.ndarray], percentile: float = LUPTON_PERCENTILE,
                      Q: float = LUPTON_Q) -> tuple[tuple[float, ...], float, float]:
    """``(minimum, stretch, Q)`` for :func:`lupton_bands` from one image's planes.

    ``minimum`` is each plane's sky level (its sigma-clipped median); ``stretch`` is set so
    that the ``percentile`` of the total intensity maps to full brightness. NaN and inf
    count as sky; a hot pixel or a saturated star moves a percentile, not the scale.
    """
    minimum, _ = sky_levels(planes)
    return tuple(minimum), image_stretch(total_intensity(planes, minimum), percentile, Q), Q


def image_stretch(intensity: np.ndarray, percentile: float, Q: float) -> float:
    """The per-image ``stretch``: ``percentile`` of ``intensity`` to full brightness."""
    bright = float(np.percentile(intensity, percentile))
    if not bright > 0:
        bright = float(intensity.max())
    if not bright > 0:  # nothing above the sky: any scale gives black
        bright = 1.0
    return stretch_for(bright, Q)


def data_set_scale(brights: Sequence[float], noises: Sequence[float]) -> tuple[float, float]:
    """One ``(stretch, Q)`` for a whole data set, from its images' bright levels (each
    image's :data:`LUPTON_PERCENTILE` of total intensity) and sky noises (the standard
    deviation of the total intensity's sky).

    Full brightness is the median image's bright level (half the images reach it, the
    brighter half saturate with their hue kept); ``Q`` then lifts one median sky-noise
    standard deviation to :data:`SKY_NOISE_LEVEL`, within 1 to 30 (solved by bisection:
    the lift grows with ``Q``). Medians, so a few saturated stars or empty frames move
    nothing.
    """
    good = [b for b in brights if math.isfinite(b) and b > 0]
    if not good:
        return stretch_for(1.0, LUPTON_Q), LUPTON_Q
    bright = float(np.median(good))
    finite_noises = [n for n in noises if math.isfinite(n) and n > 0]
    noise = float(np.median(finite_noises)) if finite_noises else 0.0
    if not 0 < noise < bright:
        return stretch_for(bright, LUPTON_Q), LUPTON_Q

    def lift(q: float) -> float:  # the grey level of one sky sigma at this Q
        return math.asinh(q * noise / stretch_for(bright, q)) * _FRAC / math.asinh(_FRAC * q)

    low, high = 1.0, 30.0
    if lift(low) >= SKY_NOISE_LEVEL:
        q = low
    elif lift(high) <= SKY_NOISE_LEVEL:
        q = high
    else:
        for _ in range(60):
            q = 0.5 * (low + high)
            low, high = (q, high) if lift(q) < SKY_NOISE_LEVEL else (low, q)
        q = 0.5 * (low + high)
    return stretch_for(bright, q), q


def lupton_bands(planes: Sequence[np.ndarray], scale: Scale) -> np.ndarray:
    """``(height, width, n)`` uint8: Lupton's stretch of ``n`` planes with one factor per
    pixel for all of them (see the module's notes); NaN and inf become each band's sky."""
    minimum, stretch, q = scale
    if stretch <= 0 or q <= 0:
        raise ImageError(f"Lupton scale stretch={stretch}, Q={q}: both must be above 0")
    data = np.stack([as_sky(p, m) - m for p, m in zip(planes, minimum, strict=True)], axis=-1)
    intensity = data.mean(axis=-1, keepdims=True)
    mapped = np.arcsinh(q * intensity / stretch) * _FRAC / math.asinh(_FRAC * q)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(intensity > 0, mapped / intensity, 0.0)
    out = np.clip(data * factor, 0.0, None)
    peak = out.max(axis=-1, keepdims=True)
    out = np.where(peak > 1.0, out / np.maximum(peak, 1e-12), out)  # keep the hue
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


def lupton_rgb(red: np.ndarray, green: np.ndarray, blue: np.ndarray,
               parameters: Scale | None = None) -> np.ndarray:
    """An ``(height, width, 3)`` uint8 composite: astropy's ``make_lupton_rgb`` with
    ``parameters`` (``(minimum, stretch, Q)``, by default :func:`lupton_parameters` of
    these planes); NaN and inf become each band's sky level."""
    from astropy.visualization import make_lupton_rgb

    minimum, stretch, q = parameters or lupton_parameters([red, green, blue])
    r, g, b = (as_sky(p, m) for p, m in zip((red, green, blue), minimum, strict=True))
    with np.errstate(divide="ignore", invalid="ignore"):  # f(I)/I where I is 0: masked
        rgb = make_lupton_rgb(r, g, b, minimum=list(minimum), stretch=stretch, Q=q)
    return np.asarray(rgb)


def stretch_asinh(data: np.ndarray, percentiles: tuple[float, float] = FITS_PERCENTILES,
                  a: float = 0.1) -> np.ndarray:
    """One band's own robust asinh stretch to uint8 (the per-band stretch, colours lost).

    NaN and inf become the low end (the sky). The interval comes from ``percentiles`` of
    the finite values so a few hot pixels or cosmic rays cannot flatten the image.
    """
    from astropy.visualization import AsinhStretch, AsymmetricPercentileInterval, ImageNormalize

    data = np.asarray(data, dtype=np.float64)
    finite = np.isfinite(data)
    if not finite.any():
        return np.zeros(data.shape, dtype=np.uint8)
    lo_pct, hi_pct = percentiles
    if lo_pct >= hi_pct:
        raise ImageError(f"percentiles {percentiles} must rise (low, high)")
    vmin, vmax = AsymmetricPercentileInterval(lo_pct, hi_pct).get_limits(data[finite])
    if not vmax > vmin:  # near-constant: the full finite range, or black
        vmin, vmax = float(data[finite].min()), float(data[finite].max())
        if not vmax > vmin:
            return np.zeros(data.shape, dtype=np.uint8)
    norm = ImageNormalize(vmin=vmin, vmax=vmax, stretch=AsinhStretch(a=a), clip=True)
    scaled = np.asarray(norm(np.where(finite, data, vmin)), dtype=np.float64)
    return np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)


def as_sky(plane: np.ndarray, sky: float) -> np.ndarray:
    """``plane`` as float64 with NaN and inf replaced by ``sky``."""
    plane = np.asarray(plane, dtype=np.float64)
    return np.where(np.isfinite(plane), plane, sky)
