"""Which engine and precision run a trained model: OpenVINO only where it was checked
against ONNX Runtime in f32 on the run's own images, and measured faster.

A reduced precision (bf16, int8) changes outputs. Before one is used, :func:`check_engine`
runs ONNX Runtime f32 (the reference) and the candidate on the run's validation split
(topped up to :data:`CHECK_IMAGES` for the comparisons that need no label, with the test
split's images, then training images), and refuses the candidate, with the numbers, when

* fewer than :data:`MIN_AGREEMENT` of the images keep their top-1 class (single-label;
  every label's yes/no for multi-label runs),
* the headline score on the validation split moves by more than :data:`MAX_HEADLINE`
  (for vote fractions and counts: when the RMSE between the two engines' fractions
  exceeds :data:`MAX_RMSE`, which bounds how far the headline RMSE can move), or
* fewer than :data:`MIN_SAME_SETS` of the images keep the same conformal prediction set
  (90% coverage), for runs that keep conformity scores.

Both engines are timed on the same batches of those images, one thread each,
interleaved (:func:`run_timed`): the check costs one pass of each engine over them.
The check and the choice are written to ``RUN/engine_check.json`` and reused while the
run's weights, this CPU and OpenVINO's version are unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from skysort.data.batches import decode_chunk
from skysort.data.transforms import create_transform
from skysort.models.info import ModelInfo
from skysort.models.openvino import cpu_description, run_timed
from skysort.models.streaming import OnnxWorkerModel
from skysort.rundir import ENGINE_CHECK, INT8_MODEL, SPLIT, atomic_write

MIN_AGREEMENT = 0.995
MAX_HEADLINE = 0.005
MAX_RMSE = 0.001
MIN_SAME_SETS = 0.99
#: A class this close to a set's threshold is in or out by rounding alone.
SET_TIE = 1e-5
#: The rules' version: a check made under other rules is made again.
RULES = 3
#: Images the comparisons run on, at most (one disagreement in 300 is 0.33%).
CHECK_IMAGES = 300
#: OpenVINO is the default engine only when it is at least this much faster.
FASTER_BY = 1.10
#: Training images NNCF calibrates int8 on, at most.
CALIBRATION = 300


def _images(run: Path, info: ModelInfo, splits: tuple[str, ...], limit: int
            ) -> tuple[np.ndarray, list[str]]:
    """Preprocessed images of the run's ``split.csv`` rows in ``splits`` (the readable
    ones, at most ``limit``), and their labels."""
    from skysort.data.split import read_split_csv
    from skysort.models.plan import ResolvedPlan

    rows = [r for r in read_split_csv(run / SPLIT) if r["split"] in splits][:limit]
    root = Path(ResolvedPlan.read(run).data_root or ".")
    transform = create_transform(info.preprocess)
    pixels, good, _ = decode_chunk(transform, [root / r["path"] for r in rows])
    if pixels is None:
        return np.zeros((0,), dtype=np.float32), []
    return transform.normalize_batch(pixels), [rows[i]["label"] for i in good]


def _set_thresholds(info: ModelInfo) -> np.ndarray | None:
    """The 90% prediction sets' thresholds of a single-label run that keeps conformity
    scores, else None."""
    from skysort.errors import SkySortError

    if not info.task.single_label or info.conformal is None:
        return None
    try:
        return info.conformal.thresholds(info.task.classes, 0.9)
    except SkySortError:  # too few conformity scores for 90%: no sets to compare
        return None


def compare(info: ModelInfo, reference: np.ndarray, candidate: np.ndarray,
            labels: list[str], n_val: int) -> dict[str, Any]:
    """The candidate's outputs against the reference's: agreement, headline change,
    same sets; ``accepted`` and, when refused, ``why``."""
    task = info.task
    out: dict[str, Any] = {}
    fails = []
    if task.votes:  # fractions of votes (counts: their expected fractions)
        a, b = task.decisions(reference, 0.5), task.decisions(candidate, 0.5)
        rmse = float(np.sqrt(np.mean((a - b) ** 2)))
        out["rmse_between_engines"] = rmse
        if rmse > MAX_RMSE:
            fails.append(f"RMSE between the engines' fractions {rmse:.4f} > {MAX_RMSE}")
    else:
        if task.single_label:
            agree = float(np.mean(task.predicted_class(reference, info.threshold)
                                  == task.predicted_class(candidate, info.threshold)))
        else:
            agree = float(np.mean(task.decisions(reference, info.threshold)
                                  == task.decisions(candidate, info.threshold)))
        out["top1_agreement"] = agree
        if agree < MIN_AGREEMENT:
            fails.append(f"top-1 agreement {agree:.4f} < {MIN_AGREEMENT}")
        if n_val:
            y = task.targets_from_text(labels[:n_val])
            ref = task.headline(task.metrics(y, reference[:n_val]))
            cand = task.headline(task.metrics(y, candidate[:n_val]))
            if ref[1] is not None and cand[1] is not None:
                change = float(cand[1] - ref[1])
                out["headline"] = {"name": ref[0], "reference": ref[1], "candidate": cand[1],
                                   "change": change, "images": n_val}
                if abs(change) > MAX_HEADLINE:
                    fails.append(f"{ref[0]} moved by {change:+.4f} (more than {MAX_HEADLINE})")
        q = _set_thresholds(info)
        if q is not None:
            from skysort.models.conformal import in_sets

            ref_p = task.class_probabilities(reference)
            differ = in_sets(ref_p, q) != in_sets(task.class_probabilities(candidate), q)
            # a class whose score sits on the threshold (the validation images' own scores
            # set it) is a tie that rounding decides, not a different set
            tie = np.abs((1.0 - ref_p) - q[None, :]) <= SET_TIE
            same = float(np.mean(~np.any(differ & ~tie, axis=1)))
            out["same_sets_90"] = same
            if same < MIN_SAME_SETS:
                fails.append(f"same 90% prediction sets on {same:.4f} < {MIN_SAME_SETS}")
    out["accepted"] = not fails
    if fails:
        out["why"] = "; ".join(fails)
    return out


def int8_model(run: Path, info: ModelInfo, onnx: Path, source: str,
               calibration: np.ndarray | None = None) -> Path:
    """The run's int8 IR, quantized by NNCF on up to :data:`CALIBRATION` training images
    (or ``calibration``) unless the one on disk came from these weights."""
    from skysort.models.openvino import quantize_int8

    path = run / INT8_MODEL
    stamp = path.with_suffix(".source")
    if path.is_file() and stamp.is_file() and stamp.read_text() == source:
        return path
    if calibration is None:
        calibration, _ = _images(run, info, ("train",), CALIBRATION)
    if not len(calibration):
        from skysort.errors import ConfigError

        raise ConfigError(f"--precision int8: none of {run}'s training images could be read "
                          "to calibrate on; use f32 or bf16, or restore the images")
    quantize_int8(onnx, (x[None] for x in calibration), path)
    atomic_write(stamp, source.encode())
    return path


def check_engine(run: Path, info: ModelInfo, onnx: Path, source: str, precisions: list[str],
                 calibration: np.ndarray | None = None) -> dict[str, Any]:
    """The check of OpenVINO at each of ``precisions`` (from ``engine_check.json`` where it
    holds one for these weights, CPU and version), written back with any new ones."""
    from skysort.models.onnx import OnnxModule

    file = run / ENGINE_CHECK
    cpu = cpu_description()
    record: dict[str, Any] = {}
    if file.is_file():
        try:
            record = json.loads(file.read_text())
        except ValueError:
            record = {}
    if (record.get("source"), record.get("cpu"), record.get("rules")) != (source, cpu, RULES):
        record = {"source": source, "cpu": cpu, "rules": RULES, "candidates": {}}
    todo = [p for p in precisions if p not in record["candidates"]]
    if not todo:
        return record
    val, val_labels = _images(run, info, ("val",), CHECK_IMAGES)
    # then the test split's images (their outputs, not their labels: the weights never saw
    # them, so they flip as survey images do), then training images, which the model fits
    # and which flip less (measured: 0.997 agreement on 300 validation and training images,
    # 0.980 on 400 new ones)
    test, _ = _images(run, info, ("test",), max(0, CHECK_IMAGES - len(val)))
    # the training images are decoded once, for the comparisons and int8's calibration
    need = max(0, CHECK_IMAGES - len(val) - len(test))
    train, _ = _images(run, info, ("train",), max(need, CALIBRATION) if "int8" in todo
                       else need)
    extra = train[:need]
    if calibration is None and "int8" in todo and len(train):
        calibration = train
    parts = [x for x in (val, test, extra) if len(x)]
    images = np.concatenate(parts) if parts else np.zeros((0,))
    record["images"] = {"validation": len(val), "test": len(test), "training": len(extra)}
    if not len(images):
        for p in todo:
            record["candidates"][p] = {"accepted": p == "f32",
                                       "why": "none of the run's images could be read"}
        atomic_write(file, json.dumps(record, indent=2).encode())
        return record
    runners: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "reference": OnnxModule(onnx, threads=1)}
    for p in todo:
        path = int8_model(run, info, onnx, source, calibration) if p == "int8" else onnx
        runners[p] = OnnxWorkerModel(str(path), source, "openvino", p).runner(1)
    outputs, speeds = run_timed(runners, images)
    record["onnxruntime_images_per_s"] = speeds["reference"]
    for p in todo:
        entry = compare(info, outputs["reference"], outputs[p], val_labels, len(val))
        entry["images_per_s"] = speeds[p]
        entry["speedup"] = round(speeds[p] / speeds["reference"], 2)
        record["candidates"][p] = entry
    atomic_write(file, json.dumps(record, indent=2).encode())
    return record


def describe(name: str, entry: dict[str, Any]) -> str:
    """One line of a candidate's check."""
    parts = []
    if "top1_agreement" in entry:
        parts.append(f"top-1 agreement {entry['top1_agreement']:.4f}")
    if "rmse_between_engines" in entry:
        parts.append(f"RMSE to f32 {entry['rmse_between_engines']:.5f}")
    if "headline" in entry:
        h = entry["headline"]
        parts.append(f"{h['name']} {h['reference']:.4f} -> {h['candidate']:.4f}")
    if "speedup" in entry:
        parts.append(f"{entry['speedup']:.2f}x ONNX Runtime f32")
    verdict = "passed" if entry["accepted"] else f"refused ({entry.get('why', '')})"
    return f"openvino {name} " + ", ".join(parts) + f": {verdict}"



def choose(run: Path, info: ModelInfo, onnx: Path, source: str, precision: str,
           default_engine: bool) -> tuple[str, OnnxWorkerModel, str]:
    """``(engine, model, note)``: OpenVINO at the fastest precision that passed its check
    (``precision``: ``auto`` tries bf16 where the CPU has it, then f32), else the f32 it
    falls back to; for the default engine (``default_engine``), ONNX Runtime unless
    OpenVINO measured at least :data:`FASTER_BY` times faster. The note says which and why."""
    from skysort.errors import ConfigError
    from skysort.models import openvino as ovm

    reference = OnnxWorkerModel(str(onnx), source)
    if not ovm.available():
        if default_engine:
            return "onnx", reference, ""
        raise ConfigError("--engine openvino: OpenVINO is not installed; install "
                          "skysort's extra: pip install 'skysort[openvino]'")
    native = ovm.native_precisions()
    if precision == "auto":
        wanted = [*(["bf16"] if "bf16" in native else []), "f32"]
    elif precision not in ovm.PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not one of auto, "
                          f"{', '.join(ovm.PRECISIONS)}")
    elif precision == "bf16" and "bf16" not in native:
        raise ConfigError("--precision bf16: this CPU has no native bf16 (OpenVINO reports "
                          f"{', '.join(native)}); use f32 or int8")
    elif precision == "int8" and not ovm.quantization_available():
        raise ConfigError("--precision int8: NNCF is not installed; install skysort's "
                          "extra: pip install 'skysort[openvino]'")
    else:
        wanted = [precision, *(["f32"] if precision != "f32" else [])]
    record = check_engine(run, info, onnx, source, wanted)
    lines = [describe(p, record["candidates"][p]) for p in wanted]
    passed = [p for p in wanted if record["candidates"][p]["accepted"]]
    if not passed:
        return "onnx", reference, "engine: onnx (f32); " + "; ".join(lines)
    best = passed[0]
    entry = record["candidates"][best]
    if default_engine and entry.get("speedup", 0.0) < FASTER_BY:
        return "onnx", reference, (f"engine: onnx (f32; OpenVINO not {FASTER_BY:.1f}x faster "
                                   "here); " + "; ".join(lines))
    if precision not in ("auto", best):
        lines.append(f"falling back to openvino {best}")
    path = run / INT8_MODEL if best == "int8" else onnx
    return "openvino", OnnxWorkerModel(str(path), source, "openvino", best), \
        f"engine: openvino ({best}); " + "; ".join(lines)
