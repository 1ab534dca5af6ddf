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
    damaged,
    load_weights,
    read_safetensors,
    require,
)
from skysort.tasks import Task
from skysort.tasks.calibration import Calibration

__all__ = ["ModelInfo", "Published", "SkyModel", "load_model", "published_runner",
           "read_model_info", "save_model"]


class SkyModel(nn.Module):
    """Backbone -> dropout + linear head -> logits; :meth:`predict` adds the output layer
    (after the calibration, when the model has one)."""

    def __init__(self, backbone: nn.Module, num_features: int, task: Task,
                 dropout: float = 0.0, calibration: Calibration | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(num_features, task.num_outputs))
        self.task = task
        #: The task's output layer without calibration.
        self.uncalibrated = task.output_layer()
        self.output: nn.Module = self.uncalibrated
        self.calibrate(calibration)

    def calibrate(self, calibration: Calibration | None) -> None:
        """Puts ``calibration`` (None or the identity: none) before the output layer."""
        if calibration is not None and len(calibration.scale) != self.task.num_outputs:
            raise ValueError(f"a calibration of {len(calibration.scale)} outputs does not fit "
                             f"a model of {self.task.num_outputs}")
        self.output = self.uncalibrated if calibration is None or calibration.is_identity \
            else self.task.calibrated_output(self.uncalibrated, calibration)

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
                               input_size=info.preprocess.input_size,
                               in_chans=info.preprocess.channels, fits=info.preprocess.fits)
    model = SkyModel(backbone.model, info.num_features, info.task, dropout=info.dropout)
    load_weights(model, state, weights)
    try:
        model.calibrate(info.calibration)
    except ValueError as exc:
        raise damaged(require(run_dir, MODEL_JSON), exc) from exc
    return model.eval(), info


#: What a model run over images returns: the published outputs (calibrated), the logits,
#: or the calibrated and the uncalibrated outputs side by side (``2 * num_outputs``).
OUTPUT_KINDS = ("published", "logits", "both")


def head_outputs(model: SkyModel, logits: torch.Tensor, which: str = "published") -> torch.Tensor:
    """Logits -> outputs of ``which`` (one of :data:`OUTPUT_KINDS`)."""
    if which == "logits":
        return logits
    if which == "both":
        return torch.cat([model.output(logits), model.uncalibrated(logits)], dim=1)
    return model.output(logits)


class Published(nn.Module):
    """A classifier with its output layer: images in, published outputs out (or another
    of :data:`OUTPUT_KINDS`)."""

    def __init__(self, model: SkyModel, which: str = "published") -> None:
        super().__init__()
        self.model = model
        self.which = which

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return head_outputs(self.model, self.model(images), self.which)


def published_runner(model: SkyModel, device: torch.device | str = "cpu",
                     which: str = "published") -> Callable[[np.ndarray], np.ndarray]:
    """The model's outputs of ``which`` as a function of a float32 NCHW array (torch; ``C``
    = the channels of the model's preprocessing)."""
    from skysort.models.streaming import torch_runner

    run = torch_runner(Published(model, which), device)
    return lambda images: run(torch.from_numpy(images))
