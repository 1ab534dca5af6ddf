"""Prediction sets with a coverage guarantee: split conformal prediction.

After training (and calibration), every validation image gets the conformity score
``1 - p(true class)`` (the LAC score of Sadinle, Lei and Wasserman 2019, which gives the
smallest sets on average); the scores are kept per class in ``model.json``. For a coverage
``c``, class ``y`` belongs to an image's set when ``1 - p(y) <= q_y``, where ``q_y`` is the
``ceil((n_y + 1) c) / n_y`` empirical quantile of the scores of the ``n_y`` validation images
of class ``y``: the true class is then in the set for at least a share ``c`` of new images
*of every class* (class-conditional, "Mondrian" conformal prediction; Vovk 2012), so a rare
class is covered as often as the common one, as for Mars HiRISE, where 82% of crops are
"other". That needs at least ``c / (1 - c)`` validation images of every class (9 for 0.9,
19 for 0.95); when a class has fewer, one threshold from the scores of all classes
together is used for every class instead, which guarantees the coverage over all images
but not per class (``evaluate`` says which was used, and which classes were too rare).
The guarantee assumes new images are exchangeable with the validation split: drawn from
the same survey in the same way. The validation split has also chosen the kept epoch and
the temperature, which can make the sets slightly optimistic; ``evaluate`` measures their
coverage on the test split, which took no part. Test-time augmentation averages the
calibrated outputs of the views, which the scores were not computed from: sets with
``--tta`` have no guarantee.

A set can be empty (no class is plausible enough: often an image unlike the training
data) or hold several classes (the model cannot tell them apart at that coverage).

This module computes the scores (:func:`conformity_scores`) and measures the sets
(:func:`coverage_report`); the kept scores and the thresholds and sets they give are
:class:`skysort.models.conformal.ConformalScores`, which ``model.json`` holds, so
prediction needs nothing from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from skysort.models.conformal import ConformalScores, in_sets

#: The coverages ``evaluate`` reports.
COVERAGES = (0.8, 0.9, 0.95)
SCORE = "1 - p(true class), per class"


def conformity_scores(probs: np.ndarray, targets: np.ndarray, classes: Sequence[str]
                      ) -> ConformalScores:
    """What ``model.json`` keeps: the sorted scores of the validation images, per class."""
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(targets, dtype=np.int64)
    ok = ~np.isnan(probs).any(axis=1)
    scores = 1.0 - probs[ok, y[ok]]
    return ConformalScores(
        score=SCORE, n=int(ok.sum()),
        scores={c: [round(float(s), 7) for s in np.sort(scores[y[ok] == j])]
                for j, c in enumerate(classes)})


def prediction_sets(probs: np.ndarray, conformal: ConformalScores | dict[str, Any],
                    classes: Sequence[str], coverage: float) -> np.ndarray:
    """``(n, k)`` booleans: which classes are in each image's set (all False for a NaN row).
    ``conformal``: the kept scores, or ``model.json``'s ``conformal`` entry as read."""
    if isinstance(conformal, dict):
        conformal = ConformalScores.from_dict(conformal)
    return in_sets(probs, conformal.thresholds(classes, coverage))


def coverage_report(member: np.ndarray, targets: np.ndarray, classes: Sequence[str],
                    coverage: float) -> dict[str, Any]:
    """Empirical coverage and set sizes on labelled images, overall and per class."""
    y = np.asarray(targets, dtype=np.int64)
    n = len(y)
    sizes = member.sum(axis=1)
    hit = member[np.arange(n), y] if n else np.zeros(0, dtype=bool)

    def summary(mask: np.ndarray) -> dict[str, Any]:
        count = int(mask.sum())
        if not count:
            return {"n": 0, "coverage": None, "mean_size": None, "single": None, "empty": None}
        return {"n": count, "coverage": float(hit[mask].mean()),
                "mean_size": float(sizes[mask].mean()),
                "single": float((sizes[mask] == 1).mean()),
                "empty": float((sizes[mask] == 0).mean())}

    return {"coverage_asked": coverage, **summary(np.ones(n, dtype=bool)),
            "per_class": {c: summary(y == j) for j, c in enumerate(classes)}}
