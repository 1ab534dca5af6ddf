"""How a model turns FITS images into pixels: :class:`FitsDecode`, saved with its
preprocessing, says which bands, ``channels="rgb"`` (one Lupton colour composite, as people
see it) or ``"all"`` (every chosen band, blue to red, into the network), and the stretch
(:mod:`skysort.data.stretch`) with its data-set-wide scale, fitted from the training images
by :func:`fit_decode`; :func:`decode_fits` applies it to a file (:mod:`skysort.data.fits`
reads the bands).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from skysort.data.fits import Bands, find_band, is_fits_name, read_fits_bands, rgb_planes
from skysort.data.stretch import (
    LUPTON_PERCENTILE,
    LUPTON_Q,
    Scale,
    data_set_scale,
    lupton_bands,
    lupton_parameters,
    lupton_rgb,
    sky_levels,
    stretch_asinh,
    total_intensity,
)
from skysort.errors import ConfigError, ImageError

#: What ``channels=`` may be: a colour composite of three bands, or every band.
CHANNEL_MODES = ("rgb", "all")
#: What ``stretch=`` may be: Lupton's (one for all bands), or each band's own percentiles.
STRETCHES = ("lupton", "percentile")


@dataclass(frozen=True)
class FitsDecode:
    """How a model turns FITS files into pixels; saved with its preprocessing.

    Attributes:
        bands: the bands to use, by name (``()``: every band, or for ``rgb`` the three
            :func:`rgb_planes` chooses).
        channels: ``rgb`` (one colour composite) or ``all`` (every band into the network).
        stretch: ``lupton`` (one stretch for all bands) or ``percentile`` (each band its own).
        scale: the data-set-wide Lupton ``stretch`` (None: each image its own).
        Q: Lupton's softening with ``scale``.
        count: how many bands a model with ``channels=all`` takes when they have no names.
    """

    bands: tuple[str, ...] = ()
    channels: str = "rgb"
    stretch: str = "lupton"
    scale: float | None = None
    Q: float = LUPTON_Q
    count: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "bands", tuple(str(b) for b in self.bands))
        if self.channels not in CHANNEL_MODES:
            raise ConfigError(f"channels={self.channels!r}: use one of {', '.join(CHANNEL_MODES)}")
        if self.stretch not in STRETCHES:
            raise ConfigError(f"stretch={self.stretch!r}: use one of {', '.join(STRETCHES)}")
        if len(set(self.bands)) < len(self.bands) or any(not b.strip() for b in self.bands):
            raise ConfigError(f"bands={','.join(self.bands)}: name each band once")
        if self.scale is not None and not (math.isfinite(self.scale) and self.scale > 0):
            raise ConfigError(f"FITS scale {self.scale}: must be a positive number")
        if not (math.isfinite(self.Q) and self.Q > 0):
            raise ConfigError(f"FITS Q {self.Q}: must be a positive number")

    @property
    def n_channels(self) -> int:
        """The network's input channels: 3 for ``rgb``, else the number of bands."""
        if self.channels == "rgb":
            return 3
        return len(self.bands) or self.count or 3

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["bands"] = list(self.bands)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FitsDecode:
        known = {"bands", "channels", "stretch", "scale", "Q", "count"}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown FITS decoding keys {sorted(unknown)}; valid: "
                              f"{sorted(known)}")
        scale = data.get("scale")
        return cls(bands=tuple(data.get("bands", ())), channels=str(data.get("channels", "rgb")),
                   stretch=str(data.get("stretch", "lupton")),
                   scale=None if scale is None else float(scale),
                   Q=float(data.get("Q", LUPTON_Q)), count=int(data.get("count", 0)))


def chosen_planes(bands: Bands, decode: FitsDecode) -> list[np.ndarray]:
    """The planes that ``decode`` turns into pixels, in pixel order: red, green, blue for
    ``rgb``; the chosen bands blue to red for ``all``.

    Raises:
        ImageError: a band it names is missing, or the file's band count is not the
            model's.
    """
    if decode.channels == "rgb":
        return list(rgb_planes(bands, decode.bands or None))
    index = (sorted(find_band(bands.names, b) for b in decode.bands) if decode.bands
             else list(range(len(bands.names))))
    if len(index) != decode.n_channels:
        raise ImageError(f"{len(index)} bands, but the model takes {decode.n_channels}; "
                         "give bands=... to choose them")
    return [bands.data[i] for i in index]


def decode_fits(path: str | Path, max_pixels: int, decode: FitsDecode | None = None
                ) -> np.ndarray:
    """A FITS image as ``(height, width, channels)`` uint8 pixels, north up, as ``decode``
    says (by default the per-image Lupton colour composite).

    Raises:
        ImageError: as :func:`read_fits_bands` and :func:`chosen_planes`.
    """
    decode = decode or FitsDecode()
    try:
        planes = chosen_planes(read_fits_bands(path, max_pixels, decode.bands), decode)
    except ImageError as exc:
        text = str(exc)
        raise ImageError(text if text.startswith(str(path)) else f"{path}: {text}") from None
    if decode.stretch == "percentile":
        pixels = np.stack([stretch_asinh(p) for p in planes], axis=-1)
    elif decode.channels == "rgb" and decode.scale is None:
        pixels = lupton_rgb(planes[0], planes[1], planes[2])
    else:
        scale: Scale = (lupton_parameters(planes) if decode.scale is None
                        else (sky_levels(planes)[0], decode.scale, decode.Q))
        pixels = lupton_bands(planes, scale)
    # FITS rows run bottom-up; flip so north-up images display as astronomers expect.
    return np.ascontiguousarray(pixels[::-1])


def fit_decode(paths: Sequence[str | Path], decode: FitsDecode, max_pixels: int,
               limit: int = 200) -> FitsDecode:
    """``decode`` completed from a data set's FITS images (training images: they are what
    the model learns from): the Lupton ``scale`` and ``Q`` of
    :func:`skysort.data.stretch.data_set_scale` from up to ``limit`` of them (evenly spread;
    unreadable ones skipped), and the bands: named by the first readable image, when all
    are named, which every image must then have (a missing band or band file is an
    unreadable image, not another colour); else, for ``channels=all``, their count. With the
    ``percentile`` stretch only the bands are filled in."""
    fits_paths = [Path(p) for p in paths if is_fits_name(Path(p).name)]
    step = max(1, len(fits_paths) // limit)
    brights, noises, found = [], [], bool(decode.bands)
    for path in fits_paths[::step][:limit]:
        try:
            bands = read_fits_bands(path, max_pixels, decode.bands)
            if not found:  # the bands it learns from, asked of every image from now on
                named = all(bands.names) and len(set(bands.names)) == len(bands.names)
                if named:
                    decode = replace(decode, bands=bands.names)
                elif decode.channels == "all":
                    decode = replace(decode, count=len(bands.names))
                found = True
            planes = chosen_planes(bands, decode)
        except ImageError:
            continue
        if decode.stretch != "lupton":
            break
        levels, sky_noise = sky_levels(planes)
        intensity = total_intensity(planes, levels)
        brights.append(float(np.percentile(intensity, LUPTON_PERCENTILE)))
        noises.append(float(np.sqrt(np.mean(np.square(sky_noise)) / len(planes))))
    if brights:
        stretch, q = data_set_scale(brights, noises)
        decode = replace(decode, scale=stretch, Q=q)
    return decode
