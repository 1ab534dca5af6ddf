"""uint8 pixels of any channel count, and the pixel cache's files.

:mod:`skysort.data.transforms` holds a decoded image as an RGB Pillow image or, for FITS
bands with ``channels="all"``, as a uint8 ``(H, W, C)`` array: :func:`resize_channels`
resizes such an array as Pillow resizes an RGB image, one channel at a time. The pixel
cache keeps the resized pixels of each file as ``.npy``; :func:`touch` marks an entry used
and :func:`evict_pixel_cache` removes the least recently used.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Container
from pathlib import Path
from typing import TypeAlias

import numpy as np
from PIL import Image

INTERPOLATIONS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}

#: Pillow's reducing_gap: downscale by an integer factor first when the image is at least
#: this many times larger than the target, then resample. Much faster on large images and
#: visually indistinguishable from a single resample (Pillow documents 3.0 as such).
REDUCING_GAP = 3.0

#: A decoded image: an RGB Pillow image, or uint8 ``(H, W, C)`` pixels (any ``C``).
Pixels: TypeAlias = Image.Image | np.ndarray


def pixels_size(img: Pixels) -> tuple[int, int]:
    """(width, height) of an image or of ``(H, W, C)`` pixels."""
    return img.size if isinstance(img, Image.Image) else (img.shape[1], img.shape[0])


def crop(img: Pixels, left: int, top: int, w: int, h: int) -> Pixels:
    """The ``w`` by ``h`` box of ``img`` whose top left corner is ``(left, top)``."""
    if isinstance(img, Image.Image):
        return img.crop((left, top, left + w, top + h))
    return img[top:top + h, left:left + w]


def resize_channels(pixels: np.ndarray, size: tuple[int, int], interpolation: str
                    ) -> np.ndarray:
    """uint8 ``(H, W, C)`` pixels resized to ``size`` (width, height), each channel as its
    own Pillow ``L`` image, with the interpolation and reducing gap of an RGB image."""
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(pixels[..., c])).resize(
        size, INTERPOLATIONS[interpolation], reducing_gap=REDUCING_GAP))
        for c in range(pixels.shape[2])], axis=-1)


def touch(file: Path) -> None:
    """Records that a pixel cache entry was just used: its modification time is what
    :func:`evict_pixel_cache` goes by (access times are often not kept: noatime,
    relatime). An entry that vanished meanwhile, or a read-only cache, is no error."""
    with contextlib.suppress(OSError):
        os.utime(file)


def evict_pixel_cache(folder: str | Path, max_bytes: float, keep: Container[str] = ()
                      ) -> tuple[int, int]:
    """Removes pixel cache entries of ``folder``, least recently used first, until the
    ``.npy`` files there total at most ``max_bytes``; never one named in ``keep`` (the
    entries of the data in use). Other processes may read, write and evict at once: an
    entry that vanishes is counted as gone, and one removed while in use is decoded again
    by its reader. Returns ``(entries removed, bytes removed)``."""
    total, others = 0, []
    for file in Path(folder).glob("*.npy"):
        try:
            stat = file.stat()
        except OSError:  # evicted by another process meanwhile
            continue
        total += stat.st_size
        if file.name not in keep:
            others.append((stat.st_mtime, file.name, stat.st_size, file))
    removed = freed = 0
    for _, _, size, file in sorted(others):
        if total <= max_bytes:
            break
        try:
            file.unlink(missing_ok=True)
        except OSError:  # cannot be removed (permissions): still there
            continue
        total -= size
        removed, freed = removed + 1, freed + size
    return removed, freed
