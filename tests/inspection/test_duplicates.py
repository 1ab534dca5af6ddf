"""The duplicate signals on arrays whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from skysort.inspection import duplicates
from skysort.inspection.fingerprints import dihedral


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
