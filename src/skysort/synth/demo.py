"""``skysort demo``: the whole job on built-in sample data, in about a minute on a CPU.

The demo trains the head only (``finetune=head``) to stay quick; ``skysort train`` on
your data fine-tunes too when there are enough images.

Renders a small labelled set of simulated survey galaxies (GalSim), trains on it,
evaluates on the held-out test split beside the majority baseline, labels the images
with the trained model, and says where every result is.
"""

from __future__ import annotations

from pathlib import Path

from skysort.data.split import read_split_csv
from skysort.evaluation.evaluator import evaluate
from skysort.prediction.predictor import predict
from skysort.synth.sets import make_class_folders, make_vote_fraction_set
from skysort.training.recipe import train

DEMO_CLASSES = ("elliptical", "spiral", "edge_on", "merger")


def run_demo(out: str | Path = "skysort-demo", per_class: int = 100, seed: int = 0,
             task: str = "classes") -> Path:
    """Makes sample data in ``out/``, trains ``out/runs/demo`` (or ``demo_fractions``),
    evaluates and predicts; returns the run directory.

    Args:
        task: ``"classes"``: galaxy morphologies in class folders; ``"fractions"``:
            Galaxy Zoo style volunteer vote fractions for a small decision tree.
    """
    out = Path(out)
    if task == "fractions":
        return _fractions_demo(out, n=per_class * len(DEMO_CLASSES), seed=seed)
    data = out / "galaxies"
    print(f"rendering {per_class * len(DEMO_CLASSES)} simulated galaxy images into {data}/ ...")
    make_class_folders(data, dict.fromkeys(DEMO_CLASSES, per_class), size=96, fmt="png",
                       seed=seed, snr_range=(20.0, 200.0))
    # A fifth of the images for validation: enough to calibrate the probabilities.
    result = train(data, project=out / "runs", name="demo", exist_ok=True, seed=seed,
                   finetune="head", split=(0.6, 0.2, 0.2))
    metrics = evaluate(result.run_dir)  # what `skysort evaluate` does; same test images
    model, baseline = metrics["model"], metrics["baseline"]
    print(f"\nskysort evaluate: balanced accuracy {model['balanced_accuracy']:.3f} on "
          f"{metrics['n']} held-out images, baseline {baseline['balanced_accuracy']:.3f}")
    for warning in metrics["warnings"]:
        print(f"!! WARNING: {warning}")
    csv_path = predict(result.run_dir, [data], quiet=True)
    example_row = next(r for r in read_split_csv(result.run_dir / "split.csv")
                       if r["split"] == "test")
    print(f"\none held-out image (true class: {example_row['label']}):")
    predict(result.run_dir, [data / example_row["path"]], result.run_dir / "example.csv")
    print(f"\nsample data:  {data}/")
    print(f"run:          {result.run_dir}/  (model.safetensors, model.json, config.yaml,")
    print("              split.csv, history.csv, metrics.json, bad_files.csv)")
    print(f"predictions:  {csv_path}")
    print(f"report:       {result.run_dir / 'report.html'}  (open it in a browser)")
    print(f"\nnext: skysort predict {result.run_dir} YOUR_IMAGES/  "
          f"or  skysort train YOUR_DATA/")
    return result.run_dir


def _fractions_demo(out: Path, n: int, seed: int) -> Path:
    print(f"rendering {n} simulated galaxies with simulated volunteer votes into {out}/votes/ ...")
    images, votes, schema = make_vote_fraction_set(out / "votes", n, size=96, seed=seed)
    result = train(images, labels=str(votes), schema=str(schema), project=out / "runs",
                   name="demo_fractions", exist_ok=True, seed=seed, finetune="head")
    metrics = result.metrics
    print(f"\ntest RMSE {metrics['model']['rmse']:.4f} against {metrics['baseline']['rmse']:.4f} "
          f"for the mean predictor ({metrics['improvement_over_baseline']:.0%} lower)")
    csv_path = predict(result.run_dir, [images], result.run_dir / "submission.csv", quiet=True)
    print(f"\nsample data:  {images}/, {votes}, {schema}")
    print(f"run:          {result.run_dir}/")
    print(f"predictions:  {csv_path}  (GalaxyID + one column per answer, obeying the tree)")
    return result.run_dir
