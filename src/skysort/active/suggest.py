"""``skysort suggest``: the unlabelled images whose labels would teach a run the most.

:func:`suggest` applies a trained run to a pool of images (files, folders, globs, lists,
catalogues, as ``skysort predict`` takes them), leaves out what needs no label, and
writes the batch of ``n`` that :func:`skysort.active.strategies.select` chooses.

* Embeddings come from the embedding cache (keyed by the run's own backbone weights when
  it was fine-tuned), so a pool embedded once costs no decoding again; the head (one
  linear layer) then runs on the embeddings, and for BALD ``passes`` times with its
  dropout on.
* The pool streams in chunks of :data:`CHUNK`: per image only its outputs and a
  projection of its embedding (:data:`~skysort.active.scoring.DIMS` principal components
  of the labelled images) are kept, so memory grows by a few hundred bytes per pool
  image whatever the backbone's width.
* Left out, each with its reason in ``<output>_skipped.csv``: images of the run's
  ``split.csv`` (by path, and by content hash: a copy under another name), images
  listed twice or byte-identical to an earlier pool image, near-duplicates of a labelled
  image, and files that cannot be read.

A near-duplicate is a pool image whose nearest labelled image by embedding (cosine at
least ``near_duplicate``) is confirmed as the same picture by the fine-structure test
``skysort inspect`` uses (:mod:`skysort.inspection.duplicates`): embedding cosine alone
cannot tell a copy from a look-alike (distinct faint galaxies reach 0.99, and exactly the
look-alikes of labelled images from another class are the ones worth labelling). A copy
re-encoded so hard that its embedding moved below ``near_duplicate`` stays in the pool.
"""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from skysort.active.scoring import (
    Projection,
    Scorer,
    copies_of_labelled,
    nearest_labelled,
    run_embedding_key,
    task_view,
    unit_rows,
)
from skysort.active.strategies import STRATEGIES, TOP_FACTOR, Pool, select
from skysort.data.inputs import expand_inputs
from skysort.data.split import read_split_csv
from skysort.errors import ConfigError, DataError
from skysort.rundir import SPLIT, TO_LABEL, require

#: Pool images embedded and scored at a time.
CHUNK = 2048
#: Nearest labelled images (by embedding) each pool image is checked against as a copy.
NEIGHBOURS = 10
#: Stochastic passes of the head for BALD.
PASSES = 20
#: Embedding cosine with its nearest labelled image from which a pool image is checked
#: as a copy of it (by fine structure: :func:`~skysort.active.scoring.copies_of_labelled`):
#: the lowest cosine :mod:`skysort.inspection.duplicates` measured for a re-encoded copy.
NEAR_DUPLICATE = 0.5
#: The columns of the file :func:`suggest` writes.
COLUMNS = ("rank", "path", "prediction", "probability", "score", "reason")


def _chunks(items: Iterable[Path], size: int) -> Iterator[list[Path]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _key(path: Path) -> str:
    """One spelling of a path (absolute, normalised; links are not followed: a copy
    under a link is still found by its content hash)."""
    return os.path.abspath(path)


def labelled_paths(run: Path, labelled: Sequence[str | Path] | None, path_column: str
                   ) -> list[Path]:
    """The run's ``split.csv`` images, then those named by ``labelled``."""
    from skysort.models.plan import ResolvedPlan

    rows = read_split_csv(require(run, SPLIT))
    root = Path(ResolvedPlan.read(run).data_root or ".")
    paths = [root / r["path"] for r in rows]
    if labelled:
        paths += list(expand_inputs(labelled, path_column))
    return paths


def suggest(run: str | Path, pool: Sequence[str | Path], n: int, *,
            strategy: str = "default", labelled: Sequence[str | Path] | None = None,
            output: str | Path | None = None, seed: int = 0,
            near_duplicate: float | None = NEAR_DUPLICATE, passes: int = PASSES,
            top_factor: int = TOP_FACTOR, batch_size: int = 32, workers: int | None = None,
            cache_dir: str | Path | None = None, path_column: str = "path",
            quiet: bool = False) -> Path:
    """Ranks the pool's unlabelled images and writes the ``n`` to label next.

    Args:
        run: a trained run directory.
        pool: files, folders, glob patterns, lists of paths, catalogues.
        n: how many images to suggest.
        strategy: one of :data:`~skysort.active.strategies.STRATEGIES`.
        labelled: further images already labelled (beside the run's ``split.csv``).
        output: the CSV to write (default ``RUN/to_label.csv``); the images left out go
            to ``<output stem>_skipped.csv``.
        seed: for ``random``, ``badge`` and the dropout passes.
        near_duplicate: embedding cosine with its nearest labelled image from which a
            pool image is checked as a copy of it (None: only byte-identical copies are
            left out).
        passes: stochastic passes of the head for ``bald``.

    Returns:
        The output path.

    Raises:
        ConfigError: a bad ``n``, strategy or threshold, a run of a kind without
            probabilities, or ``bald`` on a head trained without dropout.
        DataError: an empty pool, or one where every image is labelled, a copy or
            unreadable.
        RunError: the run directory lacks a file.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"n={n!r}: must be a whole number of at least 1")
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
    if near_duplicate is not None and not 0 < near_duplicate <= 1:
        raise ConfigError(f"near_duplicate={near_duplicate}: must lie in (0, 1], or None")
    from skysort.models.embeddings import cached_embeddings, content_hash
    from skysort.models.info import read_model_info
    from skysort.models.model import load_model

    run = Path(run)
    info = read_model_info(run)
    to_probs, groups, names = task_view(info.task)  # a kind without probabilities: first
    if strategy == "bald" and info.dropout <= 0:
        raise ConfigError("strategy bald needs a head trained with dropout; this run has "
                          "dropout=0 (train with dropout > 0, or choose another strategy)")
    model, info = load_model(run)
    key = run_embedding_key(run, info)
    output = Path(output) if output else run / TO_LABEL
    skipped_path = output.with_name(f"{output.stem}_skipped.csv")

    def embed(paths: Sequence[Path], hashes: Sequence[str | None]
              ) -> tuple[np.ndarray, dict[int, str]]:
        return cached_embeddings(model.backbone, info.preprocess, key, paths,
                                 cache_dir=cache_dir, batch_size=batch_size,
                                 workers=workers, hashes=hashes, fingerprints=False)

    known = labelled_paths(run, labelled, path_column)
    known_keys = {_key(p) for p in known}
    known_hashes = [content_hash(p) for p in known]
    by_hash = {h: p for h, p in zip(known_hashes, known, strict=True) if h is not None}
    feats, bad = embed(known, known_hashes)
    keep = [i for i in range(len(known)) if i not in bad]
    known_unit = unit_rows(feats[keep])
    known_names = [known[i] for i in keep]
    known_kept_hashes = [known_hashes[i] for i in keep]
    del feats
    project = Projection(known_unit)
    scorer = Scorer(model, info, to_probs, groups, passes, seed)

    kept_paths: list[Path] = []
    probs_parts: list[np.ndarray] = []
    reduced_parts: list[np.ndarray] = []
    bald_parts: list[np.ndarray] = []
    pred_parts: list[np.ndarray] = []
    skipped = Skipped(skipped_path)
    seen_paths: set[str] = set()
    seen_hashes: dict[str, Path] = {}
    total = 0
    with skipped:
        for chunk in _chunks(expand_inputs(pool, path_column), CHUNK):
            total += len(chunk)
            todo, hashes = skipped.screen(chunk, known_keys, by_hash, seen_paths, seen_hashes,
                                          content_hash)
            if not todo:
                continue
            feats, bad = embed(todo, hashes)
            good = np.array([i for i in range(len(todo)) if i not in bad], dtype=np.int64)
            skipped.add([(todo[i], why) for i, why in sorted(bad.items())])
            unit = unit_rows(feats[good])
            if near_duplicate is not None and len(known_unit):
                copy = skipped.copies(todo, hashes, good, unit, known_unit, known_names,
                                      known_kept_hashes, near_duplicate, cache_dir, workers)
                good, unit = good[~copy], unit[~copy]
            if not len(good):
                continue
            kept_paths += [todo[i] for i in good]
            outputs = scorer.outputs(feats[good])
            probs_parts.append(to_probs(outputs).astype(np.float32))
            if info.task.single_label:  # the run's own decision (a binary run's threshold)
                pred_parts.append(info.task.predicted_class(outputs, info.threshold))
            reduced_parts.append(project(unit))
            if strategy == "bald":
                bald_parts.append(scorer.bald(feats[good], total))
    if total == 0:
        raise DataError(f"no image files found in {', '.join(map(str, pool))}")
    if not kept_paths:
        raise DataError(f"none of the {total} pool image(s) needs a label: each is already "
                        f"labelled, a copy of one or unreadable ({skipped_path} says which)")
    pool_view = Pool(np.concatenate(probs_parts), groups, np.concatenate(reduced_parts),
                     project(known_unit), names=names,
                     bald_scores=np.concatenate(bald_parts) if bald_parts else None)
    idx, scores, reasons = select(strategy, pool_view, n, np.random.default_rng(seed),
                                  top_factor=top_factor)
    predicted = np.concatenate(pred_parts) if pred_parts else None
    rows = [[rank, str(kept_paths[i]),
             *describe(pool_view, int(i), info.threshold,
                       None if predicted is None else int(predicted[i])),
             f"{s:.6g}", why]
            for rank, (i, s, why) in enumerate(zip(idx, scores, reasons, strict=True), 1)]
    write_rows(output, COLUMNS, rows)
    if not quiet:
        print(f"suggest ({strategy}): {len(rows)} of {len(kept_paths)} unlabelled image(s) "
              f"to label in {output}; {skipped.count} left out ({skipped_path})",
              file=sys.stderr)
    return output


def describe(pool: Pool, i: int, threshold: float, predicted: int | None = None
             ) -> tuple[str, str]:
    """``(prediction, probability)`` of pool image ``i``: the predicted class (the run's
    decision ``predicted``, else the most probable) and its probability (one
    distribution); the labels at or above ``threshold`` (yes/no columns); each
    question's most probable answer (several questions)."""
    names = pool.names or [str(c) for c in range(pool.probs.shape[1])]
    p = pool.probs[i]
    if len(pool.groups) == 1 and len(pool.groups[0]) > 1:
        g = pool.groups[0]
        best = g[int(np.argmax(p[g]))] if predicted is None else predicted
        return names[best], f"{p[best]:.4f}"
    parts = []
    for g in pool.groups:
        if len(g) == 1:
            if p[g[0]] >= threshold:
                parts.append(names[g[0]])
        else:
            parts.append(names[g[int(np.argmax(p[g]))]])
    return ";".join(parts), ""


def write_rows(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A CSV with a header row (its folder made first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


class Skipped:
    """``<output>_skipped.csv``: ``path,reason`` for every pool image left out, written as
    the pool streams (a context manager)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._fh: Any = None
        self._writer: Any = None

    def __enter__(self) -> Skipped:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "w", newline="", encoding="utf-8",
                        errors="surrogateescape")
        self._writer = csv.writer(self._fh)
        self._writer.writerow(("path", "reason"))
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()

    def add(self, rows: Iterable[tuple[Path, str]]) -> None:
        for path, why in rows:
            self._writer.writerow((str(path), why))
            self.count += 1

    def screen(self, chunk: Sequence[Path], known_keys: set[str], by_hash: dict[str, Path],
               seen_paths: set[str], seen_hashes: dict[str, Path],
               content_hash: Callable[[Path], str | None]
               ) -> tuple[list[Path], list[str | None]]:
        """The chunk's paths still to embed, and their content hashes; the rest (labelled
        by path or content, listed twice, a copy of an earlier pool image, unreadable) are
        written here with their reason."""
        todo: list[Path] = []
        hashes: list[str | None] = []
        for p in chunk:
            k = _key(p)
            if k in known_keys:
                self.add([(p, "already labelled")])
                continue
            if k in seen_paths:
                self.add([(p, "listed twice in the pool")])
                continue
            seen_paths.add(k)
            h = content_hash(p)
            if h is None:
                self.add([(p, "cannot read file")])
            elif h in by_hash:
                self.add([(p, f"same content as labelled {by_hash[h]}")])
            elif h in seen_hashes:
                self.add([(p, f"same content as pool image {seen_hashes[h]}")])
            else:
                seen_hashes[h] = p
                todo.append(p)
                hashes.append(h)
        return todo, hashes

    def copies(self, todo: Sequence[Path], hashes: Sequence[str | None], good: np.ndarray,
               unit: np.ndarray, known_unit: np.ndarray, known: Sequence[Path],
               known_hashes: Sequence[str | None], near: float,
               cache_dir: str | Path | None, workers: int | None) -> np.ndarray:
        """Which of the embedded images (``todo[good]``) are copies of a labelled image
        among their :data:`NEIGHBOURS` nearest by embedding (cosine at least ``near``);
        written here with the labelled image they copy."""
        best, which = nearest_labelled(unit, known_unit, k=NEIGHBOURS)
        rows, cols = np.nonzero(best >= near)
        copy = np.zeros(len(good), dtype=bool)
        if not len(rows):
            return copy
        pairs = np.stack([good[rows], which[rows, cols]], axis=1)
        confirmed, structure = copies_of_labelled(pairs, todo, hashes, known, known_hashes,
                                                  cache_dir, workers)
        found: dict[int, tuple[float, int, float]] = {}
        for r, c, ok, s in zip(rows, cols, confirmed, structure, strict=True):
            if ok and s > found.get(int(r), (-1.0, 0, 0.0))[0]:
                found[int(r)] = (float(s), int(which[r, c]), float(best[r, c]))
        for row, (s, j, cos) in sorted(found.items()):
            copy[row] = True
            self.add([(todo[good[row]], f"near-duplicate of labelled {known[j]} (the same "
                       f"picture by fine structure {s:.2f}; embedding cosine {cos:.3f})")])
        return copy
