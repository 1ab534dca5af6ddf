"""Vote counts through the command line (its parser and commands in this process; the
killed run is a program of its own): a GZ DECaLS count table trains with no flag
but ``--labels``, predicts fractions with their intervals, evaluates, resumes after
``kill -9`` to the uninterrupted weights, and its concentration calibration is the same in
torch and ONNX Runtime; a GZ2 table (Hart et al. 2016 names) trains with no flag too."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file
from scipy import stats

import skysort
from skysort.data.transforms import create_transform
from skysort.models.export import onnx_for_run
from skysort.models.model import load_model, published_runner
from skysort.models.onnx import OnnxModule
from skysort.synth.counts import COUNT_TREE, make_vote_count_set
from skysort.tasks.schema import gz2_schema
from skysort.training.checkpoint import read_state
from tests.tasks.test_counts import gz2_catalogue
from tests.test_cli_end_to_end import cli as run_cli
from tests.test_cli_end_to_end import read_csv

pytestmark = pytest.mark.slow

#: Fine-tuning (so that a run can be resumed), in epochs of about a second, on 200 small
#: images; half of them train and 60 validate, enough to fit a calibration.
#: precision=fp32: with precision=auto each run times fp32 against bf16 and may choose
#: differently from the run it is compared with.
SETTINGS = ["precision=fp32", "finetune=last:1", "finetune_epochs=4", "finetune_batch_size=8",
            "finetune_patience=10", "epochs=10", "input_size=64", "workers=1",
            "split=0.5,0.3,0.2"]
#: The answers of the simulated catalogue's tree, by question (written here from
#: skysort.synth.counts.COUNT_TREE, not read from the run).
QUESTIONS = {q["name"]: q["answers"] for q in COUNT_TREE["questions"]}
ANSWERS = [a for answers in QUESTIONS.values() for a in answers]


@pytest.fixture(scope="module")
def counts_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """``(work folder, run, what train printed)``: one uninterrupted run."""
    work = tmp_path_factory.mktemp("counts")
    make_vote_count_set(work / "gz", 200, size=48, seed=2)
    proc = run_cli("train", work / "gz" / "images", "--labels", work / "gz" / "votes.csv",
                   "--name", "whole", *SETTINGS, cwd=work)
    return work, work / "runs" / "whole", proc.stdout + proc.stderr


def _observed(rows: list[dict[str, str]]) -> np.ndarray:
    """Each answer's share of its question's votes (NaN where the question got none)."""
    counts = np.array([[float(r[a]) for a in ANSWERS] for r in rows])
    out = np.full_like(counts, np.nan)
    for answers in QUESTIONS.values():
        cols = [ANSWERS.index(a) for a in answers]
        total = counts[:, cols].sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore"):  # 0 / 0 where nobody was asked
            out[:, cols] = np.where(total > 0, counts[:, cols] / total, np.nan)
    return out


def test_a_count_catalogue_trains_predicts_and_evaluates_with_no_flag(
        counts_run: tuple[Path, Path, str]) -> None:
    work, run, printed = counts_run
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == "counts" and "task: counts (14 outputs)" in printed
    assert metrics["model"]["rmse"] < 0.95 * metrics["baseline"]["rmse"]
    assert 0.7 <= metrics["model"]["coverage_90"] <= 1.0
    assert "90% interval coverage" in printed
    info = json.loads((run / "model.json").read_text())
    assert info["task"]["classes"] == ANSWERS and info["source"]["id_column"] == "iauname"

    images, votes = work / "gz" / "images", work / "gz" / "votes.csv"
    run_cli("predict", run, images, "-o", work / "p.csv", cwd=work)
    rows = read_csv(work / "p.csv")
    assert list(rows[0]) == ["iauname", *(f"{a}{s}" for a in ANSWERS
                                          for s in ("_fraction", "_lo", "_hi"))]
    assert sorted(r["iauname"] for r in rows) == sorted(r["iauname"] for r in read_csv(votes))
    fraction, lo, hi = (np.array([[float(r[f"{a}{s}"]) for a in ANSWERS] for r in rows])
                        for s in ("_fraction", "_lo", "_hi"))
    for answers in QUESTIONS.values():
        cols = [ANSWERS.index(a) for a in answers]
        np.testing.assert_allclose(fraction[:, cols].sum(axis=1), 1.0, atol=1e-6)
    assert ((lo <= fraction) & (fraction <= hi) & (lo >= 0) & (hi <= 1)).all()
    assert (hi - lo > 0.01).all()  # intervals, not points

    # The test split's RMSE, recomputed from the prediction file and the votes: the RMSE
    # over the answers of the questions that got votes.
    test_ids = {r["id"] for r in read_csv(run / "split.csv") if r["split"] == "test"}
    by_id = {r["iauname"]: r for r in read_csv(votes)}
    predicted = {r["iauname"]: i for i, r in enumerate(rows)}
    ids = sorted(test_ids)
    observed = _observed([by_id[i] for i in ids])
    ours = fraction[[predicted[i] for i in ids]]
    asked = ~np.isnan(observed)
    rmse = float(np.sqrt(((ours - observed)[asked] ** 2).mean()))
    assert rmse == pytest.approx(metrics["model"]["rmse"], abs=1e-5)

    evaluated = run_cli("evaluate", run, "--output", work / "again.json", cwd=work)
    assert "vote-fraction RMSE" in evaluated.stdout
    again = json.loads((work / "again.json").read_text())
    assert again["task"] == "counts" and again["n"] == metrics["n"] == len(ids)
    assert again["model"]["rmse"] == pytest.approx(metrics["model"]["rmse"], abs=1e-6)


def test_the_calibration_is_fitted_or_declined_and_exported_as_torch_applies_it(
        counts_run: tuple[Path, Path, str], tmp_path: Path) -> None:
    work, run, _ = counts_run
    cal = json.loads((run / "model.json").read_text())["calibration"]
    assert cal["fitted_on"] >= 50  # 60 validation images
    if cal["method"] == "none":  # declined: for want of a gain, not of images; check a
        assert cal["reason"] == "no_gain"  # scaling written by hand instead
        shutil.copytree(run, tmp_path / "run", ignore=shutil.ignore_patterns("*.onnx"))
        run = tmp_path / "run"
        cal = {**cal, "method": "concentration", "scale": [0.5] * 3 + [2.0] * 2 + [0.25] * 2
               + [3.0] * 3 + [1.5] * 4}
        info = json.loads((run / "model.json").read_text())
        (run / "model.json").write_text(json.dumps({**info, "calibration": cal}))
    assert cal["method"] == "concentration"
    scale = np.array(cal["scale"])
    for answers in QUESTIONS.values():  # one factor per question
        assert len({scale[ANSWERS.index(a)] for a in answers}) == 1
    assert not np.allclose(scale, 1.0)

    model, info = load_model(run)
    paths = sorted((work / "gz" / "images").glob("*.jpg"))[:7]  # an odd batch size
    batch = np.stack([create_transform(info.preprocess)(p) for p in paths])
    both = published_runner(model, which="both")(batch).astype(np.float64)
    calibrated, plain = both[:, :14], both[:, 14:]
    np.testing.assert_allclose(calibrated, plain * scale, rtol=1e-5)  # model.json's numbers
    by_onnx = OnnxModule(onnx_for_run(run))(batch)  # exported from model.json as it is
    np.testing.assert_allclose(by_onnx, plain * scale, rtol=1e-5)  # ScaledConcentrations
    # The calibration keeps every expected fraction and changes every interval.
    task = info.task
    np.testing.assert_allclose(task.fractions(by_onnx), task.fractions(plain), atol=1e-6)
    assert not np.allclose(task.intervals(by_onnx)[0], task.intervals(plain)[0], atol=1e-3)


def test_onnx_and_torch_prediction_files_agree_with_the_beta_marginals(
        counts_run: tuple[Path, Path, str], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    work, run, _ = counts_run
    files = sorted((work / "gz" / "images").glob("*.jpg"))[:9]
    written = {}
    for engine in ("onnx", "torch"):
        out = skysort.predict(run, files, tmp_path / f"{engine}.csv", engine=engine,
                              workers=0, quiet=True)
        written[engine] = read_csv(out)
    onnx_rows, torch_rows = written["onnx"], written["torch"]
    assert [r["iauname"] for r in onnx_rows] == [r["iauname"] for r in torch_rows] == \
        [p.stem for p in files]
    for a, b in zip(onnx_rows, torch_rows, strict=True):
        assert a.keys() == b.keys()
        assert max(abs(float(a[c]) - float(b[c])) for c in a if c != "iauname") <= 1e-5
    # The file's numbers are the Dirichlet's, computed here from the concentrations:
    # means alpha_k / A, and the 5th and 95th percentiles of Beta(alpha_k, A - alpha_k).
    alpha = skysort.Predictor(run, engine="torch", workers=0).predict_outputs(files)
    by_torch = skysort.Predictor(run, engine="onnx", workers=0).predict_outputs(files)
    np.testing.assert_allclose(by_torch, alpha, rtol=1e-5)
    for row, a in zip(onnx_rows, alpha.astype(np.float64), strict=True):
        for answers in QUESTIONS.values():
            cols = [ANSWERS.index(x) for x in answers]
            total = a[cols].sum()
            for name, k in zip(answers, cols, strict=True):
                assert float(row[f"{name}_fraction"]) == pytest.approx(a[k] / total, abs=2e-6)
                lo, hi = stats.beta.ppf([0.05, 0.95], a[k], total - a[k])
                assert float(row[f"{name}_lo"]) == pytest.approx(lo, abs=2e-6)
                assert float(row[f"{name}_hi"]) == pytest.approx(hi, abs=2e-6)
    # One image: its fractions and intervals on the screen, as the file has them.
    capsys.readouterr()
    skysort.predict(run, files[:1], tmp_path / "one.csv", workers=0)
    shown = dict(line.split() for line in capsys.readouterr().out.splitlines()
                 if line.startswith("  "))
    assert {k: float(v) for k, v in shown.items()} == pytest.approx(
        {k: float(v) for k, v in onnx_rows[0].items() if k != "iauname"}, abs=1e-4)


def test_kill_9_while_fine_tuning_then_resume_gives_the_uninterrupted_weights(
        counts_run: tuple[Path, Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    work, whole, _ = counts_run
    run = work / "runs" / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "skysort", "train", str(work / "gz" / "images"), "--labels",
         str(work / "gz" / "votes.csv"), "--name", "killed", *SETTINGS], cwd=work,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    last = run / "weights" / "last.safetensors"
    seen: list[float] = []
    deadline = time.time() + 300
    while len(seen) < 2 and time.time() < deadline:
        try:
            if read_state(last).get("epoch", 0) >= len(seen) + 1:
                seen.append(time.perf_counter())
                continue
        except Exception:  # absent, or a rename in progress
            pass
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.02)
    assert len(seen) == 2, "no checkpoint of epoch 2 in time"
    time.sleep((seen[1] - seen[0]) / 2)  # halfway through epoch 3
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 2 <= read_state(last)["epoch"] < 4 and not (run / "metrics.json").exists()

    skysort.train(resume=run)  # as skysort train --resume does
    assert "resuming fine-tuning after epoch" in capsys.readouterr().err
    a, b = load_file(str(run / "model.safetensors")), load_file(str(whole / "model.safetensors"))
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-5
    ours = json.loads((run / "metrics.json").read_text())
    theirs = json.loads((whole / "metrics.json").read_text())
    assert ours["model"]["rmse"] == pytest.approx(theirs["model"]["rmse"], abs=1e-6)
    assert [(r["stage"], r["epoch"], round(float(r["val_loss"]), 4))
            for r in read_csv(run / "history.csv")] == \
        [(r["stage"], r["epoch"], round(float(r["val_loss"]), 4))
         for r in read_csv(whole / "history.csv")]


def test_a_gz2_count_catalogue_trains_with_no_flag(tmp_path: Path) -> None:
    """Hart et al. (2016) names with their "_count" suffix, beside the weights, fractions
    and flags that are not counts."""
    schema = gz2_schema()
    gz2_catalogue(tmp_path, 24, seed=11)
    # no task or schema given: skysort train IMG --labels gz2.csv, in this process
    run = skysort.train(tmp_path / "img", labels=str(tmp_path / "gz2.csv"), finetune="head",
                        epochs=3, project=str(tmp_path / "runs"), name="gz2").run_dir
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == "counts"
    assert set(metrics["per_question"]) == {q.name for q in schema.questions}
    task = json.loads((run / "model.json").read_text())["task"]
    assert task["schema"]["name"] == "gz2_hart16"
    assert task["classes"] == schema.columns  # the answers, not their "_count" columns
