"""Exact and near duplicates, grouped, and the groups that leak across splits or classes.

* **Exact**: the same decoded pixels (a file copied, or saved again in a lossless format
  with other metadata): equal pixel digests of :mod:`~skysort.inspection.fingerprints`.
* **Near**: the same object resized, re-encoded, turned by 90 degrees or mirrored.
  Candidate pairs come from two signals: each image's nearest neighbours by cosine
  similarity of the backbone embeddings, and pairs whose perceptual hashes, over the
  eight rotations and flips, differ in few bits. A candidate is confirmed by the fine
  structure of the two images: the sign correlation of their 32 x 32 grey thumbnails
  after a high-pass filter (each pixel minus a Gaussian blur of 1 pixel: above, below or
  flat), at the best of the eight alignments. Two copies of one cutout share its noise
  and its texture pixel by pixel; two distinct galaxies of the same shape share only
  their smooth light and a few pixels of their cores, and signs count every pixel alike,
  so a bright core cannot dominate. Measured on simulated galaxies (2,039 cutouts of
  128 px, and 340 of 96 px; copies resized to 3/4, re-encoded at JPEG quality 60-92,
  turned, mirrored): copies at 0.51-1.0, every one of the 2.05 million distinct pairs
  at most 0.31. Embeddings and hashes alone cannot tell copies from look-alikes on
  noisy cutouts: a re-encoded JPEG of a galaxy can sit at cosine 0.5 from its original
  while distinct galaxies reach 0.99, a third of all pairs of faint galaxies have hashes
  within 10 bits, and a plain (Pearson) correlation of the same thumbnails let 947 pairs
  of look-alike compact galaxies through where 39 copies were planted.

Pairs join into groups (connected components); a group is flagged when its images lie
in more than one split (leakage: the test split is not unseen) or carry more than one
label (conflicting labels).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from skysort.inspection.fingerprints import THUMB, Fingerprints, dihedral

#: Embedding neighbours of each image that are checked as near-duplicate candidates.
NEIGHBOURS = 10
#: Perceptual hashes (64 bits) this close, at the best rotation/flip, make a candidate.
MAX_HAMMING = 8
#: High-pass thumbnail correlation that confirms a candidate as a near-duplicate.
MIN_STRUCTURE = 0.4
#: High-pass values within this many grey levels of zero count as flat.
FLAT = 0.25
#: Below this share of textured (non-flat) thumbnail pixels, an image is a compact object
#: on a flat or clipped sky, whose high-pass signs see little but the object's outline:
#: any two such objects of a similar size share it. There a candidate must also match
#: pixel by pixel: the RMS difference of the two thumbnails, at the best of the eight
#: alignments, at most this share of their grey range. Measured on crops of the Hubble
#: Deep Field with the sky clipped to black: copies re-encoded (JPEG 70), turned,
#: mirrored or resized to 3/4 at most 0.020; distinct objects that passed the sign test
#: at least 0.025 (``tests/inspection/test_duplicates.py``).
MIN_TEXTURE_SHARE = 0.5
MAX_FLAT_SKY_DIFFERENCE = 0.022
#: Above this many images the all-pairs hash comparison is skipped (it grows as n^2);
#: candidates then come from the embeddings alone.
HASH_PAIRS_LIMIT = 50_000
#: Candidate pairs from hashes, at most (per image: this over the number of images, and
#: never fewer than 100 of its closest hashes).
HASH_CANDIDATES = 5_000_000


@dataclass
class DuplicatePair:
    """Two images found to be copies; ``structure`` is 1 for exact copies."""

    i: int
    j: int
    match: str  # "exact" or "near"
    cosine: float
    hamming: int
    structure: float


@dataclass
class DuplicateGroup:
    """Images that are copies of one another (through pairs), in index order."""

    members: list[int]
    match: str  # "exact" when every pair is, else "near"
    splits: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    @property
    def spans_splits(self) -> bool:
        return len(set(self.splits)) > 1

    @property
    def spans_labels(self) -> bool:
        return len(set(self.labels)) > 1


_BITS = np.array([bin(v).count("1") for v in range(256)], dtype=np.uint8)


def popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (NumPy 2's ``bitwise_count``, else by a byte table)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    x = np.ascontiguousarray(x, dtype=np.uint64)
    return _BITS[x.view(np.uint8)].reshape(*x.shape, 8).sum(-1, dtype=np.uint8)


def structure_signs(thumbs: np.ndarray) -> np.ndarray:
    """The sign of each pixel of the high-pass thumbnails, in all eight rotations and
    flips, as bit planes: ``(n, 8, 2, THUMB * THUMB // 64)`` uint64, plane 0 where the
    pixel is above its blurred surround, plane 1 where it is below (a flat pixel is in
    neither, so blank sky agrees with nothing)."""
    grey = thumbs.astype(np.float32)
    high = grey - gaussian_filter(grey, sigma=(0, 1.0, 1.0), mode="reflect")
    n = len(thumbs)
    out = np.empty((n, 8, 2, THUMB * THUMB // 64), dtype=np.uint64)
    for t, view in enumerate(dihedral(high, axes=(1, 2))):
        flat = np.ascontiguousarray(view).reshape(n, -1)
        for plane, bits in enumerate((flat > FLAT, flat < -FLAT)):
            out[:, t, plane] = np.packbits(bits, axis=1).view(np.uint64)
    return out


def structure_similarity(signs: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Sign correlation of the high-pass thumbnails of pairs ``(i, j)``, at the best of the
    eight rotations and flips of ``j``: pixels of equal sign minus pixels of opposite
    sign, over the geometric mean of the two images' non-flat pixels (1 for a copy,
    about 0 for unrelated images)."""
    out = []
    count = popcount
    for start in range(0, len(i), 8192):
        a = signs[i[start:start + 8192], 0][:, None]  # (p, 1, 2, w)
        b = signs[j[start:start + 8192]]  # (p, 8, 2, w)
        same = count(a[:, :, 0] & b[:, :, 0]).sum(-1, dtype=np.int64) + \
            count(a[:, :, 1] & b[:, :, 1]).sum(-1, dtype=np.int64)
        other = count(a[:, :, 0] & b[:, :, 1]).sum(-1, dtype=np.int64) + \
            count(a[:, :, 1] & b[:, :, 0]).sum(-1, dtype=np.int64)
        size_a = count(a).sum((-1, -2), dtype=np.int64).astype(np.float64)
        size_b = count(b[:, :1]).sum((-1, -2), dtype=np.int64).astype(np.float64)
        norm = np.sqrt(size_a * size_b)
        corr = np.divide((same - other).astype(np.float64), norm, out=np.zeros(same.shape),
                         where=norm > 0)
        out.append(corr.max(axis=1))
    return np.concatenate(out) if out else np.zeros(0)


def texture_share(thumbs: np.ndarray) -> np.ndarray:
    """Per thumbnail, the share of its pixels that are not flat after the high-pass."""
    grey = thumbs.astype(np.float32)
    high = grey - gaussian_filter(grey, sigma=(0, 1.0, 1.0), mode="reflect")
    return (np.abs(high) > FLAT).mean(axis=(1, 2))


def thumbnail_difference(thumbs: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """RMS difference of thumbnails ``i`` and ``j`` at the best of the eight rotations and
    flips of ``j``, over the larger grey range of the two."""
    a, b = thumbs[i].astype(np.float32), thumbs[j].astype(np.float32)
    if not len(a):
        return np.zeros(0)
    rms = np.min([np.sqrt(((a - view) ** 2).mean(axis=(1, 2)))
                  for view in dihedral(b, axes=(1, 2))], axis=0)
    spread = np.maximum(np.ptp(a, axis=(1, 2)), np.ptp(b, axis=(1, 2)))
    return rms / np.maximum(spread, 1.0)


def hash_distance(phash: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Bits by which image ``i``'s hash differs from the closest of ``j``'s eight."""
    return popcount(phash[i, :1] ^ phash[j]).min(axis=1).astype(np.int64)


def _hash_candidates(phash: np.ndarray, valid: np.ndarray, max_hamming: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Per image, its closest hashes (at the best rotation/flip) within ``max_hamming``
    bits, at most :data:`HASH_CANDIDATES` pairs in all: look-alike faint galaxies can put
    thousands of images within a few bits of each other, and memory must not grow as
    n^2 (2,000 images keep every pair; 50,000 keep each image's 100 closest)."""
    rows, cols = [], []
    index = np.flatnonzero(valid)
    k = max(100, HASH_CANDIDATES // max(1, len(index)))
    others = phash[index].T[None]  # (1, 8, m)
    step = max(1, 4_000_000 // (8 * len(index) + 1))  # about 32 MB of hash bits a block
    keep_k = min(k + 1, len(index))
    for start in range(0, len(index), step):
        block = index[start:start + step]
        dist = popcount(phash[block, :1, None] ^ others).min(axis=1).astype(np.int16)
        near = np.argpartition(dist, keep_k - 1, axis=1)[:, :keep_k]  # (b, k + 1)
        close = np.take_along_axis(dist, near, axis=1) <= max_hamming
        a = np.repeat(np.arange(len(block)), keep_k)[close.ravel()]
        b = near.ravel()[close.ravel()]
        rows.append(block[a])
        cols.append(index[b])
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(rows), np.concatenate(cols)


def _neighbour_candidates(unit: np.ndarray, valid: np.ndarray, k: int
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Each valid image's ``k`` nearest by cosine (``unit``: embeddings of unit length)."""
    from sklearn.neighbors import NearestNeighbors

    index = np.flatnonzero(valid)
    if len(index) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    knn = NearestNeighbors(n_neighbors=min(k + 1, len(index))).fit(unit[index])
    _, near = knn.kneighbors(unit[index])
    rows = np.repeat(index, near.shape[1])
    cols = index[near.ravel()]
    return rows, cols


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def confirm_copies(prints: Fingerprints, first: np.ndarray, second: np.ndarray,
                   min_structure: float = MIN_STRUCTURE, max_hamming: int = MAX_HAMMING
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which candidate pairs ``(first[k], second[k])`` (rows of ``prints``) are copies by
    their fine structure (see the module doc), with each pair's structure similarity (0
    where the hashes differ too much to need it) and hash distance:
    ``(confirmed, structure, hamming)``."""
    hamming = hash_distance(prints.phash, first, second)
    structure = np.zeros(len(first), dtype=np.float64)
    confirmed = hamming <= max_hamming + 2  # cheap first: the structure only where it passes
    near = np.flatnonzero(confirmed)
    if not len(near):
        return confirmed, structure, hamming
    pairs = np.stack([first[near], second[near]], axis=1)
    # signs only for the images in a candidate pair (2 KB each)
    needed, position = np.unique(pairs, return_inverse=True)
    at = position.reshape(pairs.shape)
    structure[near] = structure_similarity(structure_signs(prints.thumbs[needed]), at[:, 0],
                                           at[:, 1])
    ok = structure[near] >= min_structure
    thumbs = prints.thumbs[needed].astype(np.float32)
    flat_sky = texture_share(thumbs)[at].min(axis=1) < MIN_TEXTURE_SHARE
    check = np.flatnonzero(ok & flat_sky)
    ok[check] = thumbnail_difference(thumbs, at[check, 0], at[check, 1]) <= \
        MAX_FLAT_SKY_DIFFERENCE
    confirmed[near] = ok
    return confirmed, structure, hamming


def find_duplicates(prints: Fingerprints, features: np.ndarray, *,
                    splits: Sequence[str] | None = None, labels: Sequence[str] | None = None,
                    neighbours: int = NEIGHBOURS, max_hamming: int = MAX_HAMMING,
                    min_structure: float = MIN_STRUCTURE
                    ) -> tuple[list[DuplicatePair], list[DuplicateGroup]]:
    """Exact and near-duplicate pairs, and their groups (see the module doc).

    Args:
        prints: fingerprints of the ``n`` images (unreadable ones are left out).
        features: ``(n, d)`` embeddings.
        splits: each image's split, to flag groups that span splits.
        labels: each image's label (a class name, or any text), to flag conflicts.

    Returns:
        ``(pairs, groups)``: pairs sorted by index; groups of two or more images, sorted
        by their first member.
    """
    n = len(prints.info)
    valid = np.array([bool(info) for info in prints.info], dtype=bool)
    pairs: dict[tuple[int, int], DuplicatePair] = {}
    unit = normalize_rows(features.astype(np.float32))
    by_pixels: dict[object, list[int]] = {}
    for i in np.flatnonzero(valid):
        by_pixels.setdefault(prints.info[i]["pixels"], []).append(int(i))
    for members in by_pixels.values():
        for j in members[1:]:
            pairs[(members[0], j)] = DuplicatePair(members[0], j, "exact",
                                                   float(unit[members[0]] @ unit[j]), 0, 1.0)
    rows, cols = _neighbour_candidates(unit, valid, neighbours)
    if n <= HASH_PAIRS_LIMIT:
        hash_rows, hash_cols = _hash_candidates(prints.phash, valid, max_hamming)
        rows, cols = np.concatenate([rows, hash_rows]), np.concatenate([cols, hash_cols])
    low, high = np.minimum(rows, cols), np.maximum(rows, cols)
    digest = {key: i for i, key in enumerate(by_pixels)}
    pixels = np.array([digest.get(info.get("pixels"), -1 - i)
                       for i, info in enumerate(prints.info)], dtype=np.int64)
    keep = pixels[low] != pixels[high]  # exact copies are joined already
    candidates = np.unique(np.stack([low[keep], high[keep]], axis=1), axis=0)
    if len(candidates):
        first, second = candidates[:, 0], candidates[:, 1]
        confirmed, structure, hamming = confirm_copies(prints, first, second, min_structure,
                                                       max_hamming)
        for a, b, s, h in zip(first[confirmed], second[confirmed], structure[confirmed],
                              hamming[confirmed], strict=True):
            pairs.setdefault((int(a), int(b)), DuplicatePair(
                int(a), int(b), "near", float(unit[a] @ unit[b]), int(h), float(s)))
    found = sorted(pairs.values(), key=lambda p: (p.i, p.j))
    return found, group_pairs(found, n, splits, labels)


def group_pairs(pairs: Sequence[DuplicatePair], n: int, splits: Sequence[str] | None = None,
                labels: Sequence[str] | None = None) -> list[DuplicateGroup]:
    """Connected groups of the images that ``pairs`` join."""
    if not pairs:
        return []
    i = np.array([p.i for p in pairs])
    j = np.array([p.j for p in pairs])
    graph = coo_matrix((np.ones(len(pairs)), (i, j)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    near = {int(component[p.i]) for p in pairs if p.match == "near"}
    members: dict[int, list[int]] = {}
    for index in sorted(set(i.tolist()) | set(j.tolist())):
        members.setdefault(int(component[index]), []).append(index)
    groups = []
    for label, group in members.items():
        groups.append(DuplicateGroup(
            members=group, match="near" if label in near else "exact",
            splits=[splits[m] for m in group] if splits is not None else [],
            labels=[labels[m] for m in group] if labels is not None else []))
    return sorted(groups, key=lambda g: g.members[0])


def keep_groups_together(groups: Sequence[DuplicateGroup], splits: Sequence[str]) -> list[str]:
    """``splits`` with every group moved whole into the split of its first member (by
    index, so the same data always moves the same way): no copy of a test image is left
    in training."""
    out = list(splits)
    for group in groups:
        for member in group.members[1:]:
            out[member] = out[group.members[0]]
    return out
