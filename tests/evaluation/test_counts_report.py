"""The report of a model of vote counts: its counts section, opened in real Chromium, shows
metrics.json's numbers; the vote-total histogram counts what numpy counts."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import skysort
from skysort.evaluation.plots import plot_vote_totals, vote_histogram
from skysort.evaluation.report import write_report
from skysort.synth.counts import make_vote_count_set
from tests.browser import check_page, open_report


def test_vote_histogram_counts_each_whole_number_of_votes() -> None:
    totals = np.array([0, 2, 2, 3, 7, 7, 7])
    hist = vote_histogram(totals)
    assert hist["edges"] == list(range(9))  # a bin per number of votes, 0 to 7
    assert hist["galaxies"] == np.bincount(totals).tolist()
    wide = vote_histogram(np.arange(0, 300))  # more votes than bins: wider bins
    assert len(wide["galaxies"]) <= 60 and sum(wide["galaxies"]) == 300
    assert wide["edges"][-1] > 299 and np.all(np.diff(wide["edges"]) == 5)
    assert plot_vote_totals(vote_histogram(np.zeros(0)), "q", Path("unused.png")) is None


@pytest.fixture(scope="module")
def counts_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("counts_report")
    images, votes, _ = make_vote_count_set(root / "data", 160, size=64, seed=3)
    result = skysort.train(images, labels=str(votes), project=str(root / "runs"), name="c",
                           finetune="head")
    return Path(result.run_dir)


def _cells(page: Any, selector: str) -> list[str]:
    return [c.strip() for c in page.locator(f"{selector} td").all_inner_texts()]


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None, digits: int) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


@pytest.mark.slow
def test_counts_report_shows_metrics_json(counts_run: Path, browser: Any) -> None:
    report = counts_run / "report.html"
    metrics = json.loads((counts_run / "metrics.json").read_text())  # read here, not by skysort
    assert metrics["task"] == "counts"
    seen = open_report(browser, report)
    page = check_page(seen, report, ["top", "warnings", "data", "training", "results",
                                     "counts", "count-scores", "count-coverage",
                                     "count-questions", "provenance"])
    model, base = metrics["model"], metrics["baseline"]
    # the headline: vote-fraction RMSE beside the baseline's
    assert float(page.locator("#headline").inner_text()) == round(model["rmse"], 4)
    assert float(page.locator("#baseline").inner_text()) == round(base["rmse"], 4)
    for key, digits in (("rmse", 4), ("rmse_weighted", 4), ("rmse_few_votes", 4), ("nll", 3)):
        row = page.locator(f"#count-scores tr[data-key='{key}'] td").all_inner_texts()
        assert row[1:] == [_num(model[key], digits), _num(base[key], digits)], key
    votes = metrics["votes"]
    answers = {"coverage_90": votes["answers_with_few_votes"] + votes["answers_with_many_votes"],
               "coverage_90_few_votes": votes["answers_with_few_votes"],
               "coverage_90_many_votes": votes["answers_with_many_votes"]}
    for key, n in answers.items():
        row = page.locator(f"#count-coverage tr[data-key='{key}'] td").all_inner_texts()
        assert row[1:] == [f"{n:,}", _pct(model[key]), _pct(base[key])], key
    note = page.locator("#coverage-note").inner_text()
    assert "90% predictive interval" in note and "randomised probability integral" in note
    expected = []
    for name, q in metrics["per_question"].items():
        expected += [name, f"{q['galaxies_with_votes']:,}", _num(q["median_votes"], 1),
                     _num(q["rmse"], 4), _num(q["baseline_rmse"], 4), _num(q["nll"], 3),
                     _num(q["baseline_nll"], 3), _pct(q["coverage_90"])]
    assert _cells(page, "#count-questions") == expected
    alts = page.locator("#counts img").evaluate_all("xs => xs.map(x => x.alt)")
    assert alts == ["expected against observed vote fractions", "votes per galaxy"]
    page.screenshot(path=str(counts_run / "counts_report.png"), full_page=True)
    page.close()


@pytest.mark.slow
def test_counts_report_without_per_image_rows(counts_run: Path, tmp_path: Path) -> None:
    """A run whose per-image rows are gone still shows its scores (no scatter to draw)."""
    run = Path(shutil.copytree(counts_run, tmp_path / "run"))
    (run / "metrics_predictions.csv").unlink()
    html = write_report(run).read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    assert 'id="count-questions"' in html and "expected against observed" not in html
    assert re.search(rf"<td>{metrics['model']['rmse']:.4f}</td>", html)
