"""Pictures a person can look at, drawn from the files a run writes (history, metrics).

* ``training_curves.png``: losses and the validation score per epoch, both stages;
* ``confusion_matrix.png``: for single-label tasks, rows normalised by true class.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_history(history: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Loss and validation-score curves; a dotted line marks where fine-tuning starts."""
    if not history:
        return None
    plt = _pyplot()
    score_key = next((k for k in history[0] if k.startswith("val_") and k != "val_loss"), None)
    x = np.arange(1, len(history) + 1)
    fig, axes = plt.subplots(1, 2 if score_key else 1, figsize=(11 if score_key else 6, 4),
                             squeeze=False)
    ax = axes[0, 0]
    ax.plot(x, [h["train_loss"] for h in history], label="train loss")
    ax.plot(x, [h["val_loss"] for h in history], label="validation loss")
    ax.set_xlabel("epoch (both stages)")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    stages = [h.get("stage", "head") for h in history]
    if "finetune" in stages:
        start = stages.index("finetune") + 0.5
        for a in axes[0]:
            a.axvline(start, color="grey", linestyle=":", label="fine-tuning starts")
    ax.legend()
    if score_key:
        ax2 = axes[0, 1]
        values = [np.nan if h[score_key] in (None, "") else float(h[score_key])
                  for h in history]
        ax2.plot(x, values, color="C2")
        ax2.set_xlabel("epoch (both stages)")
        ax2.set_ylabel(score_key.replace("_", " "))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_confusion(metrics: dict[str, Any], path: Path) -> Path | None:
    """The confusion matrix of a single-label evaluation, rows normalised to recall."""
    if metrics.get("task") not in ("multiclass", "binary") or not metrics.get("n"):
        return None
    plt = _pyplot()
    cm = np.asarray(metrics["confusion_matrix"], dtype=float)
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    classes = metrics["classes"]
    size = max(4.0, 0.6 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center",
                    color="white" if share[i, j] > 0.5 else "black", fontsize=9)
    base = metrics["baseline"]
    ax.set_title(f"balanced accuracy {metrics['model']['balanced_accuracy']:.3f} "
                 f"(baseline {base['balanced_accuracy']:.3f})")
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
