"""The only place where images become model inputs, for training and for everything else.

:class:`Preprocess` holds what a backbone expects (input size, resize ratio, interpolation,
mean and std) plus an optional centre cut of the raw image (``center_fraction``: 0.5 turns
a 424 px Galaxy Zoo image into its central 212 px). It comes from the backbone's
pretrained config (timm's ``pretrained_cfg``), is saved with every model, and is the one
definition that training, evaluation, prediction and export all use. Its ``fits``
(:class:`~skysort.data.fits.FitsDecode`) says how FITS files become pixels: one RGB
composite, or with ``channels="all"`` every band (``C`` channels, held as uint8 ``(H, W, C)``
arrays, each resized as its own Pillow ``L`` image: what Pillow does to each band of RGB).

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
import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
from PIL import Image

from skysort.data.fits_decode import FitsDecode
from skysort.data.images import file_digest, load_image, load_pixels
from skysort.data.pixels import (
    INTERPOLATIONS,
    REDUCING_GAP,
    Pixels,
    crop,
    pixels_size,
    resize_channels,
    touch,
)
from skysort.data.pixels import evict_pixel_cache as evict_pixel_cache  # re-exported
from skysort.errors import ConfigError

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
    """How an image is turned into a normalised ``(C, input_size, input_size)`` array
    (``C`` = :attr:`channels`: 3 but for FITS bands with ``fits.channels="all"``).

    ``mean`` and ``std`` hold one value per channel; three given for another channel
    count are extended: every channel past the third gets the mean of the three (fewer
    than three channels: each gets it), a neutral start for bands ImageNet never saw.
    """

    input_size: int = 224
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    center_fraction: float = 1.0
    fits: FitsDecode = field(default_factory=FitsDecode)
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
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(
                f"interpolation {self.interpolation!r} is not one of {sorted(INTERPOLATIONS)}"
            )
        for name in ("mean", "std"):
            object.__setattr__(self, name, _per_channel(name, getattr(self, name),
                                                        self.channels))
        std = np.asarray(self.std, dtype=np.float32)
        mean = np.asarray(self.mean, dtype=np.float32)
        # (x / 255 - mean) / std == x * scale + shift, one fused multiply-add per pixel.
        object.__setattr__(self, "_scale", (1.0 / (255.0 * std)).reshape(-1, 1, 1))
        object.__setattr__(self, "_shift", (-mean / std).reshape(-1, 1, 1))

    @property
    def channels(self) -> int:
        """The model's input channels (:attr:`FitsDecode.n_channels`)."""
        return self.fits.n_channels

    def with_fits(self, fits: FitsDecode) -> Preprocess:
        """This preprocessing with another FITS decoding; ``mean`` and ``std`` are its
        first three (RGB) values, extended to the new channel count as the class says."""
        return replace(self, fits=fits, mean=(self.mean * 3)[:3], std=(self.std * 3)[:3])

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
        out["fits"] = self.fits.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocess:
        known = {"input_size", "crop_pct", "interpolation", "mean", "std", "center_fraction",
                 "fits"}
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
            fits=FitsDecode.from_dict(data["fits"]) if data.get("fits") else FitsDecode(),
        )

    # -- the pipeline -----------------------------------------------------------------

    def center_cut(self, img: Pixels) -> Pixels:
        """The central ``center_fraction`` of the raw image (all of it by default)."""
        if self.center_fraction >= 1.0:
            return img
        width, height = pixels_size(img)
        w, h = max(1, round(width * self.center_fraction)), max(1, round(height *
                                                                       self.center_fraction))
        return crop(img, (width - w) // 2, (height - h) // 2, w, h)

    def resize(self, img: Pixels, short: int | None = None) -> Pixels:
        """Resizes the shorter side to ``short`` (default :attr:`resize_size`)."""
        width, height = pixels_size(img)
        short = short or self.resize_size
        # Integer truncation of the long side, exactly as torchvision's Resize.
        if width <= height:
            new_w, new_h = short, int(height * short / width)
        else:
            new_w, new_h = int(width * short / height), short
        if (new_w, new_h) == (width, height):
            return img
        if isinstance(img, np.ndarray):
            return resize_channels(img, (new_w, new_h), self.interpolation)
        return img.resize((new_w, new_h), INTERPOLATIONS[self.interpolation],
                          reducing_gap=REDUCING_GAP)

    def crop_center(self, img: Pixels) -> Pixels:
        """The centre ``input_size`` square."""
        width, height = pixels_size(img)
        left, top = (width - self.input_size) // 2, (height - self.input_size) // 2
        if (left, top, width, height) == (0, 0, self.input_size, self.input_size):
            return img
        return crop(img, left, top, self.input_size, self.input_size)

    def resize_crop(self, img: Pixels) -> Pixels:
        """Centre cut, resize of the shorter side to :attr:`resize_size`, centre square."""
        return self.crop_center(self.resize(self.center_cut(img)))

    def normalize(self, img: Image.Image | np.ndarray) -> np.ndarray:
        """An image (H, W, C) uint8 -> float32 (C, H, W), scaled and normalised."""
        arr = np.asarray(img, dtype=np.float32).transpose(2, 0, 1)
        return arr * self._scale + self._shift

    def normalize_batch(self, batch: np.ndarray) -> np.ndarray:
        """A batch of images (N, H, W, C) uint8 -> float32 (N, C, H, W); the same
        values as :meth:`normalize`, a channel at a time (twice as fast as converting
        the whole batch and then scaling it)."""
        n, h, w, channels = batch.shape
        if channels != self.channels:
            raise ValueError(f"a batch of {channels} channels for a model of {self.channels}")
        out = np.empty((n, channels, h, w), dtype=np.float32)
        for c in range(channels):
            np.multiply(batch[..., c], self._scale[c, 0, 0], out=out[:, c], dtype=np.float32)
            out[:, c] += self._shift[c, 0, 0]
        return out

    def __call__(self, img: Image.Image | np.ndarray) -> np.ndarray:
        """The evaluation transform of an image already decoded: resize, centre crop,
        normalise (files go through :func:`create_transform`)."""
        return self.normalize(self.resize_crop(img))

    def decode(self, path: str | Path) -> Image.Image | np.ndarray:
        """Decodes a file: an RGB image, or ``(H, W, C)`` pixels of another channel count;
        a large JPEG is decoded in draft mode at the smallest scale that still covers what
        the resize keeps."""
        need = math.ceil(self.resize_size / self.center_fraction)
        if self.fits.channels == "all" or self.channels != 3:
            pixels = load_pixels(path, min_size=need, fits=self.fits)
            return Image.fromarray(pixels) if pixels.shape[2] == 3 else pixels
        return load_image(path, min_size=need, fits=self.fits)

    def pixel_file(self, digest: str, cache_dir: str | Path) -> Path:
        """The pixel cache entry of the file whose content hash is ``digest``: its name
        is keyed by the content and by what of this preprocessing shapes the pixels."""
        fits = json.dumps(self.fits.to_dict(), sort_keys=True)
        spec = f"{digest}|{self.resize_size}|{self.center_fraction}|{self.interpolation}|{fits}"
        return Path(cache_dir) / f"{hashlib.sha256(spec.encode()).hexdigest()[:40]}.npy"

    def resized(self, path: str | Path, cache_dir: str | Path | None = None
                ) -> Image.Image | np.ndarray:
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
                cached = np.load(file, allow_pickle=False)
                if cached.ndim != 3 or cached.shape[2] != self.channels:
                    raise ValueError(f"{file}: pixels of shape {cached.shape}")
            except (OSError, ValueError):  # not cached yet, or a damaged entry: decode
                pass
            else:
                touch(file)
                return Image.fromarray(cached) if cached.shape[2] == 3 else cached
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


def _per_channel(name: str, values: tuple[float, ...], channels: int) -> tuple[float, ...]:
    """``values`` for ``channels`` channels (three: extended as :class:`Preprocess` says)."""
    values = tuple(float(v) for v in values)
    if len(values) == 3 and channels != 3:
        values = (values * (channels > 3) + (sum(values) / 3,) * channels)[:channels]
    if len(values) != channels:
        raise ConfigError(f"{name} has {len(values)} values for {channels} channels")
    return values


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
        """The uint8 ``(H, W, C)`` crop the model sees, before normalising."""
        pre = self.preprocess
        return np.asarray(pre.crop_center(pre.resized(path, self.cache_dir)))

    def normalize_batch(self, batch: np.ndarray) -> np.ndarray:
        """uint8 crops ``(N, H, W, C)`` -> the model's float32 input ``(N, C, H, W)``."""
        return self.preprocess.normalize_batch(batch)

    def __call__(self, path: str | Path) -> np.ndarray:
        return self.preprocess.normalize(self.pixels(path))


@dataclass(frozen=True)
class TrainPixels:
    """What training augments: the uint8 ``(S, S, C)`` centre square of the resized image
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
        width, height = pixels_size(img)
        left, top = (width - side) // 2, (height - side) // 2
        if (left, top) != (0, 0) or (width, height) != (side, side):
            img = crop(img, left, top, side, side)
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
    """Test-time augmentation views of a normalised batch ``(n, c, h, w)``: the eight
    rotations and flips of a square for ``sky``, the image and its mirror otherwise."""
    if preset == "sky":
        views = [np.rot90(images, k, axes=(2, 3)) for k in range(4)]
        views += [v[..., ::-1] for v in views]
    else:
        views = [images, images[..., ::-1]]
    return [np.ascontiguousarray(v) for v in views]
