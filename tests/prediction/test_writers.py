"""Writers: resuming after a kill keeps every finished row and drops the half-written one,
in CSV and in Parquet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from skysort.data.transforms import Preprocess
from skysort.errors import ConfigError
from skysort.models.info import ModelInfo
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
