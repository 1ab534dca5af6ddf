"""Similar images: the nearest images to a query by embedding, at survey scale.

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


def load_or_build_index(source: str | Path, config: Any = None) -> SimilarityIndex:
    """The similarity index of ``source``: an inspection folder (``skysort inspect``
    writes ``similar/``), a run directory (its images, embedded as it was trained), or
    data (anything ``skysort train`` reads; embedded through the cache)."""
    from skysort.config import TrainConfig
    from skysort.data.dataset import open_dataset
    from skysort.data.split import describe_target
    from skysort.inspection.inspector import SIMILAR_DIR, embed_like
    from skysort.rundir import CONFIG, SPLIT

    source = Path(source)
    for folder in (source / SIMILAR_DIR, source):
        if (folder / VECTORS).is_file():
            return SimilarityIndex.load(folder)
    if not source.exists():
        raise RunError(f"{source}: not found (give an inspection folder, a run directory or "
                       "image data)")
    cfg = config or TrainConfig()
    if (source / CONFIG).is_file() and (source / SPLIT).is_file():  # a run directory
        from skysort.data.split import read_split_csv

        run_cfg = TrainConfig.from_yaml(source / CONFIG)  # its backbone and input size
        root = Path(run_cfg.data_root or ".")
        rows = read_split_csv(source / SPLIT)
        paths = [root / r["path"] for r in rows]
        labels = [r["label"] for r in rows]
        features, bad, _, meta = embed_like(paths, run_cfg.backbone, run_cfg.weights,
                                         run_cfg.input_size, run_cfg.center_fraction,
                                         cfg.cache_dir, cfg.workers)
    else:  # data: embedded as inspect and train embed it, so the cache serves all three
        from skysort.inspection.inspector import _split, embed_dataset

        cfg = cfg.updated({"data": str(source)})
        dataset = open_dataset(cfg.data_spec())
        paths = list(dataset.paths)
        labels = [describe_target(dataset, i) for i in range(len(dataset))]
        features, bad, _, meta = embed_dataset(cfg, dataset,
                                               _split(dataset, cfg)[0].count("train"))
    keep = [i for i in range(len(paths)) if i not in bad]
    if len(keep) < 2:
        raise RunError(f"{source}: fewer than two readable images to search")
    return SimilarityIndex.build(features[keep], [str(paths[i]) for i in keep],
                                 [labels[i] for i in keep], meta)


def find_similar(source: str | Path, query: str | Path, k: int = 12, *,
                 cache_dir: str | None = None, html: str | Path | None = None,
                 config: Any = None) -> list[Match]:
    """The ``k`` images of ``source`` most like the image ``query`` (see
    :func:`load_or_build_index` for what ``source`` may be); ``html``: also write them as
    a page with thumbnails.

    Raises:
        ImageError: the query image cannot be read.
    """
    from skysort.data.images import load_image
    from skysort.errors import ConfigError

    if k < 1:
        raise ConfigError(f"k={k}: ask for at least one similar image")
    from skysort.inspection.inspector import embed_like

    load_image(query)  # a clear error for an unreadable query, before any work
    if config is None:
        from skysort.config import TrainConfig

        config = TrainConfig(cache_dir=cache_dir)
    index = load_or_build_index(source, config)
    meta = index.meta
    features, bad, _, _ = embed_like([Path(query)], meta["backbone"], meta.get("weights", "auto"),
                                  meta.get("input_size"), meta.get("center_fraction", 1.0),
                                  cache_dir, workers=0)
    if bad:
        from skysort.errors import ImageError

        raise ImageError(f"{query}: {bad[0]}")
    matches = index.query(features[0], k)
    if html is not None:
        _write_page(Path(html), Path(query), matches, source)
    return matches


def _write_page(output: Path, query: Path, matches: list[Match], source: str | Path) -> Path:
    from skysort.evaluation.render import render, thumbnail_uri

    items = [{"path": m.path, "uri": thumbnail_uri(m.path), "label": m.label, "split": "",
              "caption": f"#{m.rank} · {m.similarity:.3f} · {m.label}"} for m in matches]
    return render("similar.html.j2", {"title": f"skysort similar: {query.name}",
                                      "query": {"path": str(query),
                                                "uri": thumbnail_uri(query, 160)},
                                      "source": str(source), "matches": items}, output)
