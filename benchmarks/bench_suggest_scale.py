"""``skysort suggest`` on a large pool with a warm cache: seconds and peak memory.

Usage::

    python benchmarks/bench_suggest_scale.py [--pool 25000 100000] [-n 100]

A real run is trained (head only) on a small colour set; the pool is ``--pool`` small
distinct files whose embeddings (under the run's own embedding key) and fingerprints are
put in the caches first, as a first ``suggest`` or ``skysort inspect`` leaves them: the
warm case, where no image is decoded. The embeddings are drawn near the labelled ones
(cosine 0.5-0.9), so every pool image has labelled neighbours to check as copies, the
most work the copies check can be given. Each pool size runs in a fresh process (its
peak resident memory is its own), for the default strategy and for ``random`` (the
floor: reading and scoring without the selection).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))


def prepare(work: Path, n_pool: int) -> Path:
    """The run (trained once) and a pool of ``n_pool`` files with warm caches."""
    from tests.conftest import write_color_folders

    import skysort
    from skysort.active.scoring import run_embedding_key
    from skysort.inspection.fingerprints import FingerprintCache
    from skysort.models.embeddings import EmbeddingCache, content_hash
    from skysort.models.info import read_model_info

    run = work / "runs" / "r"
    if not (run / "model.safetensors").is_file():
        data = write_color_folders(work / "data", per_class=40, size=48)
        skysort.train(data, project=str(work / "runs"), name="r", finetune="head",
                      input_size=48)
    info = read_model_info(run)
    key = run_embedding_key(run, info)
    cache = EmbeddingCache(None, key)
    prints = FingerprintCache(os.environ["SKYSORT_CACHE"])
    labelled = [v for v in cache.get_many([h for h in (content_hash(p) for p in
                                           (work / "data").rglob("*.png")) if h]).values()]
    centre = np.mean(labelled, axis=0)
    rng = np.random.default_rng(0)
    pool = work / f"pool{n_pool}"
    if not pool.is_dir():
        pool.mkdir()
        emb: dict[str, np.ndarray] = {}
        fps: dict[str, tuple[dict[str, object], bytes, bytes]] = {}
        for i in range(n_pool):
            path = pool / f"p{i:06d}.png"
            path.write_bytes(b"pool image %d" % i)
            h = str(content_hash(path))
            base = labelled[int(rng.integers(len(labelled)))]
            noise = rng.normal(size=centre.shape).astype(np.float32)
            mix = float(rng.uniform(0.3, 1.5))
            emb[h] = base + mix * noise * float(np.linalg.norm(base) / np.sqrt(len(base)))
            fps[h] = ({"format": "PNG", "pixels": h}, rng.integers(0, 2**63, 8,
                      dtype=np.uint64).tobytes(),
                      rng.integers(0, 256, 32 * 32, dtype=np.uint8).tobytes())
            if len(emb) == 5000:
                cache.put_many(emb)
                prints.put_many(fps)
                emb, fps = {}, {}
        cache.put_many(emb)
        prints.put_many(fps)
    cache.close()
    prints.close()
    return run


def measure(work: Path, n_pool: int, n: int, strategy: str) -> dict[str, float]:
    """One suggest in this process (called in a child: its peak memory is its own)."""
    from skysort.active.suggest import suggest

    run = work / "runs" / "r"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    suggest(run, [work / f"pool{n_pool}"], n, strategy=strategy, quiet=True,
            output=work / f"to_label_{strategy}_{n_pool}.csv")
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": seconds, "peak_mb": peak / 1024, "before_mb": before / 1024}


def main() -> None:
    from bench_train_predict import machine, versions

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pool", type=int, nargs="+", default=[25_000, 100_000])
    parser.add_argument("-n", type=int, default=100)
    parser.add_argument("--work", help="keep the files here (default: a temporary folder)")
    parser.add_argument("--child", nargs=3, metavar=("POOL", "N", "STRATEGY"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_suggest_"))
    os.environ.setdefault("SKYSORT_CACHE", str(work / "cache"))
    if args.child:
        print(json.dumps(measure(work, int(args.child[0]), int(args.child[1]),
                                 args.child[2])))
        return
    print(f"machine:  {machine()}")
    print(f"versions: {versions()}")
    print(f"{'pool':>8} {'strategy':>9} {'seconds':>8} {'peak MB':>8}")
    for n_pool in args.pool:
        prepare(work, n_pool)
        for strategy in ("random", "default"):
            out = subprocess.run([sys.executable, __file__, "--work", str(work), "--child",
                                  str(n_pool), str(args.n), strategy],
                                 capture_output=True, text=True, check=True,
                                 env={**os.environ})
            got = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{n_pool:>8} {strategy:>9} {got['seconds']:>8.1f} {got['peak_mb']:>8.0f}",
                  flush=True)


if __name__ == "__main__":
    main()
