"""Survey-scale inference: ONNX export, the streaming predictor, resume, and Ray."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import skysort
from skysort.data.batches import BatchDecoder
from skysort.data.transforms import EvalTransform, Preprocess, create_transform
from skysort.device import gpu_present
from skysort.models.export import export_run, onnx_for_run, read_onnx_info
from skysort.models.model import load_model, published_runner
from skysort.models.onnx import OnnxModule
from skysort.models.plan import ResolvedPlan
from skysort.prediction.writers import read_predictions
from skysort.synth.sets import make_vote_fraction_set
from tests.test_cli_end_to_end import cli, read_csv

pytestmark = pytest.mark.slow


def _images(run: Path, paths: list[Path]) -> np.ndarray:
    _, info = load_model(run)
    return np.stack([create_transform(info.preprocess)(p) for p in paths])


def test_onnx_export_matches_torch_and_carries_its_metadata(colour_run: tuple[Path, Path],
                                                             tmp_path: Path) -> None:
    run, data = colour_run
    out = export_run(run, "onnx", tmp_path / "m.onnx")
    info = read_onnx_info(out)
    assert info.task.classes == ["blue", "green", "red"]
    assert info.preprocess.input_size == 224 and info.preprocess.mean == (0.5, 0.5, 0.5)
    paths = sorted(data.rglob("*.png"))[:7]  # real images, an odd batch size
    images = _images(run, paths)
    model, _ = load_model(run)
    expected = published_runner(model)(images)
    got = OnnxModule(out)(images)
    assert got.shape == (7, 3)
    assert np.abs(got - expected).max() <= 1e-4
    np.testing.assert_allclose(got.sum(axis=1), 1, atol=1e-5)


def test_onnx_export_of_a_vote_fraction_tree(tmp_path: Path) -> None:
    images, votes, schema = make_vote_fraction_set(tmp_path / "gz", 60, size=48, seed=1)
    result = skysort.train(images, labels=str(votes), schema=str(schema), epochs=10,
                           project=str(tmp_path / "runs"), name="gz")
    out = export_run(result.run_dir)
    paths = sorted(images.glob("*.jpg"))[:5]
    batch = _images(result.run_dir, paths)
    model, info = load_model(result.run_dir)
    got = OnnxModule(out)(batch)
    assert np.abs(got - published_runner(model)(batch)).max() <= 1e-4
    assert info.task.schema.tree_errors(got.astype(np.float64), info.task.classes).max() < 1e-6


def test_predict_and_evaluate_give_the_same_probabilities(colour_run: tuple[Path, Path],
                                                          tmp_path: Path) -> None:
    run, _ = colour_run
    metrics = skysort.evaluate(run, output=tmp_path / "m.json")
    evaluated = {Path(r["path"]).parts[-2:]: r
                 for r in read_csv(tmp_path / "m_predictions.csv")}
    root = Path(ResolvedPlan.read(run).data_root or "")
    files = [root / r["path"] for r in read_csv(tmp_path / "m_predictions.csv")]
    out = skysort.predict(run, files, tmp_path / "p.csv", quiet=True)  # ONNX Runtime
    predicted = {Path(r["path"]).parts[-2:]: r for r in read_csv(out)}
    assert len(predicted) == metrics["n"] == len(evaluated)
    for name, row in predicted.items():
        for c in ("blue", "green", "red"):
            assert abs(float(row[c]) - float(evaluated[name][c])) <= 1e-4


def test_lists_catalogues_parquet_and_bad_files_stream_through(colour_run: tuple[Path, Path],
                                                               tmp_path: Path) -> None:
    run, data = colour_run
    files = sorted(data.rglob("*.png"))[:10]
    (tmp_path / "broken.png").write_bytes(b"not an image")
    listing = tmp_path / "paths.txt"
    listing.write_text("# images\n" + "\n".join(str(p) for p in files[:5]) + "\nbroken.png\n")
    catalogue = tmp_path / "catalogue.csv"
    catalogue.write_text("ra,dec,file\n" + "\n".join(f"{i},{-i},{p}"
                                                   for i, p in enumerate(files[5:])) + "\n")
    out = skysort.predict(run, [listing, catalogue], tmp_path / "p.parquet", quiet=True,
                          path_column="file", batch_size=4, workers=2)
    rows = read_predictions(out)
    assert [Path(r["path"]).name for r in rows] == [p.name for p in files[:5]] + \
        ["broken.png"] + [p.name for p in files[5:]]
    broken = rows[5]
    assert broken["prediction"] == "" and "not an image" in broken["error"]
    assert all(r["prediction"] == Path(r["path"]).parent.name for r in rows if not r["error"])


def test_a_crashed_decoder_costs_only_its_batch(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    paths = []
    for i in range(12):
        Image.new("RGB", (20, 20), (i * 10, 0, 0)).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    original = EvalTransform.pixels

    def pixels(self: EvalTransform, path: Path) -> np.ndarray:
        if path.name == "5.png":
            os._exit(1)  # a decoder that dies, as a segfault in a codec would
        return original(self, path)

    monkeypatch.setattr(EvalTransform, "pixels", pixels)
    transform = create_transform(Preprocess(input_size=16))
    decoded = list(BatchDecoder(transform, batch_size=4, workers=2)(paths))
    assert [len(c) for c, _ in decoded] == [4, 4, 4]
    assert [c[0].name for c, _ in decoded] == ["0.png", "4.png", "8.png"]
    assert set(decoded[1][1][2]) == {0, 1, 2, 3} and decoded[1][1][0] is None
    assert decoded[0][1][0].shape == (4, 16, 16, 3) and decoded[2][1][0].shape[0] == 4


def test_killed_prediction_resumes_with_exactly_one_row_per_input(
        colour_run: tuple[Path, Path], tmp_path: Path) -> None:
    run, data = colour_run
    source = sorted(data.rglob("*.png"))
    copies = tmp_path / "many"
    copies.mkdir()
    listed = []
    for i in range(900):
        target = copies / f"{i:04d}.png"
        os.link(source[i % len(source)], target)
        listed.append(str(target))
    (tmp_path / "list.txt").write_text("\n".join(listed) + "\n")
    out = tmp_path / "pred.csv"
    cmd = [sys.executable, "-m", "skysort", "predict", str(run), str(tmp_path / "list.txt"),
           "-o", str(out), "--batch-size", "16"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        if out.is_file() and out.stat().st_size > 30_000:  # a few hundred rows in
            break
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = read_csv(out)
    assert 0 < len(partial) < 900
    resumed = cli("predict", run, tmp_path / "list.txt", "-o", out, "--resume",
                  "--batch-size", "16", cwd=tmp_path)
    assert "resuming:" in resumed.stderr and "already in" in resumed.stderr
    rows = read_csv(out)
    assert sorted(r["path"] for r in rows) == sorted(listed)
    assert all(r["prediction"] for r in rows)


def test_ray_engine_gives_the_rows_of_the_single_process_predictor(
        colour_run: tuple[Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("ray")
    run, data = colour_run
    files = sorted(data.rglob("*.png"))[:24]
    shutil.copy(files[0], tmp_path / "extra.png")
    (tmp_path / "bad.png").write_bytes(b"")
    inputs = [*map(str, files), str(tmp_path / "extra.png"), str(tmp_path / "bad.png")]
    single = read_predictions(skysort.predict(run, inputs, tmp_path / "single.csv",
                                              quiet=True))
    from skysort.prediction.ray import predict_on_ray

    out = predict_on_ray(run, inputs, tmp_path / "ray_out", actors=2, batch_size=8)
    ray_rows = []
    for shard in sorted(out.glob("*.csv")):
        ray_rows += read_csv(shard)
    assert len(ray_rows) == len(single) == 26
    by_path = {r["path"]: r for r in ray_rows}
    for row in single:
        other = by_path[str(Path(row["path"]).resolve())]
        assert other["prediction"] == row["prediction"]
        assert (other["error"] or "") == row["error"]
        for c in ("blue", "green", "red", "probability"):
            if row[c]:
                assert abs(float(other[c]) - float(row[c])) <= 1e-6


def test_torch_and_onnx_engines_agree(colour_run: tuple[Path, Path]) -> None:
    run, data = colour_run
    files = sorted(data.rglob("*.png"))[:9]
    by_onnx = skysort.Predictor(run, engine="onnx").predict_proba(files)
    by_torch = skysort.Predictor(run, engine="torch").predict_proba(files)
    assert np.abs(by_onnx - by_torch).max() <= 1e-4


def test_predicting_on_a_cpu_imports_neither_torch_nor_timm(colour_run: tuple[Path, Path],
                                                            tmp_path: Path) -> None:
    """The ONNX Runtime path starts in a fraction of a second: torch alone takes more."""
    if gpu_present():
        pytest.skip("with a GPU, engine=auto asks torch whether it can use it")
    run, data = colour_run
    onnx_for_run(run)  # exported once, as the first prediction does
    skysort.Predictor(run)  # and the engine checked once (RUN/engine_check.json)
    script = ("import sys, skysort; skysort.predict(sys.argv[1], [sys.argv[2]], sys.argv[3], "
              "quiet=True); print(sorted(m for m in ('torch', 'timm', 'sklearn') "
              "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", script, str(run), str(data),
                           str(tmp_path / "p.csv")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    assert len(read_csv(tmp_path / "p.csv")) == len(list(data.rglob("*.png")))


def test_test_time_augmentation_averages_the_views(colour_run: tuple[Path, Path]) -> None:
    """Colour patches look the same rotated and flipped: the average of the eight views
    keeps the prediction, and it is an average (rows still sum to one)."""
    run, data = colour_run
    files = sorted(data.rglob("*.png"))[:6]
    plain = skysort.Predictor(run, workers=0).predict_proba(files)
    averaged = skysort.Predictor(run, workers=0, tta=True).predict_proba(files)
    assert np.allclose(averaged.sum(axis=1), 1.0, atol=1e-5)
    assert (averaged.argmax(axis=1) == plain.argmax(axis=1)).all()
    assert np.abs(averaged - plain).max() < 0.1
    assert not np.array_equal(averaged, plain)  # the views were really run


@pytest.fixture(scope="module")
def counts_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A vote-count model (GZ DECaLS-style table, recognised with no flag) and its images."""
    from skysort.synth.counts import make_vote_count_set

    work = tmp_path_factory.mktemp("counts")
    images, votes, _ = make_vote_count_set(work / "gz", 60, size=32, seed=6)
    result = skysort.train(images, labels=str(votes), finetune="head", epochs=10,
                           project=str(work / "runs"), name="n")
    return result.run_dir, images


def test_onnx_export_of_a_count_model_gives_torchs_concentrations(
        counts_run: tuple[Path, Path], tmp_path: Path) -> None:
    run, images = counts_run
    out = export_run(run, "onnx", tmp_path / "n.onnx")
    info = read_onnx_info(out)
    assert info.task.kind == "counts" and info.task.tree() is not None
    batch = _images(run, sorted(images.glob("*.jpg"))[:5])
    model, _ = load_model(run)
    expected = published_runner(model)(batch).astype(np.float64)
    got = OnnxModule(out)(batch).astype(np.float64)
    np.testing.assert_allclose(got, expected, rtol=1e-5)  # concentrations, 1 to 101
    np.testing.assert_allclose(info.task.fractions(got), info.task.fractions(expected),
                               atol=1e-6)


def test_ray_engine_gives_the_rows_of_the_single_process_predictor_for_counts(
        counts_run: tuple[Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("ray")
    run, images = counts_run
    files = [str(p) for p in sorted(images.glob("*.jpg"))[:16]]
    (tmp_path / "bad.jpg").write_bytes(b"")
    inputs = [*files, str(tmp_path / "bad.jpg")]
    single = read_predictions(skysort.predict(run, inputs, tmp_path / "single.csv",
                                              quiet=True))
    from skysort.prediction.ray import predict_on_ray

    out = predict_on_ray(run, inputs, tmp_path / "ray_out", actors=2, batch_size=8)
    ray_rows = [r for shard in sorted(out.glob("*.csv")) for r in read_csv(shard)]
    assert len(ray_rows) == len(single) == 16  # the unreadable file: in the errors file
    assert [Path(r["path"]).name for r in read_csv(tmp_path / "single_errors.csv")] == \
        ["bad.jpg"]
    by_id = {r["iauname"]: r for r in ray_rows}
    for row in single:
        other = by_id[row["iauname"]]
        assert other.keys() == row.keys() and any(c.endswith("_hi") for c in row)
        for c in row:
            if c != "iauname":
                assert abs(float(other[c]) - float(row[c])) <= 1e-6, c
