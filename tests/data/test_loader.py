"""Epoch order, balanced sampling and shards of the training loader."""

from __future__ import annotations

from collections import Counter

import numpy as np

from skysort.data.loader import EpochSampler
from skysort.tasks import MulticlassTask


def test_balanced_sampling_draws_each_class_about_equally() -> None:
    targets = np.array([0] * 900 + [1] * 90 + [2] * 10)  # 90% / 9% / 1%
    weights = MulticlassTask(classes=["a", "b", "c"]).sample_weights(targets)
    sampler = EpochSampler(len(targets), seed=3, weights=weights)
    drawn = Counter(int(targets[i]) for i, _ in sampler)
    assert sum(drawn.values()) == len(targets)  # an epoch is still n draws
    for c in range(3):
        assert abs(drawn[c] / len(targets) - 1 / 3) < 0.05, drawn
    plain = Counter(int(targets[i]) for i, _ in EpochSampler(len(targets), seed=3))
    assert plain == Counter(targets.tolist())  # without weights: each image once


def test_epoch_order_is_fixed_by_seed_and_epoch() -> None:
    a, b = EpochSampler(50, seed=1), EpochSampler(50, seed=1)
    first = [i for i, _ in a]
    assert first == [i for i, _ in b]
    a.epoch = 1
    second = [i for i, _ in a]
    assert second != first and sorted(second) == sorted(first) == list(range(50))
    assert all(epoch == 1 for _, epoch in a)
    shares = [[i for i, _ in EpochSampler(51, seed=1, rank=r, world_size=2)] for r in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == 25 and not set(shares[0]) & set(shares[1])
