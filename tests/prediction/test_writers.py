"""Writers: resuming after a kill keeps every finished row and drops the half-written one,
in CSV and in Parquet; the columns prediction sets and abstention add, from options
checked once where the predictor is built."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from skysort.data.transforms import Preprocess
from skysort.errors import ConfigError
from skysort.models.conformal import ConformalScores
from skysort.models.info import ModelInfo
from skysort.prediction.predictor import PredictionOptions
from skysort.prediction.writers import Layout, Sink, output_format, read_predictions
from skysort.tasks import make_task


def _layout() -> Layout:
    task = make_task("multiclass", ["a", "b", "c"])
    return Layout(ModelInfo(task=task, backbone="x", weights_id="y", num_features=4,
                            preprocess=Preprocess()))


def _write(sink: Sink, paths: list[Path]) -> None:
    for i, path in enumerate(paths):
        probs = np.roll(np.array([0.7, 0.2, 0.1], dtype=np.float32), i)
        sink.write(path, probs)
    sink.flush()


PATHS = [Path(f"/data/img{i}.png") for i in range(6)] + [Path("/data/new\nline.png")]


@pytest.mark.parametrize("cut", ["half a row", "inside a quoted newline"])
def test_csv_resume_drops_the_half_written_row(tmp_path: Path, cut: str) -> None:
    out = tmp_path / "pred.csv"
    sink = Sink(out, _layout())
    _write(sink, PATHS[:4] + PATHS[6:])  # the path with a newline is the last row
    sink.close()
    whole = out.read_bytes()
    if cut == "half a row":
        out.write_bytes(whole[: whole.rindex(b"/data/new") + 4])
        kept = 4
    else:
        out.write_bytes(whole[: whole.rindex(b"\nline.png") + 1])  # just after the newline
        kept = 4
    sink = Sink(out, _layout(), resume=True)
    assert sink.done == {str(p) for p in PATHS[:kept]}
    _write(sink, [p for p in PATHS if str(p) not in sink.done])
    sink.close()
    rows = read_predictions(out)
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in PATHS)
    assert all(r["prediction"] in ("a", "b", "c") for r in rows)


def test_parquet_resume_keeps_whole_parts_and_redoes_the_rest(tmp_path: Path) -> None:
    out = tmp_path / "pred.parquet"
    sink = Sink(out, _layout(), rows_per_part=2)
    _write(sink, PATHS[:5])  # parts of 2, 2, and 1 still in the buffer when "killed"
    parts = sorted(out.glob("part-*.parquet"))
    assert len(parts) == 2
    (out / ".part-00002.parquet.tmp").write_bytes(b"PAR1 half a part")  # a write cut short
    sink = Sink(out, _layout(), resume=True, rows_per_part=2)
    assert sink.done == {str(p) for p in PATHS[:4]}
    _write(sink, [p for p in PATHS if str(p) not in sink.done])
    sink.close()
    rows = read_predictions(out)
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in PATHS)
    assert len(rows) == len(PATHS)


def test_unreadable_files_get_a_row_with_the_reason(tmp_path: Path) -> None:
    out = tmp_path / "pred.csv"
    sink = Sink(out, _layout())
    sink.write(Path("/data/bad.png"), None, "cannot decode image (truncated)")
    _write(sink, PATHS[:1])
    sink.close()
    rows = read_predictions(out)
    assert [r["path"] for r in rows] == ["/data/bad.png", "/data/img0.png"]
    assert rows[0]["error"] == "cannot decode image (truncated)" and not rows[0]["prediction"]
    assert sink.n_errors == 1 and sink.n_rows == 2


@pytest.mark.parametrize(("name", "fmt"), [("a.csv", "csv"), ("a.CSV", "csv"), ("a", "csv"),
                                            ("a.parquet", "parquet")])
def test_output_format_from_the_name(name: str, fmt: str) -> None:
    assert output_format(Path(name)) == fmt


@pytest.mark.parametrize("name", ["out.json", "out.tsv", "out.xlsx"])
def test_other_output_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match=r"\*\.csv or \*\.parquet"):
        Sink(tmp_path / name, _layout())
    assert not (tmp_path / name).exists()


# -- the columns --coverage and --min-confidence add, checked once where the predictor is built


def _info(kind: str = "multiclass", conformal: bool = True) -> ModelInfo:
    task = make_task(kind, ["a", "b", "c"])
    kept = ConformalScores("1 - p(true class), per class", 30,
                           {c: [round(0.03 * i, 2) for i in range(10)] for c in "abc"})
    return ModelInfo(task=task, backbone="x", weights_id="y", num_features=4,
                     preprocess=Preprocess(), conformal=kept if conformal else None)


def test_the_checked_options_give_the_set_and_abstention_columns(tmp_path: Path) -> None:
    info = _info()
    options = PredictionOptions.check(info, 0.8, 0.6)
    assert options.set_thresholds is not None
    # ceil(11 * 0.8) = 9th of each class's 10 scores
    assert options.set_thresholds.tolist() == [0.24, 0.24, 0.24]
    layout = Layout(info, options)
    assert layout.columns == ["path", "prediction", "probability", "a", "b", "c",
                              "prediction_set", "set_size", "abstained", "error"]
    row = layout.row(Path("/x.png"), np.array([0.8, 0.15, 0.05], dtype=np.float32))
    assert row is not None and row[:3] == ["/x.png", "a", pytest.approx(0.8)]
    assert row[6:] == ["a", 1, 0, ""]
    row = layout.row(Path("/y.png"), np.array([0.5, 0.45, 0.05], dtype=np.float32))
    assert row is not None and row[1] == "" and row[6:] == ["", 0, 1, ""]
    assert layout.row(Path("/bad.png"), None, "truncated")[-4:] == [None, None, None,
                                                                     "truncated"]
    assert Layout(info, PredictionOptions.check(info)).columns == _layout().columns


@pytest.mark.parametrize(("kind", "conformal", "coverage", "min_confidence", "match"), [
    ("multilabel", True, 0.9, None, "--coverage needs a model with one class per image"),
    ("multilabel", True, None, 0.5, "--min-confidence needs a model with one class"),
    ("multiclass", True, 1.0, None, "strictly between 0 and 1"),
    ("multiclass", False, 1.5, None, "strictly between 0 and 1"),
    ("multiclass", False, 0.9, None, "holds no conformity scores"),
    ("multiclass", True, None, 1.5, r"min_confidence=1.5: must lie in \[0, 1\]"),
])
def test_options_the_model_cannot_honour_are_refused(
        kind: str, conformal: bool, coverage: float | None, min_confidence: float | None,
        match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        PredictionOptions.check(_info(kind, conformal), coverage, min_confidence)


def test_the_predictor_reads_model_json_and_checks_the_coverage_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import skysort.models.conformal
    import skysort.prediction.predictor as predictor

    (tmp_path / "model.json").write_text(json.dumps(_info().to_dict()))
    calls: dict[str, int] = {"read": 0, "check": 0}

    def counted(name: str, fn: Any) -> Any:
        def wrapper(*args: Any) -> Any:
            calls[name] += 1
            return fn(*args)
        return wrapper

    monkeypatch.setattr(predictor, "read_model_info",
                        counted("read", predictor.read_model_info))
    monkeypatch.setattr(skysort.models.conformal, "check_coverage",
                        counted("check", skysort.models.conformal.check_coverage))
    monkeypatch.setattr(predictor, "make_runner", lambda *a: ("onnx", None, ""))
    built = predictor.Predictor(tmp_path, coverage=0.8, min_confidence=0.6)
    assert calls == {"read": 1, "check": 1}
    assert built.options.coverage == 0.8 and built.options.min_confidence == 0.6
    assert Layout(built.info, built.options).columns[-4:-1] == ["prediction_set", "set_size",
                                                                "abstained"]
    # a bad option is refused before the model is loaded
    monkeypatch.setattr(predictor, "make_runner", lambda *a: pytest.fail("model loaded"))
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        predictor.Predictor(tmp_path, coverage=1.5)
