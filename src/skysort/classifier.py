"""scikit-learn estimators over image files: :class:`ImageClassifier` and :class:`ImageRegressor`.

They follow scikit-learn's estimator contract (``sklearn/base.py``,
``doc/developers/develop.rst``), so ``clone``, ``cross_val_score``, ``GridSearchCV`` and
pipelines use them as any other estimator:

* every setting is an explicit keyword of ``__init__``, stored unchanged (``get_params``,
  ``set_params``, ``clone``); settings are checked when ``fit`` runs
  (:class:`~skysort.config.TrainConfig` raises a ConfigError naming the key);
* ``fit(X, y)`` takes image paths (a list, an array, or a pandas column) and labels (or,
  for the regressor, an ``(n, k)`` array or DataFrame of vote fractions or counts), trains as
  ``skysort train`` does, writes a run directory of its own under ``project`` (a new
  ``name``, ``name2``, ... for every fit, so cross-validation folds never overwrite one
  another) and returns the estimator; fitted state lives only in attributes ending in
  ``_`` (``classes_``, ``run_dir_``, ``metrics_``, ``predictor_``);
* ``fit`` uses all the images it is given: ``validation_fraction`` of them (by a hash of
  each path) validate epochs and calibrate probabilities, and none are held out for a
  test score: scoring is the caller's, by cross-validation or ``score``;
* ``predict_proba`` columns follow ``classes_``; ``score`` is accuracy for the classifier
  (``scoring="balanced_accuracy"`` in scikit-learn's tools for balanced accuracy) and
  R^2 of the fractions averaged over the outputs for the regressor;
* a pandas DataFrame or Series of paths gives predictions indexed like it.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import NotFittedError as SklearnNotFittedError

from skysort.config import TrainConfig
from skysort.data.inputs import array_labels, array_paths, as_frame
from skysort.data.sources import LabeledImages, from_lists
from skysort.errors import ConfigError, DataError, NotFittedError, RunError
from skysort.prediction.predictor import Predictor
from skysort.rundir import ESTIMATOR, atomic_write
from skysort.training.recipe import train

_DEFAULTS = TrainConfig()

#: scikit-learn API checks that fit or predict on random numeric arrays, and so cannot
#: apply to an estimator of image files (``check_estimator`` skips them all, as the
#: tags say the input is not a 2-D array; the tests run every other API check).
CHECKS_NOT_APPLICABLE = {
    "check_fit_score_takes_y": "fits on a random numeric array, not image files",
    "check_estimators_overwrite_params": "fits on a random numeric array, not image files",
    "check_dont_overwrite_parameters": "fits on a random numeric array, not image files",
    "check_estimators_fit_returns_self": "fits on a random numeric array (tested on images)",
    "check_readonly_memmap_input": "fits on a read-only numeric memmap, not image files",
    "check_n_features_in_after_fitting": "image files have no n_features_in_",
    "check_positive_only_tag_during_fit": "fits on a random numeric array, not image files",
}


class NotFittedEstimatorError(NotFittedError, SklearnNotFittedError):
    """An estimator used before ``fit``: skysort's error, and scikit-learn's."""


class _ImageEstimator(BaseEstimator):
    """What both estimators share: the settings, training, and loading a run."""

    #: Keys of :class:`TrainConfig` that are not estimator settings: where the data is
    #: (``fit`` is given it), the split (``validation_fraction``), the task (the
    #: estimator's kind decides it), and whether a run may reuse a folder (never).
    NOT_SETTINGS = ("data", "labels", "images", "id_column", "targets", "pattern",
                    "classmap", "split_file", "task", "schema", "split", "exist_ok")

    def __init__(self, *, backbone: str = _DEFAULTS.backbone, weights: str = _DEFAULTS.weights,
                 input_size: int | None = _DEFAULTS.input_size,
                 center_fraction: float = _DEFAULTS.center_fraction,
                 bands: tuple[str, ...] = _DEFAULTS.bands, channels: str = _DEFAULTS.channels,
                 stretch: str = _DEFAULTS.stretch,
                 finetune: str = _DEFAULTS.finetune, dropout: float = _DEFAULTS.dropout,
                 epochs: int = _DEFAULTS.epochs, batch_size: int = _DEFAULTS.batch_size,
                 lr: float = _DEFAULTS.lr, weight_decay: float = _DEFAULTS.weight_decay,
                 warmup_epochs: int = _DEFAULTS.warmup_epochs,
                 label_smoothing: float | None = _DEFAULTS.label_smoothing,
                 balance: str = _DEFAULTS.balance, patience: int = _DEFAULTS.patience,
                 augment: str = _DEFAULTS.augment,
                 finetune_epochs: int | None = _DEFAULTS.finetune_epochs,
                 finetune_batch_size: int = _DEFAULTS.finetune_batch_size,
                 finetune_lr: float = _DEFAULTS.finetune_lr,
                 finetune_weight_decay: float = _DEFAULTS.finetune_weight_decay,
                 layer_decay: float = _DEFAULTS.layer_decay,
                 finetune_warmup_epochs: int = _DEFAULTS.finetune_warmup_epochs,
                 finetune_patience: int = _DEFAULTS.finetune_patience,
                 ema_decay: float = _DEFAULTS.ema_decay, precision: str = _DEFAULTS.precision,
                 time: str | None = _DEFAULTS.time,
                 calibrate: str = _DEFAULTS.calibrate, threshold: float = _DEFAULTS.threshold,
                 derived_thresholds: tuple[float, ...] = _DEFAULTS.derived_thresholds,
                 validation_fraction: float = 0.15,
                 split_groups: str = _DEFAULTS.split_groups, seed: int = _DEFAULTS.seed,
                 device: str = _DEFAULTS.device, workers: int | None = _DEFAULTS.workers,
                 cache_dir: str | None = _DEFAULTS.cache_dir,
                 cache_max_gb: float = _DEFAULTS.cache_max_gb,
                 project: str = _DEFAULTS.project, name: str = "estimator") -> None:
        self.backbone = backbone
        self.weights = weights
        self.input_size = input_size
        self.center_fraction = center_fraction
        self.bands, self.channels, self.stretch = bands, channels, stretch
        self.finetune = finetune
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_epochs = warmup_epochs
        self.label_smoothing = label_smoothing
        self.balance = balance
        self.patience = patience
        self.augment = augment
        self.finetune_epochs = finetune_epochs
        self.finetune_batch_size = finetune_batch_size
        self.finetune_lr = finetune_lr
        self.finetune_weight_decay = finetune_weight_decay
        self.layer_decay = layer_decay
        self.finetune_warmup_epochs = finetune_warmup_epochs
        self.finetune_patience = finetune_patience
        self.ema_decay, self.precision, self.time = ema_decay, precision, time
        self.calibrate = calibrate
        self.threshold = threshold
        self.derived_thresholds = derived_thresholds
        self.validation_fraction = validation_fraction
        self.split_groups = split_groups
        self.seed = seed
        self.device = device
        self.workers = workers
        self.cache_dir = cache_dir
        self.cache_max_gb = cache_max_gb
        self.project = project
        self.name = name

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.one_d_array = True  # a list (or column) of image file paths
        tags.input_tags.two_d_array = False  # not a numeric feature matrix
        tags.input_tags.string = True
        tags.non_deterministic = self.precision == "auto"  # fp32/bf16 chosen by timing
        return tags

    def to_config(self) -> TrainConfig:
        """The :class:`TrainConfig` these settings make (a ConfigError names a bad one)."""
        params = {k: v for k, v in self.get_params().items() if k != "validation_fraction"}
        fraction = self.validation_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) or \
                not 0 < fraction < 1:
            raise ConfigError(f"validation_fraction={fraction!r}: must lie strictly between "
                              "0 and 1 (images that validate epochs and calibrate)")
        return TrainConfig().updated({**params, "split": (1 - fraction, fraction, 0.0)})

    def _fit(self, data: LabeledImages | str | Path) -> Any:
        result = train(data, self.to_config())
        if not result.main:  # a process of a distributed fit other than the first
            raise RunError("only the first process of a distributed run holds the model")
        self.run_dir_ = result.run_dir
        self.metrics_ = result.metrics
        self.predictor_ = Predictor.load(result.run_dir, device=self.device,
                                         workers=self.workers)
        return self

    @classmethod
    def load(cls, run_dir: str | Path, **kwargs: Any) -> Any:
        """A fitted estimator from a run directory written by training (its settings stay
        the defaults; the model is the run's)."""
        model = cls()
        model.predictor_ = Predictor.load(run_dir, **kwargs)
        model.run_dir_ = Path(run_dir)
        model._loaded()
        return model

    def _loaded(self) -> None:
        """Sets what a loaded run fixes (``classes_`` or the output names)."""

    @property
    def predictor(self) -> Predictor:
        """The fitted model (:class:`~skysort.prediction.predictor.Predictor`)."""
        predictor = getattr(self, "predictor_", None)
        if predictor is None:
            raise NotFittedEstimatorError(
                f"this {type(self).__name__} is not fitted yet; call fit(X, y) or "
                f"{type(self).__name__}.load(RUN_DIR) first")
        return predictor


class ImageClassifier(ClassifierMixin, _ImageEstimator):
    """Trains on image files with class labels and labels new ones.

    Args: every :class:`~skysort.config.TrainConfig` training setting, with the same
        default, plus ``validation_fraction`` (default 0.15) and ``name`` (the run
        folder's name under ``project``; default ``estimator``).

    Attributes:
        classes_: the labels seen by ``fit`` (as given: strings, ints ...), sorted; the
            column order of :meth:`predict_proba`.
        run_dir_: the run directory that holds the fitted model.
        metrics_: the fitted model's scores on its validation images.
        predictor_: the fitted model.
    """

    def fit(self, X: Any, y: Any = None) -> ImageClassifier:
        """Trains on image paths ``X`` with labels ``y``, or on a data folder or label
        table ``X`` (anything ``skysort train`` reads) when ``y`` is None."""
        if y is None:
            if isinstance(X, str | Path):
                self._fit(X)
                self._loaded()
                return self
            raise DataError("fit(X, y): give the labels y for the image paths X (or a data "
                            "folder as X alone)")
        paths, _ = array_paths(X)
        labels = array_labels(y, len(paths))
        try:
            classes = np.unique(labels)
        except TypeError:
            raise DataError("the labels mix types that cannot be ordered (e.g. numbers and "
                            "text); give labels of one type") from None
        names = [str(c) for c in classes]
        if len(set(names)) != len(names):
            raise DataError(f"labels {list(classes)} are not distinct as text; give labels "
                            "that differ as strings")
        # classes in scikit-learn's order, so a binary model's positive class is classes_[1]
        self._fit(from_lists(paths, [str(label) for label in labels], classes=names))
        self.classes_ = classes
        self.class_columns_ = list(range(len(classes)))
        atomic_write(self.run_dir_ / ESTIMATOR, json.dumps(
            {"classes": classes.tolist()}).encode("utf-8"))
        return self

    def _loaded(self) -> None:
        names = list(self.predictor.classes_)
        saved = Path(self.run_dir_) / ESTIMATOR
        given = json.loads(saved.read_text(encoding="utf-8"))["classes"] if saved.is_file() \
            else names
        if sorted(str(c) for c in given) != sorted(names):
            raise RunError(f"{saved}: its classes {given} are not the model's {names}")
        self.classes_ = np.array(given) if saved.is_file() else np.array(names, dtype=object)
        self.class_columns_ = [names.index(str(c)) for c in given]

    def predict_proba(self, X: Any) -> Any:
        """Calibrated class probabilities ``(n, len(classes_))``, columns in ``classes_``
        order; NaN rows for unreadable files. A DataFrame, indexed like ``X``, when ``X``
        is pandas."""
        predictor = self.predictor  # unfitted: say so before looking at X
        paths, index = array_paths(X)
        probs = predictor.predict_proba(paths)[:, self.class_columns_]
        return as_frame(probs, list(self.classes_), index)

    def predict(self, X: Any) -> Any:
        """The most probable class of each file (None for an unreadable file)."""
        predictor = self.predictor
        paths, index = array_paths(X)
        out = np.empty(len(paths), dtype=object)
        # The run's own decision (its threshold for binary tasks), in the labels as given.
        raw = predictor.predict(paths)
        lookup = {str(c): c for c in self.classes_}
        ok = np.array([bool(r) for r in raw], dtype=bool)
        for i in np.flatnonzero(ok):
            out[i] = lookup[str(raw[i])]
        if ok.all() and self.classes_.dtype != object:
            out = out.astype(self.classes_.dtype)
        if index is not None:
            import pandas as pd

            return pd.Series(out, index=index)
        return out

    def predict_set(self, X: Any, coverage: float = 0.9) -> list[list[Any] | None]:
        """Conformal prediction sets (:meth:`skysort.Predictor.predict_set`), of labels as
        in ``classes_`` (ints stay ints); None for an unreadable file."""
        sets = self.predictor.predict_set(array_paths(X)[0], coverage)  # unfitted: said first
        lookup = {str(c): c for c in self.classes_}
        return [None if names is None else [lookup[n] for n in names] for names in sets]

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Accuracy of :meth:`predict` on ``X`` against ``y``. A file that cannot be read
        raises a DataError naming it: it has no prediction, and an accuracy over the other
        files would pass for one over all of ``X``."""
        from sklearn.metrics import accuracy_score

        predicted = self.predict(X)
        labels = np.asarray(predicted, dtype=object)
        _refuse_unreadable(array_paths(X)[0], np.array([label is not None for label in labels]))
        return float(accuracy_score(y, predicted, sample_weight=sample_weight))


class ImageRegressor(RegressorMixin, _ImageEstimator):
    """Trains on image files with vote fractions or counts (Galaxy Zoo style); predicts
    fractions. ``y`` is an ``(n, k)`` array or DataFrame of fractions in [0, 1] (``task=
    "fractions"``) or of vote counts (``task="counts"``); a DataFrame's column names name the
    outputs (the 37 Kaggle Galaxy Zoo columns, or a built-in count tree's answers, bring
    their tree). ``schema`` (a YAML file, see README) gives any other tree; without one
    each fraction is a sigmoid of its own, and counts are one question.

    Args: those of :class:`ImageClassifier`, ``schema`` and ``task``.

    Attributes:
        outputs_: the output names (the columns of :meth:`predict`).
        run_dir_, metrics_, predictor_: as for :class:`ImageClassifier`.
    """

    def __init__(self, *, schema: str | None = None, task: str = "fractions",
                 **settings: Any) -> None:
        # Every keyword of ImageClassifier, schema and task: the signature below says so to
        # scikit-learn (get_params, clone) and to help().
        super().__init__(**settings)
        self.schema = schema
        self.task = task

    def fit(self, X: Any, y: Any) -> ImageRegressor:
        """Trains on image paths ``X`` with fractions or counts ``y``."""
        from skysort.tasks import load_schema, task_class

        if not (kind := task_class(self.task)).votes:
            raise ConfigError(f"task={self.task!r}: ImageRegressor learns vote fractions or counts")
        paths, _ = array_paths(X)
        columns = [str(c) for c in y.columns] if hasattr(y, "columns") else []
        try:
            values = np.asarray(y, dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError("y must hold numbers: the votes of each image") from None
        self.single_output_ = values.ndim == 1
        values = values[:, None] if values.ndim == 1 else values
        if values.ndim != 2 or len(values) != len(paths) or values.size == 0:
            raise DataError(f"y has shape {values.shape} for {len(paths)} image paths; give "
                            "one row of fractions per path")
        columns = columns or [f"y{j}" for j in range(values.shape[1])]
        for i, row in enumerate(values):
            if out := [*kind.invalid_values(columns, row), *map(str, row[~np.isfinite(row)])]:
                raise DataError(f"y must hold {self.task} in the range the task takes "
                                f"({kind.value_rule}), no NaN or inf: row {i}: {out[:3]}")
        # the user's tree, or a built-in one named as y's columns
        schema = load_schema(self.schema) if self.schema else kind.known_tree(columns)
        if schema is not None and not schema.matches(columns):
            raise DataError(f"y's columns {columns} are not the answers of the schema "
                            f"{schema.columns}")
        images = from_lists(paths, ["0"] * len(paths))
        self._fit(LabeledImages(root=images.root, paths=images.paths, targets=values,
                                classes=columns, task=self.task, target_columns=columns,
                                schema=schema))
        self.outputs_ = columns
        return self

    def _loaded(self) -> None:
        self.outputs_ = list(self.predictor.classes_)

    def predict(self, X: Any) -> Any:
        """``(n, k)`` fractions (obeying the tree, if any); NaN rows for unreadable files.
        A DataFrame, indexed like ``X``, when ``X`` is pandas."""
        predictor = self.predictor
        paths, index = array_paths(X)
        fractions = predictor.predict(paths)
        if getattr(self, "single_output_", False):  # fitted on a 1-D y: 1-D, as scikit-learn
            return fractions[:, 0] if index is None else \
                as_frame(fractions, self.outputs_, index).iloc[:, 0]
        return as_frame(fractions, self.outputs_, index)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """R^2 of :meth:`predict` on ``X`` against the fractions of ``y`` (of counts, each
        answer's share of its question's votes) per output, over the images where they are
        defined, then averaged. An unreadable file raises a DataError naming it."""
        from sklearn.metrics import r2_score

        values = np.asarray(self.predict(X), dtype=np.float64)
        values = values.reshape(len(values), -1)
        _refuse_unreadable(array_paths(X)[0], np.asarray(~np.isnan(values).any(axis=1)))
        truth = self.predictor.task.observed_fractions(
            np.asarray(y, dtype=np.float64).reshape(values.shape))
        w = np.ones(len(values)) if sample_weight is None else np.asarray(sample_weight)
        return float(np.mean([r2_score(truth[m, j], values[m, j], sample_weight=w[m])
                              for j in range(values.shape[1])
                              if (m := np.isfinite(truth[:, j])).sum() > 1]))


def _refuse_unreadable(paths: list[str], readable: np.ndarray) -> None:
    """Raises a DataError naming the files with no prediction (``readable`` False): a score
    over the other files would pass for one over all of them."""
    unreadable = [p for p, ok in zip(paths, readable, strict=True) if not ok]
    if unreadable:
        raise DataError(f"score: {len(unreadable)} of {len(paths)} image(s) could not be "
                        f"read ({', '.join(unreadable[:3])}"
                        f"{', ...' if len(unreadable) > 3 else ''}), so have no prediction; "
                        "remove or replace them and score again")


def _with_schema() -> inspect.Signature:
    base = inspect.signature(_ImageEstimator.__init__)
    extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                               annotation=annotation) for name, default, annotation in
             (("schema", None, "str | None"), ("task", "fractions", "str"))]
    return base.replace(parameters=[*base.parameters.values(), *extra])


ImageRegressor.__init__.__signature__ = _with_schema()  # type: ignore[attr-defined]
