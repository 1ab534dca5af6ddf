"""Label errors planted in real photographs: how many ``skysort inspect`` ranks first.

Usage::

    python benchmarks/bench_label_errors.py [--seeds 10] [--per-class 60] [--size 96]
                                            [--planted 10] [--top 20]

Per seed, makes a set of crops of real photographs (``tests/inspection/real_photos.py``:
crops of the Hubble Ultra Deep Field centred on large galaxies and on small compact
objects, classes set by the segment's area, and crops of a lunar surface photograph;
``per-class`` of each, ``size`` px), moves ``planted`` random images into another class's
folder, runs ``skysort.inspect`` on it (a fresh embedding cache per run, as a user's first
inspect) and counts the planted images among the first ``top`` rows of
``suspected_label_errors.csv``. The baseline, read from the same file: the suspects of
the confident joint alone (its ``confident`` column), which was the whole list before
the images no class is confident about were added. Prints per seed and the medians.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.inspection.real_photos import make_photo_set, plant_wrong_labels

from bench_train_predict import machine, versions


def one_seed(args: argparse.Namespace, seed: int, work: Path) -> dict[str, float]:
    root = make_photo_set(work / "data", args.per_class, args.size, seed)
    planted = plant_wrong_labels(root, args.planted, seed)
    os.environ["SKYSORT_CACHE"] = str(work / "cache")
    import skysort

    start = time.perf_counter()
    result = skysort.inspect(root, out=work / "out", page=False)
    seconds = time.perf_counter() - start
    with open(work / "out" / "suspected_label_errors.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    confident = [r for r in rows if r["confident"] == "1"]
    found = result.summary["label_errors"]
    return {"top": len({r["path"] for r in rows[:args.top]} & planted),
            "baseline": len({r["path"] for r in confident[:args.top]} & planted),
            "suspects": len(rows), "true_suspects": len({r["path"] for r in rows} & planted),
            "estimated": found["estimated_errors"], "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=60)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--planted", type=int, default=10)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    print(f"machine:  {machine()}")
    print(f"versions: {versions()}")
    print(f"data:     {3 * args.per_class} crops of real photographs ({args.size} px; "
          f"compact / extended / lunar), {args.planted} labels planted wrong")
    print(f"{'seed':>4}  {'in top ' + str(args.top):>10}  {'joint only':>10}  "
          f"{'suspects':>8}  {'planted':>7}  {'estimated':>9}  {'seconds':>7}")
    results = []
    for seed in range(args.seeds):
        work = Path(tempfile.mkdtemp(prefix="skysort-label-errors-"))
        try:
            r = one_seed(args, seed, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        results.append(r)
        print(f"{seed:>4}  {r['top']:>10}  {r['baseline']:>10}  {r['suspects']:>8}  "
              f"{r['true_suspects']:>7}  {r['estimated']:>9.1f}  {r['seconds']:>7.1f}",
              flush=True)

    def median(key: str) -> float:
        return statistics.median(r[key] for r in results)

    worst = min(r["top"] for r in results)
    print(f"median over {len(results)} seeds: {median('top'):g} of {args.planted} planted in "
          f"the top {args.top} (worst {worst}); the confident joint alone (baseline): "
          f"{median('baseline'):g} (worst {min(r['baseline'] for r in results)}); "
          f"{median('suspects'):g} suspects, {median('estimated'):.1f} estimated wrong; "
          f"{median('seconds'):.1f} s per inspect")


if __name__ == "__main__":
    main()
