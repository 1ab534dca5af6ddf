"""The labelling loop's commands, ``skysort suggest`` and ``skysort label`` (registered by
:func:`skysort.cli.build_parser`): train -> suggest -> label -> train again."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def _cmd_suggest(args: argparse.Namespace) -> int:
    from skysort.active.suggest import suggest

    out = suggest(args.run, args.pool, args.n, strategy=args.strategy, labelled=args.labelled,
                  output=args.output, seed=args.seed,
                  near_duplicate=None if args.near_duplicate == 0 else args.near_duplicate,
                  batch_size=args.batch_size, workers=args.workers, cache_dir=args.cache_dir,
                  path_column=args.path_column)
    print(f"images to label written to {out}; label them with: skysort label {out} "
          f"--run {args.run} --out labels.csv")
    return 0


def _cmd_label(args: argparse.Namespace) -> int:
    from skysort.labelling.server import serve_labelling

    return serve_labelling(args.to_label, args.out, classes=args.classes, run=args.run,
                           port=args.port, images=args.images, open_browser=args.open)


def _classes(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def add_loop_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                      at_least: Callable[[int], Callable[[str], int]]) -> None:
    """Adds ``suggest`` and ``label`` to the ``skysort`` subcommands."""
    from skysort.active.strategies import STRATEGIES
    from skysort.active.suggest import NEAR_DUPLICATE
    from skysort.labelling.server import PORT

    p = sub.add_parser("suggest", help="the unlabelled images worth labelling next",
                       description="Ranks the POOL's unlabelled images by how much their "
                                   "labels would teach RUN's model and writes a batch of N "
                                   "that is uncertain and diverse, with the model's guess and "
                                   "why each was chosen. Images the run was trained on, their "
                                   "copies and unreadable files are left out (listed in "
                                   "<output>_skipped.csv).")
    p.add_argument("run", help="a run directory written by skysort train")
    p.add_argument("pool", nargs="+", help="unlabelled image files, folders, glob patterns, "
                   "text files of paths, catalogues (as skysort predict takes them)")
    p.add_argument("-n", type=at_least(1), default=50, help="how many to suggest (default 50)")
    p.add_argument("-o", "--output", help="CSV to write (default RUN/to_label.csv)")
    p.add_argument("--strategy", choices=STRATEGIES, default="default",
                   help="default: half the least sure (margin) spread over the embedding "
                        "space (margin-kcenter), half at random; random: for comparison")
    p.add_argument("--labelled", nargs="+", metavar="IMAGES",
                   help="further images already labelled, beside the run's own")
    p.add_argument("--near-duplicate", type=float, default=NEAR_DUPLICATE, metavar="COS",
                   help=f"embedding cosine with its nearest labelled image from which a "
                        f"pool image is checked as a copy of it by fine structure (default "
                        f"{NEAR_DUPLICATE}; 0: byte-identical copies only)")
    p.add_argument("--seed", type=at_least(0), default=0)
    p.add_argument("--path-column", default="path", help="path column of a catalogue")
    p.add_argument("--batch-size", type=at_least(1), default=32)
    p.add_argument("--workers", type=at_least(0), help="decoding processes (default: cores)")
    p.add_argument("--cache-dir", help="embedding cache folder (default ~/.cache/skysort)")
    p.set_defaults(func=_cmd_suggest)

    p = sub.add_parser("label", help="label images by hand in a local page",
                       description="Serves a page on 127.0.0.1 that shows each image of "
                                   "TO_LABEL large, with the model's guess and its look-alikes; "
                                   "keys 1-9 answer, s skips, u undoes. Each answer is "
                                   "appended to --out as it is given; a second run resumes.")
    p.add_argument("to_label", help="the CSV skysort suggest wrote (a 'path' column)")
    p.add_argument("--out", required=True,
                   help="answer file, e.g. labels.csv (appended to; skysort train --labels "
                        "reads it)")
    p.add_argument("--classes", type=_classes, help="comma-separated class names (keys 1-9 "
                                                    "in this order)")
    p.add_argument("--run", help="a trained run whose classes to use")
    p.add_argument("--port", type=at_least(0), default=PORT,
                   help=f"127.0.0.1's port (default {PORT}; 0: any free one)")
    p.add_argument("--images", help="folder the answer file's paths are relative to")
    p.add_argument("--open", action="store_true", help="open the page in a browser")
    p.set_defaults(func=_cmd_label)

