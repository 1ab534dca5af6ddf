"""Running a trained model over image files, in batches, never stopping for a bad file.

:func:`iter_outputs` streams ``(indices, outputs, bad)`` batch by batch so callers can
write results as they come; :func:`model_outputs` collects them for a list of files,
reading backbone embeddings from the cache when the backbone was never trained.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from skysort.data.loader import image_loader
from skysort.embeddings import cached_embeddings, embedding_key
from skysort.models.model import ModelInfo, SkyModel


def iter_outputs(model: SkyModel, info: ModelInfo, paths: Sequence[Path], *,
                 batch_size: int = 32, workers: int | None = None,
                 device: torch.device | str = "cpu",
                 ) -> Iterator[tuple[list[int], np.ndarray, list[tuple[int, str]]]]:
    """Yields, per batch: indices of readable files, their outputs, and (index, reason)
    for each unreadable one. Outputs are what the task publishes (class probabilities)."""
    model.eval().to(device)
    model.to(memory_format=torch.channels_last)
    loader = image_loader(paths, info.preprocess.load, batch_size=batch_size, workers=workers)
    with torch.inference_mode():
        for index, images, bad in loader:
            if images is None:
                yield [], np.zeros((0, info.task.num_outputs), np.float32), bad
                continue
            images = images.to(device).contiguous(memory_format=torch.channels_last)
            outputs = model.predict(images).float().cpu().numpy()
            yield index.tolist(), outputs, bad


def model_outputs(model: SkyModel, info: ModelInfo, paths: Sequence[Path], *,
                  cache_dir: str | Path | None = None, batch_size: int = 32,
                  workers: int | None = None, device: torch.device | str = "cpu",
                  ) -> tuple[np.ndarray, dict[int, str]]:
    """Outputs for every file (NaN rows for unreadable ones) and the reasons they failed.

    With a frozen backbone the embeddings come from (and go to) the embedding cache, so
    evaluating right after training costs only the head.
    """
    outputs = np.full((len(paths), info.task.num_outputs), np.nan, dtype=np.float32)
    if info.frozen_backbone:
        key = embedding_key(info.backbone, info.weights_id, info.preprocess)
        feats, bad = cached_embeddings(model.backbone, info.preprocess, key, paths,
                                       cache_dir=cache_dir, batch_size=batch_size,
                                       workers=workers, device=device)
        good = np.array([i for i in range(len(paths)) if i not in bad], dtype=np.int64)
        if len(good):
            model.eval()
            with torch.inference_mode():
                logits = model.head(torch.from_numpy(feats[good]).to(device))
                outputs[good] = model.output(logits).float().cpu().numpy()
        return outputs, bad
    bad = {}
    for index, out, errors in iter_outputs(model, info, paths, batch_size=batch_size,
                                           workers=workers, device=device):
        outputs[index] = out
        bad.update(dict(errors))
    return outputs, bad
