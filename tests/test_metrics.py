from __future__ import annotations

import numpy as np

from skysort.metrics import classification_metrics, format_metrics


def _onehot(pred: list[int], k: int) -> np.ndarray:
    return np.eye(k)[pred]


def test_scores_and_majority_baseline_beside_them() -> None:
    classes = ["a", "b", "c"]
    y_true = [0, 0, 0, 0, 1, 1, 2, 2]
    y_pred = [0, 0, 0, 1, 1, 1, 2, 0]
    m = classification_metrics(y_true, _onehot(y_pred, 3), classes, train_counts=[50, 30, 20])
    # accuracy: 6 of 8 right; recall per class: 3/4, 2/2, 1/2.
    assert m["model"]["accuracy"] == 6 / 8
    assert np.isclose(m["model"]["balanced_accuracy"], (3 / 4 + 1 + 1 / 2) / 3)
    # The baseline always answers 'a' (most frequent in training): right 4 times of 8,
    # recall 1 for 'a' and 0 for the others.
    assert m["baseline"]["class"] == "a"
    assert m["baseline"]["accuracy"] == 4 / 8
    assert np.isclose(m["baseline"]["balanced_accuracy"], 1 / 3)
    assert m["confusion_matrix"] == [[3, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["per_class"]["b"]["precision"] == 2 / 3
    assert m["per_class"]["c"]["support"] == 2
    assert m["warnings"] == []


def test_a_model_that_calls_everything_the_majority_class_is_flagged() -> None:
    """The HiRISE failure: 82% 'other', a model that answers 'other' every time."""
    classes = ["crater", "dark dune", "other", "spider"]
    y_true = [2] * 82 + [0] * 8 + [1] * 6 + [3] * 4
    m = classification_metrics(y_true, _onehot([2] * 100, 4), classes)
    assert m["model"]["accuracy"] == 0.82  # looks good...
    assert m["model"]["balanced_accuracy"] == 0.25  # ...and is no better than chance
    text = " ".join(m["warnings"])
    assert "MODEL COLLAPSE" in text and "NOT BETTER THAN THE BASELINE" in text
    assert "!! WARNING: MODEL COLLAPSE" in format_metrics(m)


def test_a_good_model_on_imbalanced_data_is_not_flagged() -> None:
    classes = ["rare", "common"]
    y_true = [0] * 10 + [1] * 90
    y_pred = [0] * 9 + [1] + [1] * 89 + [0]
    m = classification_metrics(y_true, _onehot(y_pred, 2), classes)
    assert m["model"]["balanced_accuracy"] > 0.9
    assert m["warnings"] == []


def test_slightly_better_than_baseline_is_not_clearly_better() -> None:
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 2, 40)
    y_pred = np.where(rng.random(40) < 0.55, y_true, 1 - y_true)  # near coin flips
    m = classification_metrics(y_true, _onehot(list(y_pred), 2), ["x", "y"])
    assert any("NOT BETTER THAN THE BASELINE" in w for w in m["warnings"])


def test_report_table_shows_model_and_baseline_columns() -> None:
    m = classification_metrics([0, 1, 1], _onehot([0, 1, 1], 2), ["star", "galaxy"])
    text = format_metrics(m, title="test")
    assert "baseline" in text and "balanced accuracy" in text
    assert "galaxy" in text and "confusion matrix" in text
