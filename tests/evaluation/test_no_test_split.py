"""A run without a test split scores its validation split, which chose the model and
fitted the calibration: metrics.json, the screen and report.html say it is not held out;
a run with a test split says it is."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pytest

from skysort.cli import main
from skysort.evaluation.metrics import NOT_HELD_OUT, format_metrics, not_held_out
from skysort.tasks import make_task
from skysort.training.recipe import train
from tests.conftest import write_color_folders

WARNING = ("scored on the validation split, which chose the model and fitted the "
           "calibration: not held out")


def _pre_split(root: Path, splits: tuple[str, ...]) -> Path:
    for seed, split in enumerate(splits):
        write_color_folders(root / split, per_class=8 if split == "train" else 4, size=32,
                            seed=seed)
    return root


def _page_text(report: Path) -> str:
    """The text a reader sees: tags dropped, entities decoded, spaces collapsed."""
    text = re.sub(r"<style.*?</style>|<[^>]+>", " ", report.read_text(), flags=re.S)
    return " ".join(html.unescape(text).split())


@pytest.mark.slow
def test_a_train_and_val_tree_is_scored_on_val_and_says_not_held_out(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _pre_split(tmp_path / "data", ("train", "val"))
    result = train(data, project=str(tmp_path / "runs"), name="nv", epochs=3, finetune="head")
    out = capsys.readouterr().out
    run = result.run_dir
    metrics = json.loads((run / "metrics.json").read_text())
    # scored on the 12 images of val/ (3 classes of 4), the split that chose the model
    assert metrics["split"] == "val"
    assert metrics["n"] == len(list((data / "val").rglob("*.png"))) == 12
    assert metrics["held_out"] is False
    assert metrics["note"].startswith(WARNING) and "test/ folder" in metrics["note"]
    assert "\n" not in metrics["note"]
    assert f"val split: {metrics['n']} images (not held out)" in out
    assert f"!! NOT HELD OUT: {metrics['note']}" in out
    assert "(measured on the val split, not held out)" in out  # above ECE and coverage
    page = _page_text(run / "report.html")
    assert f"NOT HELD OUT: {metrics['note']}" in page
    assert "Results on the val split (not held out)" in page
    assert "Probabilities on the val split (not held out)" in page
    if metrics.get("prediction_sets"):
        assert "it does not check the sets' guarantee" in page

    # skysort evaluate RUN: no test split, so the val split again, and said so again
    assert main(["evaluate", str(run)]) == 0
    out = capsys.readouterr().out
    again = json.loads((run / "metrics_val.json").read_text())
    assert (again["split"], again["n"], again["held_out"]) == ("val", 12, False)
    assert again["note"] == metrics["note"] and again["model"] == metrics["model"]
    assert f"!! NOT HELD OUT: {again['note']}" in out
    assert f"NOT HELD OUT: {again['note']}" in _page_text(run / "report_val.html")


@pytest.mark.slow
def test_a_run_with_a_test_split_says_held_out(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    data = _pre_split(tmp_path / "data", ("train", "val", "test"))
    result = train(data, project=str(tmp_path / "runs"), name="t", epochs=3, finetune="head")
    out = capsys.readouterr().out
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["held_out"] is True
    assert metrics["n"] == len(list((data / "test").rglob("*.png")))
    assert "note" not in metrics
    assert "not held out" not in out.lower()
    page = _page_text(result.run_dir / "report.html")
    assert "not held out" not in page.lower() and "Results on the test split" in page


def test_metrics_from_before_held_out_are_judged_by_their_split() -> None:
    task = make_task("multiclass", ["a", "b", "c"])
    task.fit_statistics(np.array([0, 0, 1, 2]))
    metrics = task.metrics(np.array([0, 1, 2, 0, 1]), np.eye(3)[[0, 1, 2, 1, 1]])
    assert not_held_out({**metrics, "split": "test"}) is None
    assert not_held_out({**metrics, "split": "all"}) is None  # other data
    assert not_held_out({**metrics, "split": "val"}) == NOT_HELD_OUT["val"]
    assert not_held_out({**metrics, "split": "val", "held_out": True}) is None
    text = format_metrics({**metrics, "split": "train"}, title="train split: 5 images")
    assert text.splitlines()[0] == "train split: 5 images (not held out)"
    assert text.splitlines()[-2] == f"!! NOT HELD OUT: {NOT_HELD_OUT['train']}"
