"""Training configuration: typed dataclasses, YAML in and out, ``key=value`` overrides.

Unknown keys are rejected with the list of valid ones; values are converted to the
field's type and checked. The resolved configuration is saved as ``config.yaml`` in
every run directory, and ``TrainConfig.from_yaml`` reads it back.
"""

from __future__ import annotations

import dataclasses
import math
import re
import statistics
import sys
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from skysort.data.dataset import DataSpec
from skysort.data.images import image_size, read_or_reason
from skysort.data.sources import LabeledImages
from skysort.data.transforms import AUGMENT_PRESETS, Preprocess
from skysort.device import check_device
from skysort.errors import ConfigError, DataError
from skysort.tasks import TASK_KINDS

BALANCE_CHOICES = ("weights", "sampler", "none")
AUGMENT_CHOICES = AUGMENT_PRESETS
PRECISION_CHOICES = ("auto", "fp32", "bf16")
#: ``auto``: temperature scaling for softmax and multi-label outputs, Platt scaling for a
#: binary sigmoid, fitted on the validation split; ``none``: the model's own outputs.
CALIBRATE_CHOICES = ("auto", "none")
TASK_CHOICES = ("auto", *TASK_KINDS)
SPLIT_GROUPS_CHOICES = ("warn", "duplicates", "none")


@dataclass
class TrainConfig(DataSpec):
    """Everything a training run depends on. Defaults are the recommended settings.

    The first settings say where the images and labels are (those of
    :class:`~skysort.data.dataset.DataSpec`: data, labels, images, id_column, targets,
    pattern, classmap, split_file, task, schema).
    """

    #: Recorded by training in the run's own copy: the folder split.csv paths start from.
    data_root: str | None = None
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    #: ``warn``: say when copies of an image lie in other splits; ``duplicates``: keep
    #: each group of copies in one split; ``none``: do not look.
    split_groups: str = "warn"
    seed: int = 0
    # model
    backbone: str = "tf_efficientnet_lite0"
    weights: str = "auto"
    input_size: int | None = None
    center_fraction: float = 1.0
    finetune: str = "auto"
    dropout: float = 0.2
    # stage 1: the head on cached embeddings
    epochs: int = 100
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 3
    label_smoothing: float = 0.0
    balance: str = "weights"
    patience: int = 20
    # stage 2: fine-tuning on augmented images
    augment: str = "sky"
    finetune_epochs: int = 15
    finetune_batch_size: int = 32
    finetune_lr: float = 5e-4
    finetune_weight_decay: float = 0.02
    layer_decay: float = 0.85
    finetune_warmup_epochs: int = 1
    finetune_patience: int = 5
    ema_decay: float = 0.995
    precision: str = "auto"
    # evaluation
    calibrate: str = "auto"
    threshold: float = 0.5
    derived_thresholds: tuple[float, ...] = (0.6, 0.9)
    # machinery
    device: str = "auto"
    workers: int | None = None
    cache_dir: str | None = None
    cache_max_gb: float = 20.0  # the pixel cache of fine-tuning; 0 decodes every epoch
    # output
    project: str = "runs"
    name: str = "train"
    exist_ok: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Checks value ranges and choices; raises ConfigError naming the key."""
        self.split = tuple(float(v) for v in self.split)  # type: ignore[assignment]
        if len(self.split) != 3 or any(v < 0 for v in self.split) or \
                abs(sum(self.split) - 1) > 1e-6:
            raise ConfigError(f"split={list(self.split)}: give three fractions "
                              "(train, val, test) that sum to 1, e.g. 0.7,0.15,0.15")
        if self.split[0] == 0:
            raise ConfigError("split: the train fraction must be above 0")
        _choice("balance", self.balance, BALANCE_CHOICES)
        _choice("split_groups", self.split_groups, SPLIT_GROUPS_CHOICES)
        _choice("task", self.task, TASK_CHOICES)
        _choice("augment", self.augment, AUGMENT_CHOICES)
        _choice("precision", self.precision, PRECISION_CHOICES)
        _choice("calibrate", self.calibrate, CALIBRATE_CHOICES)
        if self.finetune not in ("auto", "head", "full") and \
                not re.fullmatch(r"last:[1-9]\d*", self.finetune):
            raise ConfigError(f"finetune={self.finetune!r}: must be auto, head, full or last:N "
                              "(the last N stages of the backbone, e.g. last:2)")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay={self.ema_decay}: must lie in [0, 1) (0: no EMA)")
        if not 0 < self.layer_decay <= 1:
            raise ConfigError(f"layer_decay={self.layer_decay}: must lie in (0, 1]")
        if not 0.05 <= self.center_fraction <= 1:
            raise ConfigError(f"center_fraction={self.center_fraction}: must lie in "
                              "[0.05, 1] (0.5 keeps the central half of each image)")
        if not 0 < self.threshold < 1:
            raise ConfigError(f"threshold={self.threshold}: must lie strictly between 0 and 1")
        for key in ("epochs", "batch_size", "finetune_epochs", "finetune_batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}={getattr(self, key)}: must be at least 1")
        for key in ("lr", "weight_decay", "label_smoothing", "dropout"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key}={getattr(self, key)}: must not be negative")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout={self.dropout}: must lie in [0, 1)")
        if self.input_size is not None and not 32 <= self.input_size <= 2048:
            raise ConfigError(f"input_size={self.input_size}: use 32 to 2048 pixels")
        for key in ("patience", "finetune_patience"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}={getattr(self, key)}: must be at least 1 (epochs "
                                  "without improvement before stopping)")
        for key in ("seed", "warmup_epochs", "finetune_warmup_epochs"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key}={getattr(self, key)}: must be 0 or more")
        for key in ("finetune_lr", "finetune_weight_decay"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key}={getattr(self, key)}: must not be negative")
        if self.cache_max_gb < 0:
            raise ConfigError(f"cache_max_gb={self.cache_max_gb}: must be 0 or more (0: no "
                              "pixel cache, decode every image every epoch)")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"workers={self.workers}: must be 0 or more (0: decode in this "
                              "process; default one per core)")
        if not all(0 < t < 1 for t in self.derived_thresholds):
            raise ConfigError(f"derived_thresholds={list(self.derived_thresholds)}: each must "
                              "lie strictly between 0 and 1")
        check_device(self.device)

    # -- conversions ------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    def data_spec(self) -> DataSpec:
        """Where the data is and how to read it."""
        if not self.data:
            raise ConfigError("no data given: pass DATA (a folder or a label table)")
        return DataSpec(**{f.name: getattr(self, f.name) for f in fields(DataSpec)})

    def save(self, path: str | Path) -> None:
        """Writes the configuration as YAML."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "config") -> TrainConfig:
        """Builds a config from a mapping, converting values; unknown keys are errors."""
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - valid)
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {unknown}; valid keys: {sorted(valid)}")
        hints = typing.get_type_hints(cls)
        return cls(**{k: _convert(k, v, hints[k]) for k, v in data.items()})

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """Reads a YAML file written by :meth:`save` (or by hand)."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, ValueError, yaml.YAMLError) as exc:  # ValueError: not UTF-8
            raise ConfigError(f"{path}: cannot read YAML ({exc})") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of key: value at the top level")
        return cls.from_mapping(data, source=str(path))

    def copy(self) -> TrainConfig:
        """An independent copy (training works on one, never on the caller's object)."""
        return self.updated({})

    def updated(self, overrides: Mapping[str, Any]) -> TrainConfig:
        """A copy with ``overrides`` applied (values converted and checked)."""
        merged = {**self.to_dict(), **overrides}
        return TrainConfig.from_mapping(merged, source="override")


# -- settings resolved against the data ----------------------------------------------------

#: ``finetune=auto`` fine-tunes from this many training images on.
AUTO_FINETUNE_MIN_IMAGES = 200


def finetune_plan(setting: str, n_train: int) -> tuple[str, int]:
    """``("head", 0)``, ``("full", 0)`` or ``("last", N)`` for a ``finetune`` setting."""
    if setting == "auto":
        if n_train < AUTO_FINETUNE_MIN_IMAGES:
            return "head", 0
        return "full", 0
    if setting in ("head", "full"):
        return setting, 0
    match = re.fullmatch(r"last:(\d+)", setting)
    if not match:
        raise DataError(f"finetune={setting!r}: use auto, head, full or last:N")
    return "last", int(match.group(1))


def choose_input_size(cfg: TrainConfig, data: LabeledImages, native: int, mode: str) -> int:
    """The input size: as set, the backbone's own for the head only, else fitted to the data.

    Fine-tuning on small cutouts need not upsample them: the median shorter side of a
    sample of images (after the centre cut), rounded to a multiple of 32, between 96 and
    the backbone's native size. Sizes are read by the image reader, FITS files included;
    unreadable files are left out here and reported when they are decoded.
    """
    if cfg.input_size:
        return cfg.input_size
    if mode == "head":
        return native
    rng = np.random.default_rng(0)
    sample = rng.choice(len(data), size=min(64, len(data)), replace=False)
    sizes = [read_or_reason(image_size, data.paths[i])[0] for i in sample]
    sides = [min(size) * cfg.center_fraction for size in sizes if size is not None]
    if not sides:
        return native
    size = 32 * round(statistics.median(sides) / 32)
    return int(min(native, max(96, size)))


def pixel_cache(cfg: TrainConfig, preprocess: Preprocess, n_images: int) -> Path | None:
    """The pixel cache folder for this run, or None when ``cache_max_gb`` cannot hold it.

    The estimate is the resized pixels of every image at a 3:2 aspect (uint8), beside
    what the folder holds already; nothing is evicted (delete the folder to free it).
    """
    from skysort.models.embeddings import default_cache_dir  # torch: imported when used

    folder = Path(cfg.cache_dir or default_cache_dir()) / "pixels"
    if cfg.cache_max_gb <= 0:
        return None
    need = n_images * preprocess.resize_size ** 2 * 1.5 * 3
    have = sum(f.stat().st_size for f in folder.glob("*.npy")) if folder.is_dir() else 0
    if need + have > cfg.cache_max_gb * 1e9:
        print(f"pixel cache: {n_images} images need about {need / 1e9:.1f} GB beside the "
              f"{have / 1e9:.1f} GB in {folder}, over cache_max_gb={cfg.cache_max_gb}; "
              "decoding every image every epoch", file=sys.stderr)
        return None
    return folder


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """Parses ``key=value`` strings; values are read as YAML scalars (``1e-3``, ``true``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{item!r}: overrides are written key=value, e.g. epochs=50")
        try:
            out[key.strip().replace("-", "_")] = yaml.safe_load(value) if value else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{item!r}: cannot parse the value ({exc})") from exc
    return out


def _choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r}: must be one of {', '.join(choices)}")


def _convert(key: str, value: Any, hint: Any) -> Any:
    """Converts ``value`` to the annotated type ``hint`` or raises ConfigError.

    Only conversions a person means are made: text to a number or a bool, a whole float
    to an int. A bool is not a number (``epochs: true`` is an error, not one epoch), and
    a list or mapping is never turned into text.
    """
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(key, value, inner[0])
    name = getattr(hint, "__name__", str(hint))
    try:
        if origin is tuple:
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split() if v]
            if not isinstance(value, list | tuple):
                raise TypeError(value)
            return tuple(_convert(key, v, args[0]) for v in value)
        if isinstance(value, list | tuple | dict | set) or value is None:
            raise TypeError(value)
        if hint is str:
            if isinstance(value, bool):
                raise TypeError(value)
            return str(value)
        if hint is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
                return value.lower() in _TRUE
            raise TypeError(value)
        if isinstance(value, bool):
            raise TypeError(value)
        if hint is int:
            number = float(value)
            if not math.isfinite(number) or not number.is_integer():
                raise ValueError(value)
            return int(number)
        if hint is float:
            number = float(value)
            if not math.isfinite(number):
                raise ValueError(value)
            return number
        return hint(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(f"{key}={value!r}: expected {_KIND_NAMES.get(name, name)}") from exc


_TRUE = frozenset({"true", "yes", "1", "on"})
_FALSE = frozenset({"false", "no", "0", "off"})
_KIND_NAMES = {"int": "int (a whole number)", "float": "float (a number)",
               "bool": "bool (true or false)", "str": "str (text)"}
