"""What :func:`~skysort.active.suggest.suggest` computes from a run and embeddings: the
task's outputs as probabilities and answer groups (:func:`task_view`), the run's
embedding key, the head's outputs and BALD (:class:`Scorer`), the projection the
diversity strategies work in (:class:`Projection`), and the nearest labelled image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from skysort.active.strategies import grouped_bald
from skysort.errors import ConfigError
from skysort.rundir import MODEL_FILE, require

if TYPE_CHECKING:
    from skysort.models.info import ModelInfo
    from skysort.models.model import SkyModel
    from skysort.tasks import Task

#: Dimensions each pool embedding is reduced to for the diversity strategies.
DIMS = 64
#: Labelled embeddings the projection is fitted on, at most.
PCA_SAMPLE = 20_000

Outputs = Callable[[np.ndarray], np.ndarray]


def task_view(task: Task) -> tuple[Outputs, list[list[int]], list[str]]:
    """``(to_probabilities, groups, names)`` for a task's published outputs: the function
    that turns them into probabilities, the columns that form one distribution each (a
    single column: a yes/no probability) and each column's name.

    Raises:
        ConfigError: the kind's outputs are not probabilities of answers (e.g. a
            regression), so no uncertainty can be read from them.
    """
    if task.single_label:
        return task.class_probabilities, [list(range(len(task.classes)))], list(task.classes)
    fractions = getattr(task, "fractions", None)
    groups = getattr(task, "groups", None)
    if callable(fractions) and groups is not None:  # vote counts: expected fractions
        return fractions, [list(g) for g in groups], list(task.classes)
    tree = task.tree()
    if tree is not None:  # vote fractions: one distribution per question
        index = {c: j for j, c in enumerate(task.output_names)}
        return (np.asarray, [[index[a] for a in q.answers] for q in tree.questions],
                list(task.output_names))
    if task.probabilities or task.value_range == (0.0, 1.0):
        # multi-label, or vote fractions without a tree: one yes/no share per column
        return np.asarray, [[j] for j in range(task.num_outputs)], list(task.output_names)
    raise ConfigError(f"suggest needs a run whose outputs are probabilities of classes, "
                      f"labels or answers; this run predicts {task.kind} outputs")


def run_embedding_key(run: Path, info: ModelInfo) -> str:
    """The embedding cache's key for a run's backbone: the starting weights when it was
    frozen (the key training used), else the run's own weights file."""
    from skysort.data.images import file_digest
    from skysort.models.embeddings import embedding_key

    weights = info.weights_id if info.frozen_backbone else \
        f"run:{file_digest(require(run, MODEL_FILE))}"
    return embedding_key(info.backbone, weights, info.preprocess)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


class Projection:
    """Unit embeddings -> their :data:`DIMS` principal components, fitted on (at most
    :data:`PCA_SAMPLE` of) the labelled ones by an eigendecomposition of their covariance;
    with fewer labelled images than that, the unit embeddings as they are."""

    def __init__(self, labelled: np.ndarray, dims: int = DIMS) -> None:
        self.mean: np.ndarray | None = None
        self.components: np.ndarray | None = None
        if len(labelled) > dims and labelled.shape[1] > dims:
            rows = labelled
            if len(rows) > PCA_SAMPLE:
                pick = np.random.default_rng(0).choice(len(rows), PCA_SAMPLE, replace=False)
                rows = rows[np.sort(pick)]
            x = rows.astype(np.float64)
            mean = x.mean(axis=0)
            x -= mean
            _, vectors = np.linalg.eigh(x.T @ x)  # ascending eigenvalues
            self.mean = mean.astype(np.float32)
            self.components = np.ascontiguousarray(vectors[:, ::-1][:, :dims].T,
                                                   dtype=np.float32)

    def __call__(self, unit: np.ndarray) -> np.ndarray:
        if self.components is None or self.mean is None:
            return unit.astype(np.float32)
        return ((unit - self.mean) @ self.components.T).astype(np.float32)


class Scorer:
    """A run's model on embeddings: outputs, probabilities and BALD."""

    def __init__(self, model: SkyModel, info: ModelInfo, to_probs: Outputs,
                 groups: list[list[int]], passes: int, seed: int) -> None:
        self.model, self.info, self.to_probs = model, info, to_probs
        self.groups, self.passes, self.seed = groups, passes, seed

    def outputs(self, features: np.ndarray) -> np.ndarray:
        """Published outputs of the head (dropout off)."""
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(features)
            return self.model.output(self.model.head(x)).float().numpy()

    def bald(self, features: np.ndarray, start: int) -> np.ndarray:
        """BALD over :attr:`passes` passes of the head with its training dropout on."""
        import torch

        p = self.info.dropout
        linear = self.model.head[-1]
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + start)
        samples = []
        with torch.inference_mode():
            x = torch.from_numpy(features)
            for _ in range(self.passes):
                keep = (torch.rand(x.shape, generator=gen) >= p).to(x.dtype) / (1 - p)
                out = self.model.output(linear(x * keep)).float().numpy()
                samples.append(self.to_probs(out))
        return grouped_bald(np.stack(samples), self.groups)


def nearest_labelled(unit: np.ndarray, known: np.ndarray, k: int = 1, block: int = 8192
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``unit``, the ``k`` largest cosines with rows of ``known`` and their
    indices, ``(n, k)`` each, best first (``k=1``: ``(n,)`` each)."""
    k_all = min(k, len(known))
    best = np.full((len(unit), k_all), -np.inf, dtype=np.float32)
    which = np.zeros((len(unit), k_all), dtype=np.int64)
    for start in range(0, len(known), block):
        sims = unit @ known[start:start + block].T
        cand = np.concatenate([best, sims], axis=1)
        index = np.concatenate([which, np.arange(start, start + sims.shape[1])[None, :]
                                .repeat(len(unit), axis=0)], axis=1)
        top = np.argpartition(-cand, k_all - 1, axis=1)[:, :k_all]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(cand, top, axis=1),
                                                 axis=1, kind="stable"), axis=1)
        best = np.take_along_axis(cand, top, axis=1)
        which = np.take_along_axis(index, top, axis=1)
    return (best[:, 0], which[:, 0]) if k == 1 else (best, which)


def copies_of_labelled(pairs: np.ndarray, pool: Sequence[Path],
                       pool_hashes: Sequence[str | None], labelled: Sequence[Path],
                       labelled_hashes: Sequence[str | None], cache_dir: str | Path | None,
                       workers: int | None) -> tuple[np.ndarray, np.ndarray]:
    """For each row ``(i, j)`` of ``pairs``, whether ``pool[i]`` is a copy of
    ``labelled[j]`` (resized, re-encoded, turned or mirrored) by the fine-structure test
    of :mod:`skysort.inspection.duplicates` (embeddings alone cannot tell a copy from a
    look-alike), and the pair's structure similarity. Fingerprints are cached as
    ``skysort inspect`` caches them; only the images of a pair are read."""
    from skysort.inspection.duplicates import confirm_copies
    from skysort.inspection.fingerprints import cached_fingerprints
    from skysort.models.embeddings import default_cache_dir

    mine, first = np.unique(pairs[:, 0], return_inverse=True)
    theirs, second = np.unique(pairs[:, 1], return_inverse=True)
    second = second + len(mine)
    prints = cached_fingerprints([*(pool[i] for i in mine), *(labelled[j] for j in theirs)],
                                 [*(pool_hashes[i] for i in mine),
                                  *(labelled_hashes[j] for j in theirs)],
                                 cache_dir or default_cache_dir(), workers)
    confirmed, structure, _ = confirm_copies(prints, first, second)
    readable = np.array([bool(prints.info[a]) and bool(prints.info[b])
                         for a, b in zip(first, second, strict=True)], dtype=bool)
    return confirmed & readable, structure
