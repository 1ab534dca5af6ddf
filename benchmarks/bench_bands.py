"""Multi-band FITS against their Lupton JPEG copies, five bands against three, and a colour
that only the fifth band shows.

Usage::

    python benchmarks/bench_bands.py [--seeds 0,1,2] [--n-per-class 120] [--size 64]
        [--finetune head] [--finetune-c last:2] [--finetune-epochs 3] [--repeats 3]
        [--parts abcd]

Renders simulated survey galaxies as float32 FITS (``skysort.synth.bands``: GalSim
profiles, each component with its own SED in g, r, i, z, y, noise per band) and, for each
seed (the data and the split both follow it), trains and scores on the test split. All
runs of a seed use one split file (70/15/15 per class by image number), so the FITS
cubes, their JPEG copies and the 5-band cubes are scored on the same test images:

a. **3-band FITS cubes (g, r, z) against their Lupton JPEG copies**, 5 morphology classes.
   The JPEGs are exactly what an astronomer's rendering of the cubes gives (astropy's
   ``make_lupton_rgb``, each image its own scale, north up, quality 90); training on the
   cubes makes the same composite itself (``channels=rgb``, the default), with the
   data-set-wide Lupton scale where skysort fits one, from float data (no JPEG loss).
b. **5-band FITS (g, r, i, z, y) into the network** (``channels=all``: the first
   convolution takes 5 channels, its weights made from the pretrained RGB ones as timm's
   ``in_chans`` does) against the 3-band composite of a, and against ``channels=all`` on
   just g, r, z of the same 5-band cubes (three raw bands, no composite: separates "more
   bands" from "bands instead of a composite").
c. **A colour only y can see**: two classes, ``zbright`` (y/z = 0.7 over the whole galaxy)
   and ``ybright`` (1.4), with the same morphologies and the same brightness and colour
   in g, r, i, z. ``channels=all`` on all five bands should separate them; the composite of
   ``bands=g,r,i`` cannot (chance, about 0.5). The default composite of five bands would
   *not* be blind: ``rgb_planes`` takes the bluest, the reddest and the middle band, g, r
   and **y**, so the blind run must name its three bands explicitly; the default is shown
   too. Both the head-only runs and runs fine-tuned briefly (``--finetune-c last:2``,
   ``--finetune-epochs 3``) are shown, and what the data allow: a y/z flux ratio cut
   (weighted by the r-band image) with no training at all.
d. **Prediction throughput** (images/s, median of ``--repeats``) of ``skysort.predict``
   (what ``skysort predict`` runs) on the 3-band cubes with the FITS model of a, and on the
   JPEG copies with the JPEG model, first seed only; every time includes starting the
   worker processes.

Fine-tuning is ``head`` for every run but c's fine-tuned ones (``--finetune``): a linear
head on frozen, cached embeddings of the pretrained backbone. It works with
``channels=all`` too (the adapted first convolution is part of the frozen backbone), so
a, b and c compare inputs under the same, cheap training; ``--finetune auto`` or
``last:N`` (with ``--finetune-epochs``) lets the backbone adapt to the extra channels, at
many times the cost (c shows both).

A run whose setting this skysort does not know is shown as n/a with the reason. Each run's
score is also printed on stderr as it comes. Each run is the equivalent of
``skysort train DATA finetune=head seed=S [channels=all bands=...]``; the commands are
printed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np

import skysort
from bench_train_predict import machine, versions
from skysort.data.fits import read_fits_bands
from skysort.errors import SkySortError
from skysort.synth.bands import COLOUR_CLASSES, jpeg_root, write_fits_set
from skysort.synth.galaxies import MORPHOLOGIES

T = TypeVar("T")


@dataclass
class Row:
    """One line of the accuracy table: a data set and settings, scored per seed."""

    part: str
    data: str  # key into the per-seed folders
    label: str
    settings: dict[str, str] = field(default_factory=dict)
    tuned: bool = False  # fine-tuned with --finetune-c instead of --finetune
    scores: list[float] = field(default_factory=list)
    walls: list[float] = field(default_factory=list)
    error: str = ""


def rows() -> list[Row]:
    return [
        Row("a", "grz", "3-band FITS cubes g,r,z, Lupton composite, channels=rgb"),
        Row("a", "grz_jpeg", "Lupton JPEG copies of the same images (q90)"),
        Row("b", "grizy", "5-band FITS, channels=all bands=g,r,i,z,y",
            {"channels": "all", "bands": "g,r,i,z,y"}),
        Row("b", "grizy", "5-band FITS, channels=all bands=g,r,z (3 raw bands)",
            {"channels": "all", "bands": "g,r,z"}),
        Row("c", "colour", "colour-only, channels=all bands=g,r,i,z,y",
            {"channels": "all", "bands": "g,r,i,z,y"}),
        Row("c", "colour", "colour-only, composite of bands=g,r,i (blind to y)",
            {"bands": "g,r,i"}),
        Row("c", "colour", "colour-only, default composite (g,r,y: sees y)"),
        Row("c", "colour", "colour-only, channels=all bands=g,r,i,z,y, fine-tuned",
            {"channels": "all", "bands": "g,r,i,z,y"}, tuned=True),
        Row("c", "colour", "colour-only, composite of bands=g,r,i, fine-tuned",
            {"bands": "g,r,i"}, tuned=True),
    ]


def quietly(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return fn(*args, **kwargs)


def make_data(work: Path, seed: int, n: int, n_colour: int, size: int, parts: str
              ) -> tuple[dict[str, Path], float]:
    """The folders the parts need. Bands render independently, so the g, r, z cubes (and
    their JPEG copies) hold the same galaxies and noise as those planes of the 5-band ones."""
    start = time.perf_counter()
    folders: dict[str, Path] = {}
    if {"a", "d"} & set(parts):
        folders["grz"] = write_fits_set(work / "grz", n, size=size, seed=seed,
                                        bands=("g", "r", "z"), jpeg=True)
        folders["grz_jpeg"] = jpeg_root(folders["grz"])
    if "b" in parts:
        folders["grizy"] = write_fits_set(work / "grizy", n, size=size, seed=seed)
    if "c" in parts:
        folders["colour"] = write_fits_set(work / "colour", n_colour, size=size, seed=seed,
                                           colour_only=True)
    return folders, time.perf_counter() - start


def write_split(folder: Path, seed: int, out: Path) -> tuple[Path, Path]:
    """A split file (``filename class_id set`` lines) and its class map (``id,name``) for a
    class-folder set: 70/15/15 per class by image number, drawn from the seed, so the sets
    of one seed that share image numbers (g,r,z cubes, their JPEG copies, the 5-band cubes)
    have the same test images."""
    lines, names = [], []
    for class_id, class_dir in enumerate(sorted(p for p in folder.iterdir() if p.is_dir())):
        names.append(f"{class_id},{class_dir.name}")
        files = sorted(f for f in class_dir.iterdir() if f.is_file())
        order = np.random.default_rng([seed, 99]).permutation(len(files))
        n_train, n_val = round(0.7 * len(files)), round(0.15 * len(files))
        for rank, k in enumerate(order):
            part = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
            lines.append(f"{files[k].name} {class_id} {part}")
    out.write_text("\n".join(lines) + "\n")
    classmap = out.with_suffix(".classes.csv")
    classmap.write_text("\n".join(names) + "\n")
    return out, classmap


def photometric_cut(folder: Path) -> float:
    """Accuracy of a cut with no training on the colour-only set: the r-band-weighted y/z
    flux ratio above or below sqrt(0.7 * 1.4), over all images (what the data allow)."""
    threshold = float(np.sqrt(np.prod(list(COLOUR_CLASSES.values()))))
    right = []
    for name, ratio in COLOUR_CLASSES.items():
        for path in sorted((folder / name).glob("*.fits")):
            data = read_fits_bands(path, 10**8).data  # g, r, i, z, y
            weight = np.clip(data[1], 0.0, None)
            measured = float((data[4] * weight).sum() / (data[3] * weight).sum())
            right.append((measured > threshold) == (ratio > threshold))
    return float(np.mean(right))


def fine_tuning(row: Row, args: argparse.Namespace) -> dict[str, str]:
    """The fine-tuning settings of a row: ``--finetune``, or ``--finetune-c`` for the
    fine-tuned rows of c, each with ``--finetune-epochs`` when it fine-tunes."""
    finetune = args.finetune_c if row.tuned else args.finetune
    out = {"finetune": finetune}
    if finetune != "head" and args.finetune_epochs:
        out["finetune_epochs"] = str(args.finetune_epochs)
    return out


def command(row: Row, seed: int, args: argparse.Namespace) -> str:
    extra = " ".join(f"{k}={v}" for k, v in {**fine_tuning(row, args), **row.settings}.items())
    return (f"skysort train split.txt --images {row.data}/ --classmap classes.csv "
            f"seed={seed} {extra}")


def train(row: Row, data: Path, work: Path, seed: int, args: argparse.Namespace
          ) -> tuple[Path | None, float]:
    """Trains one run and records its test accuracy (or why it could not run)."""
    tuning = fine_tuning(row, args)
    name = "-".join([row.data, *(f"{k}{v}" for k, v in {**row.settings, **tuning}.items())])
    name = name.replace(",", "").replace(":", "")
    extra: dict[str, object] = {k: (v.split(",") if k == "bands" else v)
                                for k, v in row.settings.items()}
    extra.update({k: (int(v) if k == "finetune_epochs" else v) for k, v in tuning.items()})
    split, classmap = write_split(data, seed, work / f"split-{name}.txt")
    start = time.perf_counter()
    try:
        result = quietly(skysort.train, split, images=str(data), classmap=str(classmap),
                         project=str(work / "runs"), name=name,
                         exist_ok=True, cache_dir=str(work / "cache" / name), seed=seed,
                         **extra)
    except (SkySortError, TypeError, ValueError) as exc:
        row.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
        return None, time.perf_counter() - start
    wall = time.perf_counter() - start
    if result.bad_files:
        row.error = f"{len(result.bad_files)} unreadable file(s), e.g. " \
                    f"{next(iter(result.bad_files.values()))[:100]}"
    row.scores.append(float(result.metrics["model"]["accuracy"]))
    row.walls.append(wall)
    print(f"seed {seed}, {row.part}: {row.label}: {row.scores[-1]:.3f} on "
          f"{result.metrics.get('n', '?')} test images, {wall:.0f} s", file=sys.stderr,
          flush=True)
    return Path(result.run_dir), wall


def throughput(run: Path, folder: Path, out: Path, repeats: int) -> tuple[float, list[float]]:
    n = sum(1 for p in folder.rglob("*") if p.is_file())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        quietly(skysort.predict, run, [folder], out, quiet=True)
        times.append(time.perf_counter() - start)
    return n / statistics.median(times), times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--n-per-class", type=int, default=120)
    parser.add_argument("--n-colour", type=int, default=None,
                        help="images per colour-only class (default twice --n-per-class: "
                             "two classes, and a test split big enough to tell 0.95)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--finetune", default="head",
                        help="fine-tuning of every run but c's fine-tuned ones (default head)")
    parser.add_argument("--finetune-c", default="last:2",
                        help="fine-tuning of c's fine-tuned rows (default last:2)")
    parser.add_argument("--finetune-epochs", type=int, default=3,
                        help="fine-tuning epochs wherever it is not head-only (default 3)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--parts", default="abcd", help="which parts to run (default abcd)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    n_colour = args.n_colour or 2 * args.n_per_class
    table = [r for r in rows() if r.part in args.parts
             and not (r.tuned and args.finetune_c in ("", "none"))]
    begin = time.perf_counter()
    print(f"machine:  {machine()}")
    print(f"versions: {versions()}")
    print(f"data:     {args.size} px simulated galaxies, {args.n_per_class} per class of "
          f"{len(MORPHOLOGIES)} morphologies (a, b, d), {n_colour} per class of "
          f"{len(COLOUR_CLASSES)} colour-only classes (c); seeds {seeds}; "
          f"finetune={args.finetune}; c's fine-tuned rows finetune={args.finetune_c} "
          f"finetune_epochs={args.finetune_epochs}")
    speed: dict[str, tuple[float, list[float]]] = {}
    generation: list[float] = []
    cuts: list[float] = []
    work = Path(tempfile.mkdtemp(prefix="skysort-bands-"))
    try:
        for seed in seeds:
            folders, wall = make_data(work / f"seed{seed}", seed, args.n_per_class, n_colour,
                                      args.size, args.parts)
            generation.append(wall)
            if "colour" in folders:
                cuts.append(photometric_cut(folders["colour"]))
            runs: dict[str, Path | None] = {}
            for row in table:
                if row.error and not row.scores:
                    continue  # a setting this skysort lacks: no use trying other seeds
                run, _ = train(row, folders[row.data], work / f"seed{seed}", seed, args)
                runs.setdefault(row.data, run)
            if "d" in args.parts and seed == seeds[0]:
                for key in ("grz", "grz_jpeg"):
                    run = runs.get(key) or train(Row("d", key, key), folders[key],
                                                 work / f"seed{seed}", seed, args)[0]
                    if run is not None:
                        speed[key] = throughput(run, folders[key], work / f"{key}.csv",
                                                args.repeats)
            shutil.rmtree(work / f"seed{seed}", ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nrendering the FITS sets and JPEG copies of one seed: "
          f"{statistics.median(generation):.0f} s (median)\n")
    seed_heads = "".join(f" {f'seed {s}':>7} |" for s in seeds)
    print(f"| part | {'input':<55} | test accuracy |{seed_heads} train s |")
    print(f"|------|{'-' * 57}|---------------|{'---------|' * len(seeds)}---------|")
    for row in table:
        per_seed = "".join(f" {v:>7.3f} |" for v in row.scores) + \
            "".join(f" {'n/a':>7} |" for _ in range(len(seeds) - len(row.scores)))
        mean = f"{np.mean(row.scores):.3f}" if row.scores else "n/a"
        took = f"{statistics.median(row.walls):.0f}" if row.walls else "-"
        print(f"| {row.part:<4} | {row.label:<55} | {mean:>13} |{per_seed} {took:>7} |")
    if cuts:
        label = "colour-only, y/z flux cut, no training (all images)"
        print(f"| c    | {label:<55} | {np.mean(cuts):>13.3f} |"
              + "".join(f" {v:>7.3f} |" for v in cuts) + f" {'-':>7} |")
    if {"grz", "grz_jpeg"} <= set(speed):
        fits_rate, jpeg_rate = speed["grz"][0], speed["grz_jpeg"][0]
        print(f"\n| d: `skysort predict`, {args.n_per_class * len(MORPHOLOGIES)} images "
              f"| images/s (median of {args.repeats}) | ratio |")
        print("|---|---|---|")
        print(f"| 3-band FITS cubes (g,r,z), FITS model | {fits_rate:.1f} | "
              f"{fits_rate / jpeg_rate:.2f} of JPEG |")
        print(f"| Lupton JPEG copies, JPEG model | {jpeg_rate:.1f} | 1.00 (baseline) |")
        print(f"\nall predict times (s): FITS {np.round(speed['grz'][1], 1).tolist()}, "
              f"JPEG {np.round(speed['grz_jpeg'][1], 1).tolist()}")
    errors = [r for r in table if r.error]
    if errors:
        print("\nnot run or not clean:")
        for r in errors:
            print(f"  {r.part} {r.label}: {r.error}")
    print("\nequivalent commands (DATA folders as rendered per seed; grz_jpeg: the JPEG copies "
          "of grz):")
    for row in table:
        print(f"  {row.part}: {command(row, seeds[0], args)}")
    print(f"\ntotal wall time: {time.perf_counter() - begin:.0f} s")


if __name__ == "__main__":
    main()
