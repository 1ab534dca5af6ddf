"""Time to accuracy: head only against fine-tuning, on generated survey galaxy cutouts.

Usage::

    python benchmarks/bench_finetune.py [--n 2000] [--size 128] [--modes head,auto]

Renders an imbalanced five-class set of GalSim galaxies (128 px JPEGs, peak S/N from 5 to
200, as ``skysort.synth.galaxies`` makes them), then trains each mode with otherwise default
settings from a cold embedding cache and prints, per mode, the test accuracy, balanced
accuracy, wall-clock minutes and training images/s of the fine-tuning stage. Each mode
runs once (a run takes minutes); the head-only row is the baseline measured in the same
run, so compare the ratio column across machines, not the minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import skysort
from bench_train_predict import machine, versions
from skysort.synth.sets import make_class_folders

#: Imbalanced morphology mix (shares of the set).
MIX = {"elliptical": 0.35, "spiral": 0.275, "lenticular": 0.175, "edge_on": 0.125,
       "merger": 0.075}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--modes", default="head,auto",
                        help="comma-separated finetune settings (head, auto, full, last:N)")
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--data", help="use this class-folder set instead of rendering one")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="skysort-ft-"))
    rows = []
    try:
        data = Path(args.data) if args.data else make_class_folders(
            work / "data", {k: round(v * args.n) for k, v in MIX.items()}, size=args.size,
            fmt="jpg", seed=args.seed)
        for mode in args.modes.split(","):
            cache = work / f"cache-{mode.replace(':', '')}"
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()):
                result = skysort.train(data, project=str(work / "runs"),
                                       name=mode.replace(":", ""), cache_dir=str(cache),
                                       finetune=mode)
            minutes = (time.perf_counter() - start) / 60
            ft = [h for h in result.history if h["stage"] == "finetune"]
            n_train = sum(1 for r in (result.run_dir / "split.csv").read_text().splitlines()
                          if r.endswith(",train"))
            ft_rate = (n_train * len(ft) / sum(h["time_s"] for h in ft)) if ft else None
            rows.append((mode, result.metrics["model"], minutes, ft_rate, len(ft)))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    base_minutes = rows[0][2]
    print(f"machine:  {machine()}")
    print(f"versions: {versions()}")
    print(f"data:     {args.n} generated {args.size}px JPEG galaxies, 5 imbalanced classes "
          f"(S/N 5-200); one run per mode, cold embedding cache")
    print()
    print("| finetune | test accuracy | balanced accuracy | minutes | x head-only time "
          "| fine-tune epochs | fine-tune images/s |")
    print("|---|---|---|---|---|---|---|")
    for mode, scores, minutes, rate, epochs in rows:
        print(f"| {mode} | {scores['accuracy']:.3f} | {scores['balanced_accuracy']:.3f} | "
              f"{minutes:.1f} | {minutes / base_minutes:.1f} | {epochs} | "
              f"{'-' if rate is None else f'{rate:.1f}'} |")


if __name__ == "__main__":
    main()
