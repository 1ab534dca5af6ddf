"""Calibration: fitted on simulated outputs whose true probabilities the test knows."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, softmax

from skysort.evaluation.calibration import (
    MIN_CALIBRATION_IMAGES,
    calibration_report,
    fit_calibration,
    reliability_bins,
    risk_coverage,
)
from skysort.tasks import make_task
from skysort.tasks.calibration import Calibration


def simulate(n: int, k: int, rng: np.random.Generator, sharpen: float = 3.0,
             prior: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """True logits -> classes drawn from their softmax; the model's logits are the true
    ones times ``sharpen`` (over-confident for sharpen > 1)."""
    true = rng.normal(0, 1.2, (n, k)) + (np.log(prior) if prior is not None else 0)
    probs = softmax(true, axis=1)
    y = np.array([rng.choice(k, p=p) for p in probs])
    return true * sharpen, y


def test_temperature_scaling_undoes_over_confidence_without_changing_a_class() -> None:
    rng = np.random.default_rng(0)
    prior = np.array([0.5, 0.25, 0.12, 0.08, 0.05])  # imbalanced, as survey classes are
    task = make_task("multiclass", list("abcde"))
    task.train_counts = (prior * 1000).astype(int).tolist()
    val_z, val_y = simulate(1500, 5, rng, prior=prior)
    test_z, test_y = simulate(3000, 5, rng, prior=prior)

    cal = fit_calibration(task, val_z, val_y)
    assert cal.method == "temperature"
    assert cal.temperature == pytest.approx(3.0, rel=0.15)  # the sharpening it undoes
    assert cal.nll_after < cal.nll_before

    before, after = softmax(test_z, axis=1), softmax(cal.apply(test_z), axis=1)
    assert (before.argmax(1) == after.argmax(1)).all()
    report = calibration_report(task, test_y, after, before, cal)
    assert report["model"]["ece"] <= 0.5 * report["uncalibrated"]["ece"]
    assert report["model"]["ece"] < 0.03
    assert report["model"]["nll"] < report["uncalibrated"]["nll"]
    assert report["model"]["brier"] < report["uncalibrated"]["brier"]
    # the class prior gives every image the training shares: its one bin holds all
    # images at confidence 0.5 (the largest share), right as often as class "a" occurs
    assert report["baseline"]["nll"] > report["model"]["nll"]
    assert report["baseline"]["ece"] == pytest.approx(abs(0.5 - (test_y == 0).mean()))
    assert sum(b["count"] for b in report["model"]["bins"]) == len(test_y)
    assert report["warnings"] == []


def test_platt_scaling_moves_the_threshold_so_no_decision_changes() -> None:
    rng = np.random.default_rng(1)
    n = 4000
    true = rng.normal(-1.5, 2.0, n)  # a rare positive class
    y = (rng.random(n) < expit(true)).astype(int)
    z = 2.5 * true + 3.0  # over-confident and biased towards positives (class weights)
    task = make_task("binary", ["no", "yes"])
    cal = fit_calibration(task, z[:2000, None], y[:2000])
    assert cal.method == "platt"
    assert cal.scale[0] == pytest.approx(1 / 2.5, rel=0.15)
    assert cal.bias[0] == pytest.approx(-3.0 / 2.5, abs=0.25)
    t = cal.threshold(0.5)
    p_before, p_after = expit(z[2000:]), expit(cal.apply(z[2000:, None])[:, 0])
    assert ((p_before >= 0.5) == (p_after >= t)).all()
    report = calibration_report(task, y[2000:], p_after[:, None], p_before[:, None], cal)
    assert report["model"]["ece"] < 0.5 * report["uncalibrated"]["ece"]
    assert report["model"]["nll"] < report["uncalibrated"]["nll"]
    from sklearn.metrics import brier_score_loss, log_loss

    # a yes/no model's Brier score and NLL are the usual binary ones
    assert report["model"]["brier"] == pytest.approx(brier_score_loss(y[2000:], p_after))
    assert report["model"]["nll"] == pytest.approx(log_loss(y[2000:], p_after), rel=1e-6)


def test_multilabel_gets_one_temperature_per_label() -> None:
    rng = np.random.default_rng(2)
    true = rng.normal(0, 1.5, (3000, 3))
    y = (rng.random(true.shape) < expit(true)).astype(int)
    z = true * np.array([1.0, 2.0, 4.0])
    task = make_task("multilabel", ["a", "b", "c"])
    cal = fit_calibration(task, z, y)
    assert [1 / s for s in cal.scale] == pytest.approx([1.0, 2.0, 4.0], rel=0.15)
    # at 0.5 no decision moves; at another threshold it would, so it is not applied
    assert ((expit(cal.apply(z)) >= 0.5) == (z >= 0)).all()
    assert task.keep_calibration(cal, 0.5) is cal
    moved = (expit(cal.apply(z)) >= 0.6) != (expit(z) >= 0.6)
    assert moved.any()
    kept = task.keep_calibration(cal, 0.6)
    assert kept.is_identity and kept.reason == "threshold" and "threshold=0.6" in kept.note


def test_too_few_validation_images_leave_the_model_uncalibrated_and_say_so() -> None:
    rng = np.random.default_rng(3)
    z, y = simulate(MIN_CALIBRATION_IMAGES - 1, 3, rng)
    task = make_task("multiclass", ["a", "b", "c"])
    cal = fit_calibration(task, z, y)
    assert cal.is_identity and cal.method == "none"
    assert f"{MIN_CALIBRATION_IMAGES - 1} readable image(s)" in cal.note
    report = calibration_report(task, y, softmax(z, axis=1), None, cal)
    assert any("NOT CALIBRATED" in w and str(MIN_CALIBRATION_IMAGES - 1) in w
               for w in report["warnings"])
    assert fit_calibration(task, *simulate(500, 3, rng), method="none").is_identity


def test_poorly_calibrated_outputs_are_flagged() -> None:
    rng = np.random.default_rng(4)
    z, y = simulate(600, 3, rng, sharpen=8.0)
    task = make_task("multiclass", ["a", "b", "c"])
    report = calibration_report(task, y, softmax(z, axis=1))
    assert report["model"]["ece"] > 0.1
    assert any(w.startswith("POOR CALIBRATION") for w in report["warnings"])


def test_reliability_bins_and_ece_by_the_definition() -> None:
    confidence = np.array([0.95, 0.95, 0.62, 0.61, 0.64, 0.30])
    correct = np.array([1, 0, 1, 1, 0, 0], dtype=bool)
    bins = reliability_bins(confidence, correct, bins=10)
    assert [b["count"] for b in bins] == [0, 0, 1, 0, 0, 0, 3, 0, 0, 2]
    assert bins[9]["accuracy"] == 0.5 and bins[9]["confidence"] == pytest.approx(0.95)
    assert bins[6]["confidence"] == pytest.approx(0.62333333)
    # ECE from those bins: (2 |0.5 - 0.95| + 3 |2/3 - 0.6233| + 1 |0 - 0.30|) / 6
    probs = np.stack([confidence, 1 - confidence], axis=1)
    onehot = np.stack([correct, ~correct], axis=1).astype(float)
    from skysort.evaluation.calibration import _scores

    expected = (2 * 0.45 + 3 * abs(2 / 3 - 0.62333333) + 0.30) / 6
    scores = _scores(probs, onehot)
    assert scores["ece"] == pytest.approx(expected, abs=1e-6)
    assert scores["mce"] == pytest.approx(0.45)


def test_risk_coverage_keeps_the_most_confident() -> None:
    confidence = np.array([0.99, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    correct = np.array([1, 1, 1, 1, 1, 0, 1, 0, 0, 0], dtype=bool)
    risk = risk_coverage(confidence, correct)
    assert risk["at"]["1"]["accuracy"] == pytest.approx(0.6)
    assert risk["at"]["0.5"]["accuracy"] == 1.0
    assert risk["at"]["0.5"]["threshold"] == 0.6
    kept = [r["kept"] for r in risk["curve"]]
    assert kept[0] == 1.0 and kept == sorted(kept, reverse=True)


def test_a_saved_calibration_round_trips_and_refuses_nonsense() -> None:
    cal = Calibration("platt", [0.4], [-1.2], fitted_on=300, nll_before=0.5, nll_after=0.3)
    assert Calibration.from_dict(cal.to_dict()) == cal
    with pytest.raises(ValueError):
        Calibration.from_dict({**cal.to_dict(), "scale": [-1.0]})
    with pytest.raises(ValueError):
        Calibration.from_dict({**cal.to_dict(), "method": "isotonic"})


def test_a_calibration_that_does_not_help_held_out_images_is_not_applied() -> None:
    """Already calibrated outputs: a temperature fitted to 300 validation images fits
    their noise. Cross-fitting refuses it where it does not help images it did not see,
    so on large test sets the NLL gets worse by less than fitting it always would."""
    from skysort.tasks.calibration import softmax_nll as _softmax_nll

    task = make_task("multiclass", ["a", "b", "c"])
    kept, guarded, always = 0, 0.0, 0.0
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        z, y = simulate(300, 3, rng, sharpen=1.0)
        test_z, test_y = simulate(4000, 3, rng, sharpen=1.0)
        cal = fit_calibration(task, z, y)
        if cal.method == "none":
            assert cal.reason == "no_gain" and "not fitted on" in cal.note
            assert cal.is_identity
        else:
            kept += 1
            held = cal.extra["held_out_nll"]
            assert held["calibrated"] < held["uncalibrated"]
        base = _softmax_nll(test_z, test_y)
        guarded += _softmax_nll(cal.apply(test_z), test_y) - base
        always += _softmax_nll(task.fit_calibration(z, y).apply(test_z), test_y) - base
    assert 0 < kept < 20  # some fits were refused
    assert guarded < always
    assert guarded / 20 < 0.002  # what is left is noise: under 0.002 nats a run
