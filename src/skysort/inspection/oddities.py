"""Oddities: the images farthest from their neighbours in embedding space, and a 2-D map.

An image's oddity is the mean cosine distance to its ``k`` nearest other images (exact
copies of it left out, so a blank frame saved twice is still odd). Artefacts, blank or
noise frames, and the rare objects astronomers look for all sit far from the crowd.

The map is t-SNE (scikit-learn) of the embeddings' first 50 principal components, or
the first two components alone for more than :data:`TSNE_LIMIT` images.
"""

from __future__ import annotations

import numpy as np

from skysort.inspection.duplicates import normalize_rows

#: Neighbours whose mean distance is an image's oddity.
NEIGHBOURS = 5
#: Above this many images the map is PCA rather than t-SNE (seconds, not minutes).
TSNE_LIMIT = 10_000


def oddity_scores(features: np.ndarray, valid: np.ndarray, pixel_keys: list[object] | None = None,
                  k: int = NEIGHBOURS) -> np.ndarray:
    """Mean cosine distance of each valid image to its ``k`` nearest other images (NaN for
    the invalid ones); images with the same ``pixel_keys`` entry are not neighbours."""
    from sklearn.neighbors import NearestNeighbors

    out = np.full(len(features), np.nan)
    index = np.flatnonzero(valid)
    if len(index) < 2:
        return out
    unit = normalize_rows(features[index].astype(np.float32))
    want = min(len(index) - 1, k)
    keys = [pixel_keys[i] for i in index] if pixel_keys is not None else list(range(len(index)))
    copies = max(np.unique(np.array([str(key) for key in keys]), return_counts=True)[1])
    knn = NearestNeighbors(n_neighbors=min(len(index), want + copies)).fit(unit)
    dist, near = knn.kneighbors(unit)
    for row, (d, nb) in enumerate(zip(dist, near, strict=True)):
        others = [x ** 2 / 2 for x, j in zip(d, nb, strict=True) if keys[j] != keys[row]]
        out[index[row]] = float(np.mean(others[:want])) if others else 0.0
    return out


def embedding_map(features: np.ndarray, seed: int = 0) -> tuple[np.ndarray, str]:
    """``((n, 2) coordinates, method)`` for the valid rows given."""
    from sklearn.decomposition import PCA

    n = len(features)
    if n < 3:
        return np.zeros((n, 2)), "none"
    reduced = PCA(n_components=min(50, n - 1, features.shape[1]),
                  random_state=seed).fit_transform(features.astype(np.float32))
    if n > TSNE_LIMIT or n < 10:
        return reduced[:, :2], "PCA"
    from sklearn.manifold import TSNE

    coords = TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3), init="pca",
                  random_state=seed).fit_transform(reduced)
    return coords, "t-SNE"


def spread_points(coords: np.ndarray, count: int) -> list[int]:
    """``count`` indices of points spread over the map (farthest-point sampling)."""
    if len(coords) == 0:
        return []
    chosen = [int(np.argmin(np.linalg.norm(coords - coords.mean(axis=0), axis=1)))]
    dist = np.linalg.norm(coords - coords[chosen[0]], axis=1)
    while len(chosen) < min(count, len(coords)):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(coords - coords[nxt], axis=1))
    return chosen
