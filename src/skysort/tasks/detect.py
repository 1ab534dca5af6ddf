"""Which kind a label table's targets are, when the user does not say (``task=auto``).

One column: numbers with fractions read as vote fractions, two values as a binary task,
up to :data:`MAX_CLASSES_FROM_NUMBERS` numbers (or any text) as classes. Several columns:
a known decision tree (the Galaxy Zoo 37 columns) or a given schema makes vote fractions,
0/1 everywhere makes multi-label targets, anything else vote fractions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from skysort.errors import LabelError
from skysort.tasks.base import NAN_TEXT, row_numbers
from skysort.tasks.multiclass import all_numbers
from skysort.tasks.schema import TreeSchema, galaxy_zoo_schema

#: More different numbers than this in one column are not read as classes.
MAX_CLASSES_FROM_NUMBERS = 100


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
    if schema is None and galaxy_zoo_schema().matches(columns):
        schema = galaxy_zoo_schema()
    if schema is not None:
        return "fractions", schema
    rows = [r for r in map(row_numbers, texts) if r is not None]
    finite = np.array([v for row in rows for v in row if np.isfinite(v)])
    if finite.size and np.isin(finite, (0.0, 1.0)).all():
        return "multilabel", schema
    return "fractions", schema
