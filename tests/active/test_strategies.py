"""The selection rules of skysort.active.strategies, against independent computations."""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy.stats import entropy as scipy_entropy

from skysort.active.strategies import (
    STRATEGIES,
    Pool,
    badge,
    bald,
    binary_entropy,
    entropy,
    gradient_embeddings,
    grouped_entropy,
    kcenter_greedy,
    margin,
    select,
)


def _probs(rng: np.random.Generator, n: int, c: int) -> np.ndarray:
    return rng.dirichlet(np.ones(c) * 0.7, size=n)


def test_entropy_matches_scipy() -> None:
    p = _probs(np.random.default_rng(1), 50, 5)
    assert np.allclose(entropy(p), scipy_entropy(p, axis=1))


def test_entropy_of_certain_and_uniform() -> None:
    assert entropy(np.array([[1.0, 0.0, 0.0]]))[0] == pytest.approx(0.0)
    assert entropy(np.full((1, 4), 0.25))[0] == pytest.approx(np.log(4))


def test_margin() -> None:
    p = np.array([[0.5, 0.3, 0.2], [0.9, 0.05, 0.05], [0.4, 0.4, 0.2]])
    assert np.allclose(margin(p), [0.8, 0.15, 1.0])


def test_bald_by_hand_two_classes() -> None:
    # two passes that disagree: [0.9, 0.1] and [0.1, 0.9]; the mean is [0.5, 0.5]
    samples = np.array([[[0.9, 0.1]], [[0.1, 0.9]]])
    h_each = -(0.9 * np.log(0.9) + 0.1 * np.log(0.1))
    assert bald(samples)[0] == pytest.approx(np.log(2) - h_each)
    # passes that agree carry no information about the parameters
    same = np.array([[[0.5, 0.5]], [[0.5, 0.5]]])
    assert bald(same)[0] == pytest.approx(0.0)


def test_grouped_entropy_multilabel_and_questions() -> None:
    p = np.array([[0.5, 0.9, 0.2]])
    singles = [[0], [1], [2]]
    assert grouped_entropy(p, singles)[0] == pytest.approx(binary_entropy(p).sum())
    fractions = np.array([[0.6, 0.4, 0.2, 0.3, 0.5]])
    want = scipy_entropy([0.6, 0.4]) + scipy_entropy([0.2, 0.3, 0.5])
    assert grouped_entropy(fractions, [[0, 1], [2, 3, 4]])[0] == pytest.approx(want)


def test_kcenter_takes_the_farthest_from_labelled_first() -> None:
    x = np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [0.0, 5.0]])
    idx, dist = kcenter_greedy(x, np.array([[0.0, 0.0]]), 2)
    assert idx[0] == 2 and dist[0] == pytest.approx(10.0)
    assert idx[1] == 3


def test_kcenter_never_takes_a_copy_before_other_far_points() -> None:
    far = np.array([[100.0, 0.0]])
    x = np.concatenate([np.repeat(far, 20, axis=0), [[0.0, 3.0], [3.0, 0.0], [-3.0, 0.0]]])
    idx, _ = kcenter_greedy(x, np.zeros((1, 2)), 4)
    assert len(set(idx.tolist())) == 4
    assert sum(int(i) < 20 for i in idx[:4]) == 1  # one copy of the far point, then others


def test_kcenter_without_labelled() -> None:
    x = np.random.default_rng(0).normal(size=(30, 3))
    idx, _ = kcenter_greedy(x, None, 5)
    assert len(set(idx.tolist())) == 5


def test_gradient_embedding_by_hand() -> None:
    p = np.array([[0.7, 0.3]])
    x = np.array([[2.0, -1.0]])
    g = gradient_embeddings(p, x)
    assert np.allclose(g, [[(0.7 - 1) * 2, (0.7 - 1) * -1, 0.3 * 2, 0.3 * -1]])


def test_badge_distinct_and_covers_clusters() -> None:
    rng = np.random.default_rng(0)
    centres = np.eye(4) * 20
    x = np.concatenate([c + rng.normal(size=(50, 4)) for c in centres])
    probs = np.full((200, 3), 1 / 3)  # equally uncertain everywhere
    idx = badge(probs, x, 4, np.random.default_rng(1))
    assert len(set(idx.tolist())) == 4
    assert sorted({int(i) // 50 for i in idx}) == [0, 1, 2, 3]


def test_badge_more_than_distinct_points() -> None:
    x = np.ones((5, 2))
    idx = badge(np.full((5, 2), 0.5), x, 5, np.random.default_rng(0))
    assert sorted(idx.tolist()) == [0, 1, 2, 3, 4]


def _pool(n: int = 300, c: int = 4, seed: int = 0) -> Pool:
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, 8))
    emb[:100] = emb[0]  # a hundred copies of one confusing image
    probs = _probs(rng, n, c)
    probs[:100] = 1 / c
    samples = np.clip(probs[None] + rng.normal(scale=0.05, size=(5, n, c)), 1e-3, None)
    samples /= samples.sum(axis=2, keepdims=True)
    return Pool(probs, [list(range(c))], emb, rng.normal(size=(10, 8)), samples,
                [f"c{i}" for i in range(c)])


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_select_distinct_indices(strategy: str) -> None:
    pool = _pool()
    idx, scores, reasons = select(strategy, pool, 20, np.random.default_rng(0))
    assert len(idx) == len(scores) == len(reasons) == 20
    assert len(set(idx.tolist())) == 20
    assert all(0 <= i < 300 for i in idx)


def test_margin_kcenter_is_not_fifty_copies_of_one_image() -> None:
    pool = _pool()
    idx, scores, reasons = select("margin-kcenter", pool, 20)
    assert sum(int(i) < 100 for i in idx) <= 1  # the copies are the most uncertain
    picked, _, _ = select("random", pool, 20, np.random.default_rng(0))
    assert np.allclose(scores, margin(pool.probs[idx]))  # it ranks by margin
    assert scores.mean() > margin(pool.probs[picked]).mean()
    assert re.match(r"least sure \d+ of \d+: between", reasons[0])
    plain, _, _ = select("entropy", pool, 20)
    assert all(int(i) < 100 for i in plain)  # what it avoids


def test_default_alternates_margin_kcenter_with_random_picks() -> None:
    pool = _pool()
    idx, _, reasons = select("default", pool, 20, np.random.default_rng(3))
    assert len(set(idx.tolist())) == 20
    # every other image is what margin-kcenter picks for a batch of 10, in its order
    informed, _, _ = select("margin-kcenter", pool, 10)
    assert idx[0::2].tolist() == informed.tolist()
    assert all("unlike the labelled" in r for r in reasons[0::2])
    # the others are drawn at random from the rest of the pool
    assert all(r.startswith("random pick") for r in reasons[1::2])
    assert not set(idx[1::2].tolist()) & set(informed.tolist())
    others = [select("default", pool, 20, np.random.default_rng(seed))[0][1::2]
              for seed in range(30)]
    assert len({int(i) for o in others for i in o}) > 100  # spread, not a fixed choice
    odd, _, _ = select("default", pool, 5, np.random.default_rng(0))
    assert len(odd) == 5 and odd[0::2].tolist() == select("margin-kcenter", pool, 3)[0].tolist()


def test_select_more_than_pool_and_unknown() -> None:
    pool = _pool(n=5)
    idx, _, _ = select("default", pool, 50)
    assert sorted(idx.tolist()) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="strategy"):
        select("nope", pool, 2)


def test_multilabel_reason() -> None:
    probs = np.array([[0.5, 0.99], [0.99, 0.01]])
    pool = Pool(probs, [[0], [1]], np.eye(2), np.zeros((0, 2)), names=["ring", "bar"])
    idx, _, reasons = select("entropy", pool, 1)
    assert idx[0] == 0 and re.match(r"least sure 1 of \d+: ring: yes 0.50", reasons[0])


def _explicit_kmeans_pp(g: np.ndarray, n: int, rng: np.random.Generator) -> list[int]:
    """k-means++ seeding written out on explicit points (BADGE's first centre: the longest)."""
    chosen = [int(np.argmax(np.linalg.norm(g, axis=1)))]
    while len(chosen) < n:
        d2 = np.min([((g - g[c]) ** 2).sum(axis=1) for c in chosen], axis=0)
        d2[chosen] = 0.0
        chosen.append(int(rng.choice(len(g), p=d2 / d2.sum())))
    return chosen


def test_badge_equals_kmeans_pp_on_explicit_gradient_embeddings() -> None:
    rng = np.random.default_rng(3)
    probs, x = _probs(rng, 60, 3), rng.normal(size=(60, 5))
    want = _explicit_kmeans_pp(gradient_embeddings(probs, x), 8, np.random.default_rng(7))
    got = badge(probs, x, 8, np.random.default_rng(7))
    assert got.tolist() == want
