"""skysort: train, evaluate and apply image classifiers for survey images.

The Python API does everything the ``skysort`` command does::

    result = skysort.train("DATA")              # -> TrainResult(run_dir, metrics, ...)
    metrics = skysort.evaluate(result.run_dir)  # test split, beside the baseline
    skysort.predict(result.run_dir, ["IMAGES/"], "predictions.csv")
    model = skysort.Predictor.load(result.run_dir)
    model.predict_proba(paths)                  # columns follow model.classes_
"""

from __future__ import annotations

__version__ = "0.1.0"

from skysort.classifier import ImageClassifier
from skysort.config import TrainConfig
from skysort.data.images import load_image
from skysort.data.sources import LabeledImages, read_class_folders
from skysort.data.transforms import Preprocess
from skysort.errors import (
    ConfigError,
    DataError,
    ImageError,
    LabelError,
    ModelError,
    NotFittedError,
    RunError,
    SkySortError,
)
from skysort.evaluate import evaluate
from skysort.metrics import classification_metrics, format_metrics
from skysort.models.backbones import create_backbone, list_backbones
from skysort.predict import Predictor, predict
from skysort.train import TrainResult, train

__all__ = [
    "ConfigError",
    "DataError",
    "ImageClassifier",
    "ImageError",
    "LabelError",
    "LabeledImages",
    "ModelError",
    "NotFittedError",
    "Predictor",
    "Preprocess",
    "RunError",
    "SkySortError",
    "TrainConfig",
    "TrainResult",
    "__version__",
    "classification_metrics",
    "create_backbone",
    "evaluate",
    "format_metrics",
    "list_backbones",
    "load_image",
    "predict",
    "read_class_folders",
    "train",
]
