"""The CSV files of an inspection (see :mod:`skysort.inspection.inspector` for what each
holds): one row per image, per member of a duplicate group, per pair, per suspected label
error and per odd image; floats written with six significant digits."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from skysort.data.sources import LabeledImages
from skysort.inspection.duplicates import DuplicateGroup, DuplicatePair
from skysort.inspection.fingerprints import Fingerprints
from skysort.inspection.label_errors import LabelErrors


def write_rows(path: Path, rows: Sequence[dict[str, Any]], fields: Sequence[str]) -> None:
    """``rows`` under the header ``fields`` (other keys left out)."""
    with open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v)
                             for k, v in row.items()})


def write_images(path: Path, dataset: LabeledImages, rel: list[str], splits: list[str],
                 labels: list[str], prints: Fingerprints, oddity: np.ndarray,
                 errors: LabelErrors | None, coords: np.ndarray, groups: list[DuplicateGroup],
                 fractions: dict[str, Any] | None) -> None:
    """``images.csv``: a row per image, in the data's order."""
    group_of = {m: g for g, group in enumerate(groups, 1) for m in group.members}
    derived = (fractions or {}).get("derived") or {}
    fields = ["path", "split", "label", "format", "mode", "bits", "width", "height", "mean",
              "std", "oddity", "label_score", "suspected", "suggested", "map_x", "map_y",
              "group", *[f"derived_{t}" for t in derived]]
    rows = []
    for i in range(len(dataset)):
        info = prints.info[i]
        row: dict[str, Any] = {"path": rel[i], "split": splits[i], "label": labels[i],
                               **{k: info.get(k, "") for k in ("format", "mode", "bits",
                                                               "width", "height", "mean",
                                                               "std")},
                               "oddity": oddity[i], "map_x": coords[i, 0],
                               "map_y": coords[i, 1], "group": group_of.get(i, "")}
        if errors is not None:
            row["label_score"] = errors.score[i]
            row["suspected"] = int(errors.suspected[i])
            row["suggested"] = dataset.classes[errors.suggested[i]] \
                if errors.suggested[i] >= 0 else ""
        for t, names in derived.items():
            row[f"derived_{t}"] = names[i]
        rows.append({k: ("" if isinstance(v, float) and np.isnan(v) else v)
                     for k, v in row.items()})
    write_rows(path, rows, fields)


def write_groups(path: Path, groups: list[DuplicateGroup], rel: list[str]) -> None:
    """``duplicates.csv``: a row per member of each group, groups numbered from 1."""
    rows = []
    for g, group in enumerate(groups, 1):
        for k, m in enumerate(group.members):
            rows.append({"group": g, "kind": group.match, "path": rel[m],
                         "split": group.splits[k] if group.splits else "",
                         "label": group.labels[k] if group.labels else "",
                         "spans_splits": int(group.spans_splits),
                         "spans_labels": int(group.spans_labels)})
    write_rows(path, rows, ["group", "kind", "path", "split", "label", "spans_splits",
                            "spans_labels"])


def write_pairs(path: Path, pairs: list[DuplicatePair], rel: list[str]) -> None:
    """``duplicate_pairs.csv``: the pairs behind the groups, with their signals."""
    write_rows(path, [{"path_a": rel[p.i], "path_b": rel[p.j], "kind": p.match,
                       "cosine": p.cosine, "hash_bits": p.hamming, "structure": p.structure}
                      for p in pairs],
               ["path_a", "path_b", "kind", "cosine", "hash_bits", "structure"])


def write_label_errors(path: Path, errors: LabelErrors, dataset: LabeledImages,
                       rel: list[str], splits: list[str]) -> None:
    """``suspected_label_errors.csv``: the suspects, worst first."""
    rows = []
    for i in errors.ranking():
        given, suggested = int(dataset.targets[i]), int(errors.suggested[i])
        rows.append({"path": rel[i], "given_label": dataset.classes[given],
                     "suggested_label": dataset.classes[suggested],
                     "score": float(errors.score[i]),
                     "p_given": float(errors.probabilities[i, given]),
                     "p_suggested": float(errors.probabilities[i, suggested]),
                     "split": splits[i], "confident": int(errors.confident[i])})
    write_rows(path, rows, ["path", "given_label", "suggested_label", "score", "p_given",
                            "p_suggested", "split", "confident"])


def write_oddities(path: Path, oddity: np.ndarray, rel: list[str], labels: list[str],
                   splits: list[str]) -> None:
    """``oddities.csv``: the images with a score, oddest first."""
    order = [int(i) for i in np.argsort(-np.nan_to_num(oddity, nan=-1.0), kind="stable")
             if not np.isnan(oddity[i])]
    write_rows(path, [{"rank": r, "path": rel[i], "label": labels[i], "split": splits[i],
                       "score": float(oddity[i])} for r, i in enumerate(order, 1)],
               ["rank", "path", "label", "split", "score"])
