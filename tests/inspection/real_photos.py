"""A small labelled set of real photographs, made offline from scikit-image's sample data.

Three natural classes, each image a crop of a real photograph:

* ``extended``: crops of the Hubble Ultra Deep Field (``skimage.data.hubble_deep_field``)
  centred on a large galaxy: a segment of at least :data:`EXTENDED_AREA` pixels (about
  17-51 px long) at 3 sigma above the sky;
* ``compact``: crops of the same field centred on a small object (a segment of 6-30
  pixels, 3-8 px long) with no segment of 60 pixels or more inside the crop;
* ``lunar``: crops of the lunar surface photograph (``skimage.data.moon``) at random
  places.

Each crop is :data:`CROP` px of the original, turned by a random multiple of 90 degrees
and mirrored at random, saved as a ``size`` px PNG. The sky's level and noise come from
the median and the median absolute deviation of the field's grey image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

#: Crop side in pixels of the original photographs.
CROP = 64
#: Least segment area (pixels) of a large galaxy.
EXTENDED_AREA = 150
CLASSES = ("compact", "extended", "lunar")


def _segments() -> tuple[np.ndarray, list[tuple[int, int]], list[tuple[int, int]]]:
    from skimage import color, data, measure

    field = data.hubble_deep_field()
    grey = color.rgb2gray(field)
    sky = np.median(grey)
    sigma = 1.4826 * np.median(np.abs(grey - sky))
    regions = measure.regionprops(measure.label(grey > sky + 3 * sigma))
    half = CROP // 2
    height, width = grey.shape

    def centre(region: object) -> tuple[int, int]:
        r, c = region.centroid  # type: ignore[attr-defined]
        return round(r), round(c)

    def inside(rc: tuple[int, int]) -> bool:
        return half <= rc[0] < height - half and half <= rc[1] < width - half

    large = np.array([centre(r) for r in regions if r.area >= 60])
    extended = [centre(r) for r in regions if r.area >= EXTENDED_AREA and inside(centre(r))]
    compact = [centre(r) for r in regions if 6 <= r.area <= 30 and inside(centre(r))
               and (np.abs(large - np.array(centre(r))).max(axis=1) > half).all()]
    return field, extended, compact


def _save(pixels: np.ndarray, path: Path, size: int, rng: np.random.Generator) -> None:
    pixels = np.rot90(pixels, int(rng.integers(4)))
    if rng.random() < 0.5:
        pixels = pixels[:, ::-1]
    image = Image.fromarray(np.ascontiguousarray(pixels)).convert("RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.resize((size, size), Image.Resampling.BICUBIC).save(path)


def make_photo_set(root: Path, per_class: int = 60, size: int = 96, seed: int = 0) -> Path:
    """Writes ``root/{compact,extended,lunar}/*.png``, ``per_class`` of each (at most as
    many large galaxies as the field holds away from its edges: 73), chosen at random by
    ``seed``."""
    from skimage import data

    rng = np.random.default_rng(seed)
    field, extended, compact = _segments()
    half = CROP // 2
    picks = {"extended": [extended[i] for i in rng.permutation(len(extended))[:per_class]],
             "compact": [compact[i] for i in rng.permutation(len(compact))[:per_class]]}
    for name, centres in picks.items():
        for n, (r, c) in enumerate(centres):
            _save(field[r - half:r + half, c - half:c + half], root / name / f"{n:03d}.png",
                  size, rng)
    moon = data.moon()
    for n in range(per_class):
        r, c = rng.integers(0, moon.shape[0] - CROP), rng.integers(0, moon.shape[1] - CROP)
        _save(moon[r:r + CROP, c:c + CROP], root / "lunar" / f"{n:03d}.png", size, rng)
    return root


def plant_wrong_labels(root: Path, count: int, seed: int) -> set[str]:
    """Moves ``count`` random images to another class's folder (renamed ``wrong_*``);
    returns their new relative paths."""
    rng = np.random.default_rng(seed)
    files = sorted(root.glob("*/*.png"))
    moved = set()
    for i in rng.choice(len(files), count, replace=False):
        others = [c for c in CLASSES if c != files[i].parent.name]
        dst = root / others[int(rng.integers(len(others)))] / f"wrong_{files[i].parent.name}_" \
            f"{files[i].name}"
        files[i].rename(dst)
        moved.add(dst.relative_to(root).as_posix())
    return moved
