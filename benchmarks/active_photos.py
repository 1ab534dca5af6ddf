"""A labelled set of real photographs large enough for an active-learning pool, offline.

Terrain and texture classes in the manner of a HiRISE landform set, each image a crop of
one of scikit-image's bundled real photographs (no download), in grey:

========== ===========================================================
class      photograph (``skimage.data``)
========== ===========================================================
lunar      ``moon``: the lunar surface
gravel     ``gravel``
grass      ``grass``
brick      ``brick``
deep_field ``hubble_deep_field``: the Hubble Ultra Deep Field
cells      ``cell``: a microscope image of cells
tissue     ``immunohistochemistry``: stained tissue
========== ===========================================================

Each crop has a random side (:data:`SIDES`, so the scale varies four-fold), a random
rotation (any angle; the crop is cut larger and its centre kept, so no corners are
empty), a random mirror, a random gamma and contrast, a Gaussian blur of up to
:data:`MAX_BLUR` output pixels and Gaussian noise: enough that some crops of different
classes look alike. Classes are imbalanced (:data:`SHARES`), as in survey catalogues.

Pool and test images never overlap: each photograph's left :data:`POOL_SHARE` of columns
feeds the pool, the rest the test set.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

#: Class -> scikit-image sample.
SOURCES = {"lunar": "moon", "gravel": "gravel", "grass": "grass", "brick": "brick",
           "deep_field": "hubble_deep_field", "cells": "cell",
           "tissue": "immunohistochemistry"}
#: Each class's share of the images (imbalanced, the first the most common).
SHARES = {"lunar": 0.28, "gravel": 0.20, "grass": 0.15, "brick": 0.12, "deep_field": 0.11,
          "cells": 0.08, "tissue": 0.06}
#: Crop sides (px of the photograph) drawn log-uniformly from this range.
SIDES = (32, 112)
#: Largest Gaussian blur, in output pixels.
MAX_BLUR = 2.5
#: The share of each photograph's columns (from the left) that feeds the pool.
POOL_SHARE = 0.65


def _grey(name: str) -> np.ndarray:
    from skimage import color, data

    img = getattr(data, name)()
    if img.ndim == 3:
        img = color.rgb2gray(img[..., :3]) * 255
    return np.clip(np.asarray(img, dtype=np.float64), 0, 255).astype(np.uint8)


def _crop(photo: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """One randomly placed, scaled, turned, mirrored and degraded crop, ``size`` px."""
    height, width = photo.shape
    side = math.exp(rng.uniform(math.log(SIDES[0]), math.log(SIDES[1])))
    side = min(side, min(height, width) / math.sqrt(2) - 2)
    cut = math.ceil(side * math.sqrt(2))  # room for any rotation
    top = int(rng.integers(0, height - cut + 1))
    left = int(rng.integers(0, width - cut + 1))
    block = Image.fromarray(photo[top:top + cut, left:left + cut].astype(np.uint8))
    block = block.rotate(float(rng.uniform(0, 360)), resample=Image.BILINEAR)
    margin = (cut - side) / 2
    block = block.crop((round(margin), round(margin), round(margin + side),
                        round(margin + side))).resize((size, size), Image.BILINEAR)
    blur = float(rng.uniform(0, MAX_BLUR)) if rng.random() < 0.5 else 0.0
    if blur > 0.3:
        block = block.filter(ImageFilter.GaussianBlur(blur))
    x = np.asarray(block, dtype=np.float32) / 255.0
    if rng.random() < 0.5:
        x = x[:, ::-1]
    x = np.clip(x, 0, 1) ** math.exp(rng.normal(0, 0.35))  # gamma
    x = (x - x.mean()) * math.exp(rng.normal(0, 0.3)) + x.mean() + rng.normal(0, 0.08)
    x = x + rng.normal(0, rng.uniform(0, 0.08), x.shape)
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def make_photo_set(root: str | Path, n: int, size: int = 96, seed: int = 0,
                   part: str = "pool") -> Path:
    """Writes ``n`` crops as ``root/<class>/<class>_<i:05d>.png`` (ImageFolder layout).

    Args:
        root: the folder to write into.
        n: images in all, shared among the classes as :data:`SHARES` says.
        size: side of each PNG in pixels.
        seed: for every crop.
        part: ``"pool"`` (the left of each photograph) or ``"test"`` (the right).
    """
    root = Path(root)
    names = list(SHARES)
    counts = {c: max(3, round(n * SHARES[c])) for c in names}
    counts[names[0]] += n - sum(counts.values())
    for k, (name, count) in enumerate(counts.items()):
        photo = _grey(SOURCES[name])
        cut = int(photo.shape[1] * POOL_SHARE)
        photo = photo[:, :cut] if part == "pool" else photo[:, cut:]
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            rng = np.random.default_rng([seed, k, i, part == "test"])
            Image.fromarray(_crop(photo, rng, size)).save(folder / f"{name}_{i:05d}.png")
    return root
