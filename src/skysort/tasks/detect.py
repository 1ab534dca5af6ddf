"""Which kind a label table's targets are, when the user does not say (``task=auto``).

One column: numbers with fractions read as vote fractions, two values as a binary task,
up to :data:`MAX_CLASSES_FROM_NUMBERS` numbers (or any text) as classes. Several columns:
whole numbers above 1 are vote counts; a known decision tree (the Galaxy Zoo 37 columns)
or a given schema makes vote fractions; 0/1 everywhere makes multi-label targets; anything
else vote fractions. A catalogue of vote counts is recognised from its header
(:func:`count_columns`): the answer columns of a built-in count tree, beside which its
totals, fractions and debiased fractions are not answers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from skysort.errors import LabelError
from skysort.tasks.base import NAN_TEXT, row_numbers
from skysort.tasks.counts import CountsTask
from skysort.tasks.multiclass import all_numbers
from skysort.tasks.schema import BUILTIN_SCHEMAS, COUNT_SCHEMAS, TreeSchema, galaxy_zoo_schema

#: More different numbers than this in one column are not read as classes.
MAX_CLASSES_FROM_NUMBERS = 100


#: How a count catalogue names an answer's count: the answer's own name (GZ DECaLS) or the
#: name and ``_count`` (Galaxy Zoo 2 as Hart et al. 2016 publish it).
COUNT_SUFFIXES = ("", "_count")
#: Columns of a vote catalogue that are about an answer or a question but are not counts.
NOT_COUNTS = ("_total-votes", "_total_votes", "_total_count", "_total", "_fraction",
              "_debiased", "_weight", "_weighted_fraction", "_flag")


def count_columns(header: Sequence[str], schema: TreeSchema | None = None
                  ) -> tuple[TreeSchema, list[str], list[str]] | None:
    """``(tree, answers, columns)`` for a catalogue whose header holds the vote-count
    columns of ``schema`` or of a built-in count tree (the most complete part of one, when
    it holds whole questions of it); None when it holds none."""
    trees = [schema] if schema is not None else [BUILTIN_SCHEMAS[n]() for n in COUNT_SCHEMAS]
    have = set(header)
    best: tuple[TreeSchema, list[str], list[str]] | None = None
    for tree in trees:
        for suffix in COUNT_SUFFIXES:
            sub = tree.subtree([a for a in tree.columns if f"{a}{suffix}" in have])
            if sub is None or (schema is not None and sub is not tree):
                continue
            if best is None or len(sub.columns) > len(best[1]):
                best = (sub, sub.columns, [f"{a}{suffix}" for a in sub.columns])
    return best


def default_targets(header: Sequence[str], id_column: str, task: str,
                    schema: TreeSchema | None
                    ) -> tuple[TreeSchema | None, list[str] | None, list[str]]:
    """``(schema, answers, columns)``: the target columns of a table when none are given.

    The count columns of a known tree (``answers``: the tree's names for them), when the
    kind is ``auto`` or ``counts``; for ``counts`` with no tree, the columns not named as
    totals, fractions or flags; otherwise every column but the id (``answers`` None).
    """
    if task in ("auto", CountsTask.kind):
        found = count_columns(header, schema)
        if found is not None:
            return found
        if task == CountsTask.kind:
            return schema, None, [h for h in header
                                  if h != id_column and not h.endswith(NOT_COUNTS)]
    return schema, None, [h for h in header if h != id_column]


def classes_kind(classes: Sequence[str]) -> str:
    """The kind of single-label classes (folders, label files): binary for two."""
    return "binary" if len(classes) == 2 else "multiclass"


def table_kind(columns: Sequence[str], texts: Sequence[Sequence[str]],
               schema: TreeSchema | None, where: str) -> tuple[str, TreeSchema | None]:
    """``(kind, schema)`` for target columns holding ``texts`` (one list per row)."""
    if len(columns) == 1:
        raw = [t[0].strip() for t in texts]
        present = {v for v in raw if v.lower() not in NAN_TEXT}
        numeric = all_numbers(raw)
        if numeric and not all(float(v).is_integer() for v in present):
            return "fractions", schema
        if len(present) <= MAX_CLASSES_FROM_NUMBERS or not numeric:
            return classes_kind(sorted(present)), schema
        raise LabelError(f"{where}: column {columns[0]!r} holds {len(present)} different "
                         "numbers; skysort classifies, it does not regress")
    rows = [r for r in map(row_numbers, texts) if r is not None]
    finite = np.array([v for row in rows for v in row if np.isfinite(v)])
    fractional = [any(np.isfinite(v) and not float(v).is_integer() for v in row) for row in rows]
    if finite.size and (finite > 1).any() and np.mean(fractional) < 0.5:
        return "counts", schema  # most rows whole numbers, some above 1: votes, not fractions
    if schema is None and galaxy_zoo_schema().matches(columns):
        schema = galaxy_zoo_schema()
    if schema is not None:
        return "fractions", schema
    if finite.size and np.isin(finite, (0.0, 1.0)).all():
        return "multilabel", schema
    return "fractions", schema
