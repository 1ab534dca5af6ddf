"""Active learning simulated on labelled sets: labels needed by ``random`` and the default.

Usage::

    python benchmarks/bench_active.py [--sets galaxies,photos] [--seeds 3] [--start 50]
        [--step 50] [--stop 500] [--strategies random,default] [--pool 2000] [--test 500]
        [--size 96] [--finetune galaxies,photos] [--finetune-mode auto]
        [--finetune-seeds 1] [--work /tmp/bench_active]

Two labelled sets, each a pool whose labels are hidden and a held-out test set never in
the pool (made once, kept in ``--work``):

* ``galaxies``: simulated survey galaxies (``skysort.synth.sets.make_class_folders``:
  GalSim, 5 morphologies, peak S/N 5-200), imbalanced as a survey is (elliptical 35%,
  spiral 30%, lenticular 15%, edge-on 12%, merger 8%); pool and test rendered with other
  seeds.
* ``photos``: crops of real photographs (``benchmarks/active_photos.py``: 7 terrain and
  texture classes cut from scikit-image's bundled photographs, random scale, rotation,
  blur, noise, imbalanced; pool and test from separate parts of each photograph).

Every image is embedded once by the default backbone with its offline weights (the
embedding cache in ``--work``). Per seed, the first ``--start`` labels are a random draw
(the same for every strategy); then per round, as ``skysort train DATA finetune=head``
and ``skysort suggest`` would: the labels split by hash 70/15/15 (train's default; a
class of fewer than 3 labels all in train), the head trained by the head stage of
``skysort train`` with ``TrainConfig``'s defaults (``seed`` = the seed), calibrated on
its validation split, and scored on the test set (balanced accuracy); then ``--step``
more chosen by ``skysort.active.strategies.select`` from a pool built as ``suggest``
builds it (the calibrated probabilities, unit embeddings projected on the principal
components of the labelled ones; no image is a copy of another, so suggest's check for
copies leaves none out and is not run), up to ``--stop``.

Prints per set the mean and spread (min-max over seeds) of the balanced accuracy per
round and strategy, each strategy's gain over ``random`` per round with its paired
standard error, and the labels each needs to reach ``random``'s mean accuracy at
``--stop`` (linear between rounds) with the saving in percent.

``--finetune SETS``: on those sets, for the first ``--finetune-seeds`` seeds, the images
each strategy had labelled at ``--stop`` are copied to class folders and trained on with
the real ``skysort.train(finetune=--finetune-mode, seed=SEED)`` (``auto``: all layers from
200 training images); ``skysort.evaluate`` scores each on the test set, and the mean,
spread and paired gain over ``random`` are printed. A finished run is read back from
``--work``/runs by its set, strategy and seed (delete it when a strategy changes).

Each strategy's curves are kept in ``--work``/results, keyed by the settings and the
source of ``skysort/active/strategies.py``, so a second run (e.g. with ``--finetune``)
prints the same tables without simulating again.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import io
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch

from bench_train_predict import machine, versions

#: Class shares of the simulated galaxies (survey-like imbalance).
GALAXY_SHARES = {"elliptical": 0.35, "spiral": 0.30, "lenticular": 0.15, "edge_on": 0.12,
                 "merger": 0.08}


@dataclass
class LabelledSet:
    """A pool and a test set, with their embeddings."""

    name: str
    pool: Any  # LabeledImages
    test: Any
    pool_features: np.ndarray
    test_features: np.ndarray


def make_galaxies(root: Path, n: int, size: int, seed: int) -> Path:
    from skysort.synth.sets import make_class_folders

    counts = {c: max(3, round(n * s)) for c, s in GALAXY_SHARES.items()}
    counts["elliptical"] += n - sum(counts.values())
    return make_class_folders(root, counts, size=size, seed=seed)


def make_sets(args: argparse.Namespace, work: Path) -> dict[str, tuple[Path, Path]]:
    """``name -> (pool root, test root)``, made unless a finished copy is there."""
    from active_photos import make_photo_set

    out = {}
    for name in args.sets:
        folder = work / f"{name}_{args.pool}_{args.test}_{args.size}"
        done = folder / "done"
        if not done.is_file():
            shutil.rmtree(folder, ignore_errors=True)
            start = time.perf_counter()
            if name == "galaxies":
                make_galaxies(folder / "pool", args.pool, args.size, 1001)
                make_galaxies(folder / "test", args.test, args.size, 2002)
            else:
                make_photo_set(folder / "pool", args.pool, args.size, 0, "pool")
                make_photo_set(folder / "test", args.test, args.size, 1, "test")
            done.write_text("")
            print(f"made {name}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
        out[name] = (folder / "pool", folder / "test")
    return out


def embed_sets(roots: dict[str, tuple[Path, Path]], work: Path) -> list[LabelledSet]:
    from skysort.data.dataset import DataSpec, open_dataset
    from skysort.models.backbones import create_backbone
    from skysort.models.embeddings import cached_embeddings, embedding_key

    backbone = create_backbone()
    key = embedding_key(backbone.name, backbone.weights_id, backbone.preprocess)
    sets = []
    for name, (pool_root, test_root) in roots.items():
        parts = []
        for root in (pool_root, test_root):
            data = open_dataset(DataSpec(data=str(root)))
            feats, bad = cached_embeddings(backbone.model, backbone.preprocess, key,
                                           data.paths, cache_dir=work / "cache")
            if bad:
                raise SystemExit(f"{root}: unreadable images {sorted(bad)[:5]}")
            parts.append((data, feats))
        sets.append(LabelledSet(name, parts[0][0], parts[1][0], parts[0][1], parts[1][1]))
    return sets


# -- one round: train the head as skysort train does, build the pool as suggest does --------


def split_labels(pool: Any, labelled: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """train's split of the labelled images (``split_by_hash`` with the default fractions);
    a class of fewer than ``MIN_PER_CLASS`` labels, which train would refuse, all in
    train."""
    from skysort.config import TrainConfig
    from skysort.data.split import MIN_PER_CLASS, split_by_hash

    counts = np.bincount(pool.targets[labelled], minlength=len(pool.classes))
    small = counts[pool.targets[labelled]] < MIN_PER_CLASS
    splits = np.array(["train"] * len(labelled), dtype=object)
    rest = labelled[~small]
    # only the classes labelled so far, as the class folders of the labels would hold
    present, targets = np.unique(pool.targets[rest], return_inverse=True)
    sub = dataclasses.replace(pool.subset(rest), targets=targets.astype(np.int64),
                              classes=[pool.classes[c] for c in present])
    splits[~small] = split_by_hash(sub, TrainConfig().split, seed)
    return {s: labelled[splits == s] for s in ("train", "val", "test")}


def _logged_metrics(y_true: np.ndarray, outputs: np.ndarray, **_: Any) -> dict[str, Any]:
    """The headline the head stage logs each epoch: balanced accuracy (the mean recall
    over the classes present, as scikit-learn's)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(outputs).argmax(axis=1)
    recalls = [float((y_pred[y_true == c] == c).mean()) for c in np.unique(y_true)]
    return {"model": {"balanced_accuracy": float(np.mean(recalls)) if recalls else None},
            "baseline": {}}


class Round:
    """The head trained on the labelled images of one round, calibrated."""

    def __init__(self, pool: Any, features: np.ndarray, labelled: np.ndarray, seed: int
                 ) -> None:
        import torch

        from skysort.config import TrainConfig
        from skysort.evaluation.calibration import fit_calibration
        from skysort.models.model import SkyModel
        from skysort.tasks import make_task
        from skysort.training.stages import head_stage, seed_everything

        cfg = TrainConfig(seed=seed)
        part = split_labels(pool, labelled, seed)
        task = make_task(pool.task, pool.classes, pool.schema)
        task.fit_statistics(pool.targets[part["train"]])
        seed_everything(seed)
        model = SkyModel(torch.nn.Identity(), features.shape[1], task, dropout=cfg.dropout)
        # The head stage keeps the epoch of least validation loss; the task's full metrics
        # (scikit-learn, 80% of its time here) are only logged, so a quick balanced
        # accuracy stands in for them: the same weights, five times sooner.
        task.metrics = _logged_metrics  # type: ignore[method-assign]
        with contextlib.redirect_stderr(io.StringIO()):
            head_stage(model, task, features, pool.targets, part, cfg, None)
        del task.metrics
        model.eval()
        with torch.inference_mode():
            logits = model.head(torch.from_numpy(features[part["val"]])).numpy()
        calibration = task.keep_calibration(
            fit_calibration(task, logits, pool.targets[part["val"]], cfg.calibrate),
            cfg.threshold)
        model.calibrate(calibration)
        self.model, self.task, self.cfg = model, task, cfg

    def probs(self, features: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.model.output(self.model.head(torch.from_numpy(features)))
        return self.task.class_probabilities(out.float().numpy())


def choose(strategy: str, rnd: Round, features: np.ndarray, labelled: np.ndarray, n: int,
           rng: np.random.Generator, seed: int) -> np.ndarray:
    """The next ``n`` pool rows as ``skysort suggest`` picks them."""
    from skysort.active.scoring import Projection, Scorer, unit_rows
    from skysort.active.strategies import Pool, select
    from skysort.active.suggest import PASSES

    # every image is its own render or crop: suggest's check for copies of labelled
    # images would leave none out, so it is not run
    known_unit = unit_rows(features[labelled])
    rest = np.setdiff1d(np.arange(len(features)), labelled)
    unit = unit_rows(features[rest])
    project = Projection(known_unit)
    k = len(rnd.task.classes)
    bald_scores = None
    if strategy == "bald":
        scorer = Scorer(rnd.model, SimpleNamespace(dropout=rnd.cfg.dropout),
                        rnd.task.class_probabilities, [list(range(k))], PASSES, seed)
        bald_scores = scorer.bald(features[rest], 0)
    pool = Pool(rnd.probs(features[rest]), [list(range(k))], project(unit),
                project(known_unit), names=list(rnd.task.classes), bald_scores=bald_scores)
    idx, _, _ = select(strategy, pool, n, rng)
    return rest[idx]


def simulate(s: LabelledSet, strategy: str, seed: int, args: argparse.Namespace
             ) -> tuple[list[float], np.ndarray]:
    """Balanced test accuracy per round, and the labelled pool rows at the end."""
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng([seed, 7])
    labelled = np.sort(rng.choice(len(s.pool_features), args.start, replace=False))
    pick_rng = np.random.default_rng([seed, 11])
    scores = []
    while True:
        rnd = Round(s.pool, s.pool_features, labelled, seed)
        predicted = rnd.probs(s.test_features).argmax(axis=1)
        scores.append(float(balanced_accuracy_score(s.test.targets, predicted)))
        print(f"    {s.name} {strategy} seed {seed}: {len(labelled)} labels, "
              f"{scores[-1]:.3f}", file=sys.stderr, flush=True)
        if len(labelled) >= args.stop:
            return scores, labelled
        more = choose(strategy, rnd, s.pool_features, labelled,
                      min(args.step, args.stop - len(labelled)), pick_rng, seed)
        if not len(more):
            raise RuntimeError(f"{strategy} chose no image at {len(labelled)} labels")
        labelled = np.sort(np.concatenate([labelled, more]))


def remembered(work: Path, s: LabelledSet, strategy: str, seed: int,
               args: argparse.Namespace) -> tuple[list[float], np.ndarray]:
    """:func:`simulate`, kept in ``work/results`` under a key of the settings and of the
    strategies' source (a changed strategy runs again)."""
    import skysort.active.strategies as module

    source = hashlib.sha256(Path(module.__file__).read_bytes()).hexdigest()[:12]
    key = f"{s.name}_{args.pool}_{args.test}_{args.size}_{strategy}_{seed}_{args.start}_" \
          f"{args.step}_{args.stop}_{source}"
    path = work / "results" / f"{key}.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        return saved["scores"], np.array(saved["labelled"], dtype=np.int64)
    scores, labelled = simulate(s, strategy, seed, args)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"scores": scores, "labelled": labelled.tolist()}))
    return scores, labelled


# -- the tables ------------------------------------------------------------------------------


def labels_to_reach(counts: list[int], curve: np.ndarray, target: float) -> float | None:
    """Labels where ``curve`` first reaches ``target``, linear between rounds."""
    for j, value in enumerate(curve):
        if value >= target:
            if j == 0:
                return float(counts[0])
            prev = curve[j - 1]
            return counts[j - 1] + (target - prev) / (value - prev) * (counts[j] - counts[j - 1])
    return None


def report(name: str, counts: list[int], results: dict[str, np.ndarray]) -> dict[str, Any]:
    """Prints one set's tables; returns the labels-to-reach per strategy."""
    names = list(results)
    print(f"\n{name}: balanced accuracy on the test set, mean [min-max] over "
          f"{len(next(iter(results.values())))} seeds")
    print(f"{'labels':>6}  " + "  ".join(f"{s:>21}" for s in names))
    for j, n in enumerate(counts):
        cells = [f"{r[:, j].mean():.3f} [{r[:, j].min():.3f}-{r[:, j].max():.3f}]"
                 for r in results.values()]
        print(f"{n:>6}  " + "  ".join(f"{c:>21}" for c in cells))
    base = results["random"]
    others = [s for s in names if s != "random"]
    if others:
        print(f"\n{name}: gain over random, mean ± paired standard error (* below -2 SE)")
        print(f"{'labels':>6}  " + "  ".join(f"{s:>16}" for s in others))
        for j, n in enumerate(counts):
            cells = []
            for s in others:
                d = results[s][:, j] - base[:, j]
                se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else 0.0
                flag = "*" if d.mean() < -2 * se and d.mean() < 0 else " "
                cells.append(f"{d.mean():+.3f} ± {se:.3f}{flag}")
            print(f"{n:>6}  " + "  ".join(f"{c:>16}" for c in cells))
    target = float(base[:, -1].mean())
    print(f"\n{name}: labels to reach random's mean at {counts[-1]} ({target:.3f})")
    reach = {s: labels_to_reach(counts, results[s].mean(axis=0), target) for s in names}
    own = reach["random"] or counts[-1]  # random's own mean curve may touch it sooner
    for s in names:
        labels = reach[s]
        shown = f"> {counts[-1]}" if labels is None else f"{labels:.0f}"
        saving = "" if labels is None else \
            f"  saving {100 * (1 - labels / counts[-1]):.0f}% of {counts[-1]}, " \
            f"{100 * (1 - labels / own):.0f}% of random's first crossing ({own:.0f})"
        print(f"  {s:<10} {shown:>6}{saving}")
    return reach


# -- fine-tuning confirmation ----------------------------------------------------------------


def finetune_check(s: LabelledSet, chosen: dict[str, list[np.ndarray]],
                   args: argparse.Namespace, work: Path) -> None:
    import skysort

    print(f"\n{s.name}: fine-tuned on the {args.stop} labels each chose, "
          f"skysort.train(finetune={args.finetune_mode}), balanced accuracy on the test set")
    scores: dict[str, list[float]] = {}
    for seed, strategy in ((seed, k) for seed in range(args.finetune_seeds) for k in chosen):
        rows = chosen[strategy][seed]
        run = work / "runs" / (f"{s.name}_{strategy}" + (f"_s{seed}" if seed else ""))
        held_out = run / "metrics_heldout.json"
        start = time.perf_counter()
        if not held_out.is_file():  # a finished run of these labels is read, not redone
            root = work / "finetune" / s.name / strategy
            shutil.rmtree(root, ignore_errors=True)
            for i in rows:
                src = Path(s.pool.paths[i])
                dest = root / s.pool.classes[int(s.pool.targets[i])] / src.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest)
            with contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()):
                result = skysort.train(root, finetune=args.finetune_mode, seed=seed,
                                       project=str(work / "runs"), name=run.name,
                                       exist_ok=True, cache_dir=str(work / "cache"))
                skysort.evaluate(result.run_dir, s.test.root, output=held_out,
                                 cache_dir=str(work / "cache"))
        seconds = time.perf_counter() - start
        test = json.loads(held_out.read_text())["model"]["balanced_accuracy"]
        own = json.loads((run / "metrics.json").read_text())["model"]["balanced_accuracy"]
        print(f"  seed {seed} {strategy:<10} {test:.3f}  (its own test split {own:.3f}; "
              f"{seconds:.0f} s)", flush=True)
        scores.setdefault(strategy, []).append(test)
    print(f"{s.name}: fine-tuned, mean [min-max] over {args.finetune_seeds} seeds; "
          "gain over random, mean ± paired standard error")
    base = np.array(scores["random"])
    for strategy, values in scores.items():
        v = np.array(values)
        gain = v - base
        se = gain.std(ddof=1) / np.sqrt(len(gain)) if len(gain) > 1 else 0.0
        print(f"  {strategy:<10} {v.mean():.3f} [{v.min():.3f}-{v.max():.3f}]  "
              f"{gain.mean():+.3f} ± {se:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="galaxies,photos")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--start", type=int, default=50)
    parser.add_argument("--step", type=int, default=50)
    parser.add_argument("--stop", type=int, default=500)
    parser.add_argument("--strategies", default="random,default")
    parser.add_argument("--pool", type=int, default=2000)
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--finetune", default="",
                        help="sets to fine-tune every strategy's labels on, e.g. photos")
    parser.add_argument("--finetune-mode", default="auto")
    parser.add_argument("--finetune-seeds", type=int, default=1)
    parser.add_argument("--work", default="/tmp/bench_active")
    args = parser.parse_args()
    args.sets = args.sets.split(",")
    strategies = ["random", *[s for s in args.strategies.split(",") if s != "random"]]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("SKYSORT_CACHE", str(work / "cache"))
    begin = time.perf_counter()
    print(f"machine:  {machine()}")
    print(f"versions: {versions()}")
    roots = make_sets(args, work)
    sets = embed_sets(roots, work)
    torch.set_num_threads(1)  # a linear head: more threads only add overhead (2x on 2 cores)
    counts = list(range(args.start, args.stop + 1, args.step))
    if counts[-1] != args.stop:
        counts.append(args.stop)
    for s in sets:
        shares = np.bincount(s.pool.targets) / len(s.pool.targets)
        print(f"\ndata {s.name}: pool {len(s.pool.paths)}, test {len(s.test.paths)} "
              f"({args.size} px); classes " + ", ".join(
                  f"{c} {100 * v:.0f}%" for c, v in zip(s.pool.classes, shares, strict=True)))
        results: dict[str, np.ndarray] = {}
        chosen: dict[str, list[np.ndarray]] = {}
        for strategy in strategies:
            start = time.perf_counter()
            runs = []
            for seed in range(args.seeds):
                curve, labelled = remembered(work, s, strategy, seed, args)
                runs.append(curve)
                chosen.setdefault(strategy, []).append(labelled)
            results[strategy] = np.array(runs)
            print(f"  {strategy}: {time.perf_counter() - start:.0f} s "
                  f"({args.seeds} seeds x {len(counts)} rounds)", file=sys.stderr, flush=True)
        report(s.name, counts, results)
        if s.name in args.finetune.split(","):
            finetune_check(s, chosen, args, work)
    print(f"\nwall time {time.perf_counter() - begin:.0f} s")


if __name__ == "__main__":
    main()
