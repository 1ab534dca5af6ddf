"""Times training (cold and warm embedding cache) and prediction on generated galaxy images.

Usage::

    python benchmarks/bench_train_predict.py [--per-class 60] [--size 128] [--repeats 3]

Prints the machine, the versions, and a table of medians over repeats. Because this
machine is shared and noisy, each figure also comes as a ratio to a baseline measured in
the same run: the warm run against the cold one, and prediction against the model alone
on ready-made tensors under ONNX Runtime (the ceiling for end-to-end throughput). The
first prediction also exports the model to ONNX, once; the median leaves it out. Every
prediction time includes starting the worker processes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime
import timm
import torch

import skysort
from skysort.models.export import onnx_for_run
from skysort.models.onnx import OnnxModule
from skysort.synth.galaxies import MORPHOLOGIES
from skysort.synth.sets import make_class_folders


def machine() -> str:
    cpu = platform.processor() or "unknown cpu"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")),
                   cpu)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu}, {cores} cores, {platform.system()} {platform.machine()}; {cpu_flags()}"


def cpu_flags() -> str:
    """The vector extensions of this CPU that matter to torch on a CPU (AVX-512, AMX)."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((ln.split(":", 1)[1].split() for ln in fh if ln.startswith("flags")),
                         [])
    except OSError:
        return "unknown"
    wide = sorted(f for f in flags if f.startswith(("avx512", "amx")))
    return ", ".join(wide) if wide else \
        f"no AVX-512, no AMX ({'AVX2' if 'avx2' in flags else 'no AVX2'})"


def versions() -> str:
    return (f"python {platform.python_version()}, torch {torch.__version__}, timm "
            f"{timm.__version__}, onnxruntime {onnxruntime.__version__}, "
            f"skysort {skysort.__version__}")


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            fn()
        times.append(time.perf_counter() - start)
    return times


def model_only_throughput(run: Path, batch: int = 32, repeats: int = 5) -> float:
    """Images/s of the run's model alone on ready tensors, under ONNX Runtime (the engine
    ``skysort predict`` uses on a CPU): the ceiling for end-to-end throughput."""
    model = OnnxModule(onnx_for_run(run))
    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32)
    model(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=60)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="skysort-bench-"))
    try:
        data = make_class_folders(work / "data", args.per_class, size=args.size, fmt="jpg",
                                  seed=0)
        n = args.per_class * len(MORPHOLOGIES)
        cache = work / "cache"

        def cold() -> None:
            shutil.rmtree(cache, ignore_errors=True)
            skysort.train(data, project=str(work / "runs"), name="cold", exist_ok=True,
                          cache_dir=str(cache), finetune="head")

        def warm() -> None:
            skysort.train(data, project=str(work / "runs"), name="warm", exist_ok=True,
                          cache_dir=str(cache), finetune="head")

        cold_t = timed(cold, args.repeats)
        warm_t = timed(warm, args.repeats)
        run = work / "runs" / "warm"
        predict_t = timed(lambda: skysort.predict(run, [data], work / "p.csv", quiet=True),
                          args.repeats)
        ceiling = model_only_throughput(run)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    cold_m, warm_m, pred_m = (statistics.median(t) for t in (cold_t, warm_t, predict_t))
    print(f"machine:  {machine()}")
    print(f"versions: {versions()}")
    print(f"data:     {n} generated {args.size}px JPEG galaxies in {len(MORPHOLOGIES)} classes; "
          f"medians of {args.repeats} repeats")
    print()
    print(f"| {'measure':<34} | {'median':>10} | {'ratio':>26} |")
    print(f"|{'-' * 36}|{'-' * 12}|{'-' * 28}|")
    print(f"| {'train, cold cache (s)':<34} | {cold_m:>10.1f} | {'1.00 (baseline)':>26} |")
    print(f"| {'train, warm cache (s)':<34} | {warm_m:>10.1f} | "
          f"{f'{warm_m / cold_m:.2f} of cold':>26} |")
    print(f"| {'predict, end to end (images/s)':<34} | {n / pred_m:>10.1f} | "
          f"{f'{n / pred_m / ceiling:.2f} of model alone':>26} |")
    print(f"| {'model alone, ONNX Runtime (img/s)':<34} | {ceiling:>10.1f} | "
          f"{'1.00 (baseline)':>26} |")
    print(f"\nall times (s): cold {np.round(cold_t, 1).tolist()}, warm "
          f"{np.round(warm_t, 1).tolist()}, predict {np.round(predict_t, 1).tolist()}")


if __name__ == "__main__":
    sys.exit(main())
