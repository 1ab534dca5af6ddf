"""Confident learning, checked against its definition on probabilities whose truth is known."""

from __future__ import annotations

import numpy as np

from skysort.inspection.label_errors import confident_learning, out_of_fold_probabilities


def test_confident_learning_by_the_definition() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    probs = np.array([[0.9, 0.05, 0.05], [0.7, 0.2, 0.1], [0.1, 0.8, 0.1],   # last: looks 1
                      [0.2, 0.7, 0.1], [0.1, 0.6, 0.3], [0.3, 0.4, 0.3],
                      [0.1, 0.1, 0.8], [0.5, 0.1, 0.4]])                     # last: looks 0
    found = confident_learning(labels, probs)
    # thresholds: mean self-confidence per given class
    assert np.allclose(found.thresholds, [(0.9 + 0.7 + 0.1) / 3, (0.7 + 0.6 + 0.4) / 3,
                                          (0.8 + 0.4) / 2])
    # image 2: p1 = 0.8 >= t1 = 0.567 and p0 = 0.1 < t0 -> confidently 1, given 0
    # image 7: p0 = 0.5 < t0 = 0.567 and p2 = 0.4 < t2 = 0.6 -> no confident class
    assert found.suggested.tolist() == [0, 0, 1, 1, 1, -1, 2, -1]
    assert found.suspected.tolist() == [False, False, True, False, False, False, False, False]
    assert found.joint.tolist() == [[2, 1, 0], [0, 2, 0], [0, 0, 1]]
    assert np.isclose(found.score[2], 0.1 / found.thresholds[0])
    assert found.ranking().tolist() == [2]
    # calibrated joint: row 0 holds 3 images, one third off the diagonal -> 1 error
    assert np.isclose(found.estimated_errors, 1.0)


def test_flipped_labels_are_found_in_simulated_embeddings() -> None:
    rng = np.random.default_rng(0)
    n, k = 600, 4
    truth = rng.integers(k, size=n)
    centres = rng.normal(0, 1, (k, 64))
    features = centres[truth] + rng.normal(0, 0.9, (n, 64))
    given = truth.copy()
    flipped = rng.choice(n, 30, replace=False)
    given[flipped] = (truth[flipped] + rng.integers(1, k, size=30)) % k
    probs = out_of_fold_probabilities(features, given, k)
    assert probs.shape == (n, k) and np.allclose(probs.sum(axis=1), 1)
    found = confident_learning(given, probs)
    top = set(found.ranking()[:60].tolist())
    assert len(top & set(flipped.tolist())) >= 0.6 * 30
    # the suggestion is the true class for most flipped images it catches
    caught = [i for i in flipped if found.suspected[i]]
    assert np.mean([found.suggested[i] == truth[i] for i in caught]) > 0.8
    assert 15 <= found.estimated_errors <= 60
