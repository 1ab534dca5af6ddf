"""Simulated survey galaxy cutouts, rendered with GalSim, with labels.

Used by ``skysort demo``, the tests and the benchmarks when no real survey data is at hand.
Each cutout is a small scene at 0.25"/pixel: a galaxy made of GalSim profiles (Sersic bulges,
exponential and inclined disks, :class:`galsim.RandomKnots` star-forming clumps, spiral arms
as an :class:`galsim.InterpolatedImage`, tidal tails), sometimes a faint neighbour, convolved
with a Moffat or Kolmogorov PSF a little wider in g than in i, observed in g, r and i over a
sky background with Poisson and read noise, and shown with a Lupton asinh stretch common to
the three bands, so colours survive. Bulges are red, disks bluer, arms and knots bluest.

:func:`render_galaxy` draws one cutout as a uint8 array; :mod:`skysort.synth.sets` writes
labelled sets of them.

Everything is deterministic given the seed (or the :class:`numpy.random.Generator`).
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass

import galsim
import numpy as np

from skysort.errors import DataError

MORPHOLOGIES: tuple[str, ...] = ("elliptical", "lenticular", "spiral", "edge_on", "merger")
PIXEL_SCALE = 0.25  # arcsec per pixel
SKY_COUNTS = (350.0, 500.0, 700.0)  # sky level per pixel in g, r, i (counts)
READ_NOISE = 5.0  # counts per pixel

# Flux in g, r, i relative to r for the stellar populations of each component.
_OLD = (0.62, 1.0, 1.25)  # bulges, ellipticals
_DISK = (0.85, 1.0, 1.05)  # smooth disks
_S0_DISK = (0.7, 1.0, 1.18)  # lenticular disks: old stars, no star formation
_YOUNG = (1.5, 1.0, 0.75)  # arms, knots, tails
_TAIL = (1.15, 1.0, 0.9)  # tidal tails: disk stars with some star formation
_DUST = (1.4, 1.0, 0.7)  # absorption (negative flux), stronger in blue

@dataclass(frozen=True)
class _Part:
    """One component of a scene: a profile (flux = r-band flux) and its g, r, i colour."""

    profile: galsim.GSObject
    colour: tuple[float, float, float]


@functools.lru_cache(maxsize=8)
def _gsparams(size: int) -> galsim.GSParams:
    return galsim.GSParams(folding_threshold=1e-2, maxk_threshold=2e-3,
                           maximum_fft_size=max(1024, 16 * size))


def _colour(base: tuple[float, float, float], rng: np.random.Generator,
            jitter: float = 0.08) -> tuple[float, float, float]:
    """``base`` varied along the red-blue sequence by ~``jitter``, plus a little per band."""
    tilt = rng.normal(0.0, jitter) * np.array([-1.0, 0.0, 1.0])
    g, r, i = np.asarray(base) * np.exp(tilt + rng.normal(0.0, 0.02, 3))
    return float(g), float(r), float(i)


def _angle(rng: np.random.Generator) -> galsim.Angle:
    return float(rng.uniform(0.0, math.pi)) * galsim.radians


def _sersic(n: float, hlr: float, flux: float, gsp: galsim.GSParams) -> galsim.GSObject:
    """A truncated Sersic; n is rounded to 0.5 so GalSim can reuse its cached tables."""
    n = min(max(round(n * 2) / 2, 0.5), 6.0)
    return galsim.Sersic(n=n, half_light_radius=hlr, flux=flux, trunc=12 * hlr,
                         flux_untruncated=False, gsparams=gsp)


def _knots(rng: np.random.Generator, flux: float, gsp: galsim.GSParams, *,
           hlr: float | None = None, profile: galsim.GSObject | None = None) -> galsim.GSObject:
    npoints = int(rng.integers(10, 30))
    seed = galsim.BaseDeviate(int(rng.integers(1, 2**31 - 1)))
    if profile is not None:
        return galsim.RandomKnots(npoints, profile=profile.withFlux(flux), rng=seed,
                                  gsparams=gsp)
    return galsim.RandomKnots(npoints, half_light_radius=hlr, flux=flux, rng=seed, gsparams=gsp)


def _axis_ratio(inclination: float, thickness: float = 0.15) -> float:
    """Projected axis ratio of an oblate disk of intrinsic thickness seen at ``inclination``."""
    return math.sqrt(math.cos(inclination) ** 2 * (1 - thickness**2) + thickness**2)


def _elliptical(rng: np.random.Generator, hlr: float, gsp: galsim.GSParams) -> list[_Part]:
    body = _sersic(rng.uniform(3.0, 5.0), 0.45 * hlr, 1.0, gsp)  # n~4 wings reach far out
    return [_Part(body.shear(q=1 - rng.uniform(0.0, 0.4), beta=_angle(rng)), _colour(_OLD, rng))]


def _lenticular(rng: np.random.Generator, hlr: float, gsp: galsim.GSParams) -> list[_Part]:
    bt = rng.uniform(0.3, 0.6)
    inc = math.acos(rng.uniform(math.cos(math.radians(80)), 1.0))  # random orientation
    disk = galsim.InclinedExponential(inc * galsim.radians, half_light_radius=0.8 * hlr,
                                      scale_h_over_r=rng.uniform(0.1, 0.2), flux=1 - bt,
                                      gsparams=gsp)
    bulge = _sersic(rng.uniform(2.5, 4.0), hlr * rng.uniform(0.2, 0.4), bt, gsp)
    bulge = bulge.shear(q=max(_axis_ratio(inc, 0.7), 0.6), beta=0 * galsim.radians)
    return [_Part(disk, _colour(_S0_DISK, rng)), _Part(bulge, _colour(_OLD, rng))]


def _arms(rng: np.random.Generator, hlr: float, gsp: galsim.GSParams) -> galsim.GSObject:
    """Face-on log-spiral arms (unit flux) as an InterpolatedImage sampled on the pixel grid."""
    r_s = hlr / 1.678
    half = max(math.ceil(5.0 * r_s / PIXEL_SCALE), 8)
    y, x = (np.mgrid[-half:half + 1, -half:half + 1] * PIXEL_SCALE).astype(float)
    r = np.hypot(x, y) + 1e-3
    theta = np.arctan2(y, x)
    m = int(rng.choice([2, 2, 2, 3, 4]))
    pitch = math.radians(rng.uniform(10.0, 30.0)) * rng.choice([-1.0, 1.0])
    psi = m * theta - m * np.log(r / r_s) / math.tan(pitch) + rng.uniform(0, 2 * math.pi)
    psi = psi + 0.4 * np.sin(theta * rng.integers(1, 4) + rng.uniform(0, 2 * math.pi))
    arm = ((1 + np.cos(psi)) / 2) ** rng.uniform(2.0, 5.0)
    patchy = 1 + 0.35 * np.cos(3 * theta + 2 * np.log(r / r_s) + rng.uniform(0, 2 * math.pi))
    r_in = r_s * rng.uniform(0.3, 0.8)
    edge = half * PIXEL_SCALE  # taper to zero before the grid's edge (no square corners)
    taper = np.clip((edge - r) / (0.3 * edge), 0.0, 1.0) ** 2
    sb = arm * patchy * taper * np.exp(-r / (1.15 * r_s)) * (1 - np.exp(-((r / r_in) ** 2)))
    return galsim.InterpolatedImage(galsim.Image(sb, scale=PIXEL_SCALE), flux=1.0, gsparams=gsp,
                                    pad_factor=3.0, x_interpolant="lanczos3",  # no ghosts
                                    calculate_stepk=False, calculate_maxk=False)


def _spiral(rng: np.random.Generator, hlr: float, gsp: galsim.GSParams) -> list[_Part]:
    inc = rng.uniform(0.0, math.radians(65))
    bt = rng.uniform(0.05, 0.35)
    arm_frac, knot_frac = rng.uniform(0.4, 0.6), rng.uniform(0.08, 0.2)
    disk_flux = 1 - bt
    smooth = galsim.Exponential(half_light_radius=hlr, flux=disk_flux * (1 - arm_frac - knot_frac),
                                gsparams=gsp)
    arms = _arms(rng, hlr, gsp)
    knots = _knots(rng, disk_flux * knot_frac, gsp, profile=arms)
    q, beta = _axis_ratio(inc), 0 * galsim.radians
    parts = [_Part(smooth.shear(q=q, beta=beta), _colour(_DISK, rng)),
             _Part((arms * (disk_flux * arm_frac)).shear(q=q, beta=beta), _colour(_YOUNG, rng)),
             _Part(knots.shear(q=q, beta=beta), _colour(_YOUNG, rng, 0.15))]
    bulge = _sersic(rng.uniform(1.5, 4.0), hlr * rng.uniform(0.12, 0.3), bt, gsp)
    parts.append(_Part(bulge.shear(q=max(q, 0.7), beta=beta), _colour(_OLD, rng)))
    if rng.random() < 0.3:  # a bar
        bar = galsim.Sersic(0.5, half_light_radius=hlr * rng.uniform(0.3, 0.5), flux=0.1,
                            gsparams=gsp).shear(q=rng.uniform(0.25, 0.4), beta=_angle(rng))
        parts.append(_Part(bar.shear(q=q, beta=beta), _colour(_OLD, rng)))
    return parts


def _edge_on(rng: np.random.Generator, hlr: float, gsp: galsim.GSParams) -> list[_Part]:
    inc = math.radians(rng.uniform(82.0, 90.0)) * galsim.radians
    h_over_r = rng.uniform(0.08, 0.2)
    bt = rng.uniform(0.1, 0.4)
    disk = galsim.InclinedExponential(inc, half_light_radius=hlr, scale_h_over_r=h_over_r,
                                      flux=1 - bt, gsparams=gsp)
    bulge = _sersic(rng.uniform(1.0, 3.0), hlr * rng.uniform(0.15, 0.3), bt, gsp)
    parts = [_Part(disk, _colour(_DISK, rng)),
             _Part(bulge.shear(q=rng.uniform(0.55, 0.9), beta=0 * galsim.radians),
                   _colour(_OLD, rng))]
    if rng.random() < 0.5:  # dust lane: a thinner disk of negative flux, a little off the plane
        lane = galsim.InclinedExponential(inc, half_light_radius=0.9 * hlr,
                                          scale_h_over_r=0.35 * h_over_r,
                                          flux=-0.3 * (1 - bt), gsparams=gsp)
        offset = rng.uniform(-0.4, 0.4) * h_over_r * hlr / 1.678
        parts.append(_Part(lane.shift(0.0, offset), _colour(_DUST, rng)))
    return parts


def _tail(rng: np.random.Generator, start: tuple[float, float], hlr: float, flux: float,
          gsp: galsim.GSParams) -> galsim.GSObject:
    """A curved tidal tail: elongated Gaussians along an arc, fading and widening outwards."""
    direction, curl = rng.uniform(0, 2 * math.pi), rng.uniform(0.6, 1.8) * rng.choice([-1, 1])
    length, steps = hlr * rng.uniform(3.0, 6.0), 9
    x, y, blobs = start[0], start[1], []
    for k in range(steps):
        t = (k + 1) / steps
        angle = direction + curl * t
        x, y = x + length / steps * math.cos(angle), y + length / steps * math.sin(angle)
        blob = galsim.Gaussian(sigma=hlr * (0.25 + 0.3 * t), flux=math.exp(-t), gsparams=gsp)
        blobs.append(blob.shear(q=0.5, beta=angle * galsim.radians).shift(x, y))
    return galsim.Add(blobs).withFlux(flux)


def _merger(rng: np.random.Generator, hlr: float, gsp: galsim.GSParams) -> list[_Part]:
    count = 3 if rng.random() < 0.15 else 2
    parts: list[_Part] = []
    pos = (0.0, 0.0)
    for j in range(count):
        h = hlr * rng.uniform(0.45, 0.65)
        flux = 1.0 if j == 0 else rng.uniform(0.3, 1.0)
        if j:
            sep, angle = (hlr * rng.uniform(0.9, 1.6)), rng.uniform(0, 2 * math.pi)
            pos = (sep * math.cos(angle), sep * math.sin(angle))
        if rng.random() < 0.5:
            body = _elliptical(rng, h, gsp)
        else:
            body = [_Part(galsim.Exponential(half_light_radius=h, flux=0.75, gsparams=gsp),
                          _colour(_DISK, rng)),
                    _Part(_knots(rng, 0.15, gsp, hlr=h * 1.3), _colour(_YOUNG, rng, 0.15)),
                    _Part(_sersic(3.0, h * 0.25, 0.1, gsp), _colour(_OLD, rng))]
        distortion = galsim.Shear(g=rng.uniform(0.05, 0.3), beta=_angle(rng))
        parts += [_Part((p.profile * flux).shear(distortion).shift(*pos), p.colour)
                  for p in body]
        if rng.random() < 0.7:
            parts.append(_Part(_tail(rng, pos, h, flux * rng.uniform(0.25, 0.5), gsp),
                               _colour(_TAIL, rng)))
    return parts


_BUILDERS = {"elliptical": _elliptical, "lenticular": _lenticular, "spiral": _spiral,
             "edge_on": _edge_on, "merger": _merger}


def _neighbour(rng: np.random.Generator, size: int, gsp: galsim.GSParams) -> tuple[_Part, float]:
    """A faint unrelated star or small galaxy away from the centre; returns it and its peak
    brightness relative to the main galaxy's."""
    radius, angle = size * PIXEL_SCALE * rng.uniform(0.25, 0.45), rng.uniform(0, 2 * math.pi)
    shift = (radius * math.cos(angle), radius * math.sin(angle))
    if rng.random() < 0.6:
        star = galsim.DeltaFunction(gsparams=gsp).shift(*shift)
        return _Part(star, _colour((0.8, 1.0, 1.1), rng, 0.3)), rng.uniform(0.1, 0.6)
    hlr = size * PIXEL_SCALE * rng.uniform(0.015, 0.04)
    body = galsim.Exponential(half_light_radius=hlr, gsparams=gsp)
    body = body.shear(q=rng.uniform(0.3, 1.0), beta=_angle(rng)).shift(*shift)
    return _Part(body, _colour(_DISK, rng, 0.2)), rng.uniform(0.05, 0.3)


def _psf(family: int, fwhm: float, gsp: galsim.GSParams) -> galsim.GSObject:
    """Atmospheric PSF 0-3: Kolmogorov, or a Moffat with beta 2.5, 3.5 or 4.5 (half-integer
    betas have closed-form Fourier transforms, so GalSim draws them fast)."""
    if family == 0:
        return galsim.Kolmogorov(fwhm=fwhm, gsparams=gsp)
    return galsim.Moffat((2.5, 3.5, 4.5)[family - 1], fwhm=fwhm, gsparams=gsp)


def _draw(parts: list[_Part], band: int, psf: galsim.GSObject, size: int) -> np.ndarray:
    scene = galsim.Add([p.profile * p.colour[band] for p in parts])
    image = galsim.Convolve(scene, psf).drawImage(nx=size, ny=size, scale=PIXEL_SCALE,
                                                  method="auto")
    return image.array.astype(np.float64)


def _asinh_stretch(bands: list[np.ndarray], white: float, soft: float = 1.5) -> np.ndarray:
    """Lupton et al. (2004) asinh stretch on the mean of the bands (in units of the r-band
    noise), the same factor for every band so colours survive; returns 8-bit (..., bands)."""
    stack = np.stack(bands, axis=-1)
    intensity = stack.mean(axis=-1, keepdims=True)
    norm = math.asinh(white / soft)
    safe = np.where(np.abs(intensity) < 1e-9, 1e-9, intensity)
    scaled = stack * (np.arcsinh(safe / soft) / norm / safe)
    scaled = np.clip(scaled, 0.0, None)
    peak = scaled.max(axis=-1, keepdims=True)
    scaled = np.where(peak > 1.0, scaled / np.maximum(peak, 1e-9), scaled)  # keep hue
    return np.round(scaled * 255.0).astype(np.uint8)


def draw_snr(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def check_render(kind: str, rng: np.random.Generator, size: int, snr: float | None
                 ) -> tuple[int, float]:
    """``(size, snr)`` of a galaxy to render, checked (``snr`` drawn when None); raises
    DataError for a kind, generator, size or S/N that is not valid."""
    if kind not in MORPHOLOGIES:
        raise DataError(f"unknown galaxy kind {kind!r}; choose one of {', '.join(MORPHOLOGIES)}")
    if not isinstance(rng, np.random.Generator):
        raise DataError(f"rng must be a numpy.random.Generator, not {type(rng).__name__}")
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 16:
        raise DataError(f"size must be an integer of at least 16 pixels, got {size!r}")
    if snr is None:
        snr = draw_snr(rng, 5.0, 200.0)
    elif not (isinstance(snr, numbers.Real) and math.isfinite(snr) and snr > 0):
        raise DataError(f"snr must be a positive number, got {snr!r}")
    return int(size), float(snr)


def render_galaxy(kind: str, rng: np.random.Generator, size: int = 128, snr: float | None = None,
                  color: bool = True) -> np.ndarray:
    """Renders one simulated survey cutout of a galaxy of the given morphology.

    Args:
        kind: One of :data:`MORPHOLOGIES`.
        rng: Source of all randomness (shape, size, orientation, PSF, neighbour, noise).
        size: Side of the square cutout in pixels (at least 16).
        snr: Peak signal-to-noise ratio in the r band: the brightest pixel's galaxy counts over
            the noise in that pixel (sky, read noise and the galaxy's own Poisson noise).
            Drawn log-uniformly from 5-200 if None. At 5 the galaxy is barely visible.
        color: Render g, r, i as an RGB image (R=i, G=r, B=g); else the r band in grey.

    Returns:
        A uint8 array of shape (size, size, 3) if ``color`` else (size, size).

    Raises:
        DataError: If ``kind``, ``size``, ``snr`` or ``rng`` is not valid.
    """
    size, snr = check_render(kind, rng, size, snr)
    gsp = _gsparams(size)
    extent = rng.uniform(0.15, 0.6) * size * PIXEL_SCALE  # visible diameter, arcsec
    parts = _BUILDERS[kind](rng, extent / 4.5, gsp)
    turn, offset = _angle(rng) * 2, rng.uniform(-0.05, 0.05, 2) * size * PIXEL_SCALE
    parts = [_Part(p.profile.rotate(turn).shift(*offset), p.colour) for p in parts]
    fwhm = rng.uniform(2.0, 4.0) * PIXEL_SCALE
    psf_shape = galsim.Shear(e=rng.uniform(0.0, 0.06), beta=_angle(rng))
    band_ids = (0, 1, 2) if color else (1,)
    family = int(rng.integers(0, 4))
    psfs = {b: _psf(family, fwhm * (1.08, 1.0, 0.95)[b], gsp).shear(psf_shape) for b in band_ids}
    clean = {b: np.clip(_draw(parts, b, psfs[b], size), 0.0, None) for b in band_ids}
    sky_r = SKY_COUNTS[1]
    # peak counts p such that p / sqrt(p + sky + read^2) == snr
    var0 = sky_r + READ_NOISE**2
    target = 0.5 * (snr**2 + math.sqrt(snr**4 + 4 * snr**2 * var0))
    gain = target / max(float(clean[1].max()), 1e-30)
    if rng.random() < 0.3:
        extra, rel_peak = _neighbour(rng, size, gsp)
        drawn = {b: np.clip(_draw([extra], b, psfs[b], size), 0.0, None) for b in band_ids}
        scale = rel_peak * float(clean[1].max()) / max(float(drawn[1].max()), 1e-30)
        clean = {b: clean[b] + scale * drawn[b] for b in band_ids}
    sigma_r = math.sqrt(var0)
    observed = []
    for b in band_ids:
        counts = rng.poisson(clean[b] * gain + SKY_COUNTS[b]).astype(np.float64)
        counts += rng.normal(0.0, READ_NOISE, counts.shape) - SKY_COUNTS[b]
        observed.append(counts / sigma_r)  # sky-subtracted, in units of the r-band noise
    white = max(target / sigma_r, 25.0)  # the peak, or 25 sigma for faint galaxies
    out = _asinh_stretch(observed[::-1], white, soft=max(1.5, white / 300))  # RGB = i, r, g
    return out if color else out[..., 0]
