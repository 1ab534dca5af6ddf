"""``skysort suggest`` on a real trained run, checked against ``skysort predict``'s own
probabilities, and its user errors as the command line prints them."""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import skysort
from skysort.cli import main
from tests.conftest import write_color_folders

pytestmark = pytest.mark.slow
CLASSES = ("red", "green", "blue")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Path]]:
    """A run, its data and a pool; the embedding pass runs ONNX Runtime f32, as predict
    does (on a CPU with native bf16 it would take OpenVINO bf16, whose probabilities
    differ from predict's in the last digits, and these tests compare them to 2e-4)."""
    from skysort.models import openvino

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(openvino, "available", lambda: False)
        yield _trained(tmp_path_factory)


def _trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("suggest")
    data = write_color_folders(root / "data", per_class=8, size=32, classes=CLASSES)
    # a noisier pool: some patches sit between two colours
    pool = write_color_folders(root / "pool", per_class=14, size=32, seed=5, noise=110.0,
                               classes=CLASSES)
    run = skysort.train(data, project=str(root / "runs"), name="r", epochs=40, finetune="head",
                        input_size=32).run_dir
    return run, data, pool


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_margin_picks_what_predict_calls_least_sure(trained: tuple[Path, Path, Path],
                                                    tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    run, data, pool = trained
    out = tmp_path / "to_label.csv"
    assert main(["suggest", str(run), str(pool), str(data / "red"), "-n", "6",
                 "--strategy", "margin", "-o", str(out)]) == 0
    assert "skysort label" in capsys.readouterr().out
    chosen = _rows(out)
    assert [r["rank"] for r in chosen] == ["1", "2", "3", "4", "5", "6"]
    # the run's own images, named in the pool, are left out and listed
    skipped = _rows(tmp_path / "to_label_skipped.csv")
    assert {Path(r["path"]).name for r in skipped} == {p.name for p in (data / "red").iterdir()}
    assert {r["reason"] for r in skipped} == {"already labelled"}

    # independent: skysort predict's probabilities for the whole pool
    predicted = {Path(r["path"]).resolve(): r for r in _rows(
        skysort.predict(run, [pool], tmp_path / "pred.csv", quiet=True))}
    assert len(predicted) == 3 * 14
    probs = {p: np.array([float(r[c]) for c in CLASSES]) for p, r in predicted.items()}
    margin = {p: float(np.diff(np.sort(v)[-2:])[0]) for p, v in probs.items()}
    order = sorted(margin, key=margin.get)  # type: ignore[arg-type]
    picked = [Path(r["path"]).resolve() for r in chosen]
    assert set(picked) == set(order[:6]) or (  # ties at the edge, within ONNX's rounding
        max(margin[p] for p in picked) <= margin[order[5]] + 1e-4)
    for r in chosen:
        row = predicted[Path(r["path"]).resolve()]
        assert r["prediction"] == row["prediction"]
        assert float(r["probability"]) == pytest.approx(float(row["probability"]), abs=2e-4)
        assert float(r["score"]) == pytest.approx(
            1 - margin[Path(r["path"]).resolve()], abs=2e-4)
        assert re.match(r"least sure \d of 42: between ", r["reason"]), r["reason"]


def test_informed_batch_is_uncertain_and_spread(trained: tuple[Path, Path, Path],
                                                tmp_path: Path) -> None:
    run, _, pool = trained
    # 3 picks among the 3 * 5 = 15 least sure of the 42 pool images
    rows = _rows(skysort.suggest(run, [pool], 3, top_factor=5, output=tmp_path / "d.csv",
                                 strategy="margin-kcenter", quiet=True))
    assert len({r["path"] for r in rows}) == 3
    assert all("unlike the labelled and chosen images" in r["reason"] for r in rows)
    everything = _rows(skysort.suggest(run, [pool], 42, strategy="margin",
                                       output=tmp_path / "all.csv", quiet=True))
    assert len(everything) == 42
    scores = {r["path"]: float(r["score"]) for r in everything}
    fifteenth = sorted(scores.values(), reverse=True)[14]
    assert all(scores[r["path"]] >= fifteenth for r in rows)
    assert all(float(r["score"]) == pytest.approx(scores[r["path"]]) for r in rows)
    rand = _rows(skysort.suggest(run, [pool], 5, strategy="random", output=tmp_path / "r.csv",
                                 quiet=True))
    assert all(r["reason"].startswith("random pick") for r in rand)
    # the default: the informed picks (the first two of margin-kcenter's for 3, 2 of 3
    # here, 1 random), alternating with a random pick
    mixed = _rows(skysort.suggest(run, [pool], 3, top_factor=5, output=tmp_path / "m.csv",
                                  quiet=True))
    informed = _rows(skysort.suggest(run, [pool], 2, top_factor=5, output=tmp_path / "i.csv",
                                     strategy="margin-kcenter", quiet=True))
    assert [mixed[0]["path"], mixed[2]["path"]] == [r["path"] for r in informed]
    assert mixed[1]["reason"].startswith("random pick")


def test_a_copy_of_a_labelled_image_is_left_out_and_look_alikes_kept(
        trained: tuple[Path, Path, Path], tmp_path: Path) -> None:
    from PIL import Image

    run, data, pool = trained
    extra = tmp_path / "extra"
    extra.mkdir()
    original = data / "green" / "003.png"
    with Image.open(original) as im:  # turned and re-encoded: other bytes, same picture
        im.transpose(Image.Transpose.ROTATE_90).save(extra / "copy.jpg", quality=90)
    out = skysort.suggest(run, [pool, extra], 50, strategy="margin",
                          output=tmp_path / "t.csv", quiet=True)
    skipped = _rows(tmp_path / "t_skipped.csv")
    assert [Path(r["path"]).name for r in skipped] == ["copy.jpg"]
    assert skipped[0]["reason"].startswith(f"near-duplicate of labelled {original}")
    # every other image stays, however alike its embedding (colour patches are alike)
    assert len(_rows(out)) == 42


def test_user_errors_are_one_line(trained: tuple[Path, Path, Path], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    run, data, _ = trained
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (["suggest", str(run), str(empty)], "DataError: no image files found in"),
        (["suggest", str(run), str(data)], "DataError: none of the 24 pool image(s) needs a "
                                           "label: each is already labelled"),
        (["suggest", str(tmp_path), str(data)], "RunError: "),
    ]
    multilabel = tmp_path / "multilabel_run"
    multilabel.mkdir()
    info = json.loads((run / "model.json").read_text())
    info["task"] = {**info["task"], "kind": "multilabel"}
    (multilabel / "model.json").write_text(json.dumps(info))
    cases.append((["label", str(run / "to_label.csv"), "--out", str(tmp_path / "l.csv"),
                   "--run", str(multilabel)], "ConfigError: "))
    for argv, message in cases:
        assert main(argv) == 1, argv
        lines = capsys.readouterr().err.strip().splitlines()  # progress, then the error
        assert lines[-1].startswith(message), (argv, lines)
        assert not any("Error" in line or "Traceback" in line for line in lines[:-1]), lines


def test_the_label_page_shows_the_runs_labelled_look_alikes(
        trained: tuple[Path, Path, Path], tmp_path: Path,
        capfd: pytest.CaptureFixture[str]) -> None:
    import subprocess
    import sys
    import urllib.request

    from tests.labelling.test_label_page import free_port

    run, data, pool = trained
    to_label = skysort.suggest(run, [pool], 5, output=tmp_path / "to_label.csv", quiet=True)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "skysort", "label", str(to_label), "--run",
                             str(run), "--out", str(tmp_path / "labels.csv"), "--port",
                             str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(f"skysort label: http://127.0.0.1:{port}/")
        url = f"http://127.0.0.1:{port}/"
        with urllib.request.urlopen(url + "api/state", timeout=30) as response:
            state = json.load(response)
        shown = state["labelled"]
        assert len(shown) == 4
        # each look-alike is a labelled image of the run, captioned with its own label
        truth = {(data / r["path"]).resolve(): r["label"] for r in _rows(run / "split.csv")}
        assert all(truth[Path(s["path"]).resolve()] == s["label"] for s in shown), shown
        assert [s["similarity"] for s in shown] == sorted((s["similarity"] for s in shown),
                                                          reverse=True)
        with urllib.request.urlopen(url + f"labelled/{shown[0]['index']}", timeout=30) as r:
            assert r.headers["Content-Type"] == "image/jpeg" and r.read(2) == b"\xff\xd8"
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(url + "labelled/999", timeout=30)
        for _ in range(2):  # two answers: the model's own guess
            item = state["item"]
            request = urllib.request.Request(
                url + "api/answer", json.dumps({"key": item["key"],
                                                "label": item["prediction"]}).encode(),
                {"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as response:
                state = json.load(response)
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    # the answer file began with the run's 24 labels, so training again reads old and new
    answers = _rows(tmp_path / "labels.csv")
    assert len(answers) == 24 + 2
    root = Path(os.path.commonpath([data, pool]))
    old = {(data / r["path"]).resolve(): r["label"] for r in _rows(run / "split.csv")}
    assert {(root / r["path"]).resolve(): r["label"] for r in answers[:24]} == old
    capfd.readouterr()
    again = skysort.train(root, labels=str(tmp_path / "labels.csv"), project=str(tmp_path),
                          name="again", epochs=3, finetune="head", input_size=32)
    split = _rows(again.run_dir / "split.csv")
    assert len(split) == 26
    # every embedding, the two new images' too (suggest embedded them), from the cache
    assert "embeddings: 26 of 26 images read from the cache, 0 to compute" in \
        capfd.readouterr().err
