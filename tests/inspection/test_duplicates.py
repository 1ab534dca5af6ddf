"""The duplicate signals on arrays whose answer is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skysort.inspection import duplicates
from skysort.inspection.fingerprints import Fingerprints, dihedral, fingerprint


def test_popcount_without_numpy_2(monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.random.default_rng(0).integers(0, 2**63, (40, 8), dtype=np.int64).view(np.uint64)
    expected = np.array([[bin(int(v)).count("1") for v in row] for row in x])
    assert (duplicates.popcount(x) == expected).all()
    monkeypatch.delattr(np, "bitwise_count", raising=False)  # NumPy 1.x has none
    assert (duplicates.popcount(x) == expected).all()


def test_structure_sees_copies_in_any_orientation_and_nothing_in_noise() -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(100, 20, (32, 32)).clip(0, 255)
    thumbs = np.stack([base, *[v for v in dihedral(base)[1:]],
                       rng.normal(100, 20, (32, 32)).clip(0, 255),
                       np.full((32, 32), 7.0)]).astype(np.uint8)  # 8 views, noise, blank
    signs = duplicates.structure_signs(thumbs)
    views = duplicates.structure_similarity(signs, np.zeros(7, int), np.arange(1, 8))
    assert np.allclose(views, 1.0)
    other = duplicates.structure_similarity(signs, np.array([0, 0]), np.array([8, 9]))
    assert abs(other[0]) < 0.15 and other[1] == 0.0  # unrelated; blank agrees with nothing


def test_hash_candidates_are_capped_per_image(monkeypatch: pytest.MonkeyPatch) -> None:
    phash = np.zeros((300, 8), dtype=np.uint64)  # 300 identical hashes: every pair is close
    monkeypatch.setattr(duplicates, "HASH_CANDIDATES", 300 * 100)
    rows, cols = duplicates._hash_candidates(phash, np.ones(300, bool), 8)
    per_row = np.bincount(rows, minlength=300)
    assert per_row.max() <= 101 and len(rows) <= 300 * 101
    assert per_row.min() >= 100 and set(cols.tolist()) <= set(range(300))


def _black_sky_set(folder: Path, seed: int) -> list[tuple[str, str]]:
    """Crops of the Hubble Deep Field (a real photograph) around its brighter objects,
    each at two framings and two sky clips (the sky zeroed: objects large and small on
    black), and 16 planted copies: resized to 3/4, JPEG 70, turned, mirrored."""
    from scipy import ndimage
    from skimage import data

    field = data.hubble_deep_field().astype(np.float32)
    smooth = ndimage.gaussian_filter(field.mean(axis=2), 2)
    peaks = (smooth == ndimage.maximum_filter(smooth, 40)) & \
        (smooth > np.percentile(smooth, 99))
    names = []
    for y, x in zip(*np.nonzero(peaks), strict=True):
        for half, clip in ((24, 60), (48, 60), (32, 97)):
            if min(y, x) < half or y + half > field.shape[0] or x + half > field.shape[1]:
                continue
            crop = field[y - half:y + half, x - half:x + half]
            crop = np.clip((crop - np.percentile(crop, clip)) * 2.5, 0, 255)
            name = f"obj{len(names):03d}.png"
            Image.fromarray(crop.astype(np.uint8)).resize(
                (96, 96), Image.Resampling.LANCZOS).save(folder / name)
            names.append(name)
    planted = []
    for t, source in enumerate(np.random.default_rng(seed).choice(names, 16, replace=False)):
        image = Image.open(folder / source)
        stem = source.removesuffix(".png")
        if t % 4 == 1:
            image.save(folder / f"copy{t:02d}_{stem}.jpg", quality=70)
            planted.append((source, f"copy{t:02d}_{stem}.jpg"))
            continue
        image = [image.resize((72, 72), Image.Resampling.LANCZOS), None,
                 image.transpose(Image.Transpose.ROTATE_90),
                 image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)][t % 4]
        image.save(folder / f"copy{t:02d}_{stem}.png")
        planted.append((source, f"copy{t:02d}_{stem}.png"))
    return planted


@pytest.mark.parametrize("seed", [0, 1])
def test_copies_on_black_skies_are_found_and_look_alikes_are_not(tmp_path: Path,
                                                                 seed: int) -> None:
    """Compact objects on a zeroed sky share their outline's high-pass signs; only the
    planted copies may be grouped (the sign test alone grouped 27 different objects)."""
    planted = _black_sky_set(tmp_path, seed)
    paths = sorted(tmp_path.iterdir())
    fingerprints = [fingerprint(p) for p in paths]
    thumbs = np.stack([f[2] for f in fingerprints])
    prints = Fingerprints(info=[f[0] for f in fingerprints],
                          phash=np.stack([f[1] for f in fingerprints]), thumbs=thumbs, bad={})
    # the thumbnails as embeddings: every look-alike becomes a candidate
    features = thumbs.reshape(len(paths), -1).astype(np.float32)
    _, groups = duplicates.find_duplicates(prints, features - features.mean(1, keepdims=True))
    names = [p.name for p in paths]

    def source(name: str) -> str:
        return name.split("_", 1)[1].rsplit(".", 1)[0] if name.startswith("copy") else \
            name.rsplit(".", 1)[0]

    assert all(len({source(names[m]) for m in g.members}) == 1 for g in groups)
    grouped = {frozenset(names[m] for m in g.members) for g in groups}
    assert grouped == {frozenset(pair) for pair in planted}
