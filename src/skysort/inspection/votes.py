"""Votes before training (fractions or counts): how much volunteers agreed, how many voted,
and whether the table obeys its decision tree.

* Per answer, its agreement: the share of its question's votes that chose it, among the
  images whose question was asked (its answers got votes): quartiles and whiskers for
  box plots, the maximum and median, and how many images reach 0.6, 0.8 and 0.9. For a
  root question this is the vote fraction itself; for a follow-up question it is the
  fraction over its parent's, so "0.9 said spiral arms" means 90% of those asked. Counts
  are divided by their question's votes the same way.
* Per question, the agreement on its top answer: in each image whose question got votes,
  the largest answer's share of them.
* Counts only: the votes per galaxy (on the first root question), for a histogram.
* Tree consistency: a question's answers must sum to its parent answer's value (fractions:
  to 1 for a root question; counts: a follow-up question's votes are its parent answer's
  votes, root questions have any number); rows off by more than :data:`TREE_TOLERANCE`
  are listed.
* For the Galaxy Zoo tree, the derived classes (elliptical, spiral, barred spiral) at
  0.6 and 0.9, as the report of a trained model shows them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from skysort.evaluation.plots import vote_histogram
from skysort.tasks.count_scores import FEW_VOTES
from skysort.tasks.fractions import DERIVED_CLASSES, GALAXY_ZOO_RULES_COLUMNS, derived_classes

#: Agreement levels counted per answer.
AGREEMENT_LEVELS = (0.6, 0.8, 0.9)
#: A question whose answers miss their parent's fraction by more than this is listed.
TREE_TOLERANCE = 0.02
#: Thresholds of the derived Galaxy Zoo classes.
DERIVED_THRESHOLDS = (0.6, 0.9)


def agreement(values: np.ndarray, columns: Sequence[str], schema: Any) -> list[dict[str, Any]]:
    """Per answer column: its question, the images where the question was asked, and the
    spread of its agreement there (``whislo``, ``q1``, ``med``, ``q3``, ``whishi`` at the
    5/25/50/75/95th percentiles, ``max``, ``median``, counts at or above each level)."""
    index = {c: j for j, c in enumerate(columns)}
    out = []
    for j, column in enumerate(columns):
        question = schema.question_of(column) if schema is not None else None
        total = values[:, [index[a] for a in question.answers]].sum(axis=1) \
            if question is not None else np.ones(len(values))
        asked = np.isfinite(total) & (total > 0)
        v = values[asked, j] / total[asked]
        v = v[np.isfinite(v)]
        row: dict[str, Any] = {"answer": column, "question": question.name if question else "",
                               "asked": len(v)}
        if len(v):
            p = np.percentile(v, [5, 25, 50, 75, 95])
            row.update({"whislo": float(p[0]), "q1": float(p[1]), "med": float(p[2]),
                        "q3": float(p[3]), "whishi": float(p[4]), "max": float(v.max()),
                        "median": float(p[2])})
        row["at_least"] = {f"{t:g}": int((v >= t).sum()) for t in AGREEMENT_LEVELS}
        out.append(row)
    return out


def vote_view(values: np.ndarray, columns: Sequence[str], schema: Any, valid: np.ndarray,
              counts: bool) -> dict[str, Any]:
    """Everything above for a table's ``values`` (``counts``: vote counts, else
    fractions); agreement and votes of the ``valid`` (readable) rows only."""
    return {"agreement": agreement(values[valid], columns, schema),
            "questions": question_agreement(values[valid], columns, schema),
            "votes": vote_totals(values[valid], columns, schema) if counts else None,
            "violations": tree_violations(values, columns, schema, counts=counts),
            "derived": None if counts else derived_galaxy_zoo(values, columns)}


def question_agreement(values: np.ndarray, columns: Sequence[str], schema: Any
                       ) -> list[dict[str, Any]]:
    """Per question of ``schema`` (none without one): the images whose question got votes
    (``asked``), the median and quartiles of the top answer's share there, and how many
    reach each of :data:`AGREEMENT_LEVELS`."""
    index = {c: j for j, c in enumerate(columns)}
    out = []
    for question in schema.questions if schema is not None else []:
        part = values[:, [index[a] for a in question.answers]]
        total = part.sum(axis=1)
        asked = np.isfinite(total) & (total > 0)
        top = part[asked].max(axis=1) / total[asked]
        row: dict[str, Any] = {"question": question.name, "asked": int(asked.sum())}
        if len(top):
            q1, med, q3 = np.percentile(top, [25, 50, 75])
            row.update({"q1": float(q1), "median": float(med), "q3": float(q3)})
        row["at_least"] = {f"{t:g}": int((top >= t).sum()) for t in AGREEMENT_LEVELS}
        out.append(row)
    return out


def vote_totals(values: np.ndarray, columns: Sequence[str], schema: Any) -> dict[str, Any]:
    """Votes per galaxy on the first root question of ``schema`` (on all columns without
    one): the question, median, mean, least and most, the galaxies with fewer than
    :data:`~skysort.tasks.count_scores.FEW_VOTES` (and some) and with none, and the
    histogram (:func:`~skysort.evaluation.plots.vote_histogram`)."""
    root = next((q for q in schema.questions if q.parent is None), None) if schema else None
    index = {c: j for j, c in enumerate(columns)}
    on = [index[a] for a in root.answers] if root is not None else list(range(len(columns)))
    totals = np.nan_to_num(values[:, on].sum(axis=1)).round().astype(np.int64)
    some = len(totals) > 0
    return {"question": root.name if root is not None else "all answers",
            "galaxies": len(totals),
            "median": float(np.median(totals)) if some else None,
            "mean": float(totals.mean()) if some else None,
            "min": int(totals.min()) if some else None,
            "max": int(totals.max()) if some else None,
            "few_votes_below": FEW_VOTES,
            "few": int(((totals > 0) & (totals < FEW_VOTES)).sum()),
            "none": int((totals == 0).sum()), "histogram": vote_histogram(totals)}


def tree_violations(values: np.ndarray, columns: Sequence[str], schema: Any,
                    tolerance: float = TREE_TOLERANCE, *, counts: bool = False
                    ) -> list[dict[str, Any]]:
    """Rows (by position) where a question's answers do not sum to their parent value
    (``counts``: only follow-up questions are checked; a root question may have any number
    of votes)."""
    if schema is None:
        return []
    index = {c: j for j, c in enumerate(columns)}
    out = []
    for question in schema.questions:
        if not all(a in index for a in question.answers) or (counts and not question.parent):
            continue
        total = values[:, [index[a] for a in question.answers]].sum(axis=1)
        expected = values[:, index[question.parent]] if question.parent else np.ones(len(values))
        for row in np.flatnonzero(np.abs(total - expected) > tolerance):
            out.append({"row": int(row), "question": question.name,
                        "parent": question.parent or "(root: 1)",
                        "answers_sum": float(total[row]), "expected": float(expected[row]),
                        "gap": float(total[row] - expected[row])})
    return out


def derived_galaxy_zoo(values: np.ndarray, columns: Sequence[str]
                       ) -> dict[str, np.ndarray] | None:
    """Per threshold, each image's derived class name; None without the Galaxy Zoo columns."""
    if not set(GALAXY_ZOO_RULES_COLUMNS) <= set(columns):
        return None
    names = np.array(DERIVED_CLASSES)
    return {f"{t:g}": names[derived_classes(values, columns, t)] for t in DERIVED_THRESHOLDS}
