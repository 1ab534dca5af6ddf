"""Labelled sets of simulated galaxies (:func:`~skysort.synth.galaxies.render_galaxy`).

* :func:`make_class_folders` -- an ImageFolder tree ``root/<class>/<class>_00000.png``;
* :func:`make_vote_fraction_set` -- a Galaxy Zoo style set: images, a ``votes.csv`` of
  volunteer vote fractions for the decision tree :data:`SMALL_TREE`, and ``schema.yaml``.

Everything is deterministic given the seed.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from skysort.errors import DataError
from skysort.synth.galaxies import MORPHOLOGIES, draw_snr, render_galaxy

FORMATS = ("png", "jpg")
VOTE_MIX = {"elliptical": 0.3, "lenticular": 0.15, "spiral": 0.3, "edge_on": 0.15, "merger": 0.1}

SMALL_TREE: dict[str, Any] = {
    "questions": [
        {"name": "smooth_or_features", "answers": ["smooth", "features", "artifact"],
         "parent": None},
        {"name": "edge_on", "answers": ["edge_on_yes", "edge_on_no"], "parent": "features"},
        {"name": "spiral_arms", "answers": ["spiral_yes", "spiral_no"], "parent": "edge_on_no"},
        {"name": "merging", "answers": ["merger_yes", "merger_no"], "parent": None},
    ]
}

# P(answer | true morphology) for a clearly seen galaxy, one row per question of SMALL_TREE;
# the last entry is what volunteers answer for an object they can barely see.
_ANSWER_P: dict[str, dict[str, tuple[float, ...]]] = {
    "smooth_or_features": {"elliptical": (0.92, 0.06, 0.02), "lenticular": (0.62, 0.35, 0.03),
                           "spiral": (0.08, 0.90, 0.02), "edge_on": (0.20, 0.78, 0.02),
                           "merger": (0.30, 0.62, 0.08), "faint": (0.72, 0.18, 0.10)},
    "edge_on": {"elliptical": (0.10, 0.90), "lenticular": (0.15, 0.85), "spiral": (0.04, 0.96),
                "edge_on": (0.93, 0.07), "merger": (0.08, 0.92), "faint": (0.30, 0.70)},
    "spiral_arms": {"elliptical": (0.10, 0.90), "lenticular": (0.20, 0.80),
                    "spiral": (0.92, 0.08), "edge_on": (0.40, 0.60), "merger": (0.35, 0.65),
                    "faint": (0.30, 0.70)},
    "merging": {"elliptical": (0.04, 0.96), "lenticular": (0.04, 0.96), "spiral": (0.05, 0.95),
                "edge_on": (0.04, 0.96), "merger": (0.88, 0.12), "faint": (0.12, 0.88)},
}


def _check_common(size: int, fmt: str, snr_range: tuple[float, float]) -> tuple[float, float]:
    if fmt not in FORMATS:
        raise DataError(f"unknown image format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 16:
        raise DataError(f"size must be an integer of at least 16 pixels, got {size!r}")
    try:
        low, high = (float(v) for v in snr_range)
    except (TypeError, ValueError):
        raise DataError(f"snr_range must be two numbers (low, high), got {snr_range!r}") from None
    if not (0 < low <= high and math.isfinite(high)):
        raise DataError(f"snr_range must satisfy 0 < low <= high, got {snr_range!r}")
    return low, high


def _save(pixels: np.ndarray, path: Path, fmt: str) -> None:
    image = Image.fromarray(pixels)
    if fmt == "jpg":
        image.save(path, format="JPEG", quality=90)
    else:
        image.save(path, format="PNG")


def class_plan(counts: int | Mapping[str, int], classes: tuple[str, ...]) -> dict[str, int]:
    """Images per class: ``counts`` of every class, or a mapping for some of them.

    Raises:
        DataError: an unknown class, a count that is not a whole number of at least 1, or
            no class at all.
    """
    if isinstance(counts, Mapping):
        plan = dict(counts)
    elif isinstance(counts, int) and not isinstance(counts, bool):
        plan = dict.fromkeys(classes, counts)
    else:
        raise DataError(f"counts must be an integer or a class -> count mapping, got {counts!r}")
    for name, count in plan.items():
        if name not in classes:
            raise DataError(f"unknown class {name!r}; choose from {', '.join(classes)}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise DataError(f"count for class {name!r} must be an integer >= 1, got {count!r}")
    if not plan:
        raise DataError("counts names no class; give an integer or a class -> count mapping")
    return plan


def make_class_folders(root: str | Path, counts: int | Mapping[str, int], *, size: int = 128,
                       fmt: str = "png", seed: int = 0,
                       snr_range: tuple[float, float] = (5.0, 200.0),
                       color: bool = True) -> Path:
    """Writes a labelled set of simulated galaxies in ImageFolder layout.

    Files are ``root/<class>/<class>_<i:05d>.<fmt>``. Image ``i`` of a class depends only on
    ``seed``, the class and ``i``, so asking for more images keeps the first ones. Existing
    files of the same names are overwritten; other files are left alone.

    Args:
        root: Folder to write into (created if missing).
        counts: Images per class for every class in :data:`MORPHOLOGIES`, or a mapping
            from class name to count for a subset of them (imbalance allowed).
        size: Side of each square image in pixels.
        fmt: ``"png"`` or ``"jpg"`` (JPEG quality 90).
        seed: Seed for everything random.
        snr_range: Peak S/N of each image is drawn log-uniformly from this range.
        color: RGB images if True, else greyscale.

    Returns:
        ``root`` as a Path.

    Raises:
        DataError: For an unknown class, a count below 1, a bad format, size or S/N range.
    """
    low, high = _check_common(size, fmt, snr_range)
    plan = class_plan(counts, MORPHOLOGIES)
    root = Path(root)
    for name, count in plan.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            rng = np.random.default_rng([seed, MORPHOLOGIES.index(name), i])
            pixels = render_galaxy(name, rng, size, draw_snr(rng, low, high), color)
            _save(pixels, folder / f"{name}_{i:05d}.{fmt}", fmt)
    return root


def answer_columns(tree: Mapping[str, Any] = SMALL_TREE) -> list[str]:
    """The answer columns of a decision tree, in order (the vote CSV's columns after the id)."""
    return [a for q in tree["questions"] for a in q["answers"]]


def _vote_counts(kind: str, snr: float, volunteers: int,
                 rng: np.random.Generator) -> dict[str, int]:
    """Simulated volunteers walk SMALL_TREE; returns how many chose each answer."""
    seen = min(max(math.log(snr / 4.0) / math.log(80.0 / 4.0), 0.0), 1.0)
    care = rng.beta(1.2, 10.0, volunteers)  # each volunteer's share of random answers
    chosen: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for question in SMALL_TREE["questions"]:
        answers, parent = question["answers"], question["parent"]
        p = seen * np.array(_ANSWER_P[question["name"]][kind])
        p = p + (1 - seen) * np.array(_ANSWER_P[question["name"]]["faint"])
        p = rng.dirichlet(p * 25.0 + 0.05)  # this galaxy's own ambiguity
        per_vol = (1 - care)[:, None] * p + care[:, None] / len(answers)
        pick = (rng.random(volunteers)[:, None] > np.cumsum(per_vol, axis=1)[:, :-1]).sum(axis=1)
        asked = np.ones(volunteers, bool) if parent is None else chosen[parent]
        for j, answer in enumerate(answers):
            chosen[answer] = asked & (pick == j)
            counts[answer] = int(chosen[answer].sum())
    return counts


def _fraction_row(counts: dict[str, int]) -> list[str]:
    """Vote fractions as 6-decimal strings: each question's share (1 for a root question, else
    its parent answer's rounded fraction) is split in millionths by largest remainder, so the
    answers sum exactly to it and each is within 2e-6 of votes / volunteers."""
    micro: dict[str, int] = {}
    for question in SMALL_TREE["questions"]:
        answers, parent = question["answers"], question["parent"]
        total = 1_000_000 if parent is None else micro[parent]
        votes = sum(counts[a] for a in answers)
        exact = [total * counts[a] / votes if votes else 0.0 for a in answers]
        floors = [math.floor(x) for x in exact]
        by_remainder = sorted(range(len(answers)), key=lambda j: floors[j] - exact[j])
        for j in by_remainder[: total - sum(floors) if votes else 0]:
            floors[j] += 1
        micro.update(zip(answers, floors, strict=True))
    return [f"{micro[a] / 1e6:.6f}" for a in answer_columns()]


def make_vote_fraction_set(root: str | Path, n: int, *, size: int = 128, fmt: str = "jpg",
                           seed: int = 0, snr_range: tuple[float, float] = (5.0, 200.0),
                           volunteers: int = 40) -> tuple[Path, Path, Path]:
    """Writes a Galaxy Zoo style set of simulated galaxies with volunteer vote fractions.

    Morphologies are drawn with probabilities :data:`VOTE_MIX`. Each of ``volunteers``
    simulated volunteers walks :data:`SMALL_TREE`; their answers depend on the true
    morphology and on S/N (faint galaxies look smooth and get confused), plus each
    volunteer's carelessness. Fractions are votes / volunteers, so each question's answers sum
    to its parent answer's fraction (root questions to 1).

    Writes ``root/images/<GalaxyID>.<fmt>``, ``root/votes.csv`` (``GalaxyID`` then the answer
    columns in tree order, 6 decimals), ``root/schema.yaml`` (:data:`SMALL_TREE`) and
    ``root/truth.csv`` (``GalaxyID,morphology,snr``, the simulation's ground truth).

    Args:
        root: Folder to write into (created if missing).
        n: Number of galaxies.
        size: Side of each square image in pixels.
        fmt: ``"jpg"`` (quality 90) or ``"png"``.
        seed: Seed for everything random.
        snr_range: Peak S/N of each image is drawn log-uniformly from this range.
        volunteers: Volunteers who classify each galaxy.

    Returns:
        ``(images_dir, csv_path, schema_path)``.

    Raises:
        DataError: For a bad ``n``, ``volunteers``, format, size or S/N range.
    """
    low, high = _check_common(size, fmt, snr_range)
    for label, value in (("n", n), ("volunteers", volunteers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DataError(f"{label} must be an integer >= 1, got {value!r}")
    root = Path(root)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    kinds, weights = list(VOTE_MIX), np.array(list(VOTE_MIX.values()))
    csv_path, truth_path, schema_path = root / "votes.csv", root / "truth.csv", root / "schema.yaml"
    with open(csv_path, "w", newline="") as votes_fh, open(truth_path, "w", newline="") as truth_fh:
        votes, truth = csv.writer(votes_fh), csv.writer(truth_fh)
        votes.writerow(["GalaxyID", *answer_columns()])
        truth.writerow(["GalaxyID", "morphology", "snr"])
        for i in range(n):
            rng = np.random.default_rng([seed, i])
            kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
            snr = draw_snr(rng, low, high)
            galaxy_id = 100000 + i
            _save(render_galaxy(kind, rng, size, snr), images / f"{galaxy_id}.{fmt}", fmt)
            votes.writerow([galaxy_id, *_fraction_row(_vote_counts(kind, snr, volunteers, rng))])
            truth.writerow([galaxy_id, kind, f"{snr:.3f}"])
    schema_path.write_text(yaml.safe_dump(SMALL_TREE, sort_keys=False))
    return images, csv_path, schema_path
