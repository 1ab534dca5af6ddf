"""The similarity index: exact cosine neighbours in the reduced space, saved and loaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from skysort.inspection.similarity_index import SimilarityIndex


def test_index_finds_exact_neighbours_and_survives_a_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    # 2,000 embeddings around 20 centres, in 256 dimensions (few directions matter)
    centres = rng.normal(size=(20, 256)) * np.linspace(3, 0.1, 256)
    features = (centres[rng.integers(20, size=2000)] + rng.normal(0, 0.3, (2000, 256))
                ).astype(np.float32)
    paths = [f"img{i:04d}.png" for i in range(2000)]
    index = SimilarityIndex.build(features, paths, [str(i % 7) for i in range(2000)],
                                  {"backbone": "b"}, dims=32)
    assert index.vectors.shape == (2000, 32)
    assert np.allclose(np.linalg.norm(index.vectors, axis=1), 1, atol=1e-5)
    reduced = index.reduce(features)
    for q in (0, 17, 1999):
        expected = np.argsort(-(reduced @ reduced[q]), kind="stable")[:5]
        found = index.query(features[q], k=5)
        assert found[0].path == paths[q] and found[0].similarity > 0.9999
        assert {m.path for m in found} == {paths[i] for i in expected}
        assert [m.rank for m in found] == [1, 2, 3, 4, 5]
        sims = [m.similarity for m in found]
        assert sims == sorted(sims, reverse=True)
        assert np.allclose(sims, np.sort(reduced @ reduced[q])[::-1][:5], atol=1e-5)
    index.save(tmp_path / "idx")
    loaded = SimilarityIndex.load(tmp_path / "idx")
    assert np.array_equal(loaded.vectors, index.vectors)
    assert np.array_equal(loaded.components, index.components)
    assert loaded.paths == paths and loaded.labels[8] == "1" and loaded.meta == {"backbone": "b"}
    assert [m.path for m in loaded.query(features[17], 5)] == \
        [m.path for m in index.query(features[17], 5)]
