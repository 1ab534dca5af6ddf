"""Task kinds: losses, class weights, predicted classes, each checked against numbers
worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from skysort.errors import ConfigError
from skysort.tasks import (
    BinaryTask,
    FractionsTask,
    MulticlassTask,
    MultiLabelTask,
    TreeSchema,
    make_task,
    single_label_kinds,
    task_from_dict,
)


def test_class_weights_are_n_over_k_times_count_and_zero_for_absent_classes() -> None:
    task = MulticlassTask(classes=["a", "b", "c"])
    weights = task.class_weights(np.array([0, 0, 0, 1]))
    # n = 4, k = 3: 4 / (3 * 3), 4 / (3 * 1), and no images of c.
    np.testing.assert_allclose(weights, [4 / 9, 4 / 3, 0.0], rtol=1e-6)


def test_multiclass_loss_is_class_weighted_cross_entropy() -> None:
    task = MulticlassTask(classes=["a", "b"])
    train = np.array([0, 0, 0, 1])  # weights 4/6 and 4/2
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    targets = task.target_tensor(np.array([0, 1]))
    loss = float(task.loss_fn(train, "weights")(logits, targets))
    nll_a = -math.log(math.exp(2) / (math.exp(2) + 1))
    nll_b = -math.log(math.exp(1) / (math.exp(1) + 1))
    w_a, w_b = 4 / 6, 4 / 2
    assert loss == pytest.approx((w_a * nll_a + w_b * nll_b) / (w_a + w_b), rel=1e-6)
    plain = float(task.loss_fn(train, "none")(logits, targets))
    assert plain == pytest.approx((nll_a + nll_b) / 2, rel=1e-6)


def test_binary_loss_weights_positives_by_negatives_over_positives() -> None:
    task = BinaryTask(classes=["no", "yes"])
    train = np.array([0, 0, 0, 1])  # pos_weight = 3
    logits = torch.tensor([[0.5], [-1.0]])
    targets = task.target_tensor(np.array([1, 0]))
    loss = float(task.loss_fn(train, "weights")(logits, targets))

    def sig(x: float) -> float:
        return 1 / (1 + math.exp(-x))

    expected = (-3 * math.log(sig(0.5)) - math.log(1 - sig(-1.0))) / 2
    assert loss == pytest.approx(expected, rel=1e-6)
    smoothed = float(task.loss_fn(train, "none", label_smoothing=0.2)(logits, targets))
    # targets 1 -> 0.9 and 0 -> 0.1
    expected = (-(0.9 * math.log(sig(0.5)) + 0.1 * math.log(1 - sig(0.5)))
                - (0.1 * math.log(sig(-1.0)) + 0.9 * math.log(1 - sig(-1.0)))) / 2
    assert smoothed == pytest.approx(expected, rel=1e-6)


def test_multilabel_loss_weights_each_label_separately() -> None:
    task = MultiLabelTask(classes=["x", "y"])
    train = np.array([[1, 0], [1, 1], [0, 0], [1, 0]], dtype=np.float32)  # x: 3/1, y: 1/3
    loss_fn = task.loss_fn(train, "weights")
    logits = torch.zeros(1, 2)
    targets = task.target_tensor(np.array([[1.0, 1.0]]))
    # sigmoid(0) = 0.5: each positive costs pos_weight * log 2.
    assert float(loss_fn(logits, targets)) == pytest.approx((1 / 3 + 3) / 2 * math.log(2),
                                                            rel=1e-6)


def test_fractions_loss_is_the_squared_error_of_the_tree_output() -> None:
    schema = TreeSchema.from_dict({"questions": [
        {"name": "q1", "answers": ["a", "b"], "parent": None},
        {"name": "q2", "answers": ["c", "d"], "parent": "a"}]})
    task = make_task("fractions", ["a", "b", "c", "d"], schema)
    logits = torch.zeros(1, 4)  # a = b = 0.5; c = d = 0.25
    targets = task.target_tensor(np.array([[1.0, 0.0, 0.5, 0.5]]))
    loss = float(task.loss_fn(np.zeros((1, 4)), "weights")(logits, targets))
    assert loss == pytest.approx((0.25 + 0.25 + 0.0625 + 0.0625) / 4, rel=1e-6)


def test_predicted_classes_per_kind() -> None:
    outputs = np.array([[0.2, 0.7, 0.1], [0.5, 0.1, 0.4]])
    multiclass = MulticlassTask(classes=["a", "b", "c"])
    np.testing.assert_array_equal(multiclass.predicted_class(outputs), [1, 0])
    binary = BinaryTask(classes=["no", "yes"])
    p = np.array([[0.3], [0.6], [0.5]])
    np.testing.assert_array_equal(binary.predicted_class(p, threshold=0.5), [0, 1, 1])
    np.testing.assert_array_equal(binary.predicted_class(p, threshold=0.65), [0, 0, 0])
    np.testing.assert_allclose(binary.class_probabilities(p), [[0.7, 0.3], [0.4, 0.6],
                                                               [0.5, 0.5]])
    # Labels are independent: several or none may be on, never a single argmax.
    multi = MultiLabelTask(classes=["x", "y", "z"])
    np.testing.assert_array_equal(multi.predicted_class(outputs, threshold=0.4),
                                  [[0, 1, 0], [1, 0, 1]])
    with pytest.raises(TypeError, match="no predicted class"):
        FractionsTask(classes=["a", "b"]).predicted_class(outputs[:, :2])


def test_single_label_is_a_property_of_the_kind() -> None:
    tasks = {t.kind: t for t in (MulticlassTask(["a", "b", "c"]), BinaryTask(["a", "b"]),
                                 MultiLabelTask(["a", "b"]), FractionsTask(["a", "b"]))}
    assert {k for k, t in tasks.items() if t.single_label} == set(single_label_kinds())


def test_balanced_sampling_draws_each_class_equally() -> None:
    task = MulticlassTask(classes=["a", "b"])
    targets = np.array([0] * 9 + [1])
    weights = task.sample_weights(targets)
    share_b = weights[targets == 1].sum() / weights.sum()
    assert share_b == pytest.approx(0.5)


def test_tasks_round_trip_through_model_json_dicts() -> None:
    task = make_task("binary", ["no", "yes"])
    task.fit_statistics(np.array([0, 1, 1]))
    again = task_from_dict(task.to_dict())
    assert (type(again), again.classes, again.train_counts) == (BinaryTask, ["no", "yes"], [1, 2])
    with pytest.raises(ConfigError, match="exactly two classes"):
        make_task("binary", ["a", "b", "c"])
    with pytest.raises(ConfigError, match="not one of"):
        make_task("ranking", ["a"])


def test_balanced_sampling_is_refused_without_one_class_per_image() -> None:
    for task in (MultiLabelTask(classes=["x", "y"]), FractionsTask(classes=["a", "b"])):
        with pytest.raises(ConfigError, match=r"balance=sampler.*balance=weights"):
            task.sample_weights(np.zeros((4, 2)))
