"""Prediction at survey scale: engines, end-to-end throughput and peak memory.

Usage::

    python benchmarks/bench_predict_scale.py [--n 2000] [--size 424] [--repeats 3]
                                             [--long 100000]

Makes ``--n`` JPEGs of ``--size`` px (GalSim galaxies, upsampled, with noise) and a head-only
run with the default backbone, then measures, in one process tree and one run:

* the model alone on ready tensors (32 at a time): torch eager fp32, torch channels-last
  fp32, torch channels-last bf16 (where the CPU has native bf16), ONNX Runtime with 32
  images per call and with skysort's ``CPU_BATCH`` per call;
* ``skysort predict`` end to end (JPEGs on disk -> CSV), ONNX Runtime and torch engines;
* peak memory (the summed PSS of the predict process and its workers, sampled every
  250 ms) for ``--n`` files and for a list of ``--long`` paths (the same files repeated).

Every figure is a median over repeats; ratios are against the ONNX Runtime model-only
figure measured in the same run (the faster of its two batch sizes). Each end-to-end time
is the wall time of the whole ``skysort predict`` command, start-up included.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

import skysort
from bench_train_predict import machine, versions
from skysort.device import resolve_precision
from skysort.models.export import onnx_for_run
from skysort.models.model import Published, load_model
from skysort.models.onnx import CPU_BATCH, OnnxModule
from skysort.synth.sets import make_class_folders


def make_jpegs(folder: Path, n: int, size: int) -> Path:
    """``n`` JPEGs of ``size`` px: simulated galaxies, upsampled, with fresh noise each."""
    small = make_class_folders(folder.parent / "small", max(1, n // 40), size=128, fmt="png",
                               seed=1)
    sources = sorted(small.rglob("*.png"))
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = Image.open(sources[i % len(sources)]).resize((size, size), Image.BICUBIC)
        arr = np.asarray(img, dtype=np.int16) + rng.integers(-6, 7, (size, size, 3))
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(folder / f"{i:06d}.jpg",
                                                                 quality=90)
    return folder


def median_rate(fn: object, batch: int, repeats: int) -> float:
    fn()  # type: ignore[operator]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def model_only(run: Path, repeats: int) -> dict[str, float]:
    model, info = load_model(run)
    size = info.preprocess.input_size
    x = torch.randn(32, 3, size, size)
    net = Published(model).eval()
    rates: dict[str, float] = {}
    with torch.inference_mode():
        rates["torch eager fp32"] = median_rate(lambda: net(x), 32, repeats)
        net_cl = net.to(memory_format=torch.channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        rates["torch channels-last fp32"] = median_rate(lambda: net_cl(x_cl), 32, repeats)
        if resolve_precision("auto", torch.device("cpu")) is not None:
            def bf16() -> None:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    net_cl(x_cl)
            rates["torch channels-last bf16"] = median_rate(bf16, 32, repeats)
    xn = x.numpy()
    for per_call in (32, CPU_BATCH):
        onnx = OnnxModule(onnx_for_run(run), batch=per_call)
        rates[f"onnx runtime, {per_call} per call"] = median_rate(partial(onnx, xn), 32, repeats)
    return rates


def _memory(pid: int) -> int:
    """A process's proportional set size (its private pages, plus its share of pages it
    shares with others, such as forked workers'), in bytes; its RSS where there is no PSS."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class PeakMemory:
    """Samples the memory of a process and all its descendants: the sum of their PSS, so
    the pages forked workers share with their parent count once, as the kernel holds them."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree(self) -> list[int]:
        pids, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            for task in Path(f"/proc/{pid}/task").glob("*"):
                with contextlib.suppress(OSError):
                    todo += [int(c) for c in (task / "children").read_text().split()]
        return pids

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, sum(_memory(pid) for pid in self._tree()))
            time.sleep(0.25)  # reading smaps is not free; memory here changes slowly

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def predict_process(run: Path, inputs: list[str], out: Path, engine: str
                    ) -> tuple[float, int]:
    """(seconds, peak bytes) of ``skysort predict`` in its own process."""
    cmd = [sys.executable, "-m", "skysort", "predict", str(run), *inputs, "-o", str(out),
           "--engine", engine]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with PeakMemory(proc.pid) as rss:
        proc.wait()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode})")
    return time.perf_counter() - start, rss.peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--size", type=int, default=424)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--long", type=int, default=100_000)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="skysort-scale-"))
    os.environ.setdefault("SKYSORT_CACHE", str(work / "cache"))
    try:
        jpegs = make_jpegs(work / "jpegs", args.n, args.size)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            train = make_class_folders(work / "train", 10, size=96, seed=2)
            run = skysort.train(train, project=str(work / "runs"), name="r",
                                finetune="head").run_dir
        onnx_for_run(run)  # exported once, as the first predict would
        rates = model_only(run, max(5, args.repeats))
        ends: dict[str, list[float]] = {"onnx": [], "torch": []}
        peaks: dict[str, int] = {}
        for engine in ends:
            for _ in range(args.repeats):
                seconds, peak = predict_process(run, [str(jpegs)], work / "p.csv", engine)
                ends[engine].append(seconds)
                peaks[engine] = max(peaks.get(engine, 0), peak)
        listing = work / "long.txt"
        files = sorted(str(p) for p in jpegs.glob("*.jpg"))
        with open(listing, "w") as fh:
            for i in range(args.long):
                fh.write(files[i % len(files)] + "\n")
        long_seconds, long_peak = predict_process(run, [str(listing)], work / "long.csv", "onnx")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    # The denominator: ONNX Runtime on the model alone, at its fastest batch.
    ort = max(rate for name, rate in rates.items() if name.startswith("onnx"))
    print(f"machine:  {machine()}")
    print(f"versions: {versions()}")
    print(f"data:     {args.n} JPEGs of {args.size}x{args.size} px; default backbone "
          f"(tf_efficientnet_lite0, 224 px); medians of {args.repeats}+ repeats")
    print()
    print("| measure | images/s | x ONNX Runtime model-only | peak memory |")
    print("|---|---|---|---|")
    for name, rate in rates.items():
        print(f"| model alone, {name} | {rate:.1f} | {rate / ort:.2f} | - |")
    for engine, times in ends.items():
        rate = args.n / statistics.median(times)
        print(f"| skysort predict end to end, {engine} | {rate:.1f} | {rate / ort:.2f} | "
              f"{peaks[engine] / 2**20:.0f} MiB |")
    rate = args.long / long_seconds
    print(f"| skysort predict, {args.long:,} listed paths, onnx | {rate:.1f} | "
          f"{rate / ort:.2f} | {long_peak / 2**20:.0f} MiB |")
    print(f"\npeak memory, {args.long:,} paths against {args.n:,}: "
          f"{long_peak / peaks['onnx']:.3f}x")


if __name__ == "__main__":
    main()
