"""The conformity scores a run keeps in ``model.json``, and the prediction sets they give.

:class:`ConformalScores` is ``model.json``'s ``conformal`` entry, typed: the validation
images' scores ``1 - p(true class)``, sorted, per class. For a coverage ``c`` it gives one
threshold ``q_y`` per class (the ``ceil((n_y + 1) c)``-th smallest of the class's ``n_y``
scores), or one threshold from all classes' scores pooled when a class has too few
(:meth:`ConformalScores.too_rare`); class ``y`` is in an image's set when
``1 - p(y) <= q_y`` (:func:`in_sets`). Why this score and these quantiles, and what they
guarantee: :mod:`skysort.evaluation.conformal`, which computes the scores after training
and measures the sets' coverage.

This is the one implementation of that arithmetic: prediction, ``evaluate`` and the
estimators all use it. It imports no torch: labelling images on a CPU never loads it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from skysort.errors import ConfigError


def check_coverage(coverage: float) -> None:
    """A ConfigError unless ``coverage`` lies strictly between 0 and 1."""
    if not 0 < coverage < 1:
        raise ConfigError(f"coverage={coverage}: must lie strictly between 0 and 1 "
                          "(e.g. 0.9: the true class is in the set for 90% of images)")


@dataclass
class ConformalScores:
    """The validation split's conformity scores, per class (``model.json``'s ``conformal``).

    Attributes:
        score: what the scores are, in words (``1 - p(true class), per class``).
        n: the validation images they were computed on.
        scores: per class name, the scores of the validation images of that class, sorted.
        extra: other keys of the entry, written back as they were read.
    """

    score: str
    n: int
    scores: dict[str, list[float]]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``model.json``'s ``conformal`` entry (as skysort has always written it)."""
        return {"score": self.score, "n": self.n,
                "scores": {c: list(s) for c, s in self.scores.items()}, **self.extra}

    @classmethod
    def from_dict(cls, data: Any) -> ConformalScores:
        """Reads :meth:`to_dict`'s JSON; a ValueError (or KeyError, TypeError) says what is
        wrong with a damaged entry, which :func:`~skysort.models.info.read_model_info`
        reports as a damaged run."""
        if not isinstance(data, dict):
            raise TypeError(f"conformal: expected an object, found {type(data).__name__}")
        score, n, scores = data["score"], data["n"], data["scores"]
        if not isinstance(score, str):
            raise ValueError(f"conformal score {score!r}: expected a description in words")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"conformal n={n!r}: expected a whole number of at least 0")
        if not isinstance(scores, dict):
            raise ValueError(f"conformal scores: expected one list per class, found "
                             f"{type(scores).__name__}")
        for name, values in scores.items():
            if not isinstance(values, list) or not all(
                    isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                    for v in values):
                raise ValueError(f"conformal scores of {name!r}: expected a list of finite "
                                 "numbers")
        return cls(score=score, n=n, scores={c: list(s) for c, s in scores.items()},
                   extra={k: v for k, v in data.items() if k not in ("score", "n", "scores")})

    def too_rare(self, classes: Sequence[str], coverage: float) -> list[str]:
        """The classes with too few validation images for a per-class threshold at
        ``coverage`` (fewer than ``coverage / (1 - coverage)``)."""
        counts = {c: len(self.scores.get(c, [])) for c in classes}
        return [c for c in classes if _rank(counts[c], coverage) > counts[c]]

    def thresholds(self, classes: Sequence[str], coverage: float) -> np.ndarray:
        """``q_y`` per class of ``classes`` for ``coverage`` (checked: a ConfigError unless
        strictly between 0 and 1): per class when every class has enough validation images
        (:meth:`too_rare` is empty), else one pooled threshold for all."""
        check_coverage(coverage)
        per_class = [np.sort(np.asarray(self.scores.get(c, []), dtype=np.float64))
                     for c in classes]
        if self.too_rare(classes, coverage):
            pooled = np.sort(np.concatenate(per_class)) if per_class else np.zeros(0)
            return np.full(len(classes), _quantile(pooled, coverage))
        return np.array([_quantile(s, coverage) for s in per_class])


def _quantile(sorted_scores: np.ndarray, coverage: float) -> float:
    """The conformal quantile; above every score (all classes kept) when too few."""
    n = len(sorted_scores)
    rank = _rank(n, coverage)
    return float(sorted_scores[rank - 1]) if 0 < rank <= n else math.inf


def _rank(n: int, coverage: float) -> int:
    """``ceil((n + 1) * coverage)``, not thrown off by rounding (5 * 0.8 is 4.000...01)."""
    return math.ceil((n + 1) * coverage - 1e-9)


def in_sets(probs: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``(n, k)`` booleans: class ``y`` is in an image's set when ``1 - p(y) <= q_y``
    (NaN rows: no class)."""
    with np.errstate(invalid="ignore"):
        return (1.0 - np.asarray(probs, dtype=np.float64)) <= q[None, :] + 1e-12


def set_labels(probs: np.ndarray, member: np.ndarray, classes: Sequence[str]) -> list[str]:
    """The class names of one image's set, most probable first."""
    order = np.flatnonzero(member)
    return [classes[c] for c in order[np.argsort(-probs[order], kind="stable")]]
