"""Fine-tuning speed: skysort against the loop a user writes by hand, and against the limit.

Usage::

    python benchmarks/bench_train_speed.py [--photos 96] [--cutouts 320] [--epochs 3]

Two class-folder sets are made in one temporary folder: large photographs (1000-2200 px
PNGs, trained at 224 px) and small survey cutouts (146 px JPEGs, trained at 128 px). On
each, in this one process tree and one run:

* **hand-written**: timm's model with the embedded ImageNet weights, torchvision
  ``ImageFolder`` with ``RandomResizedCrop`` and flips, a ``DataLoader`` with two workers,
  AdamW, eager fp32: what a user writes without skysort;
* **skysort**: ``skysort.train`` with ``finetune=full`` (its default for a set this size),
  everything else default; the images/s of its fine-tuning epochs from ``history.csv``
  (validation included);
* **limit**: the same model's forward and backward pass on random tensors already in
  memory, fp32 and (where the processor has native bfloat16) bf16, channels-last: no
  data at all.

Each throughput is the median over the steady-state epochs (the first is left out).
With ``--busy`` it trains skysort again beside one other CPU-bound process and reports
how much slower it got. Ratios matter, not the absolute figures: the machine is shared.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

# isort: off
import skysort  # first: it sets how OpenMP threads wait before torch loads OpenMP
# isort: on

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

from bench_train_predict import machine, versions
from skysort.models.backbones import create_backbone
from skysort.synth.galaxies import render_galaxy

CLASSES = ("elliptical", "spiral", "edge_on", "merger")


def make_photos(root: Path, n: int, seed: int = 0) -> Path:
    """Large photographs: rendered galaxies blown up to 1000-2200 px with fine noise."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        kind = CLASSES[i % len(CLASSES)]
        side = int(rng.integers(1000, 2200))
        small = render_galaxy(kind, rng, 160, float(rng.uniform(20, 200)))
        big = np.asarray(Image.fromarray(small).resize((side, int(side * 0.75)),
                                                        Image.Resampling.BICUBIC))
        noisy = np.clip(big + rng.normal(0, 6, big.shape), 0, 255).astype(np.uint8)
        (root / kind).mkdir(parents=True, exist_ok=True)
        Image.fromarray(noisy).save(root / kind / f"{i:04d}.png", compress_level=1)
    return root


def make_cutouts(root: Path, n: int, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    for i in range(n):
        kind = CLASSES[i % len(CLASSES)]
        (root / kind).mkdir(parents=True, exist_ok=True)
        Image.fromarray(render_galaxy(kind, rng, 146, float(rng.uniform(10, 200)))).save(
            root / kind / f"{i:04d}.jpg", quality=92)
    return root


def hand_written(data: Path, size: int, epochs: int, batch: int) -> float:
    """The usual PyTorch loop: ImageFolder, DataLoader(2 workers), AdamW, fp32 eager."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    backbone = create_backbone(input_size=size)
    model = torch.nn.Sequential(backbone.model, torch.nn.Linear(backbone.num_features,
                                                                len(CLASSES)))
    pre = backbone.preprocess
    transform = transforms.Compose([
        transforms.RandomResizedCrop(size, scale=(0.5, 1.0)), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), transforms.Normalize(pre.mean, pre.std)])
    loader = DataLoader(datasets.ImageFolder(str(data), transform), batch_size=batch,
                        shuffle=True, num_workers=2, drop_last=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    rates = []
    for _ in range(epochs):
        start, seen = time.perf_counter(), 0
        model.train()
        for images, labels in loader:
            loss = loss_fn(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(images)
        rates.append(seen / (time.perf_counter() - start))
    return statistics.median(rates[1:])


def limit(size: int, batch: int, steps: int = 4) -> dict[str, float]:
    """Forward + backward + AdamW step of the model alone on random tensors."""
    backbone = create_backbone(input_size=size)
    model = torch.nn.Sequential(backbone.model, torch.nn.Linear(backbone.num_features,
                                                                len(CLASSES)))
    model.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, len(CLASSES), (batch,))
    out = {}
    from skysort.device import resolve_precision

    native = resolve_precision("auto", torch.device("cpu")) is not None
    for name, enabled in (("fp32", False), ("bf16", True))[:2 if native else 1]:
        times = []
        for _ in range(steps + 1):
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
                loss = torch.nn.functional.cross_entropy(model(x).float(), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
        out[name] = batch / statistics.median(times[1:])
    return out


def skysort_rate(data: Path, work: Path, name: str, size: int, epochs: int,
                 batch: int) -> tuple[float, dict]:
    import csv
    import json

    result = skysort.train(data, project=str(work / "runs"), name=name, finetune="full",
                           finetune_epochs=epochs, finetune_patience=epochs, epochs=20,
                           input_size=size, finetune_batch_size=batch, split=(0.9, 0.1, 0.0),
                           cache_dir=str(work / "cache"))
    with open(result.run_dir / "history.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["stage"] == "finetune"]
    with open(result.run_dir / "split.csv", newline="") as fh:
        n_train = sum(1 for r in csv.DictReader(fh) if r["split"] == "train")
    per_epoch = n_train // batch * batch
    rates = [per_epoch / float(r["time_s"]) for r in rows[1:]]
    plan = json.loads((result.run_dir / "finetune_plan.json").read_text())
    return statistics.median(rates), plan


def _spin(stop: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    x = 0
    while not stop.is_set():
        x = (x * 7 + 1) % 1000003


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=96)
    parser.add_argument("--cutouts", type=int, default=320)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--busy", action="store_true",
                        help="also train beside one other CPU-bound process")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="skysort-speed-"))
    rows = []
    try:
        sets = [("photographs, 224 px", make_photos(work / "photos", args.photos), 224),
                ("cutouts, 128 px", make_cutouts(work / "cutouts", args.cutouts), 128)]
        for label, data, size in sets:
            lim = limit(size, args.batch)
            hand = hand_written(data, size, args.epochs, args.batch)
            ours, plan = skysort_rate(data, work, f"s{size}", size, args.epochs, args.batch)
            busy = None
            if args.busy:
                stop = multiprocessing.Event()
                spinner = multiprocessing.Process(target=_spin, args=(stop,))
                spinner.start()
                try:
                    busy, _ = skysort_rate(data, work, f"b{size}", size, args.epochs,
                                           args.batch)
                finally:
                    stop.set()
                    spinner.join()
            rows.append((label, hand, ours, lim, plan, busy))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"machine:  {machine()}")
    print(f"versions: {versions()}")
    print(f"data:     {args.photos} photographs 1000-2200 px (PNG), {args.cutouts} cutouts "
          f"146 px (JPEG); batch {args.batch}; medians of epochs 2-{args.epochs}")
    print()
    print("| set | hand-written img/s | skysort img/s | x hand-written | limit img/s "
          "(fp32, bf16) | limit / skysort | skysort plan | beside a busy process |")
    print("|---|---|---|---|---|---|---|---|")
    for label, hand, ours, lim, plan, busy in rows:
        best = max(lim.values())
        busy_text = "-" if busy is None else f"{busy:.1f} img/s ({ours / busy:.2f}x slower)"
        print(f"| {label} | {hand:.1f} | {ours:.1f} | {ours / hand:.2f} | "
              f"{lim['fp32']:.1f}, {lim.get('bf16', float('nan')):.1f} | {best / ours:.2f} | "
              f"{plan['threads']} threads, {plan['workers']} workers, {plan['precision']} "
              f"| {busy_text} |")


if __name__ == "__main__":
    main()
