"""The recipe study: test score against wall time for candidate training recipes.

Usage::

    python benchmarks/bench_recipe.py [--sets photos,cutouts,votes] [--seeds 3]
        [--candidates head,today,e4,e7,last2-e7,e7-ls,default] [--work DIR] [--repeat]
        [--budget cutouts:2m]

Three data sets of our own, written once into ``--work`` (default
``/tmp/skysort-recipe``) and kept there with every finished run's result
(``results.jsonl``), so a stopped study continues where it stopped:

* ``photos``: crops of real photographs (``benchmarks/active_photos.py``: terrain,
  texture, the Hubble Ultra Deep Field, microscope images), 128 px grey PNGs, 7
  imbalanced classes; train 280 and val 60 from the left of each photograph, test 200
  from the right (never overlapping);
* ``cutouts``: 1,200 GalSim galaxies (``skysort.synth.sets``), 96 px JPEGs, 5 imbalanced
  morphologies, peak S/N 5 to 200; split by skysort (70/15/15, by seed);
* ``votes``: 1,000 GalSim galaxies with Galaxy Zoo DECaLS-style vote *counts*
  (``skysort.synth.counts``), 96 px JPEGs; the score is the RMSE of the vote fractions;
* ``cutouts-large``: 3,000 cutouts made as ``cutouts`` are (2,100 to train: above the
  1,000-image boundary the default had before the third study; not in the default
  ``--sets``).

Every candidate runs with 3 seeds (the seed draws the split, the head's and the
fine-tuning's initial state and every batch). Before the candidates, each set is trained
once, head only, and once fine-tuned for one epoch, so that every candidate starts with
the embeddings and the pixel cache filled: the times below are of training with warm
caches (the embedding pass is the same for every recipe, printed once per set).

Candidates (anything not named is the default of the skysort being measured):

=============  ==============================================================================
``head``       ``finetune=head``: the head alone on ImageNet embeddings
``today``      the default before this study: all layers, ``finetune_epochs=15``,
               ``finetune_patience=5`` (stops after 5 epochs without improvement),
               ``layer_decay=0.85``
``eN``         all layers, a schedule of N epochs (warm-up then cosine to zero), no early
               stop before its end, ``layer_decay=0.85``
``last2-eN``   the last 2 stages only, N epochs
``eN-ls``      ``eN`` with label smoothing 0.1 (class sets only)
``eN-lr2``     ``eN`` with twice the learning rate (``finetune_lr=1e-3``)
``eN-...-bal`` with class-balanced sampling (``balance=sampler``: every class drawn
               equally often, instead of the default's class-weighted loss; class sets only)
``eN-...-ldNN`` with layer decay NN/100 instead (``ld100``: none)
``default``    nothing set: the default of the skysort being measured
=============  ==============================================================================

Prints, per set and candidate, the median test score and its spread (min-max) over the
seeds, the median wall time and its ratio to ``today`` in the same study, and a markdown
table for README. ``--repeat`` then runs the default twice more on the photographs, same
command and seed, and says whether their ``metrics.json`` numbers are identical.
``--budget SET:TIME`` runs the default on SET from a cold cache, then again with
``time=TIME``, and prints each one's wall time, score, epochs and what the run said.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import skysort
from active_photos import make_photo_set
from bench_train_predict import machine, versions
from skysort.synth.counts import make_vote_count_set
from skysort.synth.sets import make_class_folders

#: Imbalanced morphology mix of the cutouts (shares of the set).
MIX = {"elliptical": 0.35, "spiral": 0.275, "lenticular": 0.175, "edge_on": 0.125,
       "merger": 0.075}
#: The default before the study; its layer decay (and the candidates') is set, as the
#: default's may change.
TODAY = {"finetune": "full", "finetune_epochs": 15, "finetune_patience": 5,
         "layer_decay": 0.85}


def candidate(name: str, kind: str) -> dict[str, Any] | None:
    """The settings of candidate ``name``; None where it does not apply to ``kind``."""
    if name == "head":
        return {"finetune": "head"}
    if name == "today":
        return dict(TODAY)
    if name == "default":
        return {}
    match = re.fullmatch(r"(last2-)?e(\d+)((?:-ls|-lr2|-bal|-ld\d+)*)", name)
    if match is None:
        raise SystemExit(f"unknown candidate {name!r}")
    epochs = int(match.group(2))
    out: dict[str, Any] = {"finetune": "last:2" if match.group(1) else "full",
                           "finetune_epochs": epochs, "finetune_patience": epochs,
                           "layer_decay": 0.85}
    for part in match.group(3).split("-")[1:]:
        if part in ("ls", "bal") and kind == "votes":
            return None  # no labels to smooth, no classes to balance
        if part == "ls":
            out["label_smoothing"] = 0.1
        elif part == "bal":
            out["balance"] = "sampler"
        elif part == "lr2":
            out["finetune_lr"] = 1e-3
        else:  # ldNN: layer decay NN/100
            out["layer_decay"] = int(part[2:]) / 100
    return out


def make_sets(work: Path, names: list[str]) -> dict[str, tuple[Path, dict[str, Any]]]:
    """``{set: (data, settings that read it)}``, written once."""
    sets: dict[str, tuple[Path, dict[str, Any]]] = {}
    if "cutouts-large" in names:  # for --budget: a set the default takes minutes on
        large = work / "data" / "cutouts-large"
        if not large.is_dir():
            make_class_folders(large, {k: round(v * 3000) for k, v in MIX.items()},
                               size=96, fmt="jpg", seed=12)
        sets["cutouts-large"] = (large, {})
    photos = work / "data" / "photos"
    if not (photos / "test").is_dir():
        make_photo_set(photos / "train", 280, 128, 0, "pool")
        make_photo_set(photos / "val", 60, 128, 1, "pool")
        make_photo_set(photos / "test", 200, 128, 2, "test")
    sets["photos"] = (photos, {})
    cutouts = work / "data" / "cutouts"
    if not cutouts.is_dir():
        make_class_folders(cutouts, {k: round(v * 1200) for k, v in MIX.items()}, size=96,
                           fmt="jpg", seed=11)
    sets["cutouts"] = (cutouts, {})
    votes = work / "data" / "votes"
    if not (votes / "votes.csv").is_file():
        make_vote_count_set(votes, 1000, size=96, seed=5)
    sets["votes"] = (votes / "images", {"labels": str(votes / "votes.csv")})
    return sets


def score(metrics: dict[str, Any]) -> tuple[str, float]:
    model = metrics["model"]
    return ("balanced_accuracy", model["balanced_accuracy"]) if "balanced_accuracy" in model \
        else ("rmse", model["rmse"])


def run(work: Path, data: Path, settings: dict[str, Any], name: str) -> dict[str, Any]:
    start = time.perf_counter()
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        result = skysort.train(data, project=str(work / "runs"), name=name, exist_ok=True,
                               cache_dir=str(work / "cache"), **settings)
    wall = time.perf_counter() - start
    metric, value = score(result.metrics)
    ft = [r for r in result.history if r["stage"] == "finetune"]
    return {"wall_s": wall, "metric": metric, "score": value, "finetune_epochs_run": len(ft),
            "run": str(result.run_dir)}


def load_results(path: Path) -> dict[tuple[str, str, int], dict[str, Any]]:
    done = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            done[(row["set"], row["candidate"], row["seed"])] = row
    return done


def warm(work: Path, name: str, data: Path, extra: dict[str, Any]) -> float:
    """Fills the embedding caches (224 px for the head, the fitted size for fine-tuning)
    and the pixel cache; returns the seconds of the fine-tuning warm-up run."""
    marker = work / f"warm-{name}.json"
    if marker.is_file():
        return float(json.loads(marker.read_text())["wall_s"])
    run(work, data, {**extra, "finetune": "head", "seed": 99}, f"warm-{name}-head")
    row = run(work, data, {**extra, "finetune": "full", "finetune_epochs": 1, "seed": 99},
              f"warm-{name}-ft")
    marker.write_text(json.dumps(row))
    return float(row["wall_s"])


def table(results: dict[tuple[str, str, int], dict[str, Any]], sets: list[str],
          candidates: list[str]) -> str:
    lines = ["| data set | candidate | test score, median [min-max] | fine-tuning epochs run "
             "| wall s, median | x today's time |", "|---|---|---|---|---|---|"]
    for s in sets:
        today = [r["wall_s"] for (ss, c, _), r in results.items() if ss == s and c == "today"]
        base = statistics.median(today) if today else None
        for c in candidates:
            rows = [r for (ss, cc, _), r in sorted(results.items()) if ss == s and cc == c]
            if not rows:
                continue
            scores = [r["score"] for r in rows]
            wall = statistics.median(r["wall_s"] for r in rows)
            epochs = "/".join(str(r["finetune_epochs_run"]) for r in rows)
            ratio = f"{wall / base:.2f}" if base else "-"
            lines.append(f"| {s} ({rows[0]['metric'].replace('_', ' ')}) | {c} | "
                         f"{statistics.median(scores):.3f} [{min(scores):.3f}-"
                         f"{max(scores):.3f}] | {epochs} | {wall:.0f} | {ratio} |")
    return "\n".join(lines)


def repeat_check(work: Path, data: Path) -> None:
    """The default twice, same command and seed: identical metrics.json numbers?"""
    texts = []
    for i in range(2):
        row = run(work, data, {"seed": 0}, f"repeat-{i}")
        texts.append(json.loads((Path(row["run"]) / "metrics.json").read_text()))
    same = texts[0] == texts[1]
    print(f"\nrepeat: the default twice on the photographs (seed 0): metrics.json "
          f"{'identical' if same else 'DIFFERENT'}; balanced accuracy "
          f"{texts[0]['model']['balanced_accuracy']:.6f} and "
          f"{texts[1]['model']['balanced_accuracy']:.6f}")


def budget_check(work: Path, name: str, data: Path, extra: dict[str, Any], setting: str,
                 budget_only: bool = False) -> None:
    """The default (unless ``budget_only``), then the default with ``time=setting``, each
    from a cold cache (the whole run a user waits for): wall time, score, epochs, and
    what the run said."""
    rows = []
    runs = (("default", {}), (f"time={setting}", {"time": setting}))
    for label, settings in runs[1:] if budget_only else runs:
        cache = work / f"cold-{label.replace('=', '')}"
        shutil.rmtree(cache, ignore_errors=True)
        start = time.perf_counter()
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            result = skysort.train(data, project=str(work / "runs"), exist_ok=True,
                                   name=f"budget-{name}-{label.replace('=', '')}",
                                   cache_dir=str(cache), seed=0, **extra, **settings)
        wall = time.perf_counter() - start
        said = [ln for ln in out.getvalue().splitlines() if ln.startswith("time=")]
        metric, value = score(result.metrics)
        epochs = [r["time_s"] for r in result.history if r["stage"] == "finetune"]
        plan = json.loads((result.run_dir / "finetune_plan.json").read_text()).get("time")
        if plan:  # the plan's estimates against what the run measured
            tail = wall - plan["before_finetune_s"] - sum(epochs)
            said.append(f"estimated an epoch at {plan['plan']['epoch_s']:.1f} s (measured "
                        f"{statistics.median(epochs) if epochs else float('nan'):.1f} s) and "
                        f"what follows fine-tuning at {plan['plan']['tail_s']:.1f} s "
                        f"(measured {tail:.1f} s)")
        rows.append((label, wall, metric, value, len(epochs), said))
    print(f"\nbudget: {name}, seed 0, each from a cold cache (embedding pass included)")
    for label, wall, metric, value, n_epochs, said in rows:
        print(f"  {label:<12} {wall:6.0f} s  {metric} {value:.4f}  {n_epochs} fine-tuning "
              f"epoch(s)")
        for line in said:
            print(f"    {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="photos,cutouts,votes")
    parser.add_argument("--candidates", default="head,today,e4,e7,last2-e7,e7-ls,default")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--work", default="/tmp/skysort-recipe")
    parser.add_argument("--repeat", action="store_true")
    parser.add_argument("--budget", help="SET:TIME (e.g. cutouts:2m): the default from a "
                        "cold cache, then with time=TIME")
    parser.add_argument("--budget-only", action="store_true",
                        help="with --budget: the budgeted run alone")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    names = args.sets.split(",")
    candidates = args.candidates.split(",")
    print(f"machine:  {machine()}")
    print(f"versions: {versions()}")
    sets = make_sets(work, names + ([args.budget.split(':')[0]] if args.budget else []))
    results_path = work / "results.jsonl"
    results = load_results(results_path)
    for s in names:
        data, extra = sets[s]
        print(f"{s}: caches warmed (head, then 1 fine-tuning epoch) in "
              f"{warm(work, s, data, extra):.0f} s", flush=True)
        for seed in range(args.seeds):
            for c in candidates:
                settings = candidate(c, s)
                if settings is None or (s, c, seed) in results:
                    continue
                row = run(work, data, {**extra, **settings, "seed": seed},
                          f"{s}-{c}-{seed}".replace(":", ""))
                row.update({"set": s, "candidate": c, "seed": seed, "settings": settings})
                results[(s, c, seed)] = row
                with open(results_path, "a") as fh:
                    fh.write(json.dumps(row) + "\n")
                print(f"  {s} {c} seed {seed}: {row['metric']} {row['score']:.4f}, "
                      f"{row['wall_s']:.0f} s, {row['finetune_epochs_run']} fine-tuning "
                      "epochs", flush=True)
    print()
    print(table(results, names, candidates))
    if args.repeat:
        repeat_check(work, sets["photos"][0])
    if args.budget:
        name, setting = args.budget.split(":")
        budget_check(work, name, *sets[name], setting, args.budget_only)


if __name__ == "__main__":
    main()
