"""A trained model's outputs for a list of image files (:func:`model_outputs`): backbone
embeddings read from the cache when the backbone was never trained, otherwise the model
streamed over the decoded files (:mod:`skysort.models.streaming`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from skysort.data.transforms import create_transform
from skysort.models.info import ModelInfo

# Runners and streaming live in skysort.models.streaming; prediction imports these three
# from here, so they are re-exported.
from skysort.models.streaming import OnnxWorkerModel, Runner, iter_outputs

if TYPE_CHECKING:
    import torch

    from skysort.models.model import SkyModel

__all__ = ["OnnxWorkerModel", "Runner", "iter_outputs", "model_outputs"]


def model_outputs(model: SkyModel, info: ModelInfo, paths: Sequence[Path], *,
                  cache_dir: str | Path | None = None, batch_size: int = 32,
                  workers: int | None = None, device: torch.device | str = "cpu",
                  tta: bool = False, runner: Runner | None = None,
                  which: str = "published") -> tuple[np.ndarray, dict[int, str]]:
    """Outputs for every file (NaN rows for unreadable ones) and the reasons they failed.

    With a frozen backbone (and no TTA) the embeddings come from, and go to, the
    embedding cache, so evaluating right after training costs only the head. Otherwise
    ``runner`` (default: the model in torch) runs over the decoded files.

    Args:
        which: ``published`` (the calibrated outputs), ``logits``, or ``both``: the
            calibrated outputs and then the uncalibrated ones, side by side (each averaged
            over test-time views as prediction averages them).
    """
    import torch

    from skysort.models.embeddings import cached_embeddings, embedding_key
    from skysort.models.model import OUTPUT_KINDS, head_outputs, published_runner

    if which not in OUTPUT_KINDS:
        raise ValueError(f"which={which!r}: one of {OUTPUT_KINDS}")
    width = info.task.num_outputs * (2 if which == "both" else 1)
    outputs = np.full((len(paths), width), np.nan, dtype=np.float32)
    if info.frozen_backbone and not tta and runner is None:
        key = embedding_key(info.backbone, info.weights_id, info.preprocess)
        feats, bad = cached_embeddings(model.backbone, info.preprocess, key, paths,
                                       cache_dir=cache_dir, batch_size=batch_size,
                                       workers=workers, device=device, fingerprints=False)
        good = np.array([i for i in range(len(paths)) if i not in bad], dtype=np.int64)
        if len(good):
            model.eval()
            with torch.inference_mode():
                logits = model.head(torch.from_numpy(feats[good]).to(device))
                outputs[good] = head_outputs(model, logits, which).float().cpu().numpy()
        return outputs, bad
    if runner is not None and which != "published":
        raise ValueError("a given runner gives published outputs only")
    run = runner or published_runner(model, device, which)
    failed: dict[int, str] = {}
    start = 0
    preset = str(info.extra.get("augment", "sky")) if tta else None
    for chunk, out, errors in iter_outputs(run, create_transform(info.preprocess), paths,
                                           num_outputs=width,
                                           batch_size=batch_size, workers=workers, tta=preset):
        outputs[start:start + len(chunk)] = out
        failed.update({start + i: why for i, why in errors.items()})
        start += len(chunk)
    return outputs, failed
