"""The run's pictures, drawn from the files it writes (history, metrics), saved beside them
as PNG and embedded in its report too.

* ``training_curves.png``: losses and the validation score per epoch, both stages;
* ``confusion_matrix.png``: for single-label tasks, rows normalised by true class;
* ``reliability_diagram.png``: accuracy against confidence, before and after calibration;
* ``risk_coverage.png``: accuracy of the images kept as only the most confident are kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from skysort.evaluation.plots.figures import finish, pyplot
from skysort.rundir import CONFUSION_PNG, METRICS, RELIABILITY_PNG, RISK_PNG
from skysort.tasks import task_class, task_kinds


def plot_history(history: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Loss and validation-score curves; a dotted line marks where fine-tuning starts."""
    if not history:
        return None
    plt = pyplot()
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
    return finish(fig, path, 100)


def plot_confusion(metrics: dict[str, Any], path: Path) -> Path | None:
    """The confusion matrix of a single-label evaluation, rows normalised to recall."""
    kind = metrics.get("task")
    if kind not in task_kinds() or not task_class(kind).single_label or not metrics.get("n"):
        return None
    plt = pyplot()
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
    return finish(fig, path, 100)


def plot_reliability(metrics: dict[str, Any], path: Path) -> Path | None:
    """Reliability diagram: accuracy against confidence per bin (calibrated, and before
    calibration when the model is calibrated), bars of the images per bin below."""
    cal = metrics.get("calibration")
    if not cal or not cal["model"].get("bins"):
        return None
    plt = pyplot()
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(5.5, 6.5), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    curves = [("before calibration", cal.get("uncalibrated"), "C3"),
              ("calibrated" if cal["method"] != "none" else "model", cal["model"], "C0")]
    for label, scores, colour in curves:
        if not scores:
            continue
        bins = [b for b in scores["bins"] if b["count"]]
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o-",
                color=colour, label=f"{label} (ECE {scores['ece']:.3f})")
    ax.set_ylabel("accuracy in the bin")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"reliability ({cal['bins_count']} bins, {metrics['n']} images)")
    bins = cal["model"]["bins"]
    ax2.bar([(b["lower"] + b["upper"]) / 2 for b in bins], [b["count"] for b in bins],
            width=1 / len(bins), color="C0", edgecolor="white")
    ax2.set_xlabel("confidence (probability of the predicted class)")
    ax2.set_ylabel("images")
    return finish(fig, path, 100)


def plot_risk_coverage(metrics: dict[str, Any], path: Path) -> Path | None:
    """Accuracy of the images kept against the share kept, as the threshold rises."""
    risk = metrics.get("risk_coverage")
    if not risk or not risk["curve"]:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    curve = risk["curve"]
    ax.plot([r["kept"] for r in curve], [r["accuracy"] for r in curve], color="C0",
            label="model")
    ax.axhline(metrics["model"]["accuracy"], color="grey", linestyle=":",
               label="accuracy keeping every image")
    ax.set_xlabel("share of images kept (the most confident)")
    ax.set_ylabel("accuracy of the images kept")
    ax.set_xlim(1.0, 0.0)
    ax.legend(fontsize=8)
    return finish(fig, path, 100)


def plot_scores(metrics: dict[str, Any], metrics_path: Path) -> list[Path]:
    """The evaluation's pictures beside its metrics file: confusion matrix, reliability
    diagram and risk-coverage curve, for the task kinds that have them. Beside
    ``metrics.json`` they take the run directory's names; beside ``metrics_<name>.json``
    they get ``<name>_`` in front."""
    stem = metrics_path.stem
    prefix = "" if metrics_path.name == METRICS else \
        f"{stem.removeprefix('metrics_')}_"
    written = []
    for plot, name in ((plot_confusion, CONFUSION_PNG), (plot_reliability, RELIABILITY_PNG),
                       (plot_risk_coverage, RISK_PNG)):
        out = plot(metrics, metrics_path.with_name(prefix + name))
        if out is not None:
            written.append(out)
    return written
