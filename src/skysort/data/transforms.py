"""The only place where images become model inputs.

:class:`Preprocess` holds what a backbone expects (input size, resize ratio, interpolation,
mean and std). It comes from the backbone's pretrained config (timm's ``pretrained_cfg``),
is saved with every model, and is the one definition that training, evaluation,
prediction and export all use, so they can never preprocess differently.

The evaluation path is timm's: resize the shorter side to ``input_size / crop_pct``, take
the centre ``input_size`` square, scale to [0, 1], normalise by mean and std. It is done in
Pillow and NumPy so worker processes need no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from skysort.data.images import load_image
from skysort.errors import ConfigError

_INTERPOLATIONS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}

#: Pillow's reducing_gap: downscale by an integer factor first when the image is at least
#: this many times larger than the target, then resample. Much faster on large images and
#: visually indistinguishable from a single resample (Pillow documents 3.0 as such).
REDUCING_GAP = 3.0


@dataclass(frozen=True)
class Preprocess:
    """How an image is turned into a normalised ``(3, input_size, input_size)`` array."""

    input_size: int = 224
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    _scale: np.ndarray = field(init=False, repr=False, compare=False)
    _shift: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.input_size < 16:
            raise ConfigError(f"input_size {self.input_size} is too small; use at least 16")
        if not 0.1 <= self.crop_pct <= 1.0:
            raise ConfigError(f"crop_pct {self.crop_pct} must lie in [0.1, 1.0]")
        if self.interpolation not in _INTERPOLATIONS:
            raise ConfigError(
                f"interpolation {self.interpolation!r} is not one of {sorted(_INTERPOLATIONS)}"
            )
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        std = np.asarray(self.std, dtype=np.float32)
        mean = np.asarray(self.mean, dtype=np.float32)
        # (x / 255 - mean) / std == x * scale + shift, one fused multiply-add per pixel.
        object.__setattr__(self, "_scale", (1.0 / (255.0 * std)).reshape(3, 1, 1))
        object.__setattr__(self, "_shift", (-mean / std).reshape(3, 1, 1))

    @property
    def resize_size(self) -> int:
        """The shorter side after resizing, before the centre crop."""
        return math.floor(self.input_size / self.crop_pct)

    @classmethod
    def from_pretrained_cfg(cls, cfg: Mapping[str, Any], input_size: int | None = None
                            ) -> Preprocess:
        """Builds the preprocessing a timm backbone was trained with.

        Args:
            cfg: timm's ``pretrained_cfg`` (or any mapping with its keys).
            input_size: overrides the backbone's native input size.
        """
        size = cfg.get("input_size", (3, 224, 224))
        return cls(
            input_size=int(input_size or size[-1]),
            crop_pct=float(cfg.get("crop_pct", 0.875)),
            interpolation=str(cfg.get("interpolation", "bicubic")),
            mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
            std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly description (saved in ``model.json`` and ONNX metadata)."""
        out = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        out["mean"], out["std"] = list(self.mean), list(self.std)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocess:
        known = {"input_size", "crop_pct", "interpolation", "mean", "std"}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(
                f"unknown preprocessing keys {sorted(unknown)}; valid: {sorted(known)}")
        defaults = cls()
        return cls(
            input_size=int(data.get("input_size", defaults.input_size)),
            crop_pct=float(data.get("crop_pct", defaults.crop_pct)),
            interpolation=str(data.get("interpolation", defaults.interpolation)),
            mean=tuple(data.get("mean", defaults.mean)),
            std=tuple(data.get("std", defaults.std)),
        )

    # -- the pipeline -----------------------------------------------------------------

    def resize_crop(self, img: Image.Image) -> Image.Image:
        """Resizes the shorter side to :attr:`resize_size` and takes the centre square."""
        width, height = img.size
        short = self.resize_size
        # Integer truncation of the long side, exactly as torchvision's Resize.
        if width <= height:
            new_w, new_h = short, int(height * short / width)
        else:
            new_w, new_h = int(width * short / height), short
        if (new_w, new_h) != (width, height):
            img = img.resize((new_w, new_h), _INTERPOLATIONS[self.interpolation],
                             reducing_gap=REDUCING_GAP)
        left = (new_w - self.input_size) // 2
        top = (new_h - self.input_size) // 2
        if (left, top, new_w, new_h) != (0, 0, self.input_size, self.input_size):
            img = img.crop((left, top, left + self.input_size, top + self.input_size))
        return img

    def normalize(self, img: Image.Image | np.ndarray) -> np.ndarray:
        """An RGB image (H, W, 3) uint8 -> float32 (3, H, W), scaled and normalised."""
        arr = np.asarray(img, dtype=np.float32).transpose(2, 0, 1)
        return arr * self._scale + self._shift

    def __call__(self, img: Image.Image) -> np.ndarray:
        """The evaluation transform: resize, centre crop, normalise."""
        return self.normalize(self.resize_crop(img))

    def load(self, path: str | Path) -> np.ndarray:
        """Decodes a file and applies the evaluation transform.

        Large JPEGs are decoded in draft mode at the smallest scale that still covers
        :attr:`resize_size`, which the resize would throw away anyway.
        """
        return self(load_image(path, min_size=self.resize_size))
