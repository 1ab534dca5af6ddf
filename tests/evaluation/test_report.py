"""``report.html`` opened as a person opens it: from disk, in real headless Chromium."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import skysort
from skysort.evaluation.report import write_report
from skysort.synth.sets import make_class_folders, make_vote_fraction_set
from tests.browser import check_page, open_report
from tests.test_cli_end_to_end import cli

pytestmark = pytest.mark.slow

MIX = {"elliptical": 90, "spiral": 60, "lenticular": 40, "edge_on": 30, "merger": 30}


def headline_on_page(page: Any) -> float:
    return float(page.locator("#headline").inner_text())


@pytest.fixture(scope="module")
def galaxies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_class_folders(tmp_path_factory.mktemp("report") / "data", MIX, size=64,
                              fmt="jpg", seed=5)


def test_multiclass_report(galaxies: Path, tmp_path: Path, browser: Any) -> None:
    result = skysort.train(galaxies, project=str(tmp_path / "runs"), name="m", finetune="head")
    report = result.run_dir / "report.html"
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    seen = open_report(browser, report)
    page = check_page(seen, report, ["top", "warnings", "data", "training", "results",
                                     "classes", "confusion", "probabilities", "galleries",
                                     "worst", "provenance"])
    assert headline_on_page(page) == round(metrics["model"]["balanced_accuracy"], 4)
    # the gallery of worst mistakes holds only images the per-image rows call wrong
    rows = {r["path"]: r for r in _rows(result.run_dir / "metrics_predictions.csv")}
    wrong = {p for p, r in rows.items() if r["predicted"] != r["true"]}
    shown = [f.get_attribute("data-path") for f in page.locator("#worst figure").all()]
    assert shown and set(shown) <= wrong
    assert len(shown) == min(len(wrong), 48)
    for f in page.locator("#worst figure").all():
        r = rows[f.get_attribute("data-path")]
        assert (f.get_attribute("data-true"), f.get_attribute("data-predicted")) == \
            (r["true"], r["predicted"])
    # the confusion matrix on the page is the one in metrics.json
    cells = page.locator("#confusion td").all_inner_texts()
    assert [int(c.split()[0]) for c in cells] == \
        [x for row in metrics["confusion_matrix"] for x in row]
    page.screenshot(path=str(tmp_path / "multiclass.png"))


def test_binary_report(galaxies: Path, tmp_path: Path, browser: Any) -> None:
    two = tmp_path / "two"
    for c in ("elliptical", "merger"):
        shutil.copytree(galaxies / c, two / c)
    result = skysort.train(two, project=str(tmp_path / "runs"), name="b", finetune="head",
                           task="binary")
    report = result.run_dir / "report.html"
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    seen = open_report(browser, report)
    page = check_page(seen, report, ["top", "data", "training", "results", "classes",
                                     "probabilities", "galleries", "provenance"])
    assert metrics["task"] == "binary"
    assert headline_on_page(page) == round(metrics["model"]["roc_auc"], 4)
    assert "ROC and precision-recall" in page.content()
    rows = {r["path"]: r for r in _rows(result.run_dir / "metrics_predictions.csv")}
    for f in page.locator("#worst figure").all():
        r = rows[f.get_attribute("data-path")]
        assert r["predicted"] != r["true"]


def test_vote_fraction_report(tmp_path: Path, browser: Any) -> None:
    images, votes, schema = make_vote_fraction_set(tmp_path / "gz", 120, size=48, seed=2)
    result = skysort.train(images, labels=str(votes), schema=str(schema), epochs=20,
                           project=str(tmp_path / "runs"), name="f")
    report = result.run_dir / "report.html"
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    seen = open_report(browser, report)
    page = check_page(seen, report, ["top", "data", "training", "results", "fractions",
                                     "provenance"])
    assert headline_on_page(page) == round(metrics["model"]["rmse"], 4)
    assert page.locator("#galleries").count() == 0 and page.locator("#classes").count() == 0
    text = page.inner_text("#fractions")
    for column in metrics["columns"]:
        assert column in text


def test_multilabel_report(galaxies: Path, tmp_path: Path, browser: Any) -> None:
    """Two yes/no labels per galaxy from a table: "round" and "disk"."""
    images = tmp_path / "images"
    images.mkdir()
    lines = ["id,round,disk"]
    for c in MIX:
        for p in sorted((galaxies / c).glob("*.jpg")):
            shutil.copy(p, images / p.name)
            lines.append(f"{p.stem},{int(c in ('elliptical', 'lenticular'))},"
                         f"{int(c in ('spiral', 'edge_on', 'lenticular'))}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    result = skysort.train(tmp_path / "labels.csv", images=str(images), task="multilabel",
                           project=str(tmp_path / "runs"), name="ml", finetune="head")
    report = result.run_dir / "report.html"
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["task"] == "multilabel"
    seen = open_report(browser, report)
    page = check_page(seen, report, ["top", "data", "training", "results", "labels",
                                     "probabilities", "provenance"])
    assert headline_on_page(page) == round(metrics["model"]["macro_roc_auc"], 4)
    assert page.locator("img[alt='ROC and precision-recall curves per label']").count() == 1
    assert "round" in page.inner_text("#labels") and "disk" in page.inner_text("#labels")


def test_galaxy_zoo_report_shows_the_derived_classes(tmp_path: Path, browser: Any) -> None:
    from tests.test_targets_end_to_end import galaxy_zoo_set

    images, labels = galaxy_zoo_set(tmp_path)
    result = skysort.train(images, labels=str(labels), epochs=20,
                           project=str(tmp_path / "runs"), name="gz")
    report = result.run_dir / "report.html"
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["derived_classes"]
    page = check_page(open_report(browser, report), report,
                      ["top", "data", "results", "fractions", "provenance"])
    assert headline_on_page(page) == round(metrics["model"]["rmse"], 4)
    text = page.inner_text("#fractions")
    assert "Derived classes (Galaxy Zoo)" in text and "Class1.1" in text
    for name in ("elliptical", "spiral", "barred spiral"):
        assert f"Called {name} at 0.9" in text
    for figure in page.locator(".derived figure").all():
        assert figure.get_attribute("data-predicted") in ("elliptical", "spiral",
                                                          "barred spiral")


def test_report_of_an_older_run_shows_what_exists(galaxies: Path, tmp_path: Path,
                                                  browser: Any) -> None:
    """A run from before calibration and reports: no history, no per-image rows, no
    calibration in its metrics; `skysort report` still renders what is there."""
    result = skysort.train(galaxies, project=str(tmp_path / "runs"), name="old",
                           finetune="head")
    run = result.run_dir
    for name in ("history.csv", "metrics_predictions.csv", "bad_files.csv",
                 "label_issues.csv", "report.html", "finetune_plan.json"):
        (run / name).unlink(missing_ok=True)
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("calibration", "risk_coverage", "prediction_sets"):
        metrics.pop(key)
    (run / "metrics.json").write_text(json.dumps(metrics))
    proc = cli("report", run, cwd=tmp_path)
    assert f"report written to {run / 'report.html'}" in proc.stdout
    report = run / "report.html"
    seen = open_report(browser, report)
    page = check_page(seen, report, ["top", "data", "results", "classes", "provenance"])
    for absent in ("training", "probabilities"):
        assert page.locator(f"#{absent}").count() == 0
    assert page.locator("#worst figure").count() == 0
    assert headline_on_page(page) == round(metrics["model"]["balanced_accuracy"], 4)


def test_evaluate_on_other_data_writes_its_own_report(galaxies: Path, tmp_path: Path) -> None:
    result = skysort.train(galaxies, project=str(tmp_path / "runs"), name="e",
                           finetune="head")
    other = tmp_path / "other"
    for c in MIX:
        (other / c).mkdir(parents=True)
        for p in sorted((galaxies / c).glob("*.jpg"))[:5]:
            shutil.copy(p, other / c / p.name)
    metrics = skysort.evaluate(result.run_dir, other)
    page = Path(metrics["report"])
    assert page.name == "report_other.html" and page.is_file()
    html = page.read_text()
    assert f"{metrics['model']['balanced_accuracy']:.4f}" in html
    assert not re.search(r'src="(?!data:)', html)  # every image embedded


#: What README promises of a report however large the split or many the classes: a few
#: hundred KB (measured: 460 KB for 2,000 images in 5 classes, 620 KB in 30).
REPORT_BYTES = 700_000


def _repeat_rows(path: Path, n: int = 2000) -> list[dict[str, str]]:
    """Per-image rows of ``n`` images, made from those in ``path`` repeated."""
    rows = _rows(path)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows[i % len(rows)] for i in range(n))
    return _rows(path)


def test_a_large_test_split_gives_a_bounded_report(galaxies: Path, tmp_path: Path) -> None:
    """Per-image rows of 2,000 images (made from the run's own, repeated): the page stays
    small because galleries are capped."""
    result = skysort.train(galaxies, project=str(tmp_path / "runs"), name="big",
                           finetune="head")
    run = result.run_dir
    _repeat_rows(run / "metrics_predictions.csv")
    html = write_report(run).read_text()
    size = len(html.encode())
    assert size < REPORT_BYTES
    assert html.count("<figure") <= 48 + 2 * 8 * len(MIX)  # five classes: 8 and 8 each
    assert "Each class: its 8 most confident correct and 8 most confident wrong images." in html


def test_many_classes_give_a_bounded_report(tmp_path: Path) -> None:
    """30 classes (each morphology's galaxies dealt into six), every image scored and the
    rows repeated to 2,000: two correct and two wrong per class, for the 24 classes with
    the most mistakes (96 thumbnails), and a page of a few hundred KB."""
    source = make_class_folders(tmp_path / "source", 48, size=64, fmt="jpg", seed=7)
    data = tmp_path / "thirty"
    for morphology in sorted(p.name for p in source.iterdir()):
        files = sorted((source / morphology).glob("*.jpg"))
        for j in range(6):
            (data / f"{morphology}_{j}").mkdir(parents=True)
            for f in files[8 * j:8 * j + 8]:
                shutil.copy(f, data / f"{morphology}_{j}" / f.name)
    # input_size=64: what is checked is counted from the rows the run wrote, whatever the
    # model's accuracy, and 240 images embed at a twelfth of the default 224's cost
    run = skysort.train(data, project=str(tmp_path / "runs"), name="c30",
                        finetune="head", input_size=64).run_dir
    metrics = skysort.evaluate(run, data)
    assert metrics["n"] == 240 and len(metrics["classes"]) == 30
    rows = _repeat_rows(run / "metrics_thirty_predictions.csv")
    html = write_report(run, run / "metrics_thirty.json").read_text()
    size = len(html.encode())
    assert size < REPORT_BYTES
    classes = metrics["classes"]
    mistakes = [sum((r["true"] == c) != (r["predicted"] == c) for r in rows) for c in classes]
    shown = sorted(sorted(range(30), key=lambda c: (-mistakes[c], c))[:24])
    headings = re.findall(r"<h3>([^<:]+): most confident correct \((\d+)\) and most "
                          r"confident wrong \((\d+)\)</h3>", html)
    assert [h[0] for h in headings] == [classes[c] for c in shown]
    for (name, right, wrong) in headings:
        assert int(right) == min(2, sum(r["true"] == r["predicted"] == name for r in rows))
        assert int(wrong) == min(2, sum(r["predicted"] == name != r["true"] for r in rows))
    worst = min(48, sum(r["true"] != r["predicted"] for r in rows))
    assert html.count("<figure") == worst + sum(int(a) + int(b) for _, a, b in headings)
    assert ("Each class: its 2 most confident correct and 2 most confident wrong images, "
            "for 24 of 30 classes (those with the most mistakes") in html


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def false_true_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A binary run on class folders named like columns, ``false/`` and ``true/``, with one
    truncated JPEG among them (head only, 32-pixel images)."""
    import io

    from PIL import Image

    root = tmp_path_factory.mktemp("false_true")
    rng = np.random.default_rng(3)
    for name, level in (("false", 60), ("true", 190)):
        (root / "data" / name).mkdir(parents=True)
        for i in range(20):
            pixels = rng.normal(level, 25, (32, 32, 3)).clip(0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / "data" / name / f"{i:02d}.jpg")
    buffer = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), 190, np.uint8)).save(buffer, "JPEG")
    (root / "data" / "true" / "broken.jpg").write_bytes(buffer.getvalue()[:200])
    result = skysort.train(root / "data", project=str(root / "runs"), name="ft",
                           finetune="head", task="binary", epochs=5,
                           cache_dir=str(root / "cache"))
    return result.run_dir


def test_classes_named_like_columns_report(false_true_run: Path, browser: Any) -> None:
    run = false_true_run
    skysort.evaluate(run, split="val")
    for metrics_file in (run / "metrics.json", run / "metrics_val.json"):
        metrics = json.loads(metrics_file.read_text())
        assert metrics["classes"] == ["false", "true"]
        predictions = metrics_file.with_name(metrics_file.stem + "_predictions.csv")
        with open(predictions, newline="") as fh:
            header = next(csv.reader(fh))
        assert len(set(header)) == len(header), header
        assert header == ["path", "true", "predicted", "prob_true", "error"]
        rows = [r for r in _rows(predictions) if not r["error"]]
        assert len(rows) == metrics["n"]
        # the column is P(true): the decisions and the accuracy follow from it
        assert all(r["predicted"] == ("true" if float(r["prob_true"]) >= 0.5 else "false")
                   for r in rows)
        accuracy = np.mean([r["predicted"] == r["true"] for r in rows])
        assert accuracy == pytest.approx(metrics["model"]["accuracy"])
        report = write_report(run, metrics_file)
        assert report.is_file()
        text = open_report(browser, report)["page"].inner_text("#classes")
        assert "false" in text and "true" in text


def test_data_table_leaves_out_unreadable_files(false_true_run: Path, browser: Any) -> None:
    run = false_true_run
    bad = _rows(run / "bad_files.csv")
    assert [r["path"] for r in bad] == ["true/broken.jpg"]
    split = {r["path"]: r["split"] for r in _rows(run / "split.csv")}
    broken_in = split["true/broken.jpg"]
    on_disk = {s: sum(1 for p, x in split.items() if x == s and p != "true/broken.jpg")
               for s in ("train", "val", "test")}
    page = open_report(browser, run / "report.html")["page"]
    table = [row.split("\t") for row in page.locator("#data table").first
             .locator("tr").all_inner_texts()]
    assert table[0] == ["split", "false", "true", "images"]
    shown = {r[0]: int(r[-1]) for r in table[1:]}
    assert shown == on_disk
    metrics = json.loads((run / "metrics.json").read_text())
    assert shown["test"] == metrics["n"]  # as many as were scored
    assert page.inner_text("#left-out") == \
        f"Counts of readable images: 1 unreadable {broken_in} file(s) left out (below)."
