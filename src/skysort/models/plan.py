"""What training decides from the data: the resolved plan, beside the settings as given.

A :class:`~skysort.config.TrainConfig` holds the settings as the user gave them
(``input_size`` may be unset, ``finetune`` may be ``auto``). Training resolves them
against the data and the disk, here: the folder the paths of ``split.csv`` start from,
the fine-tuning mode (:func:`resolve_finetune`), the input size
(:func:`choose_input_size`) and the pixel cache (:func:`pixel_cache`). It saves the
result as ``resolved.json`` beside ``config.yaml`` (:class:`ResolvedPlan`), and whatever
needs it later (``--resume``, evaluate, report, similar) reads it back with
:meth:`ResolvedPlan.read`, which also reads runs written before the file existed.
``skysort inspect`` resolves the same way, so its embeddings are the ones training uses.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from skysort.data.images import file_digest, image_size, read_or_reason
from skysort.data.transforms import Preprocess, evict_pixel_cache, touch
from skysort.errors import ConfigError
from skysort.rundir import CONFIG, RESOLVED, atomic_write, damaged

#: ``finetune=auto`` fine-tunes from this many training images on.
AUTO_FINETUNE_MIN_IMAGES = 200


def parse_finetune(setting: str) -> tuple[str, int]:
    """``("auto", 0)``, ``("head", 0)``, ``("full", 0)`` or ``("last", N)`` for a
    ``finetune`` setting; a ConfigError for anything else."""
    if setting in ("auto", "head", "full"):
        return setting, 0
    match = re.fullmatch(r"last:([1-9]\d*)", setting) if isinstance(setting, str) else None
    if match is None:
        raise ConfigError(f"finetune={setting!r}: must be auto, head, full or last:N "
                          "(the last N stages of the backbone, e.g. last:2)")
    return "last", int(match.group(1))


#: ``finetune=auto`` from :data:`AUTO_FINETUNE_MIN_IMAGES` training images on: what the
#: recipe study chose (``benchmarks/bench_recipe.py``; its tables are in README). All
#: layers at one learning rate (``layer_decay=1``, the setting's default), a schedule of
#: :data:`AUTO_EPOCHS` epochs, label smoothing :data:`AUTO_LABEL_SMOOTHING` for classes.
#: Against the 15 epochs at ``layer_decay=0.85`` before it: on 840 and 2,100 survey
#: cutouts better on every seed, in under half the time; on 280 real photographs and 700
#: vote-count galaxies the same within the seeds' spread in under 60% of it. No longer
#: schedule for larger data: at 2,100 training images the 15 epochs scored below these 7
#: on every seed (larger sets were not measured).
AUTO_FINETUNE = ("full", 0)
AUTO_EPOCHS = 7
#: Label smoothing of that recipe (for classes; a vote or count task has none).
AUTO_LABEL_SMOOTHING = 0.1
#: ``finetune_epochs`` for a ``finetune`` given by hand (and runs before the study).
DEFAULT_EPOCHS = 15


def resolve_finetune(setting: str, n_train: int) -> tuple[str, int]:
    """``("head", 0)``, ``("full", 0)`` or ``("last", N)``: ``auto`` trains the head only
    below :data:`AUTO_FINETUNE_MIN_IMAGES` training images, else :data:`AUTO_FINETUNE`."""
    mode, stages = parse_finetune(setting)
    if mode == "auto":
        return ("head", 0) if n_train < AUTO_FINETUNE_MIN_IMAGES else AUTO_FINETUNE
    return mode, stages


def auto_recipe(setting: str, epochs: int | None, mode: str) -> bool:
    """Whether ``finetune=auto`` takes its recipe (:data:`AUTO_EPOCHS` epochs, label
    smoothing for classes): fine-tuning, no epochs set."""
    return setting == "auto" and epochs is None and mode != "head"


def resolve_epochs(setting: str, epochs: int | None, n_train: int,
                   smoothed: float = 0.0) -> tuple[int, str]:
    """The fine-tuning epochs, and the recipe in words: ``finetune_epochs`` when set, else
    :data:`AUTO_EPOCHS` for ``finetune=auto`` and :data:`DEFAULT_EPOCHS` for a
    ``finetune`` given by hand; ``smoothed``: the label smoothing the recipe chose, said."""
    mode, stages = resolve_finetune(setting, n_train)
    if mode == "head":
        return 0, (f"finetune={setting}: the head alone"
                   + (f" (fewer than {AUTO_FINETUNE_MIN_IMAGES} training images)"
                      if setting == "auto" else ""))
    layers = "all layers" if mode == "full" else f"the last {stages} stages"
    if epochs is not None:
        return epochs, f"finetune={setting}: {layers}, finetune_epochs={epochs} as set"
    if not auto_recipe(setting, epochs, mode):
        return DEFAULT_EPOCHS, f"finetune={setting}: {layers}, {DEFAULT_EPOCHS} epochs"
    return AUTO_EPOCHS, (
        f"finetune=auto: {n_train} training images (from {AUTO_FINETUNE_MIN_IMAGES}): "
        f"{layers}, {AUTO_EPOCHS} epochs"
        + (f" with label smoothing {smoothed} for classes" if smoothed else "") + "; in the "
        f"recipe study this scored as {DEFAULT_EPOCHS} epochs did or better, on 280 to "
        "2,100 training images, in under 60% of the time")


def choose_input_size(setting: int | None, center_fraction: float, paths: Sequence[Path],
                      native: int, mode: str) -> int:
    """The input size: as set, the backbone's own for the head only, else fitted to the data.

    Fine-tuning on small cutouts need not upsample them: the median shorter side of a
    sample of images (after the centre cut), rounded to a multiple of 32, between 96 and
    the backbone's native size. Sizes are read by the image reader, FITS files included;
    unreadable files are left out here and reported when they are decoded.
    """
    if setting:
        return setting
    if mode == "head":
        return native
    rng = np.random.default_rng(0)
    sample = rng.choice(len(paths), size=min(64, len(paths)), replace=False)
    sizes = [read_or_reason(image_size, paths[i])[0] for i in sample]
    sides = [min(size) * center_fraction for size in sizes if size is not None]
    if not sides:
        return native
    size = 32 * round(statistics.median(sides) / 32)
    return int(min(native, max(96, size)))


def pixel_cache(cache_dir: str | None, cache_max_gb: float, preprocess: Preprocess,
                images: Sequence[str | Path] | int,
                hashes: Sequence[str | None] | None = None) -> Path | None:
    """The pixel cache folder of fine-tuning, with room made in it for ``images``; None
    when ``cache_max_gb`` cannot hold them.

    Of the files (``images``; their content hashes ``hashes`` when the caller has them),
    those already in the cache count as had and are marked used; each missing one is
    estimated as its resized pixels at a 3:2 aspect (uint8). When these alone exceed
    ``cache_max_gb`` nothing is cached or removed; otherwise the least recently used
    entries of other data are removed until the folder fits
    (:func:`~skysort.data.transforms.evict_pixel_cache`). Given only a count of images,
    every entry there counts as other data's.
    """
    from skysort.models.embeddings import default_cache_dir  # torch: imported when used

    folder = Path(cache_dir or default_cache_dir()) / "pixels"
    if cache_max_gb <= 0:
        return None
    if isinstance(images, int):
        names: set[str] = set()
        n_images = missing = images
    else:
        if hashes is None:
            hashes = [read_or_reason(file_digest, path)[0] for path in images]
        names = {preprocess.pixel_file(h, folder).name for h in hashes if h is not None}
        n_images = len(images)
        missing = len(names)
    have = 0
    for name in names:
        try:
            have += (folder / name).stat().st_size
        except OSError:  # not cached yet
            continue
        missing -= 1
        touch(folder / name)
    need = missing * preprocess.resize_size ** 2 * 1.5 * 3
    limit = cache_max_gb * 1e9
    if have + need > limit:
        print(f"pixel cache: the resized pixels of {n_images} images take about "
              f"{(have + need) / 1e9:.2g} GB, over cache_max_gb={cache_max_gb}; decoding "
              "every image every epoch",
              file=sys.stderr)
        return None
    removed, freed = evict_pixel_cache(folder, limit - need, keep=names) \
        if folder.is_dir() else (0, 0)
    if removed:
        print(f"pixel cache: removed the {removed} least recently used files of other data "
              f"({freed / 1e9:.2g} GB) from {folder}, to stay within "
              f"cache_max_gb={cache_max_gb}", file=sys.stderr)
    return folder


@dataclass(frozen=True)
class ResolvedPlan:
    """What training resolved from the data, saved as ``resolved.json``.

    Attributes:
        data_root: the folder the paths of ``split.csv`` start from.
        input_size: the square input size in pixels.
        finetune: ``head``, ``full`` or ``last``; None when not recorded (a run written
            before ``resolved.json`` existed).
        stages: for ``last``, how many of the backbone's last stages are trained.
        pixel_cache: the pixel cache folder of fine-tuning, or None.
        epochs: the fine-tuning epochs (0 for the head alone); None when not recorded.
        recipe: the recipe in words, and why.
        label_smoothing: the label smoothing the run trains with; None when not recorded
            (a run from before the recipe chose it: none).
    """

    data_root: str | None
    input_size: int | None
    finetune: str | None = None
    stages: int = 0
    pixel_cache: str | None = None
    epochs: int | None = None
    recipe: str = ""
    label_smoothing: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, run_dir: str | Path) -> None:
        """Writes ``RUN/resolved.json`` (whole or not at all)."""
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        atomic_write(Path(run_dir) / RESOLVED, text.encode("utf-8"))

    @classmethod
    def read(cls, run_dir: str | Path) -> ResolvedPlan:
        """The plan of the run in ``run_dir``. A run written before ``resolved.json``
        existed kept ``data_root`` and the resolved ``input_size`` in its ``config.yaml``;
        they are read from there (None where neither file says)."""
        path = Path(run_dir) / RESOLVED
        if not path.is_file():
            return cls._from_config(Path(run_dir) / CONFIG)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise damaged(path, exc) from exc
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or not {"data_root", "input_size"} <= set(data):
            raise damaged(path, "expected a mapping with data_root and input_size")
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def _from_config(cls, path: Path) -> ResolvedPlan:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, yaml.YAMLError):
            data = None
        if not isinstance(data, dict):
            return cls(data_root=None, input_size=None)
        return cls(data_root=data.get("data_root"), input_size=data.get("input_size"))


def resolve_recipe(setting: str, epochs: int | None, n_train: int,
                   started: ResolvedPlan | None = None, smoothing: float | None = None,
                   smooths: bool = True) -> tuple[str, int, int, str, float]:
    """``(mode, stages, epochs, recipe in words, label smoothing)``: as a resumed run's
    plan (``started``) recorded them (``finetune=auto`` may resolve otherwise now), else
    resolved from the settings and the number of training images. Label smoothing is
    ``smoothing`` when set, else :data:`AUTO_LABEL_SMOOTHING` for the recipe of
    ``finetune=auto`` where the task's loss takes it (``smooths``: classes, not votes or
    counts) and 0 otherwise."""
    mode, stages = resolve_finetune(setting, n_train)
    smooth = smooths and auto_recipe(setting, epochs, mode)
    chosen = AUTO_LABEL_SMOOTHING if smoothing is None and smooth else smoothing or 0.0
    wanted, recipe = resolve_epochs(setting, epochs, n_train,
                                    chosen if smoothing is None else 0.0)
    if started is not None and started.finetune is not None:
        mode, stages = started.finetune, started.stages
        if started.epochs is not None:
            wanted, recipe = started.epochs, started.recipe
        elif mode != "head":  # a run from before epochs were resolved: as its settings say
            wanted = epochs or DEFAULT_EPOCHS
        if smoothing is None:  # as it started (none before the recipe chose it)
            chosen = started.label_smoothing or 0.0
    return mode, stages, wanted, recipe, chosen
