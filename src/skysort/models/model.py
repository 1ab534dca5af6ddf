"""The classifier: a backbone, a head, and the task's output layer; saved as safetensors.

``model.safetensors`` holds every tensor (backbone and head), so a run directory is
self-contained; ``model.json`` describes it: task and classes, backbone name and the
identity of its starting weights, preprocessing, head, and the skysort version.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from skysort.models.backbones import create_backbone
from skysort.models.info import ModelInfo, read_model_info
from skysort.rundir import (
    MODEL_FILE,
    MODEL_JSON,
    atomic_write,
    load_weights,
    read_safetensors,
    require,
)
from skysort.tasks import Task

__all__ = ["ModelInfo", "Published", "SkyModel", "load_model", "published_runner",
           "read_model_info", "save_model"]


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


def save_model(model: SkyModel, info: ModelInfo, run_dir: str | Path) -> None:
    """Writes ``model.safetensors`` and ``model.json`` into ``run_dir`` (atomically)."""
    from safetensors.torch import save

    run_dir = Path(run_dir)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(run_dir / MODEL_FILE, save(state))
    atomic_write(run_dir / MODEL_JSON, json.dumps(info.to_dict(), indent=2).encode("utf-8"))


def load_model(run_dir: str | Path) -> tuple[SkyModel, ModelInfo]:
    """Rebuilds the model saved in ``run_dir``, in eval mode on the CPU.

    Raises:
        RunError: a file is missing, damaged, a pickle, or the weights do not fit the
            model ``model.json`` describes.
    """
    info = read_model_info(run_dir)
    weights = require(run_dir, MODEL_FILE)
    state, _ = read_safetensors(weights)
    backbone = create_backbone(info.backbone, weights="none",
                               input_size=info.preprocess.input_size)
    model = SkyModel(backbone.model, info.num_features, info.task, dropout=info.dropout)
    load_weights(model, state, weights)
    return model.eval(), info


class Published(nn.Module):
    """A classifier with its output layer: images in, published outputs out."""

    def __init__(self, model: SkyModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.output(self.model(images))


def published_runner(model: SkyModel, device: torch.device | str = "cpu"
                     ) -> Callable[[np.ndarray], np.ndarray]:
    """The model's published outputs as a function of a float32 NCHW array (torch)."""
    from skysort.models.embeddings import torch_runner

    run = torch_runner(Published(model), device)
    return lambda images: run(torch.from_numpy(images))
