"""Training, top to bottom: ``train(DATA)``.

It reads the dataset and splits it, builds the backbone, computes (or reads from the
cache) every image's embedding, and trains in up to two stages with one loop
(:mod:`skysort.training.stages`, :mod:`skysort.training.loop`): the head on cached
embeddings, then, when ``finetune`` asks for it, the network on augmented images. It
keeps the best validation epoch's weights, scores them on the test split beside the
baseline (:func:`skysort.evaluation.scoring.score_images`, as ``skysort evaluate`` does;
without a test split, on the validation split, marked not held out), and writes the run
directory (:mod:`skysort.rundir`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from skysort.config import TrainConfig
from skysort.data.dataset import check_two_classes, choose_task_kind, open_dataset
from skysort.data.fits_decode import fit_decode
from skysort.data.images import MAX_PIXELS
from skysort.data.sources import LabeledImages, first_occurrences
from skysort.data.split import read_split_csv, split_by_hash, write_split_csv
from skysort.data.tables import summarize_issues, write_bad_files, write_label_issues
from skysort.device import resolve_device
from skysort.errors import ConfigError, DataError, RunError
from skysort.evaluation.calibration import calibrate_model
from skysort.evaluation.metrics import format_metrics, mark_held_out
from skysort.evaluation.plots import plot_history, plot_scores
from skysort.evaluation.report import write_report_or_say_why
from skysort.evaluation.scoring import score_images
from skysort.inspection.leakage import apply_split_groups, duplicate_groups
from skysort.models.backbones import Backbone, create_backbone, native_input_size
from skysort.models.embeddings import (
    cached_embeddings,
    content_hash,
    default_cache_dir,
    embedding_key,
)
from skysort.models.model import ModelInfo, SkyModel, save_model
from skysort.models.plan import (
    ResolvedPlan,
    choose_input_size,
    pixel_cache,
    resolve_recipe,
)
from skysort.rundir import (
    BAD_FILES,
    CONFIG,
    CURVES_PNG,
    HISTORY,
    LABEL_ISSUES,
    LAST_CHECKPOINT,
    METRICS,
    SPLIT,
    TENSORBOARD,
    checkpoint_path,
    make_run_dir,
)
from skysort.tasks import Task, check_balance, make_task, task_class
from skysort.training.budget import Budget
from skysort.training.checkpoint import read_state
from skysort.training.distributed import Distributed
from skysort.training.loop import keep_validated, log_row, trainable_state, write_history
from skysort.training.stages import finetune_stage, head_stage, seed_everything, unfreeze


@dataclass
class TrainResult:
    """What a training run produced."""

    run_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    bad_files: dict[str, str] = field(default_factory=dict)
    #: False in every process of a distributed run but the first, which alone saves the
    #: model and evaluates it (``metrics`` is empty in the others).
    main: bool = True


# -- the whole run --------------------------------------------------------------------------


def train(data: str | Path | LabeledImages | None = None, config: TrainConfig | None = None,
          *, resume: str | Path | None = None, **overrides: Any) -> TrainResult:
    """Trains a model on ``data`` and writes a run directory.

    Args:
        data: a class-folder tree (or one split into train/val/test), a folder with a
            label file, a CSV table, or :class:`~skysort.data.sources.LabeledImages`;
            defaults to ``config.data``.
        config: the settings; defaults to ``TrainConfig()``.
        resume: a run directory to continue from its last checkpoint (its own settings
            are used; ``data`` and ``config`` must not be given).
        **overrides: settings to change, e.g. ``epochs=50, name="mars", labels="t.csv"``.

    Returns:
        The run directory, test metrics, per-epoch history and the unreadable files.
    """
    if resume is not None:
        run_dir = Path(resume)
        if data is not None or config is not None or overrides:
            raise ConfigError(f"{run_dir}: a resumed run keeps its own data and settings "
                              f"({CONFIG}); give resume= alone")
        if not (run_dir / CONFIG).is_file():
            raise RunError(f"{run_dir}: nothing to resume ({CONFIG} is missing)")
        cfg = TrainConfig.from_yaml(run_dir / CONFIG)
    else:
        # Training works on its own copy: the caller's config is never changed, so a second
        # run with the same object starts from the same settings.
        cfg = (config or TrainConfig()).updated(overrides)
        if data is not None and not isinstance(data, LabeledImages):
            cfg.data = str(data)
    budget = Budget.of(cfg.time)  # counted from here, the start of the run
    device = resolve_device(cfg.device)
    ddp = Distributed.from_env(device)  # launched by torchrun: one of several processes
    try:
        with ddp.quiet_unless_main():
            return _train(data, cfg, None if resume is None else Path(resume),
                          ddp.device(device), ddp, budget)
    finally:
        ddp.close()


def _train(data: str | Path | LabeledImages | None, cfg: TrainConfig, resume: Path | None,
           device: torch.device, ddp: Distributed, budget: Budget | None) -> TrainResult:
    seed_everything(cfg.seed)

    # -- data and the plan resolved from it -----------------------------------------------
    dataset, splits = _setup_data(data, cfg)
    run_dir = _setup_run_dir(cfg, dataset, resume, ddp)
    mode, stages, epochs, recipe, smoothing = resolve_recipe(
        cfg.finetune, cfg.finetune_epochs, splits.count("train"),
        ResolvedPlan.read(resume) if resume is not None else None, cfg.label_smoothing,
        task_class(dataset.task).smooths_labels)
    input_size = _setup_input_size(cfg, dataset, mode, resume)
    if ddp.main:
        cfg.save(run_dir / CONFIG)  # the settings as given
    cfg = dataclasses.replace(cfg, label_smoothing=smoothing)
    backbone = _setup_backbone(cfg, dataset, splits, input_size)
    key = embedding_key(backbone.name, backbone.weights_id, backbone.preprocess)
    pixels, features, bad, groups = _setup_embeddings(cfg, dataset, backbone, key, mode,
                                                      splits, device, ddp)
    plan = ResolvedPlan(str(dataset.root), input_size, mode, stages,
                        str(pixels) if pixels else None, epochs, recipe, smoothing)
    if ddp.main:
        plan.save(run_dir)
    splits, data_warnings = _setup_splits(cfg, dataset, splits, groups, run_dir, resume, ddp)
    if ddp.main:
        write_bad_files(run_dir / BAD_FILES, dataset, bad)
    if bad:
        print(f"skipped {len(bad)} unreadable file(s); see {run_dir / BAD_FILES}")
    part = split_indices(dataset, splits, bad)
    task = _setup_task(dataset, part)
    print(_describe(task, part, plan, cfg, ddp))

    # -- training -------------------------------------------------------------------------
    # Seeded again here: whether embeddings came from the cache or were computed (which
    # draws random numbers) must not change the head's initial weights or its dropout.
    seed_everything(cfg.seed)
    model = SkyModel(backbone.model, backbone.num_features, task, dropout=cfg.dropout)
    writer = _setup_tensorboard(run_dir) if ddp.main else None
    log = log_row(writer)
    last = checkpoint_path(run_dir, LAST_CHECKPOINT)
    resumable = resume is not None and last.is_file() and read_state(last).get("stage") == \
        "finetune"
    history: list[dict[str, Any]] = []
    if not resumable:
        history = head_stage(model, task, features, dataset.targets, part, cfg, log).history
    interrupted = False
    if mode != "head":
        unfreeze(model, mode, stages)
        # the head stage's validated model, kept should Ctrl-C come before an epoch finishes
        before = trainable_state(model) if not resumable else None
        try:
            history = finetune_stage(model, backbone.preprocess, task, dataset, part,
                                     dataclasses.replace(cfg, finetune_epochs=epochs), device,
                                     run_dir, log, resumable, history, ddp, pixels,
                                     budget).history
        except KeyboardInterrupt:
            interrupted = True
            history = keep_validated(model, run_dir, history, before)
    if not ddp.main:  # the first process saves and evaluates the model
        if interrupted:
            raise KeyboardInterrupt
        return TrainResult(run_dir=run_dir, metrics={}, history=history, main=False)
    write_history(run_dir / HISTORY, history)
    plot_history(history, run_dir / CURVES_PNG)
    if writer is not None:
        writer.close()

    info = ModelInfo(task=task, backbone=backbone.name, weights_id=backbone.weights_id,
                     num_features=backbone.num_features, preprocess=backbone.preprocess,
                     dropout=cfg.dropout,
                     frozen_backbone=not any(r["stage"] == "finetune" for r in history),
                     id_column=dataset.id_column, target_columns=dataset.target_columns,
                     threshold=cfg.threshold,
                     extra={"balance": cfg.balance, "finetune": cfg.finetune,
                            "augment": cfg.augment, "embedding_key": key})
    save_model(model, info, run_dir)  # uncalibrated, so a Ctrl-C below keeps the model
    if interrupted:
        raise KeyboardInterrupt
    # The model's outputs on the validation split: seconds for a frozen backbone (from the
    # embedding cache), one validation pass for a fine-tuned one.
    print(calibrate_model(model, info, dataset.subset(part["val"]), cfg.calibrate,
                          threshold=cfg.threshold, cache_dir=cfg.cache_dir, workers=cfg.workers,
                          device=device))
    model.to("cpu")
    save_model(model, info, run_dir)

    # -- test --------------------------------------------------------------------------------
    eval_split = "test" if len(part["test"]) else "val"
    metrics = score_images(model, info, dataset.subset(part[eval_split]), run_dir / METRICS,
                           used=eval_split, threshold=info.threshold,
                           derived_thresholds=cfg.derived_thresholds, cache_dir=cfg.cache_dir,
                           workers=cfg.workers, device=device, warnings=data_warnings)
    mark_held_out(metrics, run_dir / METRICS)  # without a test split: the val split, said so
    plot_scores(metrics, run_dir / METRICS)
    write_report_or_say_why(run_dir)
    print(format_metrics(metrics, title=f"{eval_split} split: {metrics['n']} images"))
    if budget is not None:
        print(budget.summary())
    return TrainResult(run_dir=run_dir, metrics=metrics, history=history,
                       bad_files={dataset.relpath(dataset.paths[i]): r for i, r in bad.items()})


# -- set-up: each helper does one job, in the order _train calls them ------------------------


def _setup_data(data: str | Path | LabeledImages | None, cfg: TrainConfig
                ) -> tuple[LabeledImages, list[str]]:
    """The dataset, checked to be trainable with these settings, and its split by hash."""
    dataset = choose_task_kind(data, cfg.task) if isinstance(data, LabeledImages) else \
        open_dataset(cfg.data_spec())
    check_two_classes(dataset)
    check_balance(dataset.task, cfg.balance)
    return dataset, split_by_hash(dataset, cfg.split, cfg.seed)


def _setup_run_dir(cfg: TrainConfig, dataset: LabeledImages, resume: Path | None,
                   ddp: Distributed) -> Path:
    """A new run directory (or the resumed one), holding the label rows left out."""
    if resume is None:
        # Process 0 names the run directory (train, train2, ...); the others use its.
        run_dir = Path(ddp.broadcast(str(make_run_dir(cfg.project, cfg.name, cfg.exist_ok))
                                     if ddp.main else ""))
    else:
        run_dir = resume
    if ddp.main:
        write_label_issues(run_dir / LABEL_ISSUES, dataset.issues)
    if dataset.issues:
        print(f"left out while reading labels: {summarize_issues(dataset.issues)}; "
              f"see {run_dir / LABEL_ISSUES}")
    return run_dir


def _setup_backbone(cfg: TrainConfig, dataset: LabeledImages, splits: Sequence[str],
                    input_size: int) -> Backbone:
    """The backbone, its first convolution taking as many channels as the images give,
    and its preprocessing with the FITS decoding fitted to the training images (the
    data-set-wide Lupton scale; for ``channels=all``, the bands)."""
    train = [p for p, s in zip(dataset.paths, splits, strict=True) if s == "train"]
    decode = fit_decode(train, cfg.fits_decode(), MAX_PIXELS)
    return create_backbone(cfg.backbone, cfg.weights, input_size, cfg.center_fraction,
                           in_chans=decode.n_channels, fits=decode)


def _setup_input_size(cfg: TrainConfig, dataset: LabeledImages, mode: str,
                      resume: Path | None) -> int:
    """The input size: a resumed run's own (its resolved plan, or the config.yaml of a run
    written before plans were), else as set or fitted to the data."""
    started = ResolvedPlan.read(resume).input_size if resume is not None else None
    return choose_input_size(started or cfg.input_size, cfg.center_fraction, dataset.paths,
                             native_input_size(cfg.backbone), mode)


def _setup_embeddings(cfg: TrainConfig, dataset: LabeledImages, backbone: Backbone, key: str,
                      mode: str, splits: list[str], device: torch.device, ddp: Distributed
                      ) -> tuple[Path | None, np.ndarray, dict[int, str], list[Any]]:
    """``(pixel cache, embeddings, unreadable files, groups of copies)``, computed by
    process 0 first (the others then read the embeddings from the cache)."""
    with ddp.main_first():
        # Fine-tuning reads the decoded pixels from the pixel cache: filled here, while
        # every image is decoded for its embedding anyway.
        hashes = [content_hash(p) for p in dataset.paths]
        pixels = pixel_cache(cfg.cache_dir, cfg.cache_max_gb, backbone.preprocess,
                             dataset.paths, hashes) if mode != "head" else None
        features, bad = cached_embeddings(backbone.model, backbone.preprocess, key,
                                          dataset.paths, cache_dir=cfg.cache_dir,
                                          pixel_cache=pixels, workers=cfg.workers,
                                          device=device, hashes=hashes)
        # Copies of one image in two splits, checked once the embeddings exist; by process
        # 0 alone, which then gives every process its split.
        groups = duplicate_groups(dataset, features, hashes, bad, splits,
                                  cfg.cache_dir or default_cache_dir(), cfg.workers) \
            if cfg.split_groups != "none" and ddp.main else []
    return pixels, features, bad, groups


def _setup_splits(cfg: TrainConfig, dataset: LabeledImages, splits: list[str],
                  groups: list[Any], run_dir: Path, resume: Path | None, ddp: Distributed
                  ) -> tuple[list[str], list[str]]:
    """The split every process trains on (copies kept together as ``split_groups`` says,
    or a resumed run's ``split.csv``), and the warnings about copies across splits."""
    if resume is None:
        splits, data_warnings = apply_split_groups(cfg.split_groups, dataset, groups, splits)
        splits = ddp.broadcast(splits)
        if ddp.main:
            write_split_csv(run_dir / SPLIT, dataset, splits)
    else:  # the split the run started with (a group kept together stays so)
        splits = resumed_splits(run_dir, dataset, splits, cfg.split_groups)
        _, data_warnings = apply_split_groups("warn", dataset, groups, splits)
    return splits, data_warnings


def _setup_task(dataset: LabeledImages, part: Mapping[str, np.ndarray]) -> Task:
    """The task, fitted to the training targets, once every split can be trained on."""
    task = make_task(dataset.task, dataset.classes, dataset.schema)
    task.fit_statistics(dataset.targets[part["train"]])
    _check_trainable(dataset, task, part)
    return task


def _describe(task: Task, part: Mapping[str, np.ndarray], plan: ResolvedPlan,
              cfg: TrainConfig, ddp: Distributed) -> str:
    """The line that says what will be trained on what."""
    mode, stages = plan.finetune, plan.stages
    what = "head only" if mode == "head" else \
        f"head, then fine-tuning ({'all layers' if mode == 'full' else f'last {stages} stages'}, " \
        f"{plan.epochs} epochs, {plan.input_size} px, augment={cfg.augment})"
    if ddp.enabled and mode != "head":
        what += f"; distributed over {ddp.describe()}, " \
                f"{len(part['train']) // ddp.world_size} training images each per epoch"
    return (f"task: {task.kind} ({len(task.classes)} "
            f"{'classes' if task.single_label else 'outputs'}); images: train "
            f"{len(part['train'])}, val {len(part['val'])}, test {len(part['test'])}; {what}"
            f"\nrecipe: {plan.recipe}")


def _setup_tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional at run time
        return None
    return SummaryWriter(str(run_dir / TENSORBOARD))


def resumed_splits(run_dir: Path, data: LabeledImages, splits: list[str], split_groups: str
                   ) -> list[str]:
    """The splits of ``split.csv``, once the data is checked to be what the run started
    on: the same images in the same order and, unless copies were kept together
    (``split_groups=duplicates``), the same split by hash."""
    rows = read_split_csv(run_dir / SPLIT)
    if [r["path"] for r in rows] != [data.relpath(p) for p in data.paths] or \
            (split_groups != "duplicates" and [r["split"] for r in rows] != splits):
        raise RunError(f"{run_dir}: the data no longer splits as split.csv says; it "
                       "changed since the run started, so it cannot be resumed")
    return [r["split"] for r in rows]


def split_indices(data: LabeledImages, splits: list[str], bad: Mapping[int, str]
                  ) -> dict[str, np.ndarray]:
    """Readable images per split. Training keeps repeated rows as the data gives them (a
    label file may repeat rare classes to up-sample them); validation and test count each
    file once."""
    out = {}
    for name in ("train", "val", "test"):
        index = [i for i, s in enumerate(splits) if s == name and i not in bad]
        if name != "train":
            index = [index[j] for j in first_occurrences([data.paths[i] for i in index])]
        out[name] = np.array(index, dtype=np.int64)
    return out


def _check_trainable(data: LabeledImages, task: Task, part: Mapping[str, np.ndarray]) -> None:
    if task.single_label:
        missing = [c for c, n in zip(task.classes, task.train_counts, strict=True) if n == 0]
        if missing:
            raise DataError(
                f"{data.root}: no readable training images for class(es) {missing}; "
                "check bad_files.csv and add images"
            )
    if len(part["train"]) == 0:
        raise DataError(f"{data.root}: no readable training images")
    if len(part["val"]) == 0:
        raise DataError(
            f"{data.root}: the validation split is empty; give a val fraction above 0 "
            "or a val/ folder"
        )
