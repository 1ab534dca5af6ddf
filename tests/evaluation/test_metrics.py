from __future__ import annotations

import numpy as np

from skysort.evaluation.metrics import format_metrics
from skysort.tasks.multiclass import classification_metrics


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


def _auc_by_pairs(y: np.ndarray, p: np.ndarray) -> float:
    """ROC-AUC as the share of (positive, negative) pairs ranked right (ties count half)."""
    pos, neg = p[y == 1], p[y == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


def test_binary_metrics_lead_with_auc_beside_baselines() -> None:
    from skysort.tasks.binary import binary_metrics

    rng = np.random.default_rng(1)
    y = (rng.random(200) < 0.3).astype(int)
    p = np.clip(0.3 * y + rng.normal(0.35, 0.2, 200), 0, 1)
    m = binary_metrics(y, p, ["native", "invasive"], train_counts=[140, 60], threshold=0.5)
    assert np.isclose(m["model"]["roc_auc"], _auc_by_pairs(y, p))
    assert m["baseline"]["roc_auc"] == 0.5
    assert np.isclose(m["baseline"]["pr_auc"], y.mean())  # prevalence
    assert m["model"]["accuracy"] == np.mean((p >= 0.5) == y)
    assert m["baseline"]["class"] == "native"
    text = format_metrics(m)
    assert "ROC-AUC" in text and "PR-AUC" in text and "'invasive'" in text


def test_multilabel_macro_auc_skips_labels_with_one_value() -> None:
    from skysort.tasks.multilabel import multilabel_metrics

    rng = np.random.default_rng(2)
    y = np.stack([rng.integers(0, 2, 50), rng.integers(0, 2, 50), np.zeros(50, int)], axis=1)
    p = np.clip(y * 0.4 + rng.random((50, 3)) * 0.6, 0, 1)
    m = multilabel_metrics(y, p, ["bar", "ring", "never"])
    expected = np.mean([_auc_by_pairs(y[:, j], p[:, j]) for j in (0, 1)])
    assert np.isclose(m["model"]["macro_roc_auc"], expected)
    assert m["model"]["labels_with_auc"] == 2 and m["per_label"]["never"]["roc_auc"] is None


def test_fraction_rmse_per_column_and_question_beside_the_mean_predictor() -> None:
    from skysort.tasks.fractions import fraction_metrics
    from skysort.tasks.schema import TreeSchema

    schema = TreeSchema.from_dict({"questions": [
        {"name": "q1", "answers": ["a", "b"]}, {"name": "q2", "answers": ["c", "d"],
                                                "parent": "a"}]})
    truth = np.array([[0.8, 0.2, 0.5, 0.3], [0.4, 0.6, 0.1, 0.3]])
    pred = np.array([[0.7, 0.3, 0.4, 0.3], [0.5, 0.5, 0.2, 0.3]])
    mean = [0.6, 0.4, 0.3, 0.3]
    m = fraction_metrics(truth, pred, ["a", "b", "c", "d"], mean, schema)
    assert np.isclose(m["model"]["rmse"], np.sqrt(np.mean((pred - truth) ** 2)))
    assert np.isclose(m["baseline"]["rmse"], np.sqrt(np.mean((np.array(mean) - truth) ** 2)))
    assert np.isclose(m["per_column"]["d"]["rmse"], 0.0)
    assert np.isclose(m["per_question"]["q2"]["rmse"],
                      np.sqrt(np.mean((pred[:, 2:] - truth[:, 2:]) ** 2)))
    assert np.isclose(m["improvement_over_baseline"],
                      1 - m["model"]["rmse"] / m["baseline"]["rmse"])
    assert np.isclose(m["model"]["max_tree_error"], abs(0.4 + 0.3 - 0.7))


def test_galaxy_zoo_derived_classes() -> None:
    from skysort.tasks.fractions import derived_classes
    from skysort.tasks.schema import galaxy_zoo_schema

    columns = galaxy_zoo_schema().columns
    rows = np.zeros((4, 37))
    at = {c: j for j, c in enumerate(columns)}
    rows[0, at["Class1.1"]] = 0.92  # elliptical
    rows[1, [at["Class4.1"], at["Class3.2"]]] = 0.7  # spiral, no bar
    rows[2, [at["Class4.1"], at["Class3.1"]]] = 0.7  # barred spiral
    rows[3, at["Class1.1"]] = 0.7  # uncertain at 0.9, elliptical at 0.6
    assert derived_classes(rows, columns, 0.9).tolist() == [0, 3, 3, 3]
    assert derived_classes(rows, columns, 0.6).tolist() == [0, 1, 2, 0]
