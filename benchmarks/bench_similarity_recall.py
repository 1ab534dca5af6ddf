"""What the similarity index's speed costs: recall against exact search, on real photographs.

Usage::

    python benchmarks/bench_similarity_recall.py [--per-class 300] [--size 96] [--seed 0]

Makes crops of real photographs (``tests/inspection/real_photos.py``: the Hubble Ultra
Deep Field centred on large galaxies, on small compact objects, and a lunar surface
photograph; the field holds 74 large galaxies, so that class stops there), embeds them as
``skysort inspect`` does (the default backbone, a fresh cache), builds the
:class:`~skysort.inspection.similarity_index.SimilarityIndex` ``skysort inspect`` writes
(64 principal components, unit length) and asks it for the ``k`` nearest images of every
image. The baselines are exact searches, brute force in numpy on the full embeddings:
cosine similarity of the embeddings as they are, and of the embeddings less their mean
(the index centres them too, as principal components do). Prints recall@k against each
(the share of the exact ``k`` the index returns, mean over queries) and, as a check of
what a neighbour is worth, the share of neighbours of the query's own class.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from tests.inspection.real_photos import make_photo_set

from bench_train_predict import machine, versions


def exact_neighbours(features: np.ndarray, k: int) -> np.ndarray:
    """``(n, k)``: each row's ``k`` most cosine-similar rows (itself first), brute force."""
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    return np.argsort(-(unit @ unit.T), axis=1, kind="stable")[:, :k]


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, exact,
                                                                        strict=True)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"machine:  {machine()}")
    print(f"versions: {versions()}")
    work = Path(tempfile.mkdtemp(prefix="skysort-recall-"))
    os.environ["SKYSORT_CACHE"] = str(work / "cache")
    try:
        from skysort.config import TrainConfig
        from skysort.inspection.inspector import embed_like
        from skysort.inspection.similarity_index import SimilarityIndex

        root = make_photo_set(work / "data", args.per_class, args.size, args.seed)
        paths = sorted(root.glob("*/*.png"))
        classes = np.array([p.parent.name for p in paths])
        cfg = TrainConfig()
        features, bad, _, meta = embed_like(paths, cfg.backbone, cfg.weights, None,
                                            cfg.center_fraction)
        assert not bad, bad
        features = features.astype(np.float64)
        index = SimilarityIndex.build(features, [str(i) for i in range(len(paths))],
                                      list(classes), meta)
        names, counts = np.unique(classes, return_counts=True)
        mix = ", ".join(f"{c} {n}" for c, n in zip(names, counts, strict=True))
        print(f"data:     {len(paths)} crops of real photographs ({args.size} px, {mix}); "
              "embeddings "
              f"{features.shape[1]}-d ({meta['backbone']} at {meta['input_size']} px); index "
              f"{index.vectors.shape[1]} components")
        print(f"{'k':>3}  {'vs exact cosine':>15}  {'vs exact, centred':>17}  "
              f"{'own class: index':>16}  {'exact':>5}  {'centred':>7}")
        for k in (5, 12, 25):
            found = np.array([[int(m.path) for m in index.query(features[q], k + 1)]
                              for q in range(len(paths))])
            raw = exact_neighbours(features, k + 1)
            centred = exact_neighbours(features - features.mean(axis=0), k + 1)

            def own(near: np.ndarray) -> float:
                return float((classes[near[:, 1:]] == classes[:, None]).mean())

            # the query itself is every search's first answer; recall of the other k
            print(f"{k:>3}  {recall(found[:, 1:], raw[:, 1:]):>15.3f}  "
                  f"{recall(found[:, 1:], centred[:, 1:]):>17.3f}  {own(found):>16.3f}  "
                  f"{own(raw):>5.3f}  {own(centred):>7.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
