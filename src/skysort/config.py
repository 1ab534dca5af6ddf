"""Training configuration: typed dataclasses, YAML in and out, ``key=value`` overrides.

Unknown keys are rejected with the list of valid ones; values are converted to the
field's type and checked, each setting in one place. A config is the settings as given:
it is saved as ``config.yaml`` in every run directory, and ``TrainConfig.from_yaml``
reads it back. What training decides from the data (the input size when unset, the
fine-tuning mode of ``auto``, the pixel cache) is not written into it: that is the run's
resolved plan, :mod:`skysort.models.plan`.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from skysort.data.dataset import DataSpec
from skysort.data.fits_decode import FitsDecode
from skysort.data.transforms import AUGMENT_PRESETS, check_input_size
from skysort.device import check_device
from skysort.errors import ConfigError
from skysort.models.plan import parse_finetune
from skysort.tasks import task_kinds

BALANCE_CHOICES = ("weights", "sampler", "none")
AUGMENT_CHOICES = AUGMENT_PRESETS
PRECISION_CHOICES = ("auto", "fp32", "bf16")
#: ``auto``: temperature scaling for softmax and multi-label outputs, Platt scaling for a
#: binary sigmoid, fitted on the validation split; ``none``: the model's own outputs.
CALIBRATE_CHOICES = ("auto", "none")
SPLIT_GROUPS_CHOICES = ("warn", "duplicates", "none")
DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
#: Keys older versions wrote into a run's config.yaml, skipped when one is read back:
#: ``data_root`` is now in the run's resolved plan (``resolved.json``).
RETIRED_KEYS = ("data_root",)


@dataclass
class TrainConfig(DataSpec):
    """Everything a training run depends on. Defaults are the recommended settings.

    The first settings say where the images and labels are (those of
    :class:`~skysort.data.dataset.DataSpec`: data, labels, images, id_column, targets,
    pattern, classmap, split_file, task, schema).
    """

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
    bands: tuple[str, ...] = ()  # FITS bands to use, by name (default: all / three)
    channels: str = "rgb"  # FITS: rgb (one colour composite) or all (every band in)
    stretch: str = "lupton"  # FITS: lupton (one for all bands) or percentile (per band)
    finetune: str = "auto"
    dropout: float = 0.2
    # stage 1: the head on cached embeddings
    epochs: int = 100
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 3
    label_smoothing: float | None = None  # None: the recipe's (finetune=auto)
    balance: str = "weights"
    patience: int = 20
    # stage 2: fine-tuning on augmented images
    augment: str = "sky"
    finetune_epochs: int | None = None  # unset: as the recipe of `finetune` says
    finetune_batch_size: int = 32
    finetune_lr: float = 5e-4
    finetune_weight_decay: float = 0.02
    #: 1: every backbone layer at finetune_lr (the recipe study's third run: survey
    #: cutouts gained 0.025-0.032 balanced accuracy over 0.85, seed by seed)
    layer_decay: float = 1.0
    finetune_warmup_epochs: int = 1
    finetune_patience: int = 5
    ema_decay: float = 0.995
    precision: str = "auto"
    #: a budget for the whole run (``90s``, ``10m``, ``1.5h``): fine-tuning's epochs are
    #: planned to end within it (:mod:`skysort.training.budget`); unset: no limit.
    time: str | None = None
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
        _choice("task", self.task, ("auto", *task_kinds()))
        _choice("augment", self.augment, AUGMENT_CHOICES)
        _choice("precision", self.precision, PRECISION_CHOICES)
        _choice("calibrate", self.calibrate, CALIBRATE_CHOICES)
        parse_finetune(self.finetune)
        self.fits_decode()  # bands, channels and stretch: ConfigError naming the key
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
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ConfigError(f"{key}={getattr(self, key)}: must be at least 1")
        for key in ("lr", "weight_decay", "label_smoothing", "dropout"):
            if getattr(self, key) is not None and getattr(self, key) < 0:
                raise ConfigError(f"{key}={getattr(self, key)}: must not be negative")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout={self.dropout}: must lie in [0, 1)")
        if self.input_size is not None:
            check_input_size(self.input_size)
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
        if self.time is not None:
            parse_duration(self.time)

    def fits_decode(self) -> FitsDecode:
        """How FITS images become pixels, as set (the scale is fitted at training)."""
        return FitsDecode(bands=self.bands, channels=self.channels, stretch=self.stretch)

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
        unknown = sorted(set(data) - valid - set(RETIRED_KEYS))
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {unknown}; valid keys: {sorted(valid)}")
        hints = typing.get_type_hints(cls)
        return cls(**{k: _convert(k, v, hints[k]) for k, v in data.items() if k in valid})

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


def parse_duration(text: str) -> float:
    """Seconds in ``90s``, ``10m``, ``1.5h``; a ConfigError for anything else."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh])\s*", str(text))
    seconds = float(match.group(1)) * DURATION_UNITS[match.group(2)] if match else 0.0
    if not match or seconds <= 0:
        raise ConfigError(f"time={text!r}: give a duration above zero with its unit: "
                          "90s, 10m or 1.5h")
    return seconds
