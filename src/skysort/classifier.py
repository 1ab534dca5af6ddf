"""A scikit-learn style estimator over the training and prediction functions.

``ImageClassifier(**settings).fit(DATA)`` trains (writing a run directory as
``skysort train`` does), sets ``classes_`` and returns itself; ``predict_proba`` columns
follow ``classes_``; using it before ``fit`` (or :meth:`ImageClassifier.load`) raises
:class:`~skysort.errors.NotFittedError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from skysort.config import TrainConfig
from skysort.data.sources import LabeledImages, from_lists
from skysort.errors import NotFittedError
from skysort.prediction.predictor import Predictor
from skysort.training.recipe import train


class ImageClassifier:
    """Trains on image files and labels them.

    Args:
        **settings: any :class:`~skysort.config.TrainConfig` setting (``epochs=50``, ...).

    Attributes:
        classes_: class names after fitting; column order of :meth:`predict_proba`.
        run_dir_: the run directory that holds the fitted model.
        metrics_: test-split metrics of the fitted model, beside the baseline.
    """

    def __init__(self, **settings: Any) -> None:
        self.config = TrainConfig().updated(settings) if settings else TrainConfig()
        self._predictor: Predictor | None = None

    def fit(self, data: str | Path | Sequence[str | Path] | LabeledImages,
            y: Sequence[str] | None = None) -> ImageClassifier:
        """Trains on a data folder, or on a list of image paths with labels ``y``."""
        if y is not None:
            data = from_lists(data, y)  # type: ignore[arg-type]
        result = train(data, self.config)  # type: ignore[arg-type]
        self.run_dir_ = result.run_dir
        self.metrics_ = result.metrics
        self._predictor = Predictor.load(result.run_dir, device=self.config.device,
                                         workers=self.config.workers)
        return self

    @classmethod
    def load(cls, run_dir: str | Path, **kwargs: Any) -> ImageClassifier:
        """A fitted classifier from a run directory written by training."""
        model = cls()
        model._predictor = Predictor.load(run_dir, **kwargs)
        model.run_dir_ = Path(run_dir)
        return model

    @property
    def predictor(self) -> Predictor:
        if self._predictor is None:
            raise NotFittedError(
                "this ImageClassifier is not fitted yet; call fit(DATA) or "
                "ImageClassifier.load(RUN_DIR) first"
            )
        return self._predictor

    @property
    def classes_(self) -> list[str]:
        return self.predictor.classes_

    def predict_proba(self, paths: Sequence[str | Path]) -> np.ndarray:
        """Calibrated class probabilities ``(n, k)``, columns in ``classes_`` order; NaN
        rows for unreadable files."""
        return self.predictor.predict_proba(paths)

    def predict_set(self, paths: Sequence[str | Path], coverage: float = 0.9
                    ) -> list[list[str] | None]:
        """Conformal prediction sets that hold the true class for a share ``coverage`` of
        images (:meth:`skysort.Predictor.predict_set`)."""
        return self.predictor.predict_set(paths, coverage)

    def predict(self, paths: Sequence[str | Path]) -> np.ndarray:
        """The most probable class per file (``""`` for unreadable files)."""
        return self.predictor.predict(paths)

    def score(self, paths: Sequence[str | Path], y: Sequence[str]) -> float:
        """Accuracy on ``paths`` with true labels ``y`` (unreadable files count as wrong)."""
        predicted = self.predict(paths)
        return float(np.mean([p == t for p, t in zip(predicted, y, strict=True)]))
