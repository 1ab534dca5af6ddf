"""Similar images: the index :func:`~skysort.inspection.similar.find_similar` searches.

:class:`SimilarityIndex` keeps each image's embedding reduced to :data:`DIMS` principal
components (fitted on at most :data:`PCA_SAMPLE` images) and scaled to unit length, so
cosine similarity is a dot product, and searches it exactly with scikit-learn's
``NearestNeighbors`` (brute force, in chunks). A million images take
``10**6 * DIMS * 4`` bytes = 256 MB, saved as one safetensors file beside a JSON list of
paths; ``skysort inspect`` writes it (``inspect/similar/``), and ``skysort similar``
answers a query from it in a fraction of a second.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from skysort.errors import RunError

#: Principal components kept per image.
DIMS = 64
#: Images the principal components are fitted on, at most.
PCA_SAMPLE = 20_000
VECTORS = "index.safetensors"
ENTRIES = "index.json"


@dataclass
class Match:
    """One image found near a query."""

    rank: int
    path: str
    label: str
    similarity: float


class SimilarityIndex:
    """Unit vectors of reduced embeddings, with each image's path and label.

    Args:
        vectors: ``(n, d)`` float32 unit rows.
        paths: ``n`` image paths; ``labels``: ``n`` labels (may be empty strings).
        mean, components: the PCA that maps a backbone embedding to a row.
        meta: how embeddings are made (backbone, weights, input size, embedding key), so a
            query image is embedded the same way.
    """

    def __init__(self, vectors: np.ndarray, paths: Sequence[str], labels: Sequence[str],
                 mean: np.ndarray, components: np.ndarray, meta: dict[str, Any]) -> None:
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.paths = list(paths)
        self.labels = list(labels)
        # C order: safetensors writes the raw buffer, and PCA's components are Fortran
        self.mean = np.ascontiguousarray(mean, dtype=np.float32)
        self.components = np.ascontiguousarray(components, dtype=np.float32)
        self.meta = meta
        self._knn: Any = None

    def __len__(self) -> int:
        return len(self.paths)

    @classmethod
    def build(cls, features: np.ndarray, paths: Sequence[str], labels: Sequence[str],
              meta: dict[str, Any], dims: int = DIMS, seed: int = 0) -> SimilarityIndex:
        """Fits the reduction on (a sample of) ``features`` and indexes every row."""
        from sklearn.decomposition import PCA

        features = np.asarray(features, dtype=np.float32)
        rng = np.random.default_rng(seed)
        sample = features if len(features) <= PCA_SAMPLE else \
            features[rng.choice(len(features), PCA_SAMPLE, replace=False)]
        k = int(max(1, min(dims, len(sample) - 1, features.shape[1])))
        pca = PCA(n_components=k, random_state=seed).fit(sample)
        index = cls(np.zeros((0, k), np.float32), paths, labels, pca.mean_, pca.components_,
                    meta)
        index.vectors = np.concatenate([index.reduce(features[s:s + 65536])
                                        for s in range(0, len(features), 65536)])
        return index

    def reduce(self, features: np.ndarray) -> np.ndarray:
        """Backbone embeddings -> unit rows of the index's space."""
        x = (np.asarray(features, dtype=np.float32) - self.mean) @ self.components.T
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)

    def query(self, features: np.ndarray, k: int = 12) -> list[Match]:
        """The ``k`` images nearest to one backbone embedding, most similar first."""
        k = min(k, len(self))
        if k == 0:
            return []
        if self._knn is None:
            from sklearn.neighbors import NearestNeighbors

            self._knn = NearestNeighbors(algorithm="brute").fit(self.vectors)
        dist, near = self._knn.kneighbors(self.reduce(features[None]), n_neighbors=k)
        return [Match(rank + 1, self.paths[j], self.labels[j], float(1 - d * d / 2))
                for rank, (d, j) in enumerate(zip(dist[0], near[0], strict=True))]

    def save(self, folder: str | Path) -> Path:
        """Writes the vectors and the paths, each whole or not at all, under one token that
        :meth:`load` checks: vectors of one index never pair with the paths of another."""
        from safetensors.numpy import save

        from skysort.rundir import atomic_write

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        atomic_write(folder / VECTORS, save(
            {"vectors": self.vectors, "mean": self.mean, "components": self.components},
            metadata={"token": token}))
        atomic_write(folder / ENTRIES, json.dumps(
            {"token": token, "meta": self.meta, "paths": self.paths, "labels": self.labels},
            ensure_ascii=False).encode("utf-8", "surrogateescape"))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> SimilarityIndex:
        from safetensors import safe_open
        from safetensors.numpy import load_file

        folder = Path(folder)
        try:
            arrays = load_file(str(folder / VECTORS))
            with safe_open(str(folder / VECTORS), framework="numpy") as fh:
                token = (fh.metadata() or {}).get("token")
            entries = json.loads((folder / ENTRIES).read_text(encoding="utf-8",
                                                              errors="surrogateescape"))
            vectors, paths = arrays["vectors"], entries["paths"]
            if len(vectors) != len(paths) or token != entries.get("token"):
                raise ValueError(f"{len(vectors)} vectors and {len(paths)} paths written by "
                                 "different runs")
        except (OSError, ValueError, KeyError) as exc:
            raise RunError(f"{folder}: not a readable similarity index ({exc}); run skysort "
                           "inspect again to rebuild it") from exc
        return cls(vectors, paths, entries.get("labels") or [""] * len(paths), arrays["mean"],
                   arrays["components"], entries.get("meta", {}))
