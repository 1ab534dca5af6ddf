"""Vote counts: the Dirichlet-Multinomial model against the fractions model, scored
against the simulation's true answer probabilities.

Usage::

    python benchmarks/bench_counts.py [--n 2000] [--size 128] [--finetune head,auto]

Renders a GZ DECaLS style set of simulated galaxies (``skysort.synth.counts``): 2 to 50
volunteers per galaxy, a question asked only of those who gave its parent answer, answers
drawn from known per-galaxy probabilities. For each fine-tuning setting it trains, on the
same images and the same split:

* the **counts** model: ``votes.csv`` as it is (``task=counts`` recognised from the header;
  Dirichlet-Multinomial likelihood per question);
* the **fractions** model: the same counts turned into Kaggle-style vote fractions (each
  answer's share of its question times its parent answer's value; a question nobody was
  asked gets 0), MSE on them.

Both are scored on the test split against the **true** probabilities (each answer's
probability within its question): RMSE over every answer, for galaxies with fewer than 10
volunteers, and per question; and, for the counts model, the coverage of its 90%
predictive intervals for the observed counts (randomised PIT, see
``skysort.tasks.dirichlet.count_pit``) from its ``metrics.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np
import yaml

import skysort
from bench_train_predict import machine, versions
from skysort.synth.counts import COUNT_TREE, count_answers, make_vote_count_set

FEW = 10


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def write_fractions(votes: Path, out: Path) -> Path:
    """The counts as Kaggle-style fractions: share of the question times the parent's value."""
    answers = count_answers()
    rows = read_rows(votes)
    with open(out, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["iauname", *answers])
        for r in rows:
            value: dict[str, float] = {}
            for q in COUNT_TREE["questions"]:
                n = sum(int(r[a]) for a in q["answers"])
                parent = 1.0 if q["parent"] is None else value[q["parent"]]
                for a in q["answers"]:
                    value[a] = parent * int(r[a]) / n if n else 0.0
            writer.writerow([r["iauname"], *(f"{value[a]:.6f}" for a in answers)])
    return out


def shares_from_tree(values: dict[str, float]) -> dict[str, float]:
    """Kaggle-style values -> each answer's share within its question."""
    out = {}
    for q in COUNT_TREE["questions"]:
        total = sum(values[a] for a in q["answers"])
        for a in q["answers"]:
            out[a] = values[a] / total if total > 0 else 1 / len(q["answers"])
    return out


def test_predictions(run: Path, kind: str) -> dict[str, dict[str, float]]:
    """Per test image id, the predicted share of each answer within its question."""
    rows = read_rows(run / "metrics_predictions.csv")  # the test split's per-image rows
    out = {}
    for r in rows:
        if r.get("error"):
            continue
        key = Path(r["path"]).stem
        values = {a: float(r[a]) for a in count_answers()}
        out[key] = values if kind == "counts" else shares_from_tree(values)
    return out


def scores(pred: dict[str, dict[str, float]], truth: dict[str, dict[str, str]]) -> dict[str, float]:
    keys = sorted(pred)
    answers = count_answers()
    p = np.array([[pred[k][a] for a in answers] for k in keys])
    t = np.array([[float(truth[k][a]) for a in answers] for k in keys])
    few = np.array([int(truth[k]["volunteers"]) < FEW for k in keys])
    out = {"n": len(keys), "few": int(few.sum()),
           "rmse": float(np.sqrt(((p - t) ** 2).mean())),
           "rmse_few": float(np.sqrt(((p - t)[few] ** 2).mean())),
           "rmse_many": float(np.sqrt(((p - t)[~few] ** 2).mean()))}
    for q in COUNT_TREE["questions"]:
        cols = [answers.index(a) for a in q["answers"]]
        out[q["name"]] = float(np.sqrt(((p[:, cols] - t[:, cols]) ** 2).mean()))
    return out


def train(work: Path, images: Path, labels: Path, name: str, finetune: str,
          extra: dict[str, object]) -> tuple[Path, float]:
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        result = skysort.train(images, labels=str(labels), project=str(work / "runs"),
                               name=name, cache_dir=str(work / "cache"), finetune=finetune,
                               **extra)
    return result.run_dir, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--finetune", default="head,auto")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="skysort-counts-"))
    try:
        images, votes, truth_path = make_vote_count_set(work / "data", args.n, size=args.size,
                                                        seed=args.seed)
        fractions = write_fractions(votes, work / "data" / "fractions.csv")
        (work / "data" / "tree.yaml").write_text(yaml.safe_dump(COUNT_TREE, sort_keys=False))
        truth = {r["iauname"]: r for r in read_rows(truth_path)}
        volunteers = np.array([int(r["volunteers"]) for r in truth.values()])
        print(f"machine:  {machine()}")
        print(f"versions: {versions()}")
        print(f"data:     {args.n} simulated galaxies, {args.size} px JPEG, "
              f"{len(COUNT_TREE['questions'])} GZ DECaLS questions, volunteers 2-50 (median "
              f"{np.median(volunteers):.0f}; {(volunteers < FEW).mean():.0%} with < {FEW}), "
              f"seed {args.seed}")
        for finetune in args.finetune.split(","):
            runs: dict[str, tuple] = {}
            for kind, labels, extra in (
                    ("counts", votes, {}),
                    ("fractions", fractions, {"schema": str(work / "data" / "tree.yaml")})):
                run, wall = train(work, images, labels, f"{kind}-{finetune}", finetune, extra)
                metrics = json.loads((run / "metrics.json").read_text())
                cal = json.loads((run / "model.json").read_text()).get("calibration") or {}
                described = f"{cal.get('method')} {[round(s, 2) for s in cal.get('scale', [])]}" \
                    if cal.get("method") == "concentration" else f"none ({cal.get('note', '')})"
                runs[kind] = (scores(test_predictions(run, kind), truth), wall, metrics, described)
            c, f = runs["counts"][0], runs["fractions"][0]
            print(f"\n== finetune={finetune}: test split {c['n']} galaxies ({c['few']} with "
                  f"< {FEW} volunteers); wall: counts {runs['counts'][1]:.0f} s, fractions "
                  f"{runs['fractions'][1]:.0f} s")
            print(f"  RMSE to the true probabilities   {'counts (DM)':>12}{'fractions':>12}"
                  f"{'ratio':>8}")
            for key, label in (("rmse", "all answers"), ("rmse_few", f"< {FEW} volunteers"),
                               ("rmse_many", f">= {FEW} volunteers"),
                               *((q["name"], f"  {q['name']}") for q in COUNT_TREE["questions"])):
                print(f"  {label:<33}{c[key]:>12.4f}{f[key]:>12.4f}{c[key] / f[key]:>8.3f}")
            m = runs["counts"][2]["model"]
            print(f"  counts model, 90% predictive intervals of the observed counts cover: "
                  f"{m['coverage_90']:.3f} overall, {m['coverage_90_few_votes']:.3f} (< {FEW} "
                  f"votes on the question), {m['coverage_90_many_votes']:.3f} (>= {FEW}); "
                  f"calibration: {runs['counts'][3]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
