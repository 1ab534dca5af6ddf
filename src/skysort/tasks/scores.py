"""What every kind's scores share: scikit-learn's metrics (imported when first needed),
RMSE, the margin a model must beat its baseline by, and the one number formatter that the
screen, the report and the inspect page all use."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

#: A headline must beat its baseline by at least this (or 2 standard errors).
MIN_MARGIN = 0.05


def sk() -> Any:
    """scikit-learn's metrics, imported when first needed (a second off every start)."""
    import sklearn.metrics

    return sklearn.metrics


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    """Root mean squared difference; NaN for no values."""
    return float(np.sqrt(np.mean((a - b) ** 2))) if a.size else float("nan")


def number(value: Any, digits: int = 3) -> str:
    """A number as people read it: ``n/a`` for a missing one (None, NaN, not a number),
    integers with thousands separators, anything else with ``digits`` decimals."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or \
            (isinstance(value, numbers.Real) and math.isnan(float(value))):
        return "n/a"
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    return f"{float(value):.{digits}f}"
