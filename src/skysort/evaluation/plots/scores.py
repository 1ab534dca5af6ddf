"""The report's pictures of a model's scores: ROC and precision-recall curves per class or
label, and for vote fractions the RMSE per column beside the mean predictor, predicted
against true fractions, and how much volunteers and the model agree."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from skysort.evaluation.plots.figures import finish, pyplot


def plot_roc_pr(curves: list[tuple[str, np.ndarray, np.ndarray]], file: Any) -> Any:
    """ROC and precision-recall curves of ``(name, is_positive, score)`` per class or label
    (one against the rest), with chance and prevalence marked."""
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    plt = pyplot()
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(10, 4.2))
    for name, y, score in curves:
        if y.all() or not y.any():
            continue
        fpr, tpr, _ = roc_curve(y, score)
        precision, recall, _ = precision_recall_curve(y, score)
        roc.plot(fpr, tpr, label=f"{name} (AUC {auc(fpr, tpr):.3f})")
        pr.plot(recall, precision, label=f"{name} (prevalence {y.mean():.2f})")
        pr.axhline(y.mean(), color=roc.lines[-1].get_color(), linestyle=":", linewidth=0.8)
    roc.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance (AUC 0.5)")
    roc.set_xlabel("false positive rate")
    roc.set_ylabel("true positive rate")
    roc.set_title("ROC (each against the rest)")
    pr.set_xlabel("recall (completeness)")
    pr.set_ylabel("precision (purity)")
    pr.set_title("precision-recall (dotted: prevalence)")
    for ax in (roc, pr):
        ax.legend(fontsize=7)
    return finish(fig, file, 80)


def plot_fraction_rmse(metrics: dict[str, Any], file: Any) -> Any:
    """RMSE per vote-fraction column, the model's beside the mean predictor's."""
    plt = pyplot()
    names = list(metrics["per_column"])
    fig, ax = plt.subplots(figsize=(max(6.0, 0.28 * len(names) + 2), 3.6))
    x = np.arange(len(names))
    ax.bar(x - 0.2, [metrics["per_column"][c]["rmse"] for c in names], 0.4, label="model")
    ax.bar(x + 0.2, [metrics["per_column"][c]["baseline_rmse"] for c in names], 0.4,
           label="mean predictor", color="lightgrey")
    ax.set_xticks(x, names, rotation=90, fontsize=7)
    ax.set_ylabel("RMSE")
    ax.legend(fontsize=8)
    return finish(fig, file, 80)


def plot_fraction_scatter(true: np.ndarray, pred: np.ndarray, columns: list[str],
                          file: Any, xlabel: str = "true fraction") -> Any:
    """Predicted against true fraction, one small panel per column (2,000 images at most;
    a NaN true value, a question nobody answered, is left out)."""
    plt = pyplot()
    n = len(columns)
    cols = min(6, n)
    lines = math.ceil(n / cols)
    fig, axes = plt.subplots(lines, cols, figsize=(1.9 * cols, 1.9 * lines), squeeze=False)
    keep = np.random.default_rng(0).permutation(len(true))[:2000]  # bounded points
    for j, ax in enumerate(axes.flat):
        if j >= n:
            ax.axis("off")
            continue
        ax.scatter(true[keep, j], pred[keep, j], s=2, alpha=0.4)
        ax.plot([0, 1], [0, 1], color="grey", linewidth=0.6)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(columns[j], fontsize=7)
        ax.tick_params(labelsize=6)
    fig.supxlabel(xlabel, fontsize=8)
    fig.supylabel("predicted", fontsize=8)
    return finish(fig, file, 70)


def plot_fraction_agreement(true: np.ndarray, pred: np.ndarray, file: Any) -> Any:
    """Histograms of each image's largest fraction: the volunteers' and the model's."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    bins = np.linspace(0, 1, 21)
    ax.hist(true.max(axis=1), bins=bins, alpha=0.6, label="volunteers (true)")
    ax.hist(pred.max(axis=1), bins=bins, alpha=0.6, label="model")
    ax.set_xlabel("agreement: the largest fraction of any answer")
    ax.set_ylabel("images")
    ax.legend(fontsize=8)
    return finish(fig, file, 80)
