"""Prediction at survey scale: each engine and precision, decoding, end to end, memory.

Usage::

    python benchmarks/bench_predict_scale.py [--work /tmp/bench_predict_scale] [--quick]
                                             [--finetune last:2] [--repeats 3]
                                             [--long 100000]

Makes its own data in ``--work`` (kept, so a second run neither makes it nor trains again):
real-photograph crops at 424 px (JPEG; 7 texture and terrain classes cut from
scikit-image's photographs by ``active_photos.py``: training crops from the left of each
photograph, prediction crops from the right) and GalSim galaxy cutouts at 128 px (PNG; 5
classes; prediction cutouts from another seed). It trains one run on each kind, then
prints, in one run:

1. the model alone, one thread, 8 images per call, interleaved: ONNX Runtime f32 (the
   baseline), OpenVINO f32, OpenVINO bf16 (where the CPU has native bf16) and OpenVINO
   int8 (NNCF, as ``skysort predict --precision int8`` makes it), with top-1 agreement
   with ONNX Runtime f32 on a held-out split (prediction images with their labels; never
   used for training or calibration) and the balanced-accuracy change;
2. the int8 study on the photographs' model: NNCF with full/fast bias correction x first
   convolution and head kept in f32 or not x ``performance``/``mixed`` preset;
3. decoding (decode + resize + crop, ``decode_chunk`` on batches of 32, one process) per
   image at 128, 256 and 424 px, JPEG and PNG;
4. ``skysort predict`` end to end (its own process each time, start-up included, one
   worker per core) per engine: images/s and peak memory of the process tree (the sum of
   its processes' PSS, which counts the pages forked workers share once; the sum of their
   RSS, which counts them in each, beside it);
5. peak memory over a listing of 10,000 and of 100,000 paths (``--long``);
6. the cost model: ms of one core per image, and core-hours for 10^6, 10^8 and 1.5 x 10^9
   images.

Every time is a median over repeats, every ratio against ONNX Runtime f32 measured in the
same run and interleaved with it. ``--quick`` shrinks everything for a smoke run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

import skysort
from active_photos import POOL_SHARE, SHARES, SOURCES, _crop, _grey
from bench_train_predict import machine, versions
from skysort.data.batches import decode_chunk
from skysort.data.split import read_split_csv
from skysort.data.transforms import EvalTransform, create_transform
from skysort.models.export import onnx_with_source
from skysort.models.info import ModelInfo, read_model_info
from skysort.models.plan import ResolvedPlan
from skysort.models.streaming import OnnxWorkerModel
from skysort.synth.sets import make_class_folders

Runner = Callable[[np.ndarray], np.ndarray]
REF = "onnxruntime f32"
PER_CALL = 8
#: Why the photographs' run fine-tunes the last two stages by default.
FINETUNE_PHOTOS = ("finetune= for the photographs' run; auto would fine-tune every layer at "
                   "224 px: 420 training images x up to 15 epochs at the 7.7 images/s README "
                   "gives for 2 cores (bench_train_speed.py) is 7-14 min, over the 6 min this "
                   "benchmark allows, so last:2")
#: Images of the survey-scale cost model.
SCALES = {"10^6": 1e6, "10^8": 1e8, "1.5x10^9 (Euclid wide)": 1.5e9}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Sends file descriptor 1 to 2 (NNCF logs and draws progress bars on stdout)."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


# ---------------------------------------------------------------------------- data


def make_photos(root: Path, n: int, size: int, seed: int, part: str) -> Path:
    """``n`` JPEG crops (quality 90) of ``size`` px in class folders, as
    :func:`active_photos.make_photo_set` cuts them (its PNGs would be 3-5x larger)."""
    if (root / ".done").is_file():
        return root
    counts = {c: max(3, round(n * SHARES[c])) for c in SHARES}
    counts["lunar"] += n - sum(counts.values())
    for k, (name, count) in enumerate(counts.items()):
        photo = _grey(SOURCES[name])
        cut = int(photo.shape[1] * POOL_SHARE)
        photo = photo[:, :cut] if part == "pool" else photo[:, cut:]
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            rng = np.random.default_rng([seed, k, i, part == "test"])
            Image.fromarray(_crop(photo, rng, size)).save(root / name / f"{name}_{i:05d}.jpg",
                                                          quality=90)
    (root / ".done").touch()
    return root


def make_cutouts(root: Path, n: int, seed: int) -> Path:
    if not (root / ".done").is_file():
        make_class_folders(root, max(1, n // 5), size=128, fmt="png", seed=seed)
        (root / ".done").touch()
    return root


def make_decode_set(root: Path, sources: list[Path], n: int) -> dict[tuple[int, str], list[Path]]:
    """RGB cutouts at 128, 256 and 424 px (bicubic, fresh noise), as JPEG and PNG."""
    files: dict[tuple[int, str], list[Path]] = {}
    rng = np.random.default_rng(0)
    for size in (128, 256, 424):
        for fmt in ("jpg", "png"):
            folder = root / f"{size}_{fmt}"
            folder.mkdir(parents=True, exist_ok=True)
            files[size, fmt] = [folder / f"{i:04d}.{fmt}" for i in range(n)]
            for i, path in enumerate(files[size, fmt]):
                if path.is_file():
                    continue
                img = Image.open(sources[i % len(sources)]).convert("RGB")
                arr = np.asarray(img.resize((size, size), Image.Resampling.BICUBIC), np.int16)
                arr = arr + rng.integers(-6, 7, arr.shape) * (size > 128)
                Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(
                    path, **({"quality": 90} if fmt == "jpg" else {}))
    return files


def labelled(root: Path, suffix: str) -> tuple[list[Path], list[str]]:
    paths = sorted(root.rglob(f"*.{suffix}"))
    return paths, [p.parent.name for p in paths]


# ---------------------------------------------------------------------------- training


def trained(work: Path, name: str, data: Path, finetune: str) -> dict[str, object]:
    """The run (trained once; its record in ``runs/NAME.json`` says how and how long)."""
    record_file = work / "runs" / f"{name}.json"
    if record_file.is_file():
        record = json.loads(record_file.read_text())
        if record["finetune"] == finetune:
            record["cached"] = True
            return record
    log(f"training {name} (finetune={finetune})")
    start = time.perf_counter()
    with open(work / f"train_{name}.log", "w") as fh, contextlib.redirect_stdout(fh), \
            contextlib.redirect_stderr(fh):
        result = skysort.train(data, finetune=finetune, seed=0, project=str(work / "runs"),
                               name=name, exist_ok=True, cache_dir=str(work / "cache"))
    plan = ResolvedPlan.read(result.run_dir)
    model = result.metrics.get("model", {})
    record = {"run": str(result.run_dir), "finetune": finetune, "seconds":
              time.perf_counter() - start, "resolved": f"{plan.finetune}"
              + (f":{plan.stages}" if plan.finetune == "last" else ""),
              "input_size": plan.input_size,
              "test_balanced_accuracy": model.get("balanced_accuracy")}
    record_file.write_text(json.dumps(record, indent=2))
    record["cached"] = False
    return record


def training_images(run: Path, limit: int) -> list[Path]:
    """The first ``limit`` training-split files of a run (as ``engine_check`` picks its
    int8 calibration images)."""
    root = Path(ResolvedPlan.read(run).data_root or ".")
    rows = [r for r in read_split_csv(run / "split.csv") if r["split"] == "train"]
    return [root / r["path"] for r in rows[:limit]]


def preprocessed(transform: EvalTransform, paths: list[Path]) -> np.ndarray:
    pixels, _, bad = decode_chunk(transform, paths)
    if bad or pixels is None:
        raise RuntimeError(f"unreadable: {bad}")
    return transform.normalize_batch(pixels)


# ---------------------------------------------------------------------------- measuring


def outputs(run: Runner, images: np.ndarray) -> np.ndarray:
    return np.concatenate([run(images[i:i + PER_CALL]) for i in range(0, len(images), PER_CALL)])


def interleaved_rates(runners: dict[str, Runner], images: np.ndarray, repeats: int
                      ) -> dict[str, float]:
    """Images/s of each runner (8 images per call), interleaved, median of ``repeats``."""
    seconds: dict[str, list[float]] = {k: [] for k in runners}
    for run in runners.values():
        run(images[:PER_CALL])  # warm-up
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            outputs(run, images)
            seconds[name].append(time.perf_counter() - start)
    return {k: len(images) / statistics.median(v) for k, v in seconds.items()}


def balanced_accuracy(info: ModelInfo, out: np.ndarray, labels: list[str]) -> float:
    names = np.array(info.task.classes)[info.task.predicted_class(out, info.threshold)]
    truth = np.array(labels)
    return float(np.mean([np.mean(names[truth == c] == c) for c in sorted(set(labels))]))


def agreement(info: ModelInfo, out: np.ndarray, ref: np.ndarray) -> float:
    pick = info.task.predicted_class
    return float(np.mean(pick(out, info.threshold) == pick(ref, info.threshold)))


def decode_ms(transform: EvalTransform, files: list[Path], repeats: int) -> float:
    """ms of one core per image: ``decode_chunk`` on batches of 32, median of repeats."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(files), 32):
            decode_chunk(transform, files[i:i + 32])
        times.append((time.perf_counter() - start) / len(files))
    return 1000 * statistics.median(times)


def _memory(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of a process in bytes; (0, 0) once it is gone."""
    pss = rss = 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
            elif line.startswith("Rss:"):
                rss = int(line.split()[1]) * 1024
    return pss, rss


class PeakMemory:
    """Samples a process and all its descendants every 250 ms: the peak of their summed
    PSS (pages shared with forked workers counted once) and of their summed RSS."""

    def __init__(self, pid: int) -> None:
        self.pid, self.pss, self.rss, self._stop = pid, 0, 0, threading.Event()
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
            sizes = [_memory(pid) for pid in self._tree()]
            self.pss = max(self.pss, sum(s[0] for s in sizes))
            self.rss = max(self.rss, sum(s[1] for s in sizes))
            time.sleep(0.25)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


PREDICT = ("import sys, skysort\n"
           "skysort.predict(sys.argv[1], [sys.argv[2]], sys.argv[3], engine=sys.argv[4], "
           "precision=sys.argv[5], quiet=True)\n")
#: ``skysort predict`` with OpenVINO at the precision asked for, its check bypassed.
BYPASS = ("from skysort.models.streaming import OnnxWorkerModel\n"
          "from skysort.prediction import engine_check\n"
          "def choose(run, info, onnx, source, precision, default_engine):\n"
          "    path = (engine_check.int8_model(run, info, onnx, source)\n"
          "            if precision == 'int8' else onnx)\n"
          "    return 'openvino', OnnxWorkerModel(str(path), source, 'openvino', precision), ''\n"
          "engine_check.choose = choose\n")


def predict_process(run: str, source: Path, out: Path, engine: str, precision: str,
                    bypass: bool = False) -> tuple[float, int, int]:
    """(seconds, peak PSS, peak RSS) of ``skysort.predict(..., quiet=True)`` in a fresh
    process (default workers: one per core); ``bypass``: without the engine check."""
    code = (BYPASS if bypass else "") + PREDICT
    cmd = [sys.executable, "-c", code, run, str(source), str(out), engine, precision]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    with PeakMemory(proc.pid) as peak:
        _, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.decode()}")
    return time.perf_counter() - start, peak.pss, peak.rss


def hours(h: float) -> str:
    return f"{h:,.1f}" if h < 100 else f"{h:,.0f}"


def mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


# ---------------------------------------------------------------------------- the parts


def int8_variants(work: Path, onnx: Path, source: str, default_ir: Path,
                  calibration: np.ndarray) -> dict[str, tuple[Path, float | None]]:
    """The 8 NNCF variants (IR, seconds to quantize; None when reused from an earlier run
    of this benchmark on the same weights). The default one is ``skysort predict``'s."""
    from skysort.models.openvino import quantize_int8

    found: dict[str, tuple[Path, float | None]] = {}
    for fast in (False, True):
        for keep in (True, False):
            for preset in ("performance", "mixed"):
                name = (f"{'fast' if fast else 'full'} bias correction, "
                        f"{'ends kept f32' if keep else 'all int8'}, {preset}")
                if (fast, keep, preset) == (False, True, "performance"):
                    found[name + " (predict's)"] = (default_ir, None)
                    continue
                path = work / "int8" / f"{int(fast)}{int(keep)}_{preset}.xml"
                stamp = path.with_suffix(".source")
                if path.is_file() and stamp.is_file() and stamp.read_text() == source:
                    found[name] = (path, None)
                    continue
                log(f"quantizing: {name}")
                start = time.perf_counter()
                with stdout_to_stderr():
                    quantize_int8(onnx, (x[None] for x in calibration), path, keep_ends=keep,
                                  fast_bias_correction=fast, preset=preset)
                found[name] = (path, time.perf_counter() - start)
                stamp.write_text(source)
    return found


def model_only(kind: str, run: Path, held: np.ndarray, labels: list[str],
               calibration: np.ndarray, n_timed: int, repeats: int, bf16: bool
               ) -> dict[str, object]:
    """Model-only rates, agreement and balanced accuracy per engine, and the int8 IR."""
    from skysort.prediction.engine_check import int8_model

    info = read_model_info(run)
    onnx, source = onnx_with_source(run)
    start = time.perf_counter()
    with stdout_to_stderr():
        int8 = int8_model(run, info, onnx, source, calibration)
    int8_seconds = time.perf_counter() - start
    models = {REF: OnnxWorkerModel(str(onnx), source),
              "openvino f32": OnnxWorkerModel(str(onnx), source, "openvino", "f32")}
    if bf16:
        models["openvino bf16"] = OnnxWorkerModel(str(onnx), source, "openvino", "bf16")
    models["openvino int8"] = OnnxWorkerModel(str(int8), source, "openvino", "int8")
    runners = {k: m.runner(1) for k, m in models.items()}
    log(f"{kind}: model alone")
    outs = {k: outputs(r, held) for k, r in runners.items()}
    rates = interleaved_rates(runners, held[:n_timed], repeats)
    return {"info": info, "onnx": onnx, "source": source, "int8": int8,
            "int8_seconds": int8_seconds, "outputs": outs, "rates": rates,
            "agreement": {k: agreement(info, o, outs[REF]) for k, o in outs.items()},
            "balanced": {k: balanced_accuracy(info, o, labels) for k, o in outs.items()}}


def int8_study(work: Path, part: dict[str, object], held: np.ndarray, labels: list[str],
               calibration: np.ndarray, n_timed: int, repeats: int) -> None:
    info: ModelInfo = part["info"]  # type: ignore[assignment]
    source: str = part["source"]  # type: ignore[assignment]
    variants = int8_variants(work, part["onnx"], source, part["int8"],  # type: ignore[arg-type]
                             calibration)
    ref = part["outputs"][REF]  # type: ignore[index]
    runners: dict[str, Runner] = {REF: OnnxWorkerModel(str(part["onnx"]), source).runner(1)}
    runners |= {k: OnnxWorkerModel(str(p), source, "openvino", "int8").runner(1)
                for k, (p, _) in variants.items()}
    log("int8 study: outputs and rates")
    outs = {k: outputs(r, held) for k, r in runners.items() if k != REF}
    rates = interleaved_rates(runners, held[:n_timed], repeats)
    base_bal = balanced_accuracy(info, ref, labels)
    print(f"\n### int8 variants (NNCF post-training, OpenVINO; photographs' model; calibration "
          f"{len(calibration)} training images; {len(held)} held-out images)\n")
    print("| variant | top-1 agreement with ORT f32 | balanced accuracy change | images/s, "
          "1 thread | x ORT f32 | quantize (s) | >= 0.995 |")
    print("|---|---|---|---|---|---|---|")
    print(f"| ONNX Runtime f32 (baseline) | 1.0000 | {base_bal:.4f} (value) | {rates[REF]:.1f} "
          "| 1.00 | - | - |")
    passing = []
    for name, (_, seconds) in variants.items():
        agree = agreement(info, outs[name], ref)
        change = balanced_accuracy(info, outs[name], labels) - base_bal
        ok = agree >= 0.995
        passing += [name] if ok else []
        print(f"| {name} | {agree:.4f} | {change:+.4f} | {rates[name]:.1f} | "
              f"{rates[name] / rates[REF]:.2f} | "
              f"{'cached' if seconds is None else f'{seconds:.0f}'} | {'yes' if ok else 'no'} |")
    print(f"\nvariants that keep >= 99.5% top-1 agreement: {', '.join(passing) or 'none'}")


def decode_table(work: Path, transforms: dict[int, EvalTransform], cutouts: list[Path],
                 photos: list[Path], n: int, repeats: int) -> dict[tuple[int, str], float]:
    log("decoding")
    files = make_decode_set(work / "data" / "decode", cutouts, n)
    ms = {key: decode_ms(transforms[key[0]], paths, repeats) for key, paths in files.items()}
    ms[424, "grey jpg"] = decode_ms(transforms[424], photos[:n], repeats)
    print(f"\n### Decoding into the model's input, ms of one core per image (decode_chunk, "
          f"batches of 32, {n} files, median of {repeats})\n")
    print("| image | model input | JPEG (q 90) | PNG |")
    print("|---|---|---|---|")
    for size in (128, 256, 424):
        print(f"| {size} px RGB | {transforms[size].preprocess.input_size} px | "
              f"{ms[size, 'jpg']:.2f} | {ms[size, 'png']:.2f} |")
    print(f"| 424 px grey photograph (the end-to-end set) | "
          f"{transforms[424].preprocess.input_size} px | {ms[424, 'grey jpg']:.2f} | - |")
    return ms


def end_to_end(kinds: dict[str, dict[str, object]], work: Path, repeats: int, bf16: bool
               ) -> dict[str, dict[str, dict[str, float]]]:
    """``skysort predict`` per kind and engine, interleaved: images/s and peak memory.

    Each precision goes through ``skysort predict``'s own choice (its check against ONNX
    Runtime f32, ``RUN/engine_check.json``); one the check refuses is also timed with the
    check bypassed, and labelled so, to show what it would give."""
    from skysort.prediction.engine_check import check_engine, choose

    plans: dict[str, list[tuple[str, str, str, bool]]] = {}
    for kind, k in kinds.items():
        part, run = k["model"], Path(k["run"])  # type: ignore[arg-type]
        wanted = ["f32", *(["bf16"] if bf16 else []), "int8"]
        with stdout_to_stderr():
            check = check_engine(run, part["info"], part["onnx"], part["source"], wanted)
        plans[kind] = [("onnx", "onnx", "auto", False)]
        k["passing"] = [REF]
        n = check["images"]
        print(f"{kind}: engine check on {n['validation']} validation + {n.get('test', 0)} "
              f"test + {n['training']} training images, ONNX Runtime f32 "
              f"{check['onnxruntime_images_per_s']} images/s (1 thread):")
        for p in wanted:
            engine, model, note = choose(run, part["info"], part["onnx"], part["source"], p,
                                         default_engine=False)
            entry = check["candidates"][p]
            print(f"  --precision {p}: " + json.dumps(entry))
            if engine == "openvino" and model.precision == p:
                plans[kind].append((f"openvino {p}", "openvino", p, False))
                k["passing"].append(f"openvino {p}")
            else:
                print(f"  skysort predict --engine openvino --precision {p} falls back to "
                      f"{engine} {model.precision}: {note}")
                plans[kind].append((f"openvino {p}, check bypassed", "openvino", p, True))
    found: dict[str, dict[str, dict[str, list[float]]]] = {
        kind: {name: {"s": [], "pss": [], "rss": []} for name, *_ in plan}
        for kind, plan in plans.items()}
    for r in range(repeats):
        for kind, plan in plans.items():
            for name, engine, precision, bypass in plan:
                log(f"predict {kind} {name} ({r + 1}/{repeats})")
                s, pss, rss = predict_process(kinds[kind]["run"], kinds[kind]["predict"],
                                              work / "out.csv", engine, precision, bypass)
                for key, value in (("s", s), ("pss", pss), ("rss", rss)):
                    found[kind][name][key].append(value)
    return {kind: {name: {"rate": kinds[kind]["n"] / statistics.median(v["s"]),
                          "pss": max(v["pss"]), "rss": max(v["rss"]),
                          "times": v["s"]} for name, v in per.items()}
            for kind, per in found.items()}


def flat_memory(work: Path, run: str, files: list[Path], engine: str, rate: float,
                short: int, long: int, limit_s: float) -> None:
    if long / rate > limit_s:
        print(f"\n{long:,} paths would take about {long / rate / 60:.0f} min at "
              f"{rate:.0f} images/s; measuring {long // 2:,} instead")
        long //= 2
    name, precision = [*engine.split(), "auto"][:2]
    rows = []
    for n in (short, long):
        listing = work / f"list_{n}.txt"
        with open(listing, "w") as fh:
            fh.writelines(f"{files[i % len(files)]}\n" for i in range(n))
        log(f"predict {n:,} listed paths with {engine}")
        rows.append((n, *predict_process(run, listing, work / f"list_{n}.csv", name,
                                         precision)))
    print(f"\n### Memory over a listing of paths (128 px cutouts repeated; {engine})\n")
    print("| paths | images/s | peak PSS, process tree | peak RSS, summed |")
    print("|---|---|---|---|")
    for n, s, pss, rss in rows:
        print(f"| {n:,} | {n / s:.1f} | {mib(pss)} | {mib(rss)} |")
    print(f"\npeak PSS at {long:,} paths against {short:,}: {rows[1][2] / rows[0][2]:.3f}x; "
          f"steady rate without start-up ({long - short:,} paths / the difference in wall "
          f"time): {(long - short) / (rows[1][1] - rows[0][1]):.1f} images/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/bench_predict_scale")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke run")
    parser.add_argument("--finetune-photos", default="last:2", help=FINETUNE_PHOTOS)
    parser.add_argument("--finetune-cutouts", default="auto",
                        help="finetune= for the cutouts' run (auto: all layers, at 128 px)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--long", type=int, default=100_000)
    args = parser.parse_args()
    q = args.quick
    work = Path(args.work) / ("quick" if q else "full")
    n_train, n_predict, n_held = (70, 96, 48) if q else (600, 2000, 400)
    n_calib, n_timed, n_decode = (24, 16, 32) if q else (300, 64, 64)
    model_repeats, repeats = (2, 1) if q else (5, args.repeats)
    short, long = (500, 2_000) if q else (10_000, args.long)
    began = time.perf_counter()

    import nncf
    import openvino as ov

    from skysort.device import cpu_count
    from skysort.models.openvino import native_precisions

    native = native_precisions()
    bf16 = "bf16" in native
    print(f"machine:  {machine()}")
    print(f"versions: {versions()}, openvino {ov.__version__.split('-')[0]}, "
          f"nncf {nncf.__version__}")
    print(f"openvino: native precisions {', '.join(native)}"
          f"{'' if bf16 else '; no native bf16 on this CPU'}")
    print(f"work:     {work}{' (--quick)' if q else ''}; started {time.strftime('%Y-%m-%d %H:%M')}"
          f" UTC, load average {os.getloadavg()[0]:.2f} (a shared machine)", flush=True)

    log("making data")
    data = work / "data"
    kinds: dict[str, dict[str, object]] = {
        "photographs 424 px JPEG": {
            "train": make_photos(data / "photos_train", n_train, 424, 0, "pool"),
            "predict": make_photos(data / "photos_predict", n_predict, 424, 1, "test"),
            "suffix": "jpg", "finetune": "head" if q else args.finetune_photos},
        "cutouts 128 px PNG": {
            "train": make_cutouts(data / "cutouts_train", n_train, 0),
            "predict": make_cutouts(data / "cutouts_predict", n_predict, 1),
            "suffix": "png", "finetune": "head" if q else args.finetune_cutouts}}
    print(f"data:     {n_train} training images per kind (7 photograph classes: crops of "
          f"the left {POOL_SHARE:.0%} of scikit-image's photographs; 5 GalSim classes, "
          f"seed 0); {n_predict} prediction images per kind (crops of the right of the "
          f"photographs; GalSim seed 1), of which {n_held} (every k-th, all classes) are "
          "the held-out split for agreement")
    for kind, k in kinds.items():
        name = "photos" if kind.startswith("photo") else "cutouts"
        record = trained(work, name, k["train"], k["finetune"])  # type: ignore[arg-type]
        k["run"] = record["run"]
        print(f"train:    {kind}: skysort.train(finetune={record['finetune']!r}, seed=0) -> "
              f"{record['resolved']}, {record['input_size']} px input, "
              f"{record['seconds'] / 60:.1f} min"
              f"{' (cached from an earlier run)' if record['cached'] else ''}; "
              f"test balanced accuracy {record['test_balanced_accuracy']:.3f}")
    if not q and args.finetune_photos == "last:2":
        print(f"          ({FINETUNE_PHOTOS.split('; ', 1)[1]})")
    sys.stdout.flush()

    # model alone, agreement, the int8 study
    transforms: dict[int, EvalTransform] = {}
    for kind, k in kinds.items():
        run = Path(k["run"])  # type: ignore[arg-type]
        transform = create_transform(read_model_info(run).preprocess)
        paths, labels = labelled(k["predict"], k["suffix"])  # type: ignore[arg-type]
        k["n"], k["files"] = len(paths), paths
        pick = np.linspace(0, len(paths) - 1, n_held).round().astype(int)
        held = preprocessed(transform, [paths[i] for i in pick])
        held_labels = [labels[i] for i in pick]
        calibration = preprocessed(transform, training_images(run, n_calib))
        k["model"] = model_only(kind, run, held, held_labels, calibration, n_timed,
                                model_repeats, bf16)
        if kind.startswith("photo"):
            transforms[256] = transforms[424] = transform
            int8_study(work, k["model"], held, held_labels, calibration,  # type: ignore[arg-type]
                       n_timed, model_repeats)
        else:
            transforms[128] = transform
    sys.stdout.flush()
    photos, cutouts = kinds.values()
    decode = decode_table(work, transforms, cutouts["files"], photos["files"],  # type: ignore[arg-type]
                          n_decode, model_repeats)
    sys.stdout.flush()

    print()
    ends = end_to_end(kinds, work, repeats, bf16)
    cores = cpu_count()

    cutouts_kind = "cutouts 128 px PNG"
    best_end = max(((n, e) for n, e in ends[cutouts_kind].items() if "bypassed" not in n),
                   key=lambda item: item[1]["rate"])
    flat_memory(work, cutouts["run"], cutouts["files"], best_end[0],  # type: ignore[arg-type]
                best_end[1]["rate"], short, long, limit_s=480)
    print(f"(fastest passing engine on {cutouts_kind}: {best_end[0]})")

    print("\n## Summary")
    print(f"\n### Per engine: model alone (1 thread, {PER_CALL} per call, median of "
          f"{model_repeats}, interleaved) and skysort predict end to end ({cores} workers, "
          f"whole process, median of {repeats})\n")
    print("| images | engine | model alone, images/s per core | x ORT f32 | top-1 agreement "
          "with ORT f32 | balanced accuracy change | predict, images/s | x onnx | peak PSS "
          "| peak RSS, summed |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for kind, k in kinds.items():
        part = k["model"]
        rates, end = part["rates"], ends[kind]  # type: ignore[index]
        for name, rate in rates.items():
            engine = "onnx" if name == REF else name
            refused = engine not in end
            e = end.get(f"{engine}, check bypassed" if refused else engine)
            base_bal = part["balanced"][REF]  # type: ignore[index]
            e2e = (f"{e['rate']:.1f} | {e['rate'] / end['onnx']['rate']:.2f} | "
                   f"{mib(e['pss'])} | {mib(e['rss'])}") if e else "- | - | - | -"
            label = f"{name}{' (refused by the check)' if refused else ''}"
            print(f"| {kind} | {label} | {rate:.1f} | {rate / rates[REF]:.2f} | "
                  f"{part['agreement'][name]:.4f} | "  # type: ignore[index]
                  f"{part['balanced'][name] - base_bal:+.4f} | {e2e} |")  # type: ignore[index]
    print(f"\n(held-out split: {n_held} images per kind; balanced accuracy with ORT f32: "
          + ", ".join(f"{kind} {k['model']['balanced'][REF]:.4f}"  # type: ignore[index]
                      for kind, k in kinds.items()) + ")")
    for kind in kinds:
        print(f"predict seconds, {kind}: " + "; ".join(
            f"{name} {np.round(e['times'], 1).tolist()}" for name, e in ends[kind].items()))

    # the cost model: ms of one core per image
    print("\n### Cost per image, ms of one core (decode + model alone), and core-hours\n")
    print("| images | engine | decode | model | total | measured end to end (cores x wall) "
          "| " + " | ".join(f"core-hours, {s}" for s in SCALES) + " |")
    print("|---|---|---|---|---|---|" + "---|" * len(SCALES))
    for size, fmt, kind in ((128, "png", "cutouts 128 px PNG"), (128, "jpg", "cutouts 128 px PNG"),
                            (256, "jpg", "photographs 424 px JPEG"),
                            (424, "jpg", "photographs 424 px JPEG")):
        part, end = kinds[kind]["model"], ends[kind]  # type: ignore[index]
        best = max(kinds[kind]["passing"],  # type: ignore[call-overload]
                   key=lambda n: part["rates"][n])  # type: ignore[index]
        fastest = max(part["rates"], key=lambda n: part["rates"][n])  # type: ignore[index]
        for name in dict.fromkeys((REF, best, fastest)):
            model_ms = 1000 / part["rates"][name]  # type: ignore[index]
            total = decode[size, fmt] + model_ms
            measured = "-"
            engine = "onnx" if name == REF else name
            if name not in kinds[kind]["passing"]:  # type: ignore[operator]
                engine = f"{engine}, check bypassed"
            if size in (128, 424) and fmt == kinds[kind]["suffix"] and engine in end:
                measured = f"{cores * 1000 / end[engine]['rate']:.2f}"
            label = name if name in kinds[kind]["passing"] else f"{name} (refused)"  # type: ignore[operator]
            print(f"| {size} px {fmt.upper()} | {label} | {decode[size, fmt]:.2f} | "
                  f"{model_ms:.2f} | {total:.2f} | {measured} | " + " | ".join(
                      hours(n * total / 3.6e6) for n in SCALES.values()) + " |")

    print(f"\nwhole benchmark: {(time.perf_counter() - began) / 60:.1f} min; load average "
          f"over the last 15 min at the end {os.getloadavg()[2]:.2f}")


if __name__ == "__main__":
    main()
