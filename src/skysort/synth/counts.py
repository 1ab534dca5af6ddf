"""A Galaxy Zoo DECaLS style set of vote *counts* with known answer probabilities.

Each simulated galaxy (:func:`~skysort.synth.galaxies.render_galaxy`) has true answer
probabilities for every question of :data:`COUNT_TREE` (part of the GZ DECaLS DR5 tree,
named as its catalogue is): what a volunteer would answer, from its morphology and how
well it can be seen, plus the galaxy's own ambiguity. Between 2 and 50 volunteers (drawn
log-uniformly, as real campaigns range) answer the root questions; a question below an
answer is asked only of the volunteers who gave that answer. The counts are
multinomial draws from the true probabilities, so a model's predictions can be scored
against the truth, not only against the noisy observed fractions.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from skysort.errors import DataError
from skysort.synth.galaxies import draw_snr, render_galaxy
from skysort.synth.sets import VOTE_MIX, _check_common, _save

#: Questions of the GZ DECaLS DR5 tree that the simulated morphologies answer.
COUNT_TREE: dict[str, Any] = {
    "name": "gz_decals_dr5 (5 questions)",
    "questions": [
        {"name": "smooth-or-featured", "parent": None,
         "answers": ["smooth-or-featured_smooth", "smooth-or-featured_featured-or-disk",
                     "smooth-or-featured_artifact"]},
        {"name": "disk-edge-on", "parent": "smooth-or-featured_featured-or-disk",
         "answers": ["disk-edge-on_yes", "disk-edge-on_no"]},
        {"name": "has-spiral-arms", "parent": "disk-edge-on_no",
         "answers": ["has-spiral-arms_yes", "has-spiral-arms_no"]},
        {"name": "bar", "parent": "disk-edge-on_no",
         "answers": ["bar_strong", "bar_weak", "bar_no"]},
        {"name": "merging", "parent": None,
         "answers": ["merging_none", "merging_minor-disturbance", "merging_major-disturbance",
                     "merging_merger"]},
    ],
}

# P(answer | morphology) for a clearly seen galaxy, per question; "faint" is what
# volunteers answer for a galaxy they can barely see.
_P: dict[str, dict[str, tuple[float, ...]]] = {
    "smooth-or-featured": {"elliptical": (0.90, 0.08, 0.02), "lenticular": (0.60, 0.37, 0.03),
                           "spiral": (0.08, 0.90, 0.02), "edge_on": (0.20, 0.78, 0.02),
                           "merger": (0.30, 0.62, 0.08), "faint": (0.70, 0.20, 0.10)},
    "disk-edge-on": {"elliptical": (0.10, 0.90), "lenticular": (0.20, 0.80),
                     "spiral": (0.04, 0.96), "edge_on": (0.93, 0.07), "merger": (0.08, 0.92),
                     "faint": (0.30, 0.70)},
    "has-spiral-arms": {"elliptical": (0.10, 0.90), "lenticular": (0.15, 0.85),
                        "spiral": (0.92, 0.08), "edge_on": (0.40, 0.60),
                        "merger": (0.35, 0.65), "faint": (0.30, 0.70)},
    "bar": {"elliptical": (0.02, 0.08, 0.90), "lenticular": (0.05, 0.20, 0.75),
            "spiral": (0.10, 0.25, 0.65), "edge_on": (0.03, 0.10, 0.87),
            "merger": (0.04, 0.12, 0.84), "faint": (0.05, 0.15, 0.80)},
    "merging": {"elliptical": (0.88, 0.08, 0.02, 0.02), "lenticular": (0.88, 0.08, 0.02, 0.02),
                "spiral": (0.85, 0.10, 0.03, 0.02), "edge_on": (0.86, 0.10, 0.02, 0.02),
                "merger": (0.08, 0.17, 0.35, 0.40), "faint": (0.70, 0.18, 0.06, 0.06)},
}


def count_answers() -> list[str]:
    """The answer columns of :data:`COUNT_TREE`, in order."""
    return [a for q in COUNT_TREE["questions"] for a in q["answers"]]


def true_probabilities(kind: str, snr: float, rng: np.random.Generator
                       ) -> dict[str, np.ndarray]:
    """Per question, this galaxy's probability of each answer."""
    seen = min(max(math.log(snr / 4.0) / math.log(80.0 / 4.0), 0.0), 1.0)
    out = {}
    for q in COUNT_TREE["questions"]:
        p = seen * np.array(_P[q["name"]][kind]) + (1 - seen) * np.array(_P[q["name"]]["faint"])
        out[q["name"]] = rng.dirichlet(p * 25.0 + 0.05)  # the galaxy's own ambiguity
    return out


def draw_counts(p: dict[str, np.ndarray], volunteers: int, rng: np.random.Generator
                ) -> dict[str, int]:
    """Votes per answer: root questions get every volunteer, a question below an answer
    the volunteers who gave it."""
    counts: dict[str, int] = {}
    for q in COUNT_TREE["questions"]:
        asked = volunteers if q["parent"] is None else counts[q["parent"]]
        drawn = rng.multinomial(asked, p[q["name"]])
        counts.update(zip(q["answers"], (int(v) for v in drawn), strict=True))
    return counts


def make_vote_count_set(root: str | Path, n: int, *, size: int = 128, fmt: str = "jpg",
                        seed: int = 0, snr_range: tuple[float, float] = (5.0, 200.0),
                        volunteers: tuple[int, int] = (2, 50)) -> tuple[Path, Path, Path]:
    """Writes simulated galaxies with GZ DECaLS style vote counts.

    Writes ``root/images/<id>.<fmt>``; ``root/votes.csv``: ``iauname``, the answer counts,
    then each question's ``_total-votes`` and each answer's ``_fraction`` (as the DR5
    catalogue has them; not answers); ``root/truth.csv``: ``iauname, morphology, snr,
    volunteers`` and each answer's true probability within its question.

    Args:
        volunteers: the least and most volunteers per galaxy (drawn log-uniformly).

    Returns:
        ``(images_dir, votes_csv, truth_csv)``.
    """
    low, high = _check_common(size, fmt, snr_range)
    low_v, high_v = volunteers
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DataError(f"n must be an integer >= 1, got {n!r}")
    if not 1 <= low_v <= high_v:
        raise DataError(f"volunteers must be (least, most) with 1 <= least <= most, got "
                        f"{volunteers!r}")
    root = Path(root)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    kinds, weights = list(VOTE_MIX), np.array(list(VOTE_MIX.values()))
    answers = count_answers()
    questions = COUNT_TREE["questions"]
    votes_path, truth_path = root / "votes.csv", root / "truth.csv"
    with open(votes_path, "w", newline="") as vf, open(truth_path, "w", newline="") as tf:
        votes, truth = csv.writer(vf), csv.writer(tf)
        votes.writerow(["iauname", *answers, *(f"{q['name']}_total-votes" for q in questions),
                        *(f"{a}_fraction" for a in answers)])
        truth.writerow(["iauname", "morphology", "snr", "volunteers", *answers])
        for i in range(n):
            rng = np.random.default_rng([seed, i, 7])
            kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
            snr = draw_snr(rng, low, high)
            name = f"J{100000 + i}"
            _save(render_galaxy(kind, rng, size, snr), images / f"{name}.{fmt}", fmt)
            p = true_probabilities(kind, snr, rng)
            people = round(math.exp(rng.uniform(math.log(low_v), math.log(high_v))))
            counts = draw_counts(p, people, rng)
            totals = [sum(counts[a] for a in q["answers"]) for q in questions]
            fractions = [counts[a] / t if t else 0.0 for q, t in zip(questions, totals,
                                                                      strict=True)
                         for a in q["answers"]]
            votes.writerow([name, *(counts[a] for a in answers), *totals,
                            *(f"{f:.6f}" for f in fractions)])
            truth.writerow([name, kind, f"{snr:.3f}", people,
                            *(f"{v:.6f}" for q in questions for v in p[q["name"]])])
    (root / "schema.yaml").write_text(yaml.safe_dump(COUNT_TREE, sort_keys=False))
    return images, votes_path, truth_path
