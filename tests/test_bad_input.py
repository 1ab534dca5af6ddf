"""Nothing a user can feed skysort crashes it or fools it.

Every unusual input here (images, paths, tables, run folders, settings, flags) must end in
one of two ways: a one-line :class:`~skysort.errors.SkySortError` that names the file, row
or flag and says what would be valid, or a listed skip with its reason; and nothing else
is lost (every other input still has its row, in order).
"""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import load_file, save_file

import skysort
from skysort.cli import build_parser, main
from skysort.config import TrainConfig
from skysort.data.dataset import DataSpec, check_two_classes, open_dataset
from skysort.data.images import load_image, read_or_reason
from skysort.data.sources import iter_image_files
from skysort.errors import ConfigError, DataError, LabelError, ModelError, RunError, SkySortError
from skysort.models.backbones import create_backbone
from skysort.models.export import export_run
from skysort.training.checkpoint import load_checkpoint
from tests.bad_inputs import image_corpus, path_corpus
from tests.conftest import write_color_folders


def one_line(exc: BaseException, *names: str) -> str:
    """The message of ``exc``, checked to be one line that names each of ``names``."""
    text = str(exc)
    assert "\n" not in text, text
    for name in names:
        assert name in text, (name, text)
    return text


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as fh:
        return list(csv.DictReader(fh))


# -- images --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str | None]]:
    """Image kinds and odd paths in one folder: relative path -> None or the reason."""
    root = tmp_path_factory.mktemp("corpus") / "inputs"
    expected = {f"images/{k}": v for k, v in image_corpus(root / "images").items()}
    outside = root.parent / "outside"
    expected.update({f"paths/{k}": v for k, v in path_corpus(root / "paths", outside).items()})
    return root, expected


def test_the_corpus_has_forty_kinds_and_more(corpus: tuple[Path, dict[str, str | None]]
                                             ) -> None:
    _, expected = corpus
    assert len(expected) >= 40
    assert sum(v is None for v in expected.values()) >= 25  # most odd files are valid


def test_each_image_decodes_or_gives_its_reason(corpus: tuple[Path, dict[str, str | None]]
                                                ) -> None:
    root, expected = corpus
    for rel, why in expected.items():
        img, reason = read_or_reason(load_image, root / rel)
        if why is None:
            assert img is not None and img.mode == "RGB", (rel, reason)
        else:
            assert img is None and re.search(why, reason), (rel, reason)
            assert "\n" not in reason


def test_deep_images_are_scaled_by_their_own_range(corpus: tuple[Path, dict[str, str | None]]
                                                   ) -> None:
    """12-bit data in 16-bit RGB files used to decode to 0..15, nearly black."""
    root, _ = corpus
    for name in ("rgb12bit.tif", "rgb16.png", "grey16.png", "float.tif"):
        pixels = np.asarray(load_image(root / "images" / name))
        assert pixels.min() == 0 and pixels.max() == 255, name
    rotated = load_image(root / "images" / "rotated.jpg")
    assert rotated.size == (24, 32)  # EXIF orientation applied: 32 x 24 stored


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("badrun")
    data = write_color_folders(work / "data", per_class=10, size=32, classes=("red", "blue"))
    return skysort.train(data, project=str(work / "runs"), name="r", epochs=15).run_dir


@pytest.mark.slow
def test_predict_writes_one_row_per_file_in_order(run: Path, corpus: tuple[Path, dict],
                                                  tmp_path: Path) -> None:
    root, expected = corpus
    out = tmp_path / "pred.csv"
    proc = subprocess.run([sys.executable, "-m", "skysort", "predict", str(run), str(root),
                           "-o", str(out), "--workers", "2"], capture_output=True, text=True,
                          errors="replace", timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = read_rows(out)
    listed = [os.path.relpath(p, root) for p in iter_image_files(root)]
    assert [os.path.relpath(r["path"], root) for r in rows] == listed
    assert sorted(listed) == sorted(expected)
    for row in rows:
        why = expected[os.path.relpath(row["path"], root)]
        if why is None:
            assert row["prediction"] in ("blue", "red") and not row["error"], row
        else:
            assert not row["prediction"] and re.search(why, row["error"]), row
    assert f"{sum(v is not None for v in expected.values())} file(s) could not be read" in \
        proc.stderr


@pytest.mark.slow
def test_training_lists_bad_files_and_uses_each_good_one_once(
        corpus: tuple[Path, dict], tmp_path: Path) -> None:
    root, expected = corpus
    data = write_color_folders(tmp_path / "data", per_class=10, size=32, classes=("red", "blue"))
    shutil.copytree(root / "images", data / "red" / "odd")
    shutil.copytree(root / "paths", data / "blue" / "odd", symlinks=True)
    result = skysort.train(data, project=str(tmp_path / "runs"), epochs=5, finetune="head")
    bad = {r["path"]: r["reason"] for r in read_rows(result.run_dir / "bad_files.csv")}
    split = [r["path"] for r in read_rows(result.run_dir / "split.csv")]
    assert len(split) == len(set(split))  # the loop link adds nothing twice
    odd = {("red/odd/" + k.removeprefix("images/")) if k.startswith("images/")
           else ("blue/odd/" + k.removeprefix("paths/")): v for k, v in expected.items()}
    # the link out of the copied tree was copied as a link; it still points at a file
    assert {k for k, v in odd.items() if v is not None} == set(bad)
    for path, why in bad.items():
        assert re.search(odd[path], why), (path, why)
    assert {p for p in split if "/odd/" in p} == set(odd)
    # the report too, file names that are not UTF-8 shown by their bytes
    assert "\\xe9" in (result.run_dir / "report.html").read_text(encoding="utf-8")


# -- tables --------------------------------------------------------------------------------


def _images(folder: Path, n: int = 6) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(folder / f"g{i}.png")
    return folder


@pytest.mark.parametrize(("text", "outcome"), [
    ("\ufeffname,label\ng0,a\ng1,b\ng2,a\n", {"ids": ["g0", "g1", "g2"]}),  # BOM
    ("name,label\r\ng0,a\r\ng1,b\r\n", {"ids": ["g0", "g1"]}),  # CRLF
    ("name;label\ng0;a\ng1;b\ng2;b\n", {"ids": ["g0", "g1", "g2"]}),  # ; delimiter
    ("name\tlabel\ng0\ta\ng1\tb\n", {"ids": ["g0", "g1"]}),  # tabs
    ("name,label\ng0,a\ng0,b\ng1,a\ng2,b\n", {"ids": ["g1", "g2"], "issue": "duplicate id"}),
    ("name,label\ng0,a\nmissing,b\ng1,b\n", {"ids": ["g0", "g1"], "issue": "missing image"}),
    ("name,x,y\ng0,0.5,0.5\ng1,nan,0.2\ng2,0.1,0.9\n",
     {"ids": ["g0", "g2"], "issue": "missing target"}),
    ("name,x,y\ng0,0.5,0.5\ng1,1.5,0.2\ng2,0.1,0.9\n",
     {"ids": ["g0", "g2"], "issue": "out of range"}),
    ("name,x,y\ng0,0.5,0.5\ng1,abc,0.2\ng2,0.1,0.9\n",
     {"ids": ["g0", "g2"], "issue": "missing target"}),  # a value that is not a number
    ("name,label\n../g0,a\ng1,b\n", {"error": (LabelError, "row 2", "outside")}),
    ("name,label\n/etc/passwd,a\ng1,b\n", {"error": (LabelError, "row 2", "outside")}),
    ("", {"error": (LabelError, "empty")}),
    ("name,label\n", {"error": (LabelError, "no usable rows")}),
    ("name,label\ng0,a\ng1,a\ng2,a\n", {"error": (DataError, "one class", "'a'")}),
    ("name,label\ng0,1\ng1,0\n,\n", {"ids": ["g0", "g1"]}),  # an empty row is skipped
])
def test_tables(tmp_path: Path, text: str, outcome: dict) -> None:
    _images(tmp_path)
    table = tmp_path / "labels.csv"
    table.write_text(text, encoding="utf-8", newline="")
    try:
        data = open_dataset(DataSpec(data=str(table)))
        check_two_classes(data)
    except SkySortError as exc:
        kind, *words = outcome.get("error", (None,))
        assert kind is not None and isinstance(exc, kind), exc
        one_line(exc, *words)
        return
    assert "error" not in outcome, f"expected {outcome['error']}"
    assert data.ids == outcome["ids"]
    if "issue" in outcome:
        assert outcome["issue"] in {i.kind for i in data.issues}


def test_a_table_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    _images(tmp_path)
    (tmp_path / "labels.csv").write_bytes("name,label\ng0,caf\xe9\ng1,th\xe9\n".encode("latin-1"))
    with pytest.raises(LabelError) as info:
        open_dataset(DataSpec(data=str(tmp_path / "labels.csv")))
    one_line(info.value, "labels.csv", "UTF-8")


def test_one_class_is_an_error_that_says_what_was_meant(tmp_path: Path) -> None:
    """A Galaxy Zoo folder given without --labels reads as one class, "images"."""
    gz = tmp_path / "gz"
    _images(gz / "images")
    (gz / "solutions.csv").write_text("GalaxyID,Class1.1\ng0,0.5\n")
    data = open_dataset(DataSpec(data=str(gz)))
    with pytest.raises(DataError) as info:
        check_two_classes(data)
    one_line(info.value, "one class, 'images'", "--labels", "solutions.csv")
    plain = tmp_path / "plain"
    _images(plain / "spiral")
    with pytest.raises(DataError) as info:
        skysort.train(plain, project=str(tmp_path / "runs"))
    one_line(info.value, "one class, 'spiral'", "DATA/<class>/")
    assert not (tmp_path / "runs").exists()  # refused before anything was written


# -- run folders ---------------------------------------------------------------------------


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:1000])


def _pickle(path: Path) -> None:
    state = {k: v.clone() for k, v in load_file(path).items()}  # not the mapped file
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path.write_bytes(buffer.getvalue())


def _classes(path: Path) -> None:
    """model.json of another kind of run: two softmax outputs for weights with one."""
    info = json.loads(path.read_text())
    info["task"]["kind"] = "multiclass"
    path.write_text(json.dumps(info))


DAMAGE = {
    "no run": ("", lambda run: shutil.rmtree(run), "no such run directory"),
    "no model.json": ("model.json", lambda p: p.unlink(), "model.json is missing"),
    "model.json not JSON": ("model.json", lambda p: p.write_text("{"), "damaged"),
    "model.json without keys": ("model.json", lambda p: p.write_text('{"task": {}}'),
                                "damaged"),
    "no weights": ("model.safetensors", lambda p: p.unlink(), "missing"),
    "truncated weights": ("model.safetensors", _truncate, "not a whole safetensors file"),
    "pickled weights": ("model.safetensors", _pickle, "a pickle"),
    "classes do not fit the weights": ("model.json", _classes, "do not fit"),
}


@pytest.mark.slow
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_run_is_a_run_error_naming_its_file(run: Path, tmp_path: Path,
                                                      damage: str) -> None:
    name, spoil, words = DAMAGE[damage]
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    spoil(copy / name if name else copy)
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32), (200, 40, 40)).save(image)
    calls = {"predict": lambda: skysort.predict(copy, [image], tmp_path / "p.csv", quiet=True,
                                                workers=0),
             "evaluate": lambda: skysort.evaluate(copy),
             "export": lambda: export_run(copy)}
    for call in calls.values():
        with pytest.raises(RunError) as info:
            call()
        one_line(info.value, words, str(copy), *([name] if name else []))


@pytest.mark.slow
def test_a_replaced_model_is_never_predicted_with_a_stale_onnx_file(run: Path,
                                                                    tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32), (120, 40, 160)).save(image)
    before = skysort.Predictor(copy, engine="onnx", workers=0).predict_proba([image])
    state = load_file(copy / "model.safetensors")
    # a model that answers the other class for this image
    state["head.1.bias"] = torch.full_like(state["head.1.bias"],
                                           20.0 if before[0, 1] < 0.5 else -20.0)
    save_file(state, copy / "model.safetensors")
    os.utime(copy / "model.safetensors", (1, 1))  # older than model.onnx: times must not count
    after = skysort.Predictor(copy, engine="onnx", workers=0).predict_proba([image])
    expected = skysort.Predictor(copy, engine="torch", workers=0).predict_proba([image])
    np.testing.assert_allclose(after, expected, atol=1e-5)
    assert np.abs(after - before).max() > 0.05


# -- pickles -------------------------------------------------------------------------------


class Evil:
    """Unpickling this creates a file: proof that a pickle ran code."""

    marker = Path("never")

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


@pytest.mark.slow
def test_no_weights_file_ever_runs_a_pickle(run: Path, tmp_path: Path) -> None:
    Evil.marker = tmp_path / "pwned"
    raw = pickle.dumps({"state_dict": Evil()})
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "weights").mkdir(exist_ok=True)
    places = {"evil.pt": tmp_path / "evil.pt", "evil.pth": tmp_path / "evil.pth",
              "model.safetensors": copy / "model.safetensors",
              "last.safetensors": copy / "weights" / "last.safetensors",
              "best.safetensors": copy / "weights" / "best.safetensors"}
    for name, path in places.items():
        if name.endswith(".pth"):
            torch.save({"state_dict": Evil()}, path)  # the zip format torch.save writes
        else:
            path.write_bytes(raw)
    for name in ("evil.pt", "evil.pth"):
        with pytest.raises(ModelError) as info:
            create_backbone(weights=str(places[name]))
        one_line(info.value, name, "pickle", "weights_only=True", "safetensors")
    with pytest.raises(RunError) as info:
        skysort.predict(copy, [tmp_path], tmp_path / "p.csv", quiet=True, workers=0)
    one_line(info.value, "model.safetensors", "a pickle")
    for name in ("last.safetensors", "best.safetensors"):
        with pytest.raises(RunError) as info:
            load_checkpoint(places[name], torch.nn.Linear(2, 2))
        one_line(info.value, name, "a pickle")
    with pytest.raises(RunError):
        skysort.train(resume=copy)
    assert not Evil.marker.exists()
    with pytest.raises(pickle.UnpicklingError):  # the file really is a working exploit...
        torch.load(places["evil.pt"], weights_only=True)
    pickle.loads(raw)
    assert Evil.marker.exists()  # ...as plain pickle shows


# -- settings and flags --------------------------------------------------------------------


@pytest.mark.parametrize(("key", "value", "words"), [
    ("epoch", 3, ["epoch", "valid keys", "'epochs'"]),
    ("epochs", True, ["epochs=True", "whole number"]),
    ("epochs", "many", ["epochs='many'", "whole number"]),
    ("epochs", 2.5, ["epochs=2.5", "whole number"]),
    ("epochs", 0, ["epochs=0", "at least 1"]),
    ("batch_size", -1, ["batch_size=-1", "at least 1"]),
    ("workers", -1, ["workers=-1", "0 or more"]),
    ("lr", [1e-3], ["lr=[0.001]", "float"]),
    ("lr", float("nan"), ["lr=nan", "float"]),
    ("backbone", ["resnet18"], ["backbone=['resnet18']", "text"]),
    ("exist_ok", "maybe", ["exist_ok='maybe'", "true or false"]),
    ("exist_ok", 1, ["exist_ok=1", "true or false"]),
    ("augment", "flip", ["augment='flip'", "sky, photo, none"]),
    ("device", "banana", ["device='banana'", "cuda:N"]),
    ("threshold", 1.0, ["threshold=1.0", "between 0 and 1"]),
    ("seed", -1, ["seed=-1", "0 or more"]),
    ("patience", 0, ["patience=0", "at least 1"]),
    ("input_size", 100_000, ["input_size=100000", "2048"]),
    ("center_fraction", 0, ["center_fraction=0", "[0.05, 1]"]),
    ("finetune", "last:x", ["finetune='last:x'", "last:N"]),
    ("precision", "fp16", ["precision='fp16'", "auto, fp32, bf16"]),
    ("split", "0.5", ["split", "three"]),
    ("derived_thresholds", "0.6,1.2", ["derived_thresholds", "between 0 and 1"]),
])
def test_bad_settings_are_one_line_config_errors(key: str, value: object,
                                                 words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        TrainConfig().updated({key: value})
    one_line(info.value, *words)


def test_settings_in_yaml_keep_their_types(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("epochs: true\n")
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_yaml(tmp_path / "c.yaml")
    one_line(info.value, "epochs=True")
    (tmp_path / "latin.yaml").write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_yaml(tmp_path / "latin.yaml")
    one_line(info.value, "latin.yaml")


@pytest.mark.parametrize("argv", [
    ["predict", "RUN", "x.png", "--workers", "-1"],
    ["predict", "RUN", "x.png", "--batch-size", "0"],
    ["predict", "RUN", "x.png", "--batch-size", "-1"],
    ["predict", "RUN", "x.png", "--top-k", "0"],
    ["predict", "RUN", "x.png", "--workers", "two"],
    ["predict", "RUN", "x.png", "--format", "json"],
    ["predict", "RUN", "x.png", "--engine", "tensorflow"],
    ["train", "DATA", "--workers", "-1"],
    ["train", "DATA", "--epochs", "0"],
    ["train", "DATA", "--input-size", "8"],
    ["train", "DATA", "--augment", "flip"],
    ["evaluate", "RUN", "--workers", "-1"],
    ["demo", "--per-class", "0"],
])
def test_bad_flags_are_usage_errors_naming_the_flag(argv: list[str],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    flag = next(a for a in argv if a.startswith("--"))
    assert flag in last, last


@pytest.mark.slow
def test_an_output_of_an_unknown_format_is_refused(run: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32)).save(image)
    assert main(["predict", str(run), str(image), "-o", str(tmp_path / "out.json")]) == 1
    err = capsys.readouterr().err
    assert "ConfigError" in err and ".json" in err and "*.csv or *.parquet" in err
    assert not (tmp_path / "out.json").exists()


@pytest.mark.slow
def test_balance_sampler_is_refused_for_targets_without_one_class(tmp_path: Path) -> None:
    _images(tmp_path)
    (tmp_path / "votes.csv").write_text("id,x,y\n" + "".join(
        f"g{i},{i / 10:.1f},{1 - i / 10:.1f}\n" for i in range(6)))
    with pytest.raises(ConfigError) as info:
        skysort.train(tmp_path / "votes.csv", balance="sampler", project=str(tmp_path / "r"))
    one_line(info.value, "balance=sampler", "fractions", "balance=weights")


# -- property-based ------------------------------------------------------------------------

CELL = st.one_of(st.sampled_from(["0", "1", "0.5", "nan", "", "1.5", "-1", "abc", "yes",
                                  "g1", "../g2", "/abs", " 0.25 "]),
                 st.text(st.characters(blacklist_categories=("Cs",)), max_size=6))
ID = st.one_of(st.sampled_from([f"g{i}" for i in range(6)]), CELL)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header=st.lists(CELL, min_size=1, max_size=4),
       rows=st.lists(st.tuples(ID, st.lists(CELL, max_size=4)), max_size=8),
       delimiter=st.sampled_from([",", ";"]))
def test_any_table_is_read_or_refused_with_a_skysort_error(
        tmp_path_factory: pytest.TempPathFactory, header: list[str],
        rows: list[tuple[str, list[str]]], delimiter: str) -> None:
    folder = _images(tmp_path_factory.mktemp("prop"))
    table = folder / "t.csv"
    with open(table, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, delimiter=delimiter)
        writer.writerow(["id", *header])
        for key, values in rows:
            writer.writerow([key, *values])
    try:
        data = open_dataset(DataSpec(data=str(table)))
        check_two_classes(data)
    except SkySortError as exc:
        assert "\n" not in str(exc)
    else:
        assert len(data) == len(data.ids) == len(data.targets) > 0


NUMBER = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True), st.booleans(),
                   st.text(max_size=6), st.none(), st.lists(st.integers(), max_size=2))


@settings(max_examples=150, deadline=None)
@given(key=st.sampled_from(["epochs", "batch_size", "workers", "lr", "dropout", "threshold",
                            "input_size", "seed", "patience", "ema_decay", "exist_ok",
                            "center_fraction", "split", "finetune_epochs"]), value=NUMBER)
def test_any_setting_value_is_taken_or_refused_with_its_key(key: str, value: object) -> None:
    try:
        cfg = TrainConfig().updated({key: value})
    except ConfigError as exc:
        one_line(exc, key)
    else:
        cfg.validate()


@settings(max_examples=150, deadline=None)
@given(flag=st.sampled_from(["--workers", "--batch-size", "--top-k", "--actors"]),
       value=st.one_of(st.integers(-10**9, 10**9).map(str), st.text(max_size=6)))
def test_any_numeric_predict_flag_is_taken_or_a_usage_error(flag: str, value: str) -> None:
    try:
        args = build_parser().parse_args(["predict", "RUN", "x.png", flag, value])
    except SystemExit as exc:
        assert exc.code == 2
    else:
        assert getattr(args, flag[2:].replace("-", "_")) >= (0 if flag == "--workers" else 1)
