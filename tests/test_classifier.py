"""The scikit-learn estimators, checked with scikit-learn itself: clone, the API checks,
cross-validation and grid search against folds fitted by hand, DataFrames, vote fractions."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import numpy as np
import pytest
import sklearn.exceptions
import sklearn.utils.estimator_checks as checks
from sklearn.base import clone
from sklearn.model_selection import (
    GridSearchCV,
    KFold,
    StratifiedKFold,
    cross_val_score,
    cross_validate,
)

import skysort
from skysort import ImageClassifier, NotFittedError
from skysort.classifier import CHECKS_NOT_APPLICABLE, ImageRegressor
from skysort.config import TrainConfig
from tests.conftest import write_color_folders

#: A valid value other than the default for every setting.
OTHER = {"backbone": "tf_efficientnet_lite1", "weights": "none", "input_size": 96,
         "center_fraction": 0.5, "bands": ("g", "r"), "channels": "all",
         "stretch": "percentile", "finetune": "last:2", "dropout": 0.3, "epochs": 7,
         "batch_size": 16, "lr": 0.01, "weight_decay": 0.001, "warmup_epochs": 1,
         "label_smoothing": 0.1, "balance": "sampler", "patience": 4, "augment": "photo",
         "finetune_epochs": 2, "finetune_batch_size": 8, "finetune_lr": 1e-4,
         "finetune_weight_decay": 0.05, "layer_decay": 0.7, "finetune_warmup_epochs": 0,
         "finetune_patience": 2, "ema_decay": 0.9, "precision": "fp32", "time": "5m",
         "calibrate": "none",
         "threshold": 0.3, "derived_thresholds": (0.5,), "validation_fraction": 0.25,
         "split_groups": "duplicates", "seed": 5, "device": "cpu", "workers": 0,
         "cache_dir": "somewhere", "cache_max_gb": 1.0, "project": "elsewhere", "name": "cv"}


@pytest.mark.parametrize("cls", [ImageClassifier, ImageRegressor])
def test_every_setting_is_a_keyword_that_clone_round_trips(cls: type) -> None:
    settings = {**OTHER, **({"schema": "tree.yaml", "task": "counts"}
                            if cls is ImageRegressor else {})}
    assert set(inspect.signature(cls).parameters) == set(settings)
    est = cls(**settings)
    assert est.get_params() == settings
    copy = clone(est)
    assert copy is not est and copy.get_params() == settings
    assert cls().set_params(**settings).get_params() == settings
    # the defaults are TrainConfig's, and every training setting is there
    defaults = TrainConfig()
    names = {f for f in TrainConfig.__dataclass_fields__ if f not in cls.NOT_SETTINGS}
    assert names | {"validation_fraction"} == set(OTHER)
    for key, value in cls().get_params().items():
        if key in names and key != "name":
            assert value == getattr(defaults, key), key
    # settings are checked when fit runs, naming the key, never in __init__
    bad = cls(lr=-1.0)
    with pytest.raises(skysort.ConfigError, match=r"lr=-1\.0"):
        bad.to_config()
    with pytest.raises(skysort.ConfigError, match="validation_fraction"):
        cls(validation_fraction=1.0).to_config()


API_CHECKS = sorted({c.func.__name__ if hasattr(c, "func") else c.__name__
                     for c in checks._yield_api_checks(ImageClassifier())})
EXTRA_CHECKS = ["check_estimator_cloneable", "check_parameters_default_constructible",
                "check_get_params_invariance", "check_set_params"]


@pytest.mark.parametrize("cls", [ImageClassifier, ImageRegressor])
@pytest.mark.parametrize("check", [c for c in API_CHECKS if c not in CHECKS_NOT_APPLICABLE]
                         + EXTRA_CHECKS)
def test_scikit_learn_api_checks(cls: type, check: str) -> None:
    getattr(checks, check)(cls.__name__, cls())


def test_the_checks_skipped_are_named() -> None:
    """Every API check scikit-learn has is run above or listed with its reason, and the
    tags say why check_estimator itself skips them (the input is image paths)."""
    assert set(CHECKS_NOT_APPLICABLE) <= set(API_CHECKS)
    tags = ImageClassifier().__sklearn_tags__()
    assert not tags.input_tags.two_d_array and tags.input_tags.string
    assert tags.input_tags.one_d_array


def test_unfitted_is_skysorts_and_scikit_learns_error(tmp_path: Path) -> None:
    for est in (ImageClassifier(), ImageRegressor()):
        with pytest.raises(NotFittedError, match="fit"):
            est.predict([str(tmp_path / "a.png")])
        with pytest.raises(sklearn.exceptions.NotFittedError):
            est.predict([str(tmp_path / "a.png")])


@pytest.fixture(scope="module")
def colors(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], np.ndarray]:
    data = write_color_folders(tmp_path_factory.mktemp("colors") / "data", per_class=12,
                               size=32, noise=60.0)
    paths = sorted(str(p) for p in data.rglob("*.png"))
    return paths, np.array([Path(p).parent.name for p in paths])


@pytest.mark.slow
def test_fit_predict_proba_follow_classes(colors: tuple, tmp_path: Path) -> None:
    paths, labels = colors
    codes = np.array([{"blue": 10, "green": 2, "red": 7}[c] for c in labels])  # int labels
    model = ImageClassifier(epochs=30, project=str(tmp_path / "runs"), precision="fp32")
    assert model.fit(paths, codes) is model
    assert model.classes_.tolist() == [2, 7, 10]  # sorted as numbers, not as text
    probs = model.predict_proba(paths)
    assert probs.shape == (36, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert (model.classes_[probs.argmax(axis=1)] == model.predict(paths)).all()
    assert model.predict(paths).dtype == codes.dtype
    assert model.score(paths, codes) == np.mean(model.predict(paths) == codes) > 0.9
    assert model.run_dir_ == tmp_path / "runs" / "estimator"
    again = ImageClassifier.load(model.run_dir_)
    assert again.classes_.tolist() == [2, 7, 10]  # the labels as fit was given them
    np.testing.assert_allclose(again.predict_proba(paths), probs, atol=1e-5)
    assert (again.predict(paths) == model.predict(paths)).all()
    assert again.score(paths, codes) == model.score(paths, codes)


@pytest.mark.slow
def test_binary_labels_keep_scikit_learns_positive_class(colors: tuple, tmp_path: Path
                                                          ) -> None:
    paths, labels = colors
    two = [i for i, c in enumerate(labels) if c != "green"]
    X = [paths[i] for i in two]
    y = np.array([9 if labels[i] == "red" else 10 for i in two])  # as text, "10" < "9"
    model = ImageClassifier(epochs=30, precision="fp32", project=str(tmp_path / "runs"))
    model.fit(X, y)
    assert model.classes_.tolist() == [9, 10]
    probs = model.predict_proba(X)
    assert ((probs[:, 1] > 0.5) == (y == 10)).all()  # column 1 is P(classes_[1])
    assert model.predictor_.classes_ == ["9", "10"]  # the run's positive class is 10
    assert model.predict(X).tolist() == y.tolist()
    assert ImageClassifier.load(model.run_dir_).predict(X).tolist() == y.tolist()


def test_bad_labels_are_refused_before_training(tmp_path: Path) -> None:
    est = ImageClassifier(project=str(tmp_path / "runs"))
    paths = [str(tmp_path / f"{i}.png") for i in range(4)]
    for y, message in (([1, None, 2, 1], "missing"), ([1.0, float("nan"), 2.0, 1.0], "missing"),
                       ([1, "a", 2, 1], "mix types"), ([1, 2, 1], "one label per path")):
        with pytest.raises(skysort.DataError, match=message):
            est.fit(paths, np.array(y, dtype=object))
    assert not (tmp_path / "runs").exists()  # nothing was trained
    with pytest.raises(skysort.DataError, match="numbers"):
        ImageRegressor().fit(paths, ["a", "b", "c", "d"])


@pytest.mark.slow
def test_cross_validation_and_grid_search_match_folds_fitted_by_hand(colors: tuple,
                                                                      tmp_path: Path) -> None:
    paths, labels = colors
    # input_size=64: the scores are compared with each other, not with a bar, and a 64-pixel
    # backbone pass is a twelfth of the default 224's
    est = ImageClassifier(finetune="head", epochs=15, lr=1e-2, input_size=64, precision="fp32",
                          project=str(tmp_path / "runs"))
    cv = StratifiedKFold(2, shuffle=True, random_state=0)
    scores = cross_val_score(est, paths, labels, cv=cv)
    by_hand = []
    X = np.array(paths, dtype=object)
    for train, test in cv.split(X, labels):
        fitted = clone(est).fit(X[train], labels[train])
        by_hand.append(fitted.score(X[test], labels[test]))
    assert scores.tolist() == by_hand
    # every fit had a run directory of its own
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == \
        ["estimator", *[f"estimator{i}" for i in range(2, 5)]]
    # the grid on the same folds: its second candidate has est's settings, so its mean
    # score is that of the folds fitted by hand above
    grid = GridSearchCV(clone(est).set_params(project=str(tmp_path / "grid")),
                        {"lr": [1e-3, 1e-2], "label_smoothing": [None]}, cv=cv)
    grid.fit(paths, labels)
    params = grid.cv_results_["params"][1]
    assert clone(est).set_params(**params).get_params() == est.get_params()
    expected = np.mean(by_hand)
    assert grid.cv_results_["mean_test_score"][1] == pytest.approx(expected, abs=1e-12)
    assert grid.best_params_ in grid.cv_results_["params"]
    assert grid.best_estimator_.run_dir_.parent == tmp_path / "grid"
    assert grid.score(paths, labels) == grid.best_estimator_.score(paths, labels)


@pytest.mark.slow
def test_dataframes_in_and_out(colors: tuple, tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    paths, labels = colors
    frame = pd.DataFrame({"path": paths, "label": labels}, index=[f"g{i}" for i in range(36)])
    model = ImageClassifier(epochs=20, precision="fp32", project=str(tmp_path / "runs"))
    model.fit(frame["path"], frame["label"])
    probs = model.predict_proba(frame[["path"]].iloc[::3])
    assert isinstance(probs, pd.DataFrame)
    assert list(probs.columns) == list(model.classes_) and list(probs.index) == \
        list(frame.index[::3])
    np.testing.assert_allclose(probs.to_numpy(), model.predict_proba(paths[::3]))
    predicted = model.predict(frame["path"])
    assert isinstance(predicted, pd.Series) and list(predicted.index) == list(frame.index)
    with pytest.raises(skysort.ConfigError, match="one column"):
        model.predict(frame)


@pytest.mark.slow
def test_image_regressor_on_vote_fractions(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    from skysort.synth.sets import make_vote_fraction_set
    from skysort.tasks import load_schema

    # 90 galaxies: with 60, a fold fitted on 40 is no better than the mean on the other 20
    images, votes, schema = make_vote_fraction_set(tmp_path / "gz", 90, size=48, seed=3)
    table = pd.read_csv(votes)
    paths = [str(images / f"{i}.jpg") for i in table["GalaxyID"]]
    y = table.drop(columns="GalaxyID")
    est = ImageRegressor(schema=str(schema), epochs=20, precision="fp32",
                         project=str(tmp_path / "runs"))
    assert est.fit(paths, y) is est and est.outputs_ == list(y.columns)
    predicted = est.predict(paths)
    assert predicted.shape == y.shape
    tree = load_schema(schema)
    assert tree.tree_errors(predicted, list(y.columns)).max() < 1e-4  # obeys the tree
    # R^2 by its definition, per output and then averaged: 1 - SS_res / SS_tot
    truth, fit = y.to_numpy(), np.asarray(predicted, dtype=np.float64)
    ss_res, ss_tot = ((truth - fit) ** 2).sum(0), ((truth - truth.mean(0)) ** 2).sum(0)
    r2 = float(np.mean(1 - ss_res / ss_tot))
    assert est.score(paths, y) == pytest.approx(r2, abs=1e-6)  # of float32 predictions
    # cross-validation: on every held-out fold, an RMSE (per output, then averaged, as
    # scikit-learn's) below that of predicting the mean of the folds it was fitted on
    folds = list(KFold(3).split(paths))
    cv = cross_validate(clone(est), paths, y, cv=folds, scoring="neg_root_mean_squared_error",
                        return_estimator=True)
    for (train, test), score, fitted in zip(folds, cv["test_score"], cv["estimator"],
                                            strict=True):
        held = truth[test]
        fold_fit = np.asarray(fitted.predict([paths[i] for i in test]), dtype=np.float64)
        rmse = np.sqrt(((fold_fit - held) ** 2).mean(0)).mean()
        rmse_of_mean = np.sqrt(((truth[train].mean(0) - held) ** 2).mean(0)).mean()
        assert -score == pytest.approx(rmse, abs=1e-6)
        assert rmse < 0.95 * rmse_of_mean, (rmse, rmse_of_mean)
    # an unreadable file has no prediction: score names it instead of passing NaN on
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(Path(paths[0]).read_bytes()[:100])
    with pytest.raises(skysort.DataError, match=f"1 of 4 image.*{re.escape(str(broken))}"):
        est.score([*paths[:3], str(broken)], y.iloc[:4])
    with pytest.raises(skysort.DataError, match="fractions in"):
        ImageRegressor().fit(paths, y * 2)
    # one output given as a 1-D y: predicted as a 1-D array, as scikit-learn does
    smooth = ImageRegressor(epochs=5, precision="fp32", project=str(tmp_path / "one"))
    assert smooth.fit(paths, y["smooth"].to_numpy()).predict(paths[:4]).shape == (4,)
    with pytest.raises(skysort.DataError, match=f"1 of 4 image.*{re.escape(str(broken))}"):
        smooth.score([*paths[:3], str(broken)], y["smooth"].to_numpy()[:4])


@pytest.mark.slow
def test_int_labels_in_sets_and_unreadable_files_in_score(colors: tuple, tmp_path: Path
                                                          ) -> None:
    paths, labels = colors
    codes = np.array([{"blue": 10, "green": 2, "red": 7}[c] for c in labels])
    model = ImageClassifier(finetune="head", epochs=10, precision="fp32",
                            project=str(tmp_path / "runs"), cache_dir=str(tmp_path / "cache"))
    model.fit(paths, codes)
    # prediction sets hold the labels as fit was given them: ints, not their text
    sets = model.predict_set(paths, coverage=0.9)
    by_name = model.predictor_.predict_set(paths, 0.9)  # the run's own class names
    assert sets == [[int(c) for c in names] for names in by_name]
    assert all(type(c) is type(model.classes_[0]) for s in sets for c in s)
    assert [s[0] for s in sets] == model.predict(paths).tolist()  # most probable first
    # an unreadable file has no prediction: score names it instead of scoring the rest
    broken = tmp_path / "broken.png"
    broken.write_bytes(Path(paths[0]).read_bytes()[:100])
    with pytest.raises(skysort.DataError, match=f"1 of 4 image.*{re.escape(str(broken))}"):
        model.score([*paths[:3], str(broken)], codes[:4])
    assert model.score(paths, codes) == np.mean(model.predict(paths) == codes)


@pytest.mark.slow
def test_image_regressor_on_vote_counts(tmp_path: Path) -> None:
    """task="counts": fit on vote counts, predict expected fractions, score R^2 against the
    observed fractions; the run's prediction file has the fractions and their intervals."""
    pd = pytest.importorskip("pandas")
    from skysort.prediction.writers import read_predictions
    from skysort.synth.counts import COUNT_TREE, count_answers, make_vote_count_set

    images, votes, truth_csv = make_vote_count_set(tmp_path / "gz", 120, size=48, seed=5)
    table, truth = pd.read_csv(votes), pd.read_csv(truth_csv)
    answers = count_answers()
    paths = [str(images / f"{i}.jpg") for i in table["iauname"]]
    y = table[answers]  # the counts alone (totals and fractions left out)
    with pytest.raises(skysort.DataError, match="whole numbers"):
        ImageRegressor(task="counts").fit(paths, y + 0.5)
    with pytest.raises(skysort.ConfigError, match="vote fractions or counts"):
        ImageRegressor(task="multiclass").fit(paths, y)
    # input_size=96: the 48-pixel images at twice their size, not 224 (a fifth of the cost)
    est = ImageRegressor(task="counts", finetune="head", epochs=30, input_size=96,
                         precision="fp32", project=str(tmp_path / "runs"))
    assert est.fit(paths, y) is est and est.outputs_ == answers
    task = est.predictor_.task
    assert task.kind == "counts"
    # the answers named as GZ DECaLS names them bring its tree: five questions, not one
    assert [list(q.answers) for q in task.schema.questions] == \
        [q["answers"] for q in COUNT_TREE["questions"]]
    groups = [[answers.index(a) for a in q["answers"]] for q in COUNT_TREE["questions"]]

    fractions = np.asarray(est.predict(paths), dtype=np.float64)
    assert fractions.shape == (len(paths), len(answers))
    assert list(est.predict(pd.Series(paths[:2])).columns) == answers
    alpha = est.predictor_.predict_outputs(paths).astype(np.float64)  # the concentrations
    for g in groups:  # the Dirichlet means, per question
        np.testing.assert_allclose(fractions[:, g], alpha[:, g] / alpha[:, g].sum(1)[:, None],
                                   atol=1e-6)
        np.testing.assert_allclose(fractions[:, g].sum(1), 1.0, atol=1e-6)

    # score: R^2 by its definition, per answer over the images whose question got votes,
    # against the observed share of the question's votes, then averaged
    counts = y.to_numpy(dtype=np.float64)
    observed = np.full_like(counts, np.nan)
    for g in groups:
        total = counts[:, g].sum(1, keepdims=True)
        observed[:, g] = np.where(total > 0, counts[:, g] / np.maximum(total, 1), np.nan)
    r2 = []
    for j in range(len(answers)):
        asked = ~np.isnan(observed[:, j])
        obs, fit = observed[asked, j], fractions[asked, j]
        r2.append(1 - ((obs - fit) ** 2).sum() / ((obs - obs.mean()) ** 2).sum())
    assert est.score(paths, y) == pytest.approx(np.mean(r2), abs=1e-6)
    # nearer the true answer probabilities than the mean observed fractions are
    true_p = truth[answers].to_numpy(dtype=np.float64)
    rmse = np.sqrt(((fractions - true_p) ** 2).mean())
    assert rmse < np.sqrt(((np.nanmean(observed, axis=0) - true_p) ** 2).mean())

    # skysort predict on the estimator's run (no id column): path, fraction/lo/hi, error
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    rows = read_predictions(skysort.predict(est.run_dir_, [*paths[:4], str(broken)],
                                            tmp_path / "p.csv", workers=0, quiet=True))
    assert list(rows[0]) == ["path", *(f"{a}{s}" for a in answers
                                       for s in ("_fraction", "_lo", "_hi")), "error"]
    for row, f in zip(rows[:4], fractions[:4], strict=True):
        assert row["error"] == ""
        got = np.array([float(row[f"{a}_fraction"]) for a in answers])
        np.testing.assert_allclose(got, f, atol=1e-6)
        assert all(float(row[f"{a}_lo"]) <= float(row[f"{a}_fraction"]) <= float(row[f"{a}_hi"])
                   for a in answers)
    assert rows[4]["path"] == str(broken) and rows[4]["error"]
    assert rows[4]["bar_no_fraction"] == ""
