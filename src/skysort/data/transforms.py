"""The only place where images become model inputs, for training and for everything else.

:class:`Preprocess` holds what a backbone expects (input size, resize ratio, interpolation,
mean and std) plus an optional centre cut of the raw image (``center_fraction``: 0.5 turns
a 424 px Galaxy Zoo image into its central 212 px). It comes from the backbone's
pretrained config (timm's ``pretrained_cfg``), is saved with every model, and is the one
definition that training, evaluation, prediction and export all use.

The evaluation path is timm's: resize the shorter side to ``input_size / crop_pct``, take
the centre ``input_size`` square, scale to [0, 1], normalise by mean and std. It runs in
Pillow and NumPy so worker processes need no torch.

Training reads each file's resized pixels (:class:`TrainPixels`, through the pixel cache,
so a file is decoded once per run, not once per epoch) and augments whole batches in the
training process with a preset of :data:`AUGMENT_PRESETS` (``sky``, ``photo``, ``none``;
:mod:`skysort.data.augment`).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
from collections.abc import Container, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
from PIL import Image

from skysort.data.images import file_digest, load_image
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

AUGMENT_PRESETS = ("sky", "photo", "none")

#: The square input sizes, in pixels, a model may be trained at: the one bound of the
#: ``input_size`` setting (``TrainConfig``, ``--input-size``), whose top also bounds every
#: :class:`Preprocess` (one built in code may be smaller: tests transform 16 px squares).
INPUT_SIZES = range(32, 2049)


def check_input_size(size: int) -> int:
    """``size``, or a ConfigError when it lies outside :data:`INPUT_SIZES`."""
    if size not in INPUT_SIZES:
        raise ConfigError(f"input_size={size}: use {INPUT_SIZES[0]} to {INPUT_SIZES[-1]} "
                          "pixels")
    return size


@dataclass(frozen=True)
class Preprocess:
    """How an image is turned into a normalised ``(3, input_size, input_size)`` array."""

    input_size: int = 224
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    center_fraction: float = 1.0
    _scale: np.ndarray = field(init=False, repr=False, compare=False)
    _shift: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 < self.input_size <= INPUT_SIZES[-1]:
            raise ConfigError(f"input_size {self.input_size}: a preprocessing square must be "
                              f"1 to {INPUT_SIZES[-1]} pixels")
        if not 0.1 <= self.crop_pct <= 1.0:
            raise ConfigError(f"crop_pct {self.crop_pct} must lie in [0.1, 1.0]")
        if not 0.05 <= self.center_fraction <= 1.0:
            raise ConfigError(f"center_fraction {self.center_fraction} must lie in [0.05, 1]")
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
    def from_pretrained_cfg(cls, cfg: Mapping[str, Any], input_size: int | None = None,
                            center_fraction: float = 1.0) -> Preprocess:
        """Builds the preprocessing a timm backbone was trained with.

        Args:
            cfg: timm's ``pretrained_cfg`` (or any mapping with its keys).
            input_size: overrides the backbone's native input size.
            center_fraction: keep only this central fraction of each raw image.
        """
        size = cfg.get("input_size", (3, 224, 224))
        return cls(
            input_size=int(input_size or size[-1]),
            crop_pct=float(cfg.get("crop_pct", 0.875)),
            interpolation=str(cfg.get("interpolation", "bicubic")),
            mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
            std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
            center_fraction=center_fraction,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly description (saved in ``model.json`` and ONNX metadata)."""
        out = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        out["mean"], out["std"] = list(self.mean), list(self.std)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocess:
        known = {"input_size", "crop_pct", "interpolation", "mean", "std", "center_fraction"}
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
            center_fraction=float(data.get("center_fraction", defaults.center_fraction)),
        )

    # -- the pipeline -----------------------------------------------------------------

    def center_cut(self, img: Image.Image) -> Image.Image:
        """The central ``center_fraction`` of the raw image (all of it by default)."""
        if self.center_fraction >= 1.0:
            return img
        width, height = img.size
        w, h = max(1, round(width * self.center_fraction)), max(1, round(height *
                                                                       self.center_fraction))
        left, top = (width - w) // 2, (height - h) // 2
        return img.crop((left, top, left + w, top + h))

    def resize(self, img: Image.Image, short: int | None = None) -> Image.Image:
        """Resizes the shorter side to ``short`` (default :attr:`resize_size`)."""
        width, height = img.size
        short = short or self.resize_size
        # Integer truncation of the long side, exactly as torchvision's Resize.
        if width <= height:
            new_w, new_h = short, int(height * short / width)
        else:
            new_w, new_h = int(width * short / height), short
        if (new_w, new_h) == (width, height):
            return img
        return img.resize((new_w, new_h), _INTERPOLATIONS[self.interpolation],
                          reducing_gap=REDUCING_GAP)

    def crop_center(self, img: Image.Image) -> Image.Image:
        """The centre ``input_size`` square."""
        width, height = img.size
        left, top = (width - self.input_size) // 2, (height - self.input_size) // 2
        if (left, top, width, height) == (0, 0, self.input_size, self.input_size):
            return img
        return img.crop((left, top, left + self.input_size, top + self.input_size))

    def resize_crop(self, img: Image.Image) -> Image.Image:
        """Centre cut, resize of the shorter side to :attr:`resize_size`, centre square."""
        return self.crop_center(self.resize(self.center_cut(img)))

    def normalize(self, img: Image.Image | np.ndarray) -> np.ndarray:
        """An RGB image (H, W, 3) uint8 -> float32 (3, H, W), scaled and normalised."""
        arr = np.asarray(img, dtype=np.float32).transpose(2, 0, 1)
        return arr * self._scale + self._shift

    def normalize_batch(self, batch: np.ndarray) -> np.ndarray:
        """A batch of RGB images (N, H, W, 3) uint8 -> float32 (N, 3, H, W); the same
        values as :meth:`normalize`, a channel at a time (twice as fast as converting
        the whole batch and then scaling it)."""
        n, h, w, _ = batch.shape
        out = np.empty((n, 3, h, w), dtype=np.float32)
        for c in range(3):
            np.multiply(batch[..., c], self._scale[c, 0, 0], out=out[:, c], dtype=np.float32)
            out[:, c] += self._shift[c, 0, 0]
        return out

    def __call__(self, img: Image.Image) -> np.ndarray:
        """The evaluation transform of an image already decoded: resize, centre crop,
        normalise (files go through :func:`create_transform`)."""
        return self.normalize(self.resize_crop(img))

    def decode(self, path: str | Path) -> Image.Image:
        """Decodes a file; a large JPEG is decoded in draft mode at the smallest scale
        that still covers what the resize keeps."""
        need = math.ceil(self.resize_size / self.center_fraction)
        return load_image(path, min_size=need)

    def pixel_file(self, digest: str, cache_dir: str | Path) -> Path:
        """The pixel cache entry of the file whose content hash is ``digest``: its name
        is keyed by the content and by what of this preprocessing shapes the pixels."""
        spec = f"{digest}|{self.resize_size}|{self.center_fraction}|{self.interpolation}"
        return Path(cache_dir) / f"{hashlib.sha256(spec.encode()).hexdigest()[:40]}.npy"

    def resized(self, path: str | Path, cache_dir: str | Path | None = None) -> Image.Image:
        """The decoded image, centre-cut and resized to :attr:`resize_size` (not cropped).

        Training reads every image once per epoch; for a large file (a photograph of many
        megapixels) decoding costs far more than the model spends on its crop, so with
        ``cache_dir`` the resized pixels are kept there as ``.npy`` (keyed by the file's
        content and the preprocessing) and read instead of decoding the file again; each
        read refreshes the entry's modification time, which eviction goes by.
        """
        path = Path(path)
        file = None
        if cache_dir is not None:
            file = self.pixel_file(file_digest(path), cache_dir)
            try:
                cached = Image.fromarray(np.load(file, allow_pickle=False))
            except (OSError, ValueError):  # not cached yet, or a damaged entry: decode
                pass
            else:
                touch(file)
                return cached
        img = self.resize(self.center_cut(self.decode(path)))
        if file is not None:  # whole or not at all, whoever else writes the same entry
            tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
            try:
                file.parent.mkdir(parents=True, exist_ok=True)
                with open(tmp, "wb") as fh:
                    np.save(fh, np.asarray(img))
                os.replace(tmp, file)
            except OSError:  # a full disk or a read-only cache: the image is still good
                with contextlib.suppress(OSError):
                    tmp.unlink(missing_ok=True)
        return img


def touch(file: Path) -> None:
    """Records that a pixel cache entry was just used: its modification time is what
    :func:`evict_pixel_cache` goes by (access times are often not kept: noatime,
    relatime). An entry that vanished meanwhile, or a read-only cache, is no error."""
    with contextlib.suppress(OSError):
        os.utime(file)


def evict_pixel_cache(folder: str | Path, max_bytes: float, keep: Container[str] = ()
                      ) -> tuple[int, int]:
    """Removes pixel cache entries of ``folder``, least recently used first, until the
    ``.npy`` files there total at most ``max_bytes``; never one named in ``keep`` (the
    entries of the data in use). Other processes may read, write and evict at once: an
    entry that vanishes is counted as gone, and one removed while in use is decoded again
    by its reader. Returns ``(entries removed, bytes removed)``."""
    total, others = 0, []
    for file in Path(folder).glob("*.npy"):
        try:
            stat = file.stat()
        except OSError:  # evicted by another process meanwhile
            continue
        total += stat.st_size
        if file.name not in keep:
            others.append((stat.st_mtime, file.name, stat.st_size, file))
    removed = freed = 0
    for _, _, size, file in sorted(others):
        if total <= max_bytes:
            break
        try:
            file.unlink(missing_ok=True)
        except OSError:  # cannot be removed (permissions): still there
            continue
        total -= size
        removed, freed = removed + 1, freed + size
    return removed, freed


@dataclass(frozen=True)
class EvalTransform:
    """The evaluation transform of a file: decode, centre cut, resize, centre crop,
    normalise; through the resized-pixel cache when ``cache_dir`` is given.

    :meth:`pixels` and :meth:`normalize_batch` are its two halves, for worker processes
    that pass uint8 crops (4x smaller than float32) and normalise a whole batch at once.
    """

    preprocess: Preprocess
    cache_dir: str | None = None

    def pixels(self, path: str | Path) -> np.ndarray:
        """The uint8 ``(H, W, 3)`` crop the model sees, before normalising."""
        pre = self.preprocess
        return np.asarray(pre.crop_center(pre.resized(path, self.cache_dir)))

    def normalize_batch(self, batch: np.ndarray) -> np.ndarray:
        """uint8 crops ``(N, H, W, 3)`` -> the model's float32 input ``(N, 3, H, W)``."""
        return self.preprocess.normalize_batch(batch)

    def __call__(self, path: str | Path) -> np.ndarray:
        return self.preprocess.normalize(self.pixels(path))


@dataclass(frozen=True)
class TrainPixels:
    """What training augments: the uint8 ``(S, S, 3)`` centre square of the resized image
    (``S`` = :attr:`Preprocess.resize_size`), through the pixel cache when ``cache_dir``
    is given, so that every epoch after the first decodes nothing. Called with
    ``(path, (epoch, index))`` like any training transform; the augmentation itself runs
    on whole batches in the training process (:class:`skysort.data.augment.BatchAugment`).
    """

    preprocess: Preprocess
    cache_dir: str | None = None

    def __call__(self, path: str | Path, key: tuple[int, int] = (0, 0)) -> np.ndarray:
        pre = self.preprocess
        img = pre.resized(path, self.cache_dir)
        side = pre.resize_size
        width, height = img.size
        left, top = (width - side) // 2, (height - side) // 2
        if (left, top) != (0, 0) or (width, height) != (side, side):
            img = img.crop((left, top, left + side, top + side))
        return np.asarray(img)


@overload
def create_transform(preprocess: Preprocess, *, training: Literal[False] = False,
                     cache_dir: str | Path | None = None) -> EvalTransform: ...


@overload
def create_transform(preprocess: Preprocess, *, training: Literal[True],
                     cache_dir: str | Path | None = None) -> TrainPixels: ...


def create_transform(preprocess: Preprocess, *, training: bool = False,
                     cache_dir: str | Path | None = None) -> EvalTransform | TrainPixels:
    """The one factory of file -> model input transforms (as timm's ``create_transform``).

    Args:
        preprocess: what the backbone expects (saved with every model).
        training: the pixels training augments (uint8 squares, called with ``(path,
            (epoch, index))``; :class:`skysort.data.augment.BatchAugment` augments and
            normalises them) instead of the evaluation transform (called with a path).
        cache_dir: the pixel cache: the resized pixels of each file are kept there, keyed
            by the file's content and the preprocessing, and read instead of decoding.
    """
    folder = None if cache_dir is None else str(cache_dir)
    if training:
        return TrainPixels(preprocess, folder)
    return EvalTransform(preprocess, folder)


def tta_views(images: np.ndarray, preset: str) -> list[np.ndarray]:
    """Test-time augmentation views of a normalised batch ``(n, 3, h, w)``: the eight
    rotations and flips of a square for ``sky``, the image and its mirror otherwise."""
    if preset == "sky":
        views = [np.rot90(images, k, axes=(2, 3)) for k in range(4)]
        views += [v[..., ::-1] for v in views]
    else:
        views = [images, images[..., ::-1]]
    return [np.ascontiguousarray(v) for v in views]
