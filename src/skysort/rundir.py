"""The run directory: what a training run writes, under which names, and how.

Every stage reads and writes a run through this module, so the names below are the
only place a run's layout is spelled out::

    runs/<name>/
      config.yaml         CONFIG        the settings as given (reusable with --config)
      resolved.json       RESOLVED      what training decided from the data: data root,
                                        input size, fine-tuning mode and epochs, pixel cache
      model.safetensors   MODEL_FILE    all weights
      model.json          MODEL_JSON    classes, backbone, preprocessing, skysort version
      split.csv           SPLIT         path, id, label, split for every image
      bad_files.csv       BAD_FILES     unreadable files and why
      label_issues.csv    LABEL_ISSUES  table rows and files left out, and why
      history.csv         HISTORY       per epoch: losses, validation scores, lr, time
      metrics.json        METRICS       test metrics beside the baseline, and warnings
      metrics_predictions.csv           per-image outputs of that evaluation
      training_curves.png CURVES_PNG
      confusion_matrix.png CONFUSION_PNG
      reliability_diagram.png RELIABILITY_PNG  calibration: accuracy against confidence
      risk_coverage.png   RISK_PNG      accuracy of the most confident images, by share kept
      report.html         REPORT        all of it as one self-contained page
      finetune_plan.json  PLAN          cores, threads, workers, pixel cache, precision chosen,
                                        the recipe, the time budget's plan
      model.onnx          ONNX_FILE     the exported model (``skysort export``)
      engine_check.json   ENGINE_CHECK  OpenVINO's precisions checked against f32, timed
      model_int8.xml      INT8_MODEL    the int8 model (NNCF), with .bin and .source
      predictions.csv     PREDICTIONS   default output of ``skysort predict``
      to_label.csv        TO_LABEL      default output of ``skysort suggest`` (and
      to_label_skipped.csv              the pool images it left out, and why)
      weights/            WEIGHTS_DIR   last.safetensors (resumable), best.safetensors
      tensorboard/        TENSORBOARD   event files

``skysort inspect DATA --out OUT`` writes its folder under the names below too (what each
holds: :mod:`skysort.inspection.inspector`)::

    OUT/
      summary.json                INSPECT_SUMMARY
      images.csv                  INSPECT_IMAGES
      duplicates.csv              DUPLICATES
      duplicate_pairs.csv         DUPLICATE_PAIRS
      suspected_label_errors.csv  LABEL_ERRORS
      oddities.csv                ODDITIES
      tree_violations.csv         TREE_VIOLATIONS
      bad_files.csv               BAD_FILES
      label_issues.csv            LABEL_ISSUES
      similar/                    SIMILAR_DIR
      inspect.html                INSPECT_PAGE

Files are written whole or not at all (:func:`atomic_write`): a crash or ``kill -9``
leaves the previous version or the new one, never half of one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skysort.errors import RunError

if TYPE_CHECKING:
    import torch

CONFIG = "config.yaml"
RESOLVED = "resolved.json"
MODEL_FILE = "model.safetensors"
MODEL_JSON = "model.json"
SPLIT = "split.csv"
BAD_FILES = "bad_files.csv"
LABEL_ISSUES = "label_issues.csv"
HISTORY = "history.csv"
METRICS = "metrics.json"
CURVES_PNG = "training_curves.png"
CONFUSION_PNG = "confusion_matrix.png"
RELIABILITY_PNG = "reliability_diagram.png"
RISK_PNG = "risk_coverage.png"
REPORT = "report.html"
ONNX_FILE = "model.onnx"
PREDICTIONS = "predictions.csv"
TO_LABEL = "to_label.csv"
WEIGHTS_DIR = "weights"
LAST_CHECKPOINT = "last.safetensors"
BEST_CHECKPOINT = "best.safetensors"
TENSORBOARD = "tensorboard"
PLAN = "finetune_plan.json"
ENGINE_CHECK = "engine_check.json"
INT8_MODEL = "model_int8.xml"
#: Written by the scikit-learn estimators: the labels as ``fit`` was given them (ints stay
#: ints), so a loaded estimator predicts the same values.
ESTIMATOR = "estimator.json"

#: What a finished run holds, in the order README's "What a run directory holds" lists it.
RUN_FILES = (CONFIG, RESOLVED, MODEL_FILE, MODEL_JSON, SPLIT, BAD_FILES, LABEL_ISSUES, HISTORY,
             METRICS, CURVES_PNG, CONFUSION_PNG, RELIABILITY_PNG, RISK_PNG, REPORT, PLAN,
             WEIGHTS_DIR, TENSORBOARD)

# The folder of ``skysort inspect`` (it shares BAD_FILES and LABEL_ISSUES with a run).
INSPECT_SUMMARY = "summary.json"
INSPECT_IMAGES = "images.csv"
DUPLICATES = "duplicates.csv"
DUPLICATE_PAIRS = "duplicate_pairs.csv"
LABEL_ERRORS = "suspected_label_errors.csv"
ODDITIES = "oddities.csv"
TREE_VIOLATIONS = "tree_violations.csv"
SIMILAR_DIR = "similar"
INSPECT_PAGE = "inspect.html"


def make_run_dir(project: str | Path, name: str, exist_ok: bool) -> Path:
    """``project/name``, or ``name2``, ``name3`` ... when it exists (as Ultralytics does)."""
    base = Path(project)
    if exist_ok:
        (base / name).mkdir(parents=True, exist_ok=True)
        return base / name
    base.mkdir(parents=True, exist_ok=True)
    number = 1
    while True:  # mkdir claims a name atomically: runs started together never share one
        run_dir = base / (name if number == 1 else f"{name}{number}")
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            number += 1


def checkpoint_path(run_dir: str | Path, which: str = LAST_CHECKPOINT) -> Path:
    """``RUN/weights/last.safetensors`` (or ``best.safetensors``)."""
    return Path(run_dir) / WEIGHTS_DIR / which


def atomic_write(path: str | Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file, fsync and rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def require(run_dir: str | Path, name: str) -> Path:
    """``RUN/name``, or a :class:`RunError` that says what is missing and what to pass."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run directory; pass the folder that "
                       "`skysort train` printed, e.g. runs/train")
    path = run_dir / name
    if not path.exists():
        if name == MODEL_JSON:
            raise RunError(f"{run_dir}: not a skysort run directory ({MODEL_JSON} is missing); "
                           "pass the folder that `skysort train` printed, e.g. runs/train")
        raise RunError(f"{path}: missing; the run may not have finished (train it again, or "
                       f"continue it with skysort train --resume {run_dir})")
    return path


def damaged(path: str | Path, why: object) -> RunError:
    """The error for a run file that exists but cannot be used."""
    return RunError(f"{path}: damaged or from an incompatible skysort version ({why}); "
                    "train the run again")


def what_file_is(path: str | Path) -> str:
    """A few words on what a file that should be safetensors actually holds."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if not head:
        return "an empty file"
    if head[:1] == b"\x80" or head[:4] == b"PK\x03\x04":
        return ("a pickle (torch.save); skysort never loads pickles, which can run code: "
                "save the weights with safetensors.torch.save_file")
    return "truncated, or another format"


def read_safetensors(path: str | Path, tensors: bool = True
                     ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors (unless ``tensors=False``) and the metadata of a safetensors file.

    A truncated file, a pickle saved under the name or anything else is a
    :class:`RunError` that says which; nothing in the file is ever executed.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
            found = {k: fh.get_tensor(k) for k in fh.keys()} if tensors else {}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types, torch others
        raise damaged(path, f"not a whole safetensors file: {what_file_is(path)}") from exc
    return found, meta


def load_weights(module: Any, state: dict[str, Any], path: str | Path) -> None:
    """``module.load_state_dict(state)``, or a :class:`RunError` when the weights in
    ``path`` do not fit the model its run describes (files from two different runs)."""
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines()
                 if "size mismatch" in line or "Missing key" in line or "Unexpected key" in line]
        detail = (lines[0] if lines else str(exc).splitlines()[0])[:200]
        raise RunError(f"{path}: these weights do not fit the model that {MODEL_JSON} beside "
                       f"them describes ({detail}); the files come from different runs or "
                       "one was replaced: train the run again") from exc
