"""What a saved model is, without the model: ``model.json`` read and written.

Kept apart from the torch model (:mod:`skysort.models.model`) so that labelling images
with an exported model, which needs only this description, never imports torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skysort._version import __version__
from skysort.data.transforms import Preprocess
from skysort.models.conformal import ConformalScores
from skysort.rundir import MODEL_FILE, MODEL_JSON, damaged, require
from skysort.tasks import Task, task_from_dict
from skysort.tasks.calibration import Calibration

__all__ = ["MODEL_FILE", "MODEL_JSON", "ModelInfo", "read_model_info"]


@dataclass
class ModelInfo:
    """What ``model.json`` says about a saved model."""

    task: Task
    backbone: str
    weights_id: str
    num_features: int
    preprocess: Preprocess
    dropout: float = 0.0
    frozen_backbone: bool = True
    id_column: str | None = None
    target_columns: list[str] = field(default_factory=list)
    threshold: float = 0.5
    #: How the logits are calibrated (fitted on the validation split after training).
    calibration: Calibration | None = None
    #: The validation split's conformity scores per class, for prediction sets
    #: (:mod:`skysort.models.conformal`; computed by :mod:`skysort.evaluation.conformal`).
    conformal: ConformalScores | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "skysort_version": __version__,
            "task": self.task.to_dict(),
            "backbone": {"name": self.backbone, "weights_id": self.weights_id,
                         "num_features": self.num_features, "frozen": self.frozen_backbone},
            "preprocess": self.preprocess.to_dict(),
            "head": {"kind": "linear", "dropout": self.dropout},
            "source": {"id_column": self.id_column, "target_columns": self.target_columns},
            "threshold": self.threshold,
            **({"calibration": self.calibration.to_dict()} if self.calibration else {}),
            **({"conformal": self.conformal.to_dict()} if self.conformal is not None else {}),
            **self.extra,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
        known = {"skysort_version", "task", "backbone", "preprocess", "head", "source",
                 "threshold", "calibration", "conformal"}
        source = data.get("source", {})
        return cls(
            task=task_from_dict(data["task"]),
            backbone=data["backbone"]["name"],
            weights_id=data["backbone"]["weights_id"],
            num_features=int(data["backbone"]["num_features"]),
            frozen_backbone=bool(data["backbone"].get("frozen", True)),
            preprocess=Preprocess.from_dict(data["preprocess"]),
            dropout=float(data.get("head", {}).get("dropout", 0.0)),
            id_column=source.get("id_column"),
            target_columns=list(source.get("target_columns", [])),
            threshold=float(data.get("threshold", 0.5)),
            calibration=(Calibration.from_dict(data["calibration"])
                         if data.get("calibration") else None),
            conformal=(ConformalScores.from_dict(data["conformal"])
                       if data.get("conformal") else None),
            extra={k: v for k, v in data.items() if k not in known},
        )


def read_model_info(run_dir: str | Path) -> ModelInfo:
    """Reads ``model.json`` from a run directory."""
    path = require(run_dir, MODEL_JSON)
    try:
        return ModelInfo.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (KeyError, TypeError, ValueError) as exc:
        raise damaged(path, exc) from exc
