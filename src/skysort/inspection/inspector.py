"""``skysort inspect DATA``: look at the data before training, top to bottom.

It reads the data as ``skysort train`` would (the same label options, the same split),
embeds every image with the backbone training would use (through the same cache, so a
later ``train`` computes nothing twice), fingerprints every file, and writes to ``OUT``:

    summary.json                 every figure below, machine-readable
    images.csv                   per image: path, split, label, file facts, oddity,
                                 label score and suggestion, map position, duplicate group
    duplicates.csv               each duplicate group's images, flagged when the group
                                 spans splits (leakage) or labels (conflict)
    duplicate_pairs.csv          the pairs behind the groups, with their signals
    suspected_label_errors.csv   path, given label, suggested label, score (worst first)
    oddities.csv                 images ranked by distance to their neighbours
    tree_violations.csv          vote-fraction rows that break their decision tree
    bad_files.csv, label_issues.csv   unreadable files; table rows left out
    similar/                     the similarity index of ``skysort similar``
    inspect.html                 all of it as one page (rendered from the files above)
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from skysort.config import TrainConfig
from skysort.data.dataset import choose_task_kind, open_dataset
from skysort.data.fits_decode import FitsDecode, fit_decode
from skysort.data.images import MAX_PIXELS
from skysort.data.sources import LabeledImages, first_occurrences
from skysort.data.split import describe_target, split_by_hash
from skysort.data.tables import LabelIssue, summarize_issues, write_label_issues
from skysort.errors import DataError
from skysort.inspection.duplicates import DuplicateGroup, DuplicatePair, find_duplicates
from skysort.inspection.fingerprints import Fingerprints, cached_fingerprints
from skysort.inspection.label_errors import (
    LabelErrors,
    confident_learning,
    out_of_fold_probabilities,
)
from skysort.inspection.leakage import apply_split_groups
from skysort.inspection.oddities import embedding_map, oddity_scores
from skysort.inspection.page import write_inspect_page
from skysort.inspection.similarity_index import SimilarityIndex
from skysort.inspection.votes import vote_view
from skysort.inspection.writers import (
    write_groups,
    write_images,
    write_label_errors,
    write_oddities,
    write_pairs,
    write_rows,
)
from skysort.models.plan import choose_input_size, pixel_cache, resolve_finetune
from skysort.rundir import (
    BAD_FILES,
    DUPLICATE_PAIRS,
    DUPLICATES,
    INSPECT_IMAGES,
    INSPECT_SUMMARY,
    LABEL_ERRORS,
    LABEL_ISSUES,
    ODDITIES,
    SIMILAR_DIR,
    TREE_VIOLATIONS,
)
from skysort.tasks import make_task, task_class


@dataclass
class InspectResult:
    """Where the inspection was written, and its summary (``summary.json``)."""

    out: Path
    summary: dict[str, Any]
    page: Path | None


def _read_data(data: str | Path | LabeledImages | None, cfg: TrainConfig) -> LabeledImages:
    if isinstance(data, LabeledImages):
        return choose_task_kind(data, cfg.task)
    if data is not None:
        cfg.data = str(data)
    return open_dataset(cfg.data_spec())


def count_once(dataset: LabeledImages) -> tuple[LabeledImages, int]:
    """Each file once (the first of its rows), as evaluation counts it: a label file may
    repeat rows to up-sample a rare class, and a file is no copy of itself. Returns the
    data and how many rows were dropped; each is a ``repeated row`` label issue."""
    keep = first_occurrences(dataset.paths)
    if len(keep) == len(dataset):
        return dataset, 0
    first = {dataset.paths[i]: i for i in keep}
    issues = list(dataset.issues)
    for i in sorted(set(range(len(dataset))) - set(keep)):
        j = first[dataset.paths[i]]
        detail = [f"{dataset.relpath(dataset.paths[i])} counted once"]
        if dataset.splits is not None and dataset.splits[i] != dataset.splits[j]:
            detail.append(f"listed in {dataset.splits[j]} first and in {dataset.splits[i]} "
                          "here: training would see it in both")
        label, first_label = describe_target(dataset, i), describe_target(dataset, j)
        if label != first_label:
            detail.append(f"labelled {first_label} first, {label} here; the first is kept")
        issues.append(LabelIssue("repeated row", None, dataset.ids[i], "; ".join(detail)))
    once = dataset.subset(keep)
    once.issues = issues
    return once, len(dataset) - len(keep)


def training_split(dataset: LabeledImages, cfg: TrainConfig) -> tuple[list[str], str]:
    """The split training would make, and how it was made (or why there is none)."""
    try:
        splits = split_by_hash(dataset, cfg.split, cfg.seed)
    except DataError as exc:
        return ["train"] * len(dataset), f"not split: {exc}"
    rule = "given by the data" if dataset.splits is not None else \
        f"by a hash of each path (seed {cfg.seed}), {'/'.join(f'{f:g}' for f in cfg.split)}"
    return splits, rule


def inspect(data: str | Path | LabeledImages | None = None, config: TrainConfig | None = None,
            *, out: str | Path = "inspect", workers: int | None = None,
            device: str | None = None, page: bool = True, **overrides: Any) -> InspectResult:
    """Inspects labelled images before training (see the module doc for what is written).

    Args:
        data: what ``skysort train`` takes: a class-folder tree, a label-file folder, a
            table, or :class:`~skysort.data.sources.LabeledImages`.
        config: the settings training will use (backbone, input size, split, seed, label
            options, cache); defaults to ``TrainConfig()``.
        out: the folder to write.
        page: also render ``inspect.html``.
        **overrides: settings to change, e.g. ``labels="votes.csv", seed=3``.
    """
    from skysort.models.embeddings import default_cache_dir

    started = time.perf_counter()
    cfg = (config or TrainConfig()).updated(overrides)
    if workers is not None:
        cfg.workers = workers
    if device is not None:
        cfg.device = device
    dataset, repeated = count_once(_read_data(data, cfg))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    splits, split_rule = training_split(dataset, cfg)

    for stale in (LABEL_ERRORS, TREE_VIOLATIONS, SIMILAR_DIR):  # outputs of an earlier run
        if (out / stale).is_dir():
            shutil.rmtree(out / stale)
        else:
            (out / stale).unlink(missing_ok=True)
    features, bad, hashes, meta = embed_dataset(cfg, dataset, splits)
    prints = cached_fingerprints(dataset.paths, hashes, cfg.cache_dir or default_cache_dir(),
                                 cfg.workers)
    for i, why in prints.bad.items():
        bad.setdefault(i, why)
    for i in bad:  # a file one pass read and the other did not counts as unreadable
        prints.info[i] = {}
    valid = np.array([i not in bad for i in range(len(dataset))])
    labels = [describe_target(dataset, i) for i in range(len(dataset))]
    single = task_class(dataset.task).single_label and dataset.targets.ndim == 1

    pairs, groups = find_duplicates(prints, features, splits=splits,
                                    labels=None if task_class(dataset.task).votes else labels)
    # the split training would make: with split_groups=duplicates, copies kept together
    splits, _ = apply_split_groups(cfg.split_groups, dataset, groups, splits, say=False)
    for group in groups:
        group.splits = [splits[m] for m in group.members]
    errors, errors_note = _label_errors(dataset, features, valid, cfg.seed) if single else \
        (None, f"not computed: {dataset.task} targets (confident learning needs one class "
               "per image)")
    oddity = oddity_scores(features, valid, [info.get("pixels") for info in prints.info])
    coords = np.full((len(dataset), 2), np.nan)
    map_method = "none"
    if valid.sum() >= 3:
        coords[valid], map_method = embedding_map(features[valid], cfg.seed)
    fractions = _fractions(dataset, valid) if task_class(dataset.task).votes else None

    rel = [dataset.relpath(p) for p in dataset.paths]
    write_images(out / INSPECT_IMAGES, dataset, rel, splits, labels, prints, oddity, errors,
                 coords, groups, fractions)
    write_groups(out / DUPLICATES, groups, rel)
    write_pairs(out / DUPLICATE_PAIRS, pairs, rel)
    if errors is not None:
        write_label_errors(out / LABEL_ERRORS, errors, dataset, rel, splits)
    write_oddities(out / ODDITIES, oddity, rel, labels, splits)
    if fractions is not None:
        write_rows(out / TREE_VIOLATIONS, fractions["violations"],
                   ["path", "question", "parent", "answers_sum", "expected", "gap"])
    write_rows(out / BAD_FILES, [{"path": rel[i], "reason": why}
                                 for i, why in sorted(bad.items())], ["path", "reason"])
    write_label_issues(out / LABEL_ISSUES, dataset.issues)
    index = SimilarityIndex.build(features[valid], [str(dataset.paths[i]) for i in
                                                    np.flatnonzero(valid)],
                                  [labels[i] for i in np.flatnonzero(valid)], meta,
                                  seed=cfg.seed) \
        if valid.sum() >= 2 else None
    if index is not None:
        index.save(out / SIMILAR_DIR)

    summary = _summary(dataset, cfg, splits, split_rule, labels, prints, bad, groups, pairs,
                       errors, errors_note, oddity, rel, map_method, fractions,
                       meta["embedding_key"], meta["backbone"])
    summary["repeated_rows"] = repeated
    summary["fits"] = meta["fits"]  # how the pages show FITS images
    summary["seconds"] = round(time.perf_counter() - started, 2)
    (out / INSPECT_SUMMARY).write_text(json.dumps(summary, indent=2, ensure_ascii=False,
                                                  default=_jsonable), encoding="utf-8")
    written = write_inspect_page(out) if page else None
    return InspectResult(out=out, summary=summary, page=written)


def embed_dataset(cfg: TrainConfig, dataset: LabeledImages, splits: Sequence[str]
                  ) -> tuple[np.ndarray, dict[int, str], list[str | None], dict[str, Any]]:
    """The embeddings training would compute (the same backbone, input size, FITS
    decoding fitted to the training split, and pixel cache, so the cache serves both):
    ``(features, unreadable, content hashes, meta)`` as :func:`embed_like` returns them.
    Sets ``cfg.input_size``."""
    from skysort.models.backbones import native_input_size

    train = [p for p, s in zip(dataset.paths, splits, strict=True) if s == "train"]
    decode = fit_decode(train, cfg.fits_decode(), MAX_PIXELS)
    mode, _ = resolve_finetune(cfg.finetune, len(train))
    cfg.input_size = choose_input_size(cfg.input_size, cfg.center_fraction, dataset.paths,
                                       native_input_size(cfg.backbone), mode)
    return embed_like(dataset.paths, cfg.backbone, cfg.weights, cfg.input_size,
                      cfg.center_fraction, cfg.cache_dir, cfg.workers, device=cfg.device,
                      pixels_for=cfg if mode != "head" else None, fits=decode.to_dict())


def embed_like(paths: Sequence[Path], backbone_name: str, weights: str, input_size: int | None,
               center_fraction: float, cache_dir: str | None = None,
               workers: int | None = None, *, device: str = "auto",
               pixels_for: TrainConfig | None = None, fits: Mapping[str, Any] | None = None
               ) -> tuple[np.ndarray, dict[int, str], list[str | None], dict[str, Any]]:
    """Embeddings of ``paths`` through the cache, with this backbone and preprocessing (and
    the pixel cache of ``pixels_for``'s fine-tuning, when given): ``(features, unreadable,
    content hashes, meta)``, ``meta`` saying how to embed another image alike. FITS images
    are decoded as ``fits`` (a :class:`FitsDecode` as a dict) says, else fitted to ``paths``."""
    from skysort.device import resolve_device
    from skysort.models.backbones import create_backbone
    from skysort.models.embeddings import cached_embeddings, content_hash, embedding_key

    decode = FitsDecode.from_dict(fits) if fits is not None else \
        fit_decode(list(paths), FitsDecode(), MAX_PIXELS)
    backbone = create_backbone(backbone_name, weights, input_size, center_fraction,
                               in_chans=decode.n_channels, fits=decode)
    key = embedding_key(backbone.name, backbone.weights_id, backbone.preprocess)
    hashes = [content_hash(p) for p in paths]
    pixels = pixel_cache(pixels_for.cache_dir, pixels_for.cache_max_gb, backbone.preprocess,
                         list(paths), hashes) if pixels_for is not None else None
    features, bad = cached_embeddings(backbone.model, backbone.preprocess, key, list(paths),
                                      cache_dir=cache_dir, pixel_cache=pixels,
                                      workers=workers, hashes=hashes,
                                      device=resolve_device(device))
    meta = {"backbone": backbone.name, "weights": weights, "weights_id": backbone.weights_id,
            "input_size": backbone.preprocess.input_size, "center_fraction": center_fraction,
            "embedding_key": key, "fits": decode.to_dict()}
    return features, bad, hashes, meta


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _label_errors(dataset: LabeledImages, features: np.ndarray, valid: np.ndarray, seed: int
                  ) -> tuple[LabelErrors | None, str]:
    index = np.flatnonzero(valid)
    labels = dataset.targets[index].astype(np.int64)
    counts = np.bincount(labels, minlength=len(dataset.classes))
    if (counts > 0).sum() < 2:
        return None, "not computed: fewer than two classes have readable images"
    if counts[counts > 0].min() < 2:
        rare = [dataset.classes[j] for j in np.flatnonzero((counts > 0) & (counts < 2))]
        return None, f"not computed: class(es) {rare} have a single image"
    probs = out_of_fold_probabilities(features[index], labels, len(dataset.classes), seed=seed)
    found = confident_learning(labels, probs)
    return found.spread(index, len(dataset)), (
        f"{int(found.suspected.sum())} suspected ({int(found.confident.sum())} confidently "
        f"another class); about {found.estimated_errors:.0f} labels estimated wrong")


def _fractions(dataset: LabeledImages, valid: np.ndarray) -> dict[str, Any]:
    """The votes view (fractions or counts): the task's tree (a count table with none is one
    question)."""
    task = make_task(dataset.task, dataset.classes, dataset.schema)
    view = vote_view(np.asarray(dataset.targets, dtype=float), dataset.classes,
                     task.tree(), valid, counts=task.vote_counts)
    for row in view["violations"]:
        row["path"] = dataset.relpath(dataset.paths[row["row"]])
    return view


def _summary(dataset: LabeledImages, cfg: TrainConfig, splits: list[str], split_rule: str,
             labels: list[str], prints: Fingerprints, bad: dict[int, str],
             groups: list[DuplicateGroup], pairs: list[DuplicatePair],
             errors: LabelErrors | None, errors_note: str, oddity: np.ndarray,
             rel: list[str], map_method: str, fractions: dict[str, Any] | None, key: str,
             backbone: str) -> dict[str, Any]:
    readable = [i for i in range(len(dataset)) if i not in bad]
    per_split: dict[str, dict[str, int]] = {}
    single = task_class(dataset.task).single_label and dataset.targets.ndim == 1
    if single:
        for i in readable:
            per_split.setdefault(dataset.classes[int(dataset.targets[i])], Counter())[splits[i]] \
                += 1
    counts = {c: sum(per_split.get(c, {}).values()) for c in dataset.classes} if single else {}
    total = sum(counts.values())
    majority = max(counts, key=lambda c: counts[c]) if total else None
    facts = [prints.info[i] for i in readable]
    return {
        "data": str(dataset.root), "task": dataset.task, "classes": dataset.classes,
        "images": len(dataset), "readable": len(readable), "unreadable": len(bad),
        "split_rule": split_rule,
        "splits": dict(Counter(splits[i] for i in readable)),
        "per_class": {c: dict(per_split.get(c, {})) for c in dataset.classes} if single else {},
        "imbalance": (max(counts.values()) / max(1, min(counts.values()))) if total else None,
        "majority_baseline": {"class": majority, "accuracy": counts[majority] / total}
        if majority else None,
        "formats": dict(Counter(str(f.get("format")) for f in facts)),
        "modes": dict(Counter(str(f.get("mode")) for f in facts)),
        "bits": dict(Counter(str(f.get("bits")) for f in facts)),
        "sizes": {"width": [int(f["width"]) for f in facts],  # type: ignore[call-overload]
                  "height": [int(f["height"]) for f in facts]},  # type: ignore[call-overload]
        "constant_images": [rel[i] for i in readable
                            if prints.info[i].get("std") in (0, 0.0)],
        "label_issues": {"count": len(dataset.issues),
                         "summary": summarize_issues(dataset.issues)},
        "duplicates": {
            "groups": len(groups), "pairs": len(pairs),
            "exact_groups": sum(g.match == "exact" for g in groups),
            "near_groups": sum(g.match == "near" for g in groups),
            "images_in_groups": sum(len(g.members) for g in groups),
            "groups_across_splits": sum(g.spans_splits for g in groups),
            "groups_across_labels": sum(g.spans_labels for g in groups),
        },
        "label_errors": None if errors is None else {
            "suspected": int(errors.suspected.sum()), "confident": int(errors.confident.sum()),
            "estimated_errors": round(errors.estimated_errors, 1),
            "thresholds": dict(zip(dataset.classes, errors.thresholds.round(4).tolist(),
                                   strict=True)),
            "confident_joint": errors.joint.tolist(),
        },
        "label_errors_note": errors_note,
        "oddities": {"method": "mean cosine distance to the 5 nearest images",
                     "top": [rel[i] for i in np.argsort(-np.nan_to_num(oddity, nan=-1))[:10]
                             if not np.isnan(oddity[i])]},
        "map": map_method,
        "fractions": None if fractions is None else {
            "agreement": fractions["agreement"], "questions": fractions["questions"],
            "votes": fractions["votes"], "violations": len(fractions["violations"]),
            "derived": {t: dict(Counter(names.tolist())) for t, names in
                        (fractions["derived"] or {}).items()},
        },
        "backbone": backbone, "input_size": cfg.input_size, "embedding_key": key,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    lines = [f"{summary['images']} images ({summary['unreadable']} unreadable), task "
             f"{summary['task']}; splits {summary['splits']}"]
    if summary.get("repeated_rows"):
        lines.append(f"repeated rows: {summary['repeated_rows']}, each file counted once "
                     "(label_issues.csv)")
    if summary.get("majority_baseline"):
        base = summary["majority_baseline"]
        lines.append(f"classes: {len(summary['classes'])}, imbalance "
                     f"{summary['imbalance']:.1f}x; majority baseline {base['accuracy']:.3f} "
                     f"({base['class']})")
    dup = summary["duplicates"]
    lines.append(f"duplicates: {dup['groups']} group(s) ({dup['exact_groups']} exact, "
                 f"{dup['near_groups']} near), {dup['groups_across_splits']} across splits "
                 f"(leakage), {dup['groups_across_labels']} with conflicting labels")
    lines.append(f"label errors: {summary['label_errors_note']}")
    if summary["oddities"]["top"]:
        lines.append(f"oddest images: {', '.join(summary['oddities']['top'][:3])}")
    if summary.get("fractions"):
        votes = summary["fractions"].get("votes")
        lines.append(f"votes: {summary['fractions']['violations']} tree violation(s)" + (
            f"; {votes['median']:g} votes per galaxy (median) on {votes['question']}"
            if votes and votes["median"] is not None else ""))
    if summary["constant_images"]:
        lines.append(f"blank (constant) images: {len(summary['constant_images'])}")
    return "\n".join(lines)

