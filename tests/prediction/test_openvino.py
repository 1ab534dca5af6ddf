"""The OpenVINO engine: checked against ONNX Runtime f32 before it runs, refused with its
numbers when a reduced precision moves the predictions, and the fallback said."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import skysort
from skysort.data.split import read_split_csv
from skysort.data.transforms import create_transform
from skysort.errors import ConfigError
from skysort.models.export import onnx_with_source, run_digest
from skysort.models.info import read_model_info
from skysort.models.openvino import OpenVinoModule
from skysort.prediction import engine_check
from skysort.prediction.predictor import Predictor
from skysort.tasks import FractionsTask, MultiLabelTask
from tests.test_cli_end_to_end import read_csv

ov = pytest.importorskip("openvino")
pytestmark = pytest.mark.slow


def _check_images(run: Path) -> tuple[np.ndarray, int, int]:
    """The run's validation images, then its test and training images, as the check reads
    them; and how many are validation and test images."""
    info = read_model_info(run)
    rows = read_split_csv(run / "split.csv")
    root = Path(json.loads((run / "resolved.json").read_text())["data_root"])
    val, test, train = ([root / r["path"] for r in rows if r["split"] == split]
                        for split in ("val", "test", "train"))
    transform = create_transform(info.preprocess)
    return np.stack([transform(p) for p in val + test + train]), len(val), len(test)


def _raw_openvino(path: Path, images: np.ndarray) -> np.ndarray:
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU",
                                  {"INFERENCE_PRECISION_HINT": "f32"})
    return np.concatenate([compiled(images[i:i + 8])[compiled.output(0)]
                           for i in range(0, len(images), 8)])


def _raw_onnxruntime(path: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images.astype(np.float32)})[0]


def test_openvino_f32_gives_onnx_runtime_outputs_and_records_its_check(colour_run: tuple[Path, Path]
                                                                       ) -> None:
    run_dir, data = colour_run
    predictor = Predictor(run_dir, engine="openvino", precision="f32", workers=0)
    assert predictor.engine == "openvino"
    assert "openvino f32" in predictor.engine_note and "passed" in predictor.engine_note
    paths = sorted(data.rglob("*.png"))
    got = predictor.predict_proba(paths)
    onnx, _ = onnx_with_source(run_dir)
    info = read_model_info(run_dir)
    transform = create_transform(info.preprocess)
    expected = _raw_onnxruntime(onnx, np.stack([transform(p) for p in paths]))
    assert np.abs(got - expected).max() <= 1e-4

    record = json.loads((run_dir / "engine_check.json").read_text())
    images, n_val, n_test = _check_images(run_dir)
    assert n_val and n_test
    assert record["source"] == run_digest(run_dir)
    assert record["images"] == {"validation": n_val, "test": n_test,
                                "training": len(images) - n_val - n_test}
    # the threads of a worker's model are not pinned to cores (pinned, the workers'
    # single threads shared core 0 and ran at half speed each)
    assert OpenVinoModule(onnx, threads=1).compiled.get_property("ENABLE_CPU_PINNING") is False
    f32 = record["candidates"]["f32"]
    assert f32["accepted"] and f32["top1_agreement"] == 1.0
    assert f32["speedup"] == pytest.approx(f32["images_per_s"]
                                           / record["onnxruntime_images_per_s"], abs=0.01)

    # while the weights are unchanged the check is read, not run again
    def never(*args: object) -> None:
        raise AssertionError("checked again")

    mp = pytest.MonkeyPatch()
    mp.setattr(engine_check, "run_timed", never)
    try:
        assert Predictor(run_dir, engine="openvino", precision="f32").engine == "openvino"
    finally:
        mp.undo()


def test_int8_calibrated_on_blank_images_is_refused_with_its_numbers(colour_run: tuple[Path, Path]
                                                                    ) -> None:
    run_dir, _ = colour_run
    info = read_model_info(run_dir)
    onnx, source = onnx_with_source(run_dir)
    size = info.preprocess.input_size
    blank = np.zeros((24, 3, size, size), dtype=np.float32)
    ir = engine_check.int8_model(run_dir, info, onnx, source, calibration=blank)
    predictor = Predictor(run_dir, engine="openvino", precision="int8", workers=0)
    # refused, with its numbers, and the f32 model runs instead
    assert "openvino int8" in predictor.engine_note and "refused" in predictor.engine_note
    assert "falling back to openvino f32" in predictor.engine_note
    assert predictor.runner.precision == "f32" and predictor.runner.path == str(onnx)
    entry = json.loads((run_dir / "engine_check.json").read_text())["candidates"]["int8"]
    assert not entry["accepted"] and "top-1 agreement" in entry["why"]
    # the recorded agreement is what the int8 model gives, computed here with OpenVINO
    # and ONNX Runtime themselves
    images, _, _ = _check_images(run_dir)
    agree = np.mean(_raw_openvino(ir, images).argmax(1)
                    == _raw_onnxruntime(onnx, images).argmax(1))
    assert entry["top1_agreement"] == pytest.approx(agree, abs=1e-9)
    assert agree < engine_check.MIN_AGREEMENT


def test_predict_under_openvino_keeps_sets_tta_and_resume(colour_run: tuple[Path, Path],
                                                          tmp_path: Path) -> None:
    run_dir, data = colour_run
    kwargs = {"coverage": 0.9, "tta": True, "quiet": True, "workers": 1}
    ref = read_csv(skysort.predict(run_dir, [data], tmp_path / "onnx.csv", engine="onnx",
                                   **kwargs))
    out = tmp_path / "ov.csv"
    got = read_csv(skysort.predict(run_dir, [data], out, engine="openvino", **kwargs))
    assert [r["path"] for r in got] == [r["path"] for r in ref]
    same = np.mean([a["prediction_set"] == b["prediction_set"]
                    for a, b in zip(got, ref, strict=True)])
    assert same >= 0.99
    assert all(a["prediction"] == b["prediction"] for a, b in zip(got, ref, strict=True))
    # an interrupted file is completed under the same engine
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:10]) + "\n")
    skysort.predict(run_dir, [data], out, engine="openvino", resume=True, **kwargs)
    assert [r["path"] for r in read_csv(out)] == [r["path"] for r in got]


def test_the_default_engine_follows_the_measurement(colour_run: tuple[Path, Path],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir, _ = colour_run
    predictor = Predictor(run_dir)
    record = json.loads((run_dir / "engine_check.json").read_text())
    # bf16 where the CPU has it and it passed, else f32
    tried = [record["candidates"][p] for p in ("bf16", "f32") if p in record["candidates"]]
    best = next(e for e in tried if e["accepted"])
    assert predictor.engine == ("openvino" if best["speedup"] >= engine_check.FASTER_BY
                                else "onnx")
    assert "ONNX Runtime f32" in predictor.engine_note
    # without OpenVINO, ONNX Runtime, and nothing to say
    from skysort.models import openvino as ovm

    monkeypatch.setattr(ovm, "available", lambda: False)
    plain = Predictor(run_dir)
    assert (plain.engine, plain.engine_note) == ("onnx", "")
    with pytest.raises(ConfigError, match=r"OpenVINO is not installed.*skysort\[openvino\]"):
        Predictor(run_dir, engine="openvino")


def test_precision_errors_are_one_line(colour_run: tuple[Path, Path]) -> None:
    run_dir, _ = colour_run
    with pytest.raises(ConfigError, match="reduced precision runs under --engine openvino"):
        Predictor(run_dir, engine="onnx", precision="int8")
    from skysort.models.openvino import native_precisions

    if "bf16" not in native_precisions():
        with pytest.raises(ConfigError, match="this CPU has no native bf16") as err:
            Predictor(run_dir, engine="openvino", precision="bf16")
        assert "\n" not in str(err.value)


def test_compare_refuses_by_each_kind_s_rule() -> None:
    rng = np.random.default_rng(0)
    # multi-label: every label's yes/no counts
    ref = rng.uniform(0, 1, (200, 3))
    cand = ref.copy()
    flip = [(i, i % 3) for i in range(0, 12)]  # 12 of 600 decisions cross 0.5
    for i, j in flip:
        cand[i, j] = 0.9 if ref[i, j] < 0.5 else 0.1
    info = SimpleNamespace(task=MultiLabelTask(["a", "b", "c"]), threshold=0.5, conformal=None)
    entry = engine_check.compare(info, ref, cand, [], 0)  # type: ignore[arg-type]
    assert entry["top1_agreement"] == pytest.approx(1 - 12 / 600)
    assert not entry["accepted"]
    # vote fractions: the RMSE between the engines bounds the headline's move
    ref = rng.dirichlet([1, 1], 100)
    info = SimpleNamespace(task=FractionsTask(["a", "b"]), threshold=0.5, conformal=None)
    small = engine_check.compare(info, ref, ref + 0.0005, [], 0)  # type: ignore[arg-type]
    large = engine_check.compare(info, ref, ref + 0.002, [], 0)  # type: ignore[arg-type]
    assert small["accepted"] and small["rmse_between_engines"] == pytest.approx(0.0005)
    assert not large["accepted"] and "RMSE" in large["why"]
