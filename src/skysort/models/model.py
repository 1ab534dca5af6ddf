"""The classifier: a backbone, a head, and the task's output layer; saved as safetensors.

``model.safetensors`` holds every tensor (backbone and head), so a run directory is
self-contained; ``model.json`` describes it: task and classes, backbone name and the
identity of its starting weights, preprocessing, head, and the skysort version.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from skysort.data.transforms import Preprocess
from skysort.errors import RunError
from skysort.models.backbones import create_backbone
from skysort.tasks import Task, task_from_dict

MODEL_FILE = "model.safetensors"
MODEL_JSON = "model.json"


class SkyModel(nn.Module):
    """Backbone -> dropout + linear head -> logits; :meth:`predict` adds the output layer."""

    def __init__(self, backbone: nn.Module, num_features: int, task: Task,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(num_features, task.num_outputs))
        self.output = task.output_layer()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Published outputs (e.g. class probabilities) for a batch of images."""
        return self.output(self.forward(images))


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
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from skysort import __version__

        return {
            "skysort_version": __version__,
            "task": self.task.to_dict(),
            "backbone": {"name": self.backbone, "weights_id": self.weights_id,
                         "num_features": self.num_features, "frozen": self.frozen_backbone},
            "preprocess": self.preprocess.to_dict(),
            "head": {"kind": "linear", "dropout": self.dropout},
            "source": {"id_column": self.id_column, "target_columns": self.target_columns},
            "threshold": self.threshold,
            **self.extra,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
        known = {"skysort_version", "task", "backbone", "preprocess", "head", "source",
                 "threshold"}
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
            extra={k: v for k, v in data.items() if k not in known},
        )


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` via a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_model(model: SkyModel, info: ModelInfo, run_dir: str | Path) -> None:
    """Writes ``model.safetensors`` and ``model.json`` into ``run_dir`` (atomically)."""
    from safetensors.torch import save

    run_dir = Path(run_dir)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write_bytes(run_dir / MODEL_FILE, save(state))
    atomic_write_bytes(run_dir / MODEL_JSON,
                       json.dumps(info.to_dict(), indent=2).encode("utf-8"))


def read_model_info(run_dir: str | Path) -> ModelInfo:
    """Reads ``model.json`` from a run directory."""
    path = Path(run_dir) / MODEL_JSON
    if not path.is_file():
        raise RunError(
            f"{Path(run_dir)}: not a skysort run directory ({MODEL_JSON} is missing); "
            "pass the folder that `skysort train` printed, e.g. runs/train"
        )
    try:
        return ModelInfo.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (KeyError, TypeError, ValueError) as exc:
        raise RunError(f"{path}: damaged or from an incompatible version ({exc})") from exc


def load_model(run_dir: str | Path) -> tuple[SkyModel, ModelInfo]:
    """Rebuilds the model saved in ``run_dir``, in eval mode on the CPU."""
    from safetensors.torch import load_file

    info = read_model_info(run_dir)
    weights = Path(run_dir) / MODEL_FILE
    if not weights.is_file():
        raise RunError(f"{weights}: weights file missing; the run may not have finished")
    backbone = create_backbone(info.backbone, weights="none",
                               input_size=info.preprocess.input_size)
    model = SkyModel(backbone.model, info.num_features, info.task, dropout=info.dropout)
    model.load_state_dict(load_file(str(weights)))
    return model.eval(), info
