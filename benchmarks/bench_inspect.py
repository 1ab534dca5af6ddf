"""How long ``skysort inspect`` takes, cold and with a warm cache, and the similarity index
at a million images.

Usage::

    python benchmarks/bench_inspect.py [--n 2000] [--size 128] [--repeats 3] [--index 1000000]

1. Renders ``n`` GalSim galaxy cutouts in five classes, with 2% of them copied again
   (resized, re-encoded, turned or mirrored), and runs the ``skysort inspect`` command
   on them: once with an empty cache (the baseline: every image embedded and
   fingerprinted), then ``repeats`` times with the warm cache; prints the median warm
   time and its ratio to the cold one, and the share of planted copies found.
2. Builds a :class:`~skysort.inspection.similar.SimilarityIndex` over ``index``
   simulated 1280-d embeddings, and prints the build time, the index's size in memory
   and on disk, and the median time of a query (20 queries) beside a brute-force
   search of the full 1280-d vectors with numpy (the baseline).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np
from PIL import Image

from bench_finetune import MIX
from bench_train_predict import machine, versions
from skysort.synth.sets import make_class_folders


def plant(root: Path, share: float, seed: int) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    files = sorted(root.glob("*/*.jpg"))
    pairs = []
    for n, i in enumerate(rng.choice(len(files), round(share * len(files)), replace=False)):
        image = Image.open(files[i]).convert("RGB")
        kind = n % 4
        if kind == 0:
            image = image.resize((image.width * 3 // 4,) * 2, Image.Resampling.BILINEAR)
        elif kind == 2:
            image = image.transpose(Image.Transpose.ROTATE_90)
        elif kind == 3:
            image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
        dst = files[i].with_name(f"copy{n:04d}_{files[i].name}")
        image.save(dst, quality=75 if kind == 1 else 92)
        pairs.append((files[i].relative_to(root).as_posix(), dst.relative_to(root).as_posix()))
    return pairs


def run_inspect(data: Path, out: Path, cache: Path) -> float:
    env = {**os.environ, "SKYSORT_CACHE": str(cache)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "skysort", "inspect", str(data), "--out", str(out)],
                   check=True, env=env, capture_output=True, text=True)
    return time.perf_counter() - start


def bench_inspect(args: argparse.Namespace, work: Path) -> None:
    data = make_class_folders(work / "data", {k: round(v * args.n / 1.02) for k, v in
                                              MIX.items()}, size=args.size, fmt="jpg",
                              seed=args.seed)
    pairs = plant(data, 0.02, args.seed)
    n = sum(1 for _ in data.rglob("*.jpg"))
    print(f"data:     {n} GalSim cutouts, {args.size} px JPEG, 5 classes, {len(pairs)} of "
          "them copies (resized, re-encoded, turned, mirrored)")
    cache = work / "cache"
    cold = run_inspect(data, work / "out", cache)
    warm = [run_inspect(data, work / f"out{r}", cache) for r in range(args.repeats)]
    summary = json.loads((work / "out" / "summary.json").read_text())
    with open(work / "out" / "duplicates.csv", newline="", encoding="utf-8") as fh:
        group = {row["path"]: row["group"] for row in csv.DictReader(fh)}
    found = sum(group.get(a) is not None and group.get(a) == group.get(b) for a, b in pairs)
    med = statistics.median(warm)
    print(f"inspect, cold cache (baseline):   {cold:6.1f} s")
    print(f"inspect, warm cache, median of {args.repeats}: {med:6.1f} s  "
          f"({med / cold:.2f} of cold; runs {', '.join(f'{w:.1f}' for w in warm)})")
    inside = json.loads((work / f"out{args.repeats - 1}" / "summary.json").read_text())
    print(f"  of which the inspection itself (summary.json 'seconds', last warm run): "
          f"{inside['seconds']:.1f} s; the rest is starting Python, torch and the backbone")
    print(f"planted copies found: {found} of {len(pairs)}; duplicate groups "
          f"{summary['duplicates']['groups']}, pairs {summary['duplicates']['pairs']}; "
          f"suspected label errors {summary['label_errors']['suspected']}")


def bench_index(args: argparse.Namespace) -> None:
    from skysort.inspection.similar import SimilarityIndex

    rng = np.random.default_rng(args.seed)
    dim = 1280
    centres = rng.normal(size=(200, dim)).astype(np.float32)
    features = np.empty((args.index, dim), dtype=np.float32)
    for s in range(0, args.index, 100_000):
        m = min(100_000, args.index - s)
        features[s:s + m] = centres[rng.integers(200, size=m)] + \
            rng.normal(0, 1.0, (m, dim)).astype(np.float32)
    paths = [f"cutouts/{i:08d}.jpg" for i in range(args.index)]
    start = time.perf_counter()
    index = SimilarityIndex.build(features, paths, [""] * args.index, {"backbone": "sim"})
    built = time.perf_counter() - start
    folder = Path(tempfile.mkdtemp(prefix="skysort-index-"))
    try:
        index.save(folder)
        on_disk = sum(f.stat().st_size for f in folder.iterdir())
        start = time.perf_counter()
        loaded = SimilarityIndex.load(folder)
        load_s = time.perf_counter() - start
        queries = rng.choice(args.index, 21, replace=False)
        loaded.query(features[queries[0]], 12)  # the first fits the neighbour search
        times, brute = [], []
        for q in queries[1:]:
            start = time.perf_counter()
            found = loaded.query(features[q], 12)
            times.append(time.perf_counter() - start)
            assert found[0].path == paths[q]
            start = time.perf_counter()
            scores = features @ features[q]
            np.argpartition(-scores, 12)[:12]
            brute.append(time.perf_counter() - start)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"similarity index, {args.index:,} embeddings of {dim} dimensions:")
    print(f"  build (PCA to {index.vectors.shape[1]} on 20,000, reduce all): {built:.1f} s; "
          f"vectors in memory {index.vectors.nbytes / 2**20:.0f} MiB "
          f"(the full embeddings: {features.nbytes / 2**20:.0f} MiB); on disk "
          f"{on_disk / 2**20:.0f} MiB; load {load_s:.2f} s")
    print(f"  query (12 nearest), median of 20: {1000 * statistics.median(times):.0f} ms; "
          f"numpy brute force on the full vectors: {1000 * statistics.median(brute):.0f} ms "
          f"({statistics.median(brute) / statistics.median(times):.1f}x the index's time)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--index", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    print(f"machine:  {machine()}")
    print(f"versions: {versions()}")
    work = Path(tempfile.mkdtemp(prefix="skysort-inspect-"))
    try:
        if args.n:
            bench_inspect(args, work)
        if args.index:
            bench_index(args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
