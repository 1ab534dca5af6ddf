"""skysort: train, evaluate and apply image classifiers for survey images.

The Python API does everything the ``skysort`` command does::

    result = skysort.train("DATA")              # -> TrainResult(run_dir, metrics, ...)
    metrics = skysort.evaluate(result.run_dir)  # test split, beside the baseline
    skysort.predict(result.run_dir, ["IMAGES/"], "predictions.csv")
    model = skysort.Predictor.load(result.run_dir)
    model.predict_proba(paths)                  # columns follow model.classes_
"""

from __future__ import annotations

import importlib
import os

# OpenMP threads that wait for work sleep instead of spinning: with another busy process
# on the machine, spinning threads made a training step 2.7x slower on 2 cores, sleeping
# ones 2x (the share of the cores lost), and on an idle machine it costs nothing
# measurable. It takes effect only when skysort is imported before torch (as the
# ``skysort`` command is), and a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from typing import TYPE_CHECKING, Any

from skysort._version import __version__
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

#: Public names and the modules that define them, imported when first used: labelling
#: images with ONNX Runtime needs neither torch nor timm, and starts in a fraction of the
#: time they take to import.
_LAZY = {
    "ImageClassifier": "skysort.classifier",
    "ImageRegressor": "skysort.classifier",
    "TrainConfig": "skysort.config",
    "load_image": "skysort.data.images",
    "LabeledImages": "skysort.data.sources",
    "suggest": "skysort.active.suggest",
    "serve_labelling": "skysort.labelling.server",
    "read_class_folders": "skysort.data.sources",
    "Preprocess": "skysort.data.transforms",
    "create_transform": "skysort.data.transforms",
    "evaluate": "skysort.evaluation.evaluator",
    "classification_metrics": "skysort.tasks.multiclass",
    "format_metrics": "skysort.evaluation.metrics",
    "find_similar": "skysort.inspection.similar",
    "inspect": "skysort.inspection.inspector",
    "create_backbone": "skysort.models.backbones",
    "list_backbones": "skysort.models.backbones",
    "Predictor": "skysort.prediction.predictor",
    "predict": "skysort.prediction.predictor",
    "TrainResult": "skysort.training.recipe",
    "train": "skysort.training.recipe",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'skysort' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from skysort.active.suggest import suggest
    from skysort.classifier import ImageClassifier, ImageRegressor
    from skysort.config import TrainConfig
    from skysort.data.images import load_image
    from skysort.data.sources import LabeledImages, read_class_folders
    from skysort.data.transforms import Preprocess, create_transform
    from skysort.evaluation.evaluator import evaluate
    from skysort.evaluation.metrics import format_metrics
    from skysort.inspection.inspector import inspect
    from skysort.inspection.similar import find_similar
    from skysort.labelling.server import serve_labelling
    from skysort.models.backbones import create_backbone, list_backbones
    from skysort.prediction.predictor import Predictor, predict
    from skysort.tasks.multiclass import classification_metrics
    from skysort.training.recipe import TrainResult, train

__all__ = [
    "ConfigError",
    "DataError",
    "ImageClassifier",
    "ImageError",
    "ImageRegressor",
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
    "create_transform",
    "evaluate",
    "find_similar",
    "format_metrics",
    "inspect",
    "list_backbones",
    "load_image",
    "predict",
    "read_class_folders",
    "serve_labelling",
    "suggest",
    "train",
]
