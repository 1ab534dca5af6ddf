"""Calibration, prediction sets and abstention, end to end on generated galaxies."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import skysort
from skysort.data.split import read_split_csv
from skysort.models.export import onnx_for_run
from skysort.models.model import load_model
from skysort.models.onnx import OnnxModule
from skysort.models.runners import model_outputs
from skysort.prediction.writers import read_predictions
from skysort.synth.sets import make_class_folders
from tests.test_cli_end_to_end import cli, read_csv

pytestmark = pytest.mark.slow

#: Imbalanced, as survey classes are; 600 images so validation and test hold 150 each.
MIX = {"elliptical": 240, "spiral": 150, "lenticular": 90, "edge_on": 70, "merger": 50}


@pytest.fixture(scope="module")
def galaxies(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("probabilities")
    data = make_class_folders(work / "data", MIX, size=64, fmt="jpg", seed=3)
    result = skysort.train(data, project=str(work / "runs"), name="head", finetune="head",
                           split=(0.5, 0.25, 0.25))
    return result.run_dir, data


def _test_paths(run: Path, data: Path) -> tuple[list[Path], list[str]]:
    rows = [r for r in read_split_csv(run / "split.csv") if r["split"] == "test"]
    return [data / r["path"] for r in rows], [r["label"] for r in rows]


def test_calibration_is_fitted_on_validation_and_changes_no_class(
        galaxies: tuple[Path, Path]) -> None:
    run, data = galaxies
    info = json.loads((run / "model.json").read_text())
    val = [r for r in read_split_csv(run / "split.csv") if r["split"] == "val"]
    assert info["calibration"]["method"] == "temperature"
    assert info["calibration"]["fitted_on"] == len(val)
    assert info["calibration"]["nll_after"] <= info["calibration"]["nll_before"]
    assert info["conformal"]["n"] == len(val)

    metrics = json.loads((run / "metrics.json").read_text())
    cal = metrics["calibration"]
    assert cal["temperature"] == pytest.approx(1 / info["calibration"]["scale"][0])
    # NLL on the test split no worse than before calibration (within noise of 150 images)
    assert cal["model"]["nll"] <= cal["uncalibrated"]["nll"] + 0.02
    assert cal["baseline"]["nll"] > cal["model"]["nll"]
    assert sum(b["count"] for b in cal["model"]["bins"]) == metrics["n"]

    model, model_info = load_model(run)
    paths, _ = _test_paths(run, data)
    both, _ = model_outputs(model, model_info, paths, which="both")
    calibrated, uncalibrated = both[:, :5], both[:, 5:]
    assert not np.allclose(calibrated, uncalibrated)
    assert (calibrated.argmax(1) == uncalibrated.argmax(1)).all()
    rows = read_csv(run / "metrics_predictions.csv")
    written = np.array([[float(r[c]) for c in model_info.task.classes] for r in rows])
    assert np.abs(written - calibrated).max() <= 1e-6

    for name in ("reliability_diagram.png", "risk_coverage.png", "confusion_matrix.png"):
        assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _sets_by_definition(probs: np.ndarray, scores: dict[str, list[float]],
                        classes: list[str], c: float) -> tuple[np.ndarray, bool]:
    """Split conformal sets as the module docstring defines them, in numpy: ``q_y`` is the
    ``ceil((n_y + 1) c)``-th smallest validation score of class ``y``, or of all classes
    pooled when a class has fewer than that; ``y`` is in the set when ``1 - p(y) <= q_y``.
    Also whether the thresholds were pooled."""
    per_class = [np.sort(scores[name]) for name in classes]
    ranks = [int(np.ceil(round((len(s) + 1) * c, 9))) for s in per_class]
    pooled = any(k > len(s) for k, s in zip(ranks, per_class, strict=True))
    if pooled:
        every = np.sort(np.concatenate(per_class))
        q = np.full(len(classes), every[int(np.ceil(round((len(every) + 1) * c, 9))) - 1])
    else:
        q = np.array([s[k - 1] for s, k in zip(per_class, ranks, strict=True)])
    return 1 - probs <= q, pooled


def _covered_range(val: list[int], test: list[int], c: float, pooled: bool,
                   level: float = 0.999) -> tuple[int, int]:
    """The central ``level`` range of the number of covered test images under split
    conformal prediction. Given its ``n`` validation scores, a threshold covers a share
    ``Beta(k, n + 1 - k)`` of new images (``k = ceil((n + 1) c)``), so the test images it
    covers are beta-binomial: a binomial over the ``m`` test images, widened by the noise
    of the validation split. Per class, the classes' counts add (convolved)."""
    groups = [(sum(val), sum(test))] if pooled else list(zip(val, test, strict=True))
    pmf = np.ones(1)
    for n, m in groups:
        k = int(np.ceil(round((n + 1) * c, 9)))
        pmf = np.convolve(pmf, stats.betabinom.pmf(np.arange(m + 1), m, k, n + 1 - k))
    cdf = np.cumsum(pmf)
    tail = (1 - level) / 2
    return int(np.searchsorted(cdf, tail)), int(np.searchsorted(cdf, 1 - tail))


def test_prediction_sets_cover_the_test_split_and_match_metrics(
        galaxies: tuple[Path, Path], tmp_path: Path) -> None:
    run, data = galaxies
    metrics = json.loads((run / "metrics.json").read_text())
    scores = json.loads((run / "model.json").read_text())["conformal"]["scores"]
    classes = metrics["classes"]
    rows = read_csv(run / "metrics_predictions.csv")
    probs = np.array([[float(r[c]) for c in classes] for r in rows])
    truth = np.array([classes.index(r["true"]) for r in rows])
    n = len(rows)
    val = [len(scores[name]) for name in classes]
    test = [int((truth == j).sum()) for j in range(len(classes))]
    assert n == sum(test) == metrics["n"] and min(test) >= 10
    paths, _ = _test_paths(run, data)
    for c in (0.8, 0.9, 0.95):
        report = metrics["prediction_sets"]["by_coverage"][f"{c:g}"]
        member, pooled = _sets_by_definition(probs, scores, classes, c)
        covered = int(member[np.arange(n), truth].sum())
        sizes = member.sum(1)
        # the summary in metrics.json is these per-image sets' numbers
        assert report["mode"] == ("marginal" if pooled else "per class")
        assert report["coverage"] == pytest.approx(covered / n)
        assert report["mean_size"] == pytest.approx(sizes.mean())
        # coverage near c from both sides: within the 99.9% range of split conformal's
        # beta-binomial count of covered images
        low, high = _covered_range(val, test, c, pooled)
        assert low <= covered <= high, (c, covered, low, high)
        # and bought with informative sets, not sets of every class (which cover all):
        # at most half the classes on average, hardly ever all of them
        assert sizes.mean() <= len(classes) / 2, (c, sizes.mean())
        assert (sizes == len(classes)).mean() < 0.05, (c, np.bincount(sizes))
    # the per-image sets skysort.predict writes are the ones defined above
    written = read_predictions(skysort.predict(run, paths, tmp_path / "sets.csv", coverage=0.9,
                                               quiet=True))
    member, _ = _sets_by_definition(probs, scores, classes, 0.9)
    by_path = {r["path"]: r for r in written}
    for path, row_probs, in_set in zip(paths, probs, member, strict=True):
        row = by_path[str(path)]
        assert sorted(row["prediction_set"].split("|")) == sorted(
            classes[j] for j in np.flatnonzero(in_set)), path
        assert np.abs(np.array([float(row[c]) for c in classes]) - row_probs).max() <= 1e-5
    risk = metrics["risk_coverage"]
    assert risk["at"]["1"]["accuracy"] == pytest.approx(metrics["model"]["accuracy"])
    assert risk["at"]["0.5"]["accuracy"] >= risk["at"]["1"]["accuracy"]


def test_every_predictor_gives_the_same_calibrated_probabilities_and_sets(
        galaxies: tuple[Path, Path], tmp_path: Path) -> None:
    run, data = galaxies
    paths, _ = _test_paths(run, data)
    paths = paths[:40]
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    inputs = [*map(str, paths), str(tmp_path / "bad.jpg")]

    # the exported graph holds the calibration
    model, info = load_model(run)
    both, _ = model_outputs(model, info, paths, which="both")
    from skysort.data.transforms import create_transform

    images = np.stack([create_transform(info.preprocess)(p) for p in paths])
    from_graph = OnnxModule(onnx_for_run(run))(images)
    assert np.abs(from_graph - both[:, :5]).max() <= 1e-5

    out = cli("predict", str(run), *inputs, "-o", str(tmp_path / "p.csv"),
              "--coverage", "0.9", "--min-confidence", "0.6", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    by_cli = {r["path"]: r for r in read_csv(tmp_path / "p.csv")}
    assert by_cli[str(tmp_path / "bad.jpg")]["error"]
    assert by_cli[str(tmp_path / "bad.jpg")]["prediction_set"] == ""

    torch_predictor = skysort.Predictor(run, engine="torch")
    onnx_predictor = skysort.Predictor(run, engine="onnx")
    by_torch, by_onnx = torch_predictor.predict_proba(paths), onnx_predictor.predict_proba(paths)
    assert np.abs(by_torch - by_onnx).max() <= 1e-5
    assert np.abs(by_torch - both[:, :5]).max() <= 1e-5
    sets = onnx_predictor.predict_set(paths, coverage=0.9)
    assert sets == torch_predictor.predict_set(paths, coverage=0.9)
    assert onnx_predictor.predict_set([tmp_path / "bad.jpg"])[0] is None

    classes = info.task.classes
    abstained = 0
    for path, p, s in zip(paths, by_onnx, sets, strict=True):
        row = by_cli[str(path)]
        assert np.abs(np.array([float(row[c]) for c in classes]) - p).max() <= 1e-5
        assert row["prediction_set"].split("|") == s and int(row["set_size"]) == len(s)
        # most probable first
        assert [p[classes.index(c)] for c in s] == sorted((p[classes.index(c)] for c in s),
                                                          reverse=True)
        low = p.max() < 0.6
        assert row["abstained"] == str(int(low))
        assert row["prediction"] == ("" if low else classes[int(p.argmax())])
        abstained += low
    assert 0 < abstained < len(paths)  # the option did something, and not everything

    pytest.importorskip("ray")
    from skysort.prediction.ray import predict_on_ray

    folder = predict_on_ray(run, inputs, tmp_path / "ray_out", actors=2, batch_size=8,
                            coverage=0.9, min_confidence=0.6)
    by_ray = {}
    for shard in sorted(folder.glob("*.csv")):
        by_ray.update({r["path"]: r for r in read_csv(shard)})
    assert len(by_ray) == len(inputs)
    for path in paths:
        row, other = by_cli[str(path)], by_ray[str(path.resolve())]
        for key in ("prediction", "prediction_set", "set_size", "abstained"):
            assert other[key] == row[key], key
        assert max(abs(float(other[c]) - float(row[c])) for c in classes) <= 1e-5


def test_binary_platt_scaling_keeps_every_decision(galaxies: tuple[Path, Path],
                                                   tmp_path: Path) -> None:
    """A rare positive class trained with class weights: Platt's intercept pulls the
    probabilities down, and the threshold moves with them."""
    _, data = galaxies
    two = tmp_path / "two"
    shutil.copytree(data / "elliptical", two / "elliptical")
    shutil.copytree(data / "merger", two / "merger")
    result = skysort.train(two, project=str(tmp_path / "runs"), name="b", finetune="head",
                           task="binary", split=(0.5, 0.3, 0.2))
    info = json.loads((result.run_dir / "model.json").read_text())
    assert info["calibration"]["method"] == "platt"
    threshold = info["threshold"]
    assert threshold != 0.5
    model, model_info = load_model(result.run_dir)
    paths = sorted(two.rglob("*.jpg"))
    both, _ = model_outputs(model, model_info, paths, which="both")
    assert ((both[:, 0] >= threshold) == (both[:, 1] >= 0.5)).all()
    rows = read_predictions(skysort.predict(result.run_dir, paths, tmp_path / "b.csv",
                                            quiet=True))
    assert [r["prediction"] for r in rows] == \
        [model_info.task.classes[int(u >= 0.5)] for u in both[:, 1]]


def test_calibrate_none_keeps_the_model_s_own_outputs(galaxies: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    _, data = galaxies
    result = skysort.train(data, project=str(tmp_path / "runs"), name="n", finetune="head",
                           split=(0.5, 0.25, 0.25), calibrate="none")
    info = json.loads((result.run_dir / "model.json").read_text())
    assert info["calibration"]["method"] == "none"
    assert result.metrics["calibration"]["uncalibrated"] is None
    model, model_info = load_model(result.run_dir)
    both, _ = model_outputs(model, model_info, sorted(data.rglob("*.jpg"))[:20], which="both")
    assert np.array_equal(both[:, :5], both[:, 5:])


def test_a_run_from_before_calibration_predicts_and_refuses_only_sets(
        galaxies: tuple[Path, Path], tmp_path: Path) -> None:
    run, data = galaxies
    old = tmp_path / "old"
    shutil.copytree(run, old, ignore=shutil.ignore_patterns("model.onnx"))
    info = json.loads((old / "model.json").read_text())
    del info["calibration"], info["conformal"]
    (old / "model.json").write_text(json.dumps(info))
    paths = sorted(data.rglob("*.jpg"))[:6]
    model, model_info = load_model(old)
    assert model_info.calibration is None and model.output is model.uncalibrated
    probs = skysort.Predictor(old).predict_proba(paths)
    both, _ = model_outputs(*load_model(run), paths, which="both")
    assert np.abs(probs - both[:, 5:]).max() <= 1e-5  # its own, uncalibrated outputs
    metrics = skysort.evaluate(old)
    assert metrics["calibration"]["method"] == "none" and "prediction_sets" not in metrics
    with pytest.raises(skysort.SkySortError, match="no conformity scores"):
        skysort.predict(old, paths, tmp_path / "p.csv", coverage=0.9, quiet=True)

    # a resumed prediction must keep the columns of the one it continues
    skysort.predict(run, paths, tmp_path / "r.csv", quiet=True)
    with pytest.raises(skysort.SkySortError, match="options of the interrupted run"):
        skysort.predict(run, paths, tmp_path / "r.csv", resume=True, coverage=0.9, quiet=True)
