"""Conformal prediction sets: coverage checked on simulations with known probabilities."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.special import softmax

from skysort.data.transforms import Preprocess
from skysort.errors import ConfigError, RunError
from skysort.evaluation.conformal import (
    SCORE,
    conformity_scores,
    coverage_report,
    prediction_sets,
)
from skysort.models.conformal import ConformalScores
from skysort.models.info import ModelInfo, read_model_info
from skysort.tasks import make_task

CLASSES = ["other", "crater", "dunes", "spider", "streak"]
#: HiRISE-like: most images are "other".
PRIOR = np.array([0.82, 0.07, 0.05, 0.04, 0.02])


def draw(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities the model gets exactly right, and classes drawn from them."""
    probs = softmax(rng.normal(0, 1.5, (n, len(CLASSES))) + np.log(PRIOR), axis=1)
    y = np.array([rng.choice(len(CLASSES), p=p) for p in probs])
    return probs, y


@pytest.mark.parametrize("coverage", [0.8, 0.9, 0.95])
def test_sets_cover_the_true_class_as_often_as_asked_in_every_class(coverage: float) -> None:
    rng = np.random.default_rng(0)
    val_p, val_y = draw(6000, rng)
    test_p, test_y = draw(8000, rng)
    kept = conformity_scores(val_p, val_y, CLASSES)
    member = prediction_sets(test_p, kept, CLASSES, coverage)
    report = coverage_report(member, test_y, CLASSES, coverage)
    hit = member[np.arange(len(test_y)), test_y]  # the true class in the set
    assert report["coverage"] == pytest.approx(hit.mean())
    assert abs(hit.mean() - coverage) <= 0.03
    for j, name in enumerate(CLASSES):
        # class-conditional: the rare classes are covered as often as "other", neither
        # less nor more, within the sampling noise of their validation and test images
        mine = test_y == j
        n_val = len(kept.scores[name])
        noise = np.sqrt(coverage * (1 - coverage) * (1 / n_val + 1 / mine.sum()))
        assert report["per_class"][name]["coverage"] == pytest.approx(hit[mine].mean())
        assert abs(hit[mine].mean() - coverage) <= 3 * noise, (name, hit[mine].mean())
    # informative sets: a model that knew only the prior would give every image the same
    # probabilities, so the set of every class to cover each class (size 5)
    sizes = member.sum(1)
    assert report["mean_size"] == pytest.approx(sizes.mean())
    assert 1 <= sizes.mean() < len(CLASSES) - 1 and (sizes == len(CLASSES)).mean() < 0.15


def test_marginal_coverage_alone_would_fail_the_rare_classes() -> None:
    """Why the sets are class-conditional: one pooled threshold covers 90% overall but
    far less of a rare class."""
    rng = np.random.default_rng(7)
    val_p, val_y = draw(6000, rng)
    test_p, test_y = draw(8000, rng)
    pooled = ConformalScores(SCORE, len(val_y),
                             {"all": sorted(1 - val_p[np.arange(len(val_y)), val_y])})
    q = pooled.thresholds(["all"], 0.9)[0]
    member = (1 - test_p) <= q
    rare = test_y == CLASSES.index("streak")
    assert member[np.arange(len(test_y)), test_y][rare].mean() < 0.8
    per_class = conformity_scores(val_p, val_y, CLASSES)
    member = prediction_sets(test_p, per_class, CLASSES, 0.9)
    assert member[np.arange(len(test_y)), test_y][rare].mean() > 0.85


def test_a_class_too_rare_for_the_coverage_makes_the_threshold_marginal() -> None:
    scores = ConformalScores(SCORE, 14, {"a": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95],
                                         "b": [0.05, 0.5, 0.55, 0.6]})
    # 0.8 needs 4 images of each class: per class. a: rank ceil(11 * 0.8) = 9 -> 0.9;
    # b: rank ceil(5 * 0.8) = 4 -> 0.6
    assert scores.too_rare(["a", "b"], 0.8) == []
    assert scores.thresholds(["a", "b"], 0.8).tolist() == [0.9, 0.6]
    # 0.9 needs 9: b is too rare, so all 14 scores pooled: rank ceil(15 * 0.9) = 14 -> 0.95
    assert scores.too_rare(["a", "b"], 0.9) == ["b"]
    assert scores.thresholds(["a", "b"], 0.9).tolist() == [0.95, 0.95]
    # 0.95 needs 19 of each, and the 14 pooled are too few: every class in every set
    assert scores.thresholds(["a", "b"], 0.95).tolist() == [np.inf, np.inf]
    member = prediction_sets(np.array([[0.05, 0.95], [0.999, 0.001]]), scores, ["a", "b"], 0.8)
    assert member.tolist() == [[False, True], [True, False]]


def test_nan_rows_get_empty_sets_and_bad_coverages_are_refused() -> None:
    kept = conformity_scores(np.array([[0.9, 0.1]] * 30), np.zeros(30, dtype=int), ["a", "b"])
    member = prediction_sets(np.array([[np.nan, np.nan], [0.95, 0.05]]), kept, ["a", "b"], 0.8)
    # b has no validation images: the pooled threshold (a's 0.1) decides for both
    assert member.tolist() == [[False, False], [True, False]]
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        kept.thresholds(["a", "b"], 1.0)


# -- the scores model.json keeps ----------------------------------------------------------------


def _info(conformal: ConformalScores | None) -> ModelInfo:
    return ModelInfo(task=make_task("multiclass", ["a", "b"]), backbone="x", weights_id="y",
                     num_features=4, preprocess=Preprocess(), conformal=conformal)


def test_the_kept_scores_write_the_json_model_json_always_held(tmp_path: Path) -> None:
    kept = conformity_scores(np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [np.nan, np.nan]]),
                             np.array([0, 1, 0, 1]), ["a", "b"])
    # what skysort wrote when the entry was a dict: old and new runs read alike
    written = {"score": "1 - p(true class), per class", "n": 3,
               "scores": {"a": [0.1, 0.4], "b": [0.3]}}
    assert kept.to_dict() == written
    assert json.dumps(kept.to_dict()) == json.dumps(written)
    assert ConformalScores.from_dict(written) == kept
    # through model.json: read back as the typed object, written back the same
    (tmp_path / "model.json").write_text(json.dumps(_info(kept).to_dict()))
    info = read_model_info(tmp_path)
    assert isinstance(info.conformal, ConformalScores) and info.conformal == kept
    assert info.to_dict()["conformal"] == written
    # keys a later version adds are kept
    more = {**written, "note": "later"}
    assert ConformalScores.from_dict(more).to_dict() == more
    # a run without scores writes no entry, and reads back without
    assert "conformal" not in _info(None).to_dict()
    (tmp_path / "model.json").write_text(json.dumps({**_info(None).to_dict(), "conformal": {}}))
    assert read_model_info(tmp_path).conformal is None
    # sets from the typed object and from the JSON it writes are the same
    probs = np.array([[0.65, 0.35], [0.2, 0.8]])
    assert prediction_sets(probs, kept, ["a", "b"], 0.5).tolist() == \
        prediction_sets(probs, written, ["a", "b"], 0.5).tolist()


@pytest.mark.parametrize("entry", [
    ["not", "an", "object"],
    {"score": "s", "n": 3},                                   # no scores
    {"n": 3, "scores": {"a": [0.1]}},                         # no description
    {"score": "s", "scores": {"a": [0.1]}},                   # no count
    {"score": "s", "n": -1, "scores": {"a": [0.1]}},
    {"score": "s", "n": True, "scores": {"a": [0.1]}},
    {"score": "s", "n": 3.5, "scores": {"a": [0.1]}},
    {"score": 7, "n": 3, "scores": {"a": [0.1]}},
    {"score": "s", "n": 3, "scores": [0.1, 0.2]},
    {"score": "s", "n": 3, "scores": {"a": 0.1}},
    {"score": "s", "n": 3, "scores": {"a": [0.1, "0.2"]}},
    {"score": "s", "n": 3, "scores": {"a": [0.1, None]}},
    {"score": "s", "n": 3, "scores": {"a": [0.1, float("nan")]}},
    {"score": "s", "n": 3, "scores": {"a": [False]}},
])
def test_a_damaged_conformal_entry_is_a_damaged_run(tmp_path: Path, entry: object) -> None:
    data = _info(None).to_dict()
    data["conformal"] = entry
    (tmp_path / "model.json").write_text(json.dumps(data))
    with pytest.raises(RunError, match="damaged or from an incompatible skysort version"):
        read_model_info(tmp_path)
