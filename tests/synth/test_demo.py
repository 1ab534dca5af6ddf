"""`skysort demo`, the README's second command, end to end on a small sample (the command
line in this process)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from skysort.synth.demo import DEMO_CLASSES
from tests.test_cli_end_to_end import cli

pytestmark = pytest.mark.slow


def test_demo_renders_trains_evaluates_and_predicts(tmp_path: Path) -> None:
    proc = cli("demo", "--out", tmp_path / "demo", "--per-class", "12", cwd=tmp_path)
    data = tmp_path / "demo" / "galaxies"
    run = tmp_path / "demo" / "runs" / "demo"
    images = sorted(data.rglob("*.png"))
    assert len(images) == 48
    assert sorted(p.name for p in data.iterdir()) == ["edge_on", "elliptical", "merger", "spiral"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["baseline"]["balanced_accuracy"] == 0.25
    assert metrics["model"]["balanced_accuracy"] > 0.5  # clearly above the baseline
    with open(run / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 48 and all(r["prediction"] for r in rows)
    assert f"predictions:  {run / 'predictions.csv'}" in proc.stdout
    assert "skysort evaluate: balanced accuracy" in proc.stdout


def test_demo_of_vote_fractions(tmp_path: Path) -> None:
    proc = cli("demo", "--task", "fractions", "--out", tmp_path / "d", "--per-class", "20",
               cwd=tmp_path)
    run = tmp_path / "d" / "runs" / "demo_fractions"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == "fractions"
    assert metrics["model"]["rmse"] < metrics["baseline"]["rmse"]
    with open(run / "submission.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 20 * len(DEMO_CLASSES) and next(iter(rows[0])) == "GalaxyID"
    assert "test RMSE" in proc.stdout and "mean predictor" in proc.stdout
