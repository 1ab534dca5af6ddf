"""Whether the probabilities mean what they say: calibration, prediction sets, abstention.

Usage::

    python benchmarks/bench_calibration.py [--n 3000] [--size 128] [--finetune head]

Renders an imbalanced five-class set of GalSim galaxy cutouts (``skysort.synth``), trains
heads on the cached embeddings (``finetune=head``; see :data:`RUNS`: default settings,
few labels, few labels over-fitted), so that calibration is fitted on the validation
split of each, and prints from each run's ``metrics.json`` (the test split, which
calibration never saw):

* ECE (15 bins), MCE, NLL and Brier score after calibration, before it, and for the
  class-prior predictor, and whether the accuracy changed (it must not);
* the empirical coverage, mean set size and share of single labels of the conformal
  prediction sets at 0.8, 0.9 and 0.95, overall and for the rarest class;
* the accuracy of the most confident 100%, 90%, 75% and 50% of the images.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np

import skysort
from bench_finetune import MIX  # the same imbalanced mix of morphologies
from bench_train_predict import machine, versions
from skysort.models.model import load_model
from skysort.models.runners import model_outputs
from skysort.synth.sets import make_class_folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--finetune", default="head")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="skysort-cal-"))
    try:
        data = make_class_folders(work / "data", {k: round(v * args.n) for k, v in MIX.items()},
                                  size=args.size, fmt="jpg", seed=args.seed)
        print(f"machine:  {machine()}")
        print(f"versions: {versions()}")
        print(f"data:     {args.n} GalSim cutouts, {args.size} px JPEG, 5 classes "
              f"({', '.join(f'{c} {v:.1%}' for c, v in MIX.items())}), seed {args.seed}")
        for name, settings in RUNS.items():
            report(work, data, name, {"finetune": args.finetune, **settings}, args.seed)
    finally:
        shutil.rmtree(work, ignore_errors=True)


#: Heads on the same cached embeddings: skysort's defaults (early stopping on the
#: validation loss, dropout, weight decay) with the default split; then few labels (10% of
#: the images for training, so validation and test hold 45% each), with the defaults and
#: over-fitted (trained far past its best epoch, unregularised, as a hand-written loop
#: often is): a few hundred images in 1,280 dimensions separate perfectly, and the logits
#: grow without bound, so the probabilities are over-confident.
FEW = {"split": (0.1, 0.45, 0.45)}
OVERFIT = {"epochs": 400, "patience": 400, "dropout": 0.0, "weight_decay": 0.0,
           "balance": "none"}
RUNS = {
    "default settings": {},
    "few labels (split 0.1 0.45 0.45), default settings": FEW,
    "few labels, over-fitted head (epochs=400 patience=400 dropout=0 weight_decay=0 "
    "balance=none)": {**FEW, **OVERFIT},
}


def report(work: Path, data: Path, name: str, settings: dict[str, object], seed: int) -> None:
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        result = skysort.train(data, project=str(work / "runs"), name="run",
                               cache_dir=str(work / "cache"), **settings)
    wall = time.perf_counter() - start
    run = result.run_dir
    metrics = json.loads((run / "metrics.json").read_text())
    info = json.loads((run / "model.json").read_text())

    # accuracy with and without calibration, on the same test images
    model, model_info = load_model(run)
    test = [data / r for r in _split(run, "test")]
    both, _ = model_outputs(model, model_info, test, cache_dir=str(work / "cache"), which="both")
    k = model_info.task.num_outputs
    changed = int((both[:, :k].argmax(1) != both[:, k:].argmax(1)).sum())

    print(f"\n== {name}: {wall:.0f} s; test split {metrics['n']} images, validation "
          f"{info['calibration']['fitted_on']}")
    cal = metrics["calibration"]
    held = info["calibration"].get("held_out_nll")
    print(f"calibration: {cal['method']}"
          + (f", temperature {cal['temperature']:.3f}" if cal["temperature"] else "")
          + (f" ({info['calibration']['note']})" if info["calibration"]["note"] else "")
          + (f"; held-out validation NLL {held['uncalibrated']:.4f} -> {held['calibrated']:.4f}"
             if held else ""))
    before = cal["uncalibrated"] or cal["model"]
    print(f"  {'':<22}{'ECE':>8}{'MCE':>8}{'NLL':>8}{'Brier':>8}")
    for label, v in (("calibrated", cal["model"]), ("before calibration", before),
                     ("class prior", cal["baseline"])):
        print(f"  {label:<22}{v['ece']:>8.4f}{v['mce']:>8.4f}{v['nll']:>8.4f}{v['brier']:>8.4f}")
    floor = ece_floor(both[:, :k], np.random.default_rng(seed))
    print(f"  ECE a perfectly calibrated model shows on {len(test)} images (labels drawn "
          f"from its own probabilities, median of 200): {floor:.4f}")
    print(f"  ECE after / before: {cal['model']['ece'] / before['ece']:.2f}; NLL after - "
          f"before: {cal['model']['nll'] - before['nll']:+.4f}; test images whose class "
          f"changed: {changed}; accuracy {metrics['model']['accuracy']:.4f}, balanced "
          f"{metrics['model']['balanced_accuracy']:.4f}")
    rarest = min(MIX, key=lambda c: MIX[c])
    print("prediction sets (class-conditional split conformal, 1 - p(true class)):")
    for c, v in metrics["prediction_sets"]["by_coverage"].items():
        r = v["per_class"][rarest]
        print(f"  asked {float(c):.2f}: coverage {v['coverage']:.3f} "
              f"({v['coverage'] - float(c):+.3f}), mean size {v['mean_size']:.2f}, single "
              f"{v['single']:.1%}, empty {v['empty']:.1%}; {rarest} ({r['n']} images) "
              f"coverage {r['coverage']:.3f}")
    print("abstention (accuracy of the most confident images):")
    for f, v in metrics["risk_coverage"]["at"].items():
        print(f"  keep {float(f):>4.0%}: accuracy {v['accuracy']:.4f} at probability "
              f">= {v['threshold']:.3f}")
    shutil.rmtree(run)


def ece_floor(probs: np.ndarray, rng: np.random.Generator, repeats: int = 200) -> float:
    """The ECE that sampling noise alone gives on this many images: labels drawn from the
    probabilities themselves, so the model is calibrated by construction."""
    from skysort.evaluation.calibration import _scores

    eye = np.eye(probs.shape[1])
    cumulative = probs.cumsum(axis=1)
    values = []
    for _ in range(repeats):
        y = (rng.random((len(probs), 1)) > cumulative).sum(axis=1).clip(0, probs.shape[1] - 1)
        values.append(_scores(probs, eye[y])["ece"])
    return float(np.median(values))


def _split(run: Path, name: str) -> list[str]:
    from skysort.data.split import read_split_csv

    return [r["path"] for r in read_split_csv(run / "split.csv") if r["split"] == name]


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
