"""The inspect page's pictures of the data before training: images per class and split,
image sizes, the map of the embeddings, how much volunteers agree on each answer, and
how many voted on each galaxy (also in the report of a model of vote counts)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from skysort.evaluation.plots.figures import finish, pyplot

#: Bars of a histogram of vote totals at most (a bar per whole number of votes below).
VOTE_BINS = 60


def plot_class_counts(per_class: dict[str, dict[str, int]], file: Any) -> Any:
    """Images per class, stacked by split; None without classes."""
    if not per_class:
        return None
    plt = pyplot()
    classes = list(per_class)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(classes) + 2), 3.2))
    bottom = np.zeros(len(classes))
    for split, colour in (("train", "#3d6fb6"), ("val", "#e69f00"), ("test", "#11753a")):
        values = np.array([per_class[c].get(split, 0) for c in classes], dtype=float)
        ax.bar(classes, values, bottom=bottom, label=split, color=colour)
        bottom += values
    ax.set_ylabel("images")
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.tick_params(axis="x", rotation=30)
    return finish(fig, file, 80)


def plot_image_sizes(sizes: dict[str, list[int]], file: Any) -> Any:
    """Histograms of the images' widths and heights; None without any."""
    if not sizes.get("width"):
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.0))
    ax.hist([sizes["width"], sizes["height"]], bins=30, label=["width", "height"],
            color=["#3d6fb6", "#e69f00"])
    ax.set_xlabel("pixels")
    ax.set_ylabel("images")
    ax.legend(frameon=False)
    return finish(fig, file, 80)


def plot_embedding_map(xy: np.ndarray, labels: Sequence[str],
                       thumbnails: Sequence[tuple[int, np.ndarray]], method: str,
                       by_class: bool, file: Any) -> Any:
    """The 2-D map of the embeddings: a point per image (a colour per class when
    ``by_class`` and there are 20 classes at most), and small ``(index, pixels)``
    thumbnails placed on their points."""
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    plt = pyplot()
    names = sorted(set(labels))
    fig, ax = plt.subplots(figsize=(8, 6.2))
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    if by_class and len(names) <= 20:
        for k, name in enumerate(names):
            mask = np.array([label == name for label in labels])
            ax.scatter(xy[mask, 0], xy[mask, 1], s=9, color=cmap(k % cmap.N), label=name,
                       alpha=0.8)
        ax.legend(frameon=False, fontsize=8, markerscale=2, loc="best")
    else:  # vote fractions, multi-label rows, many classes: one colour
        ax.scatter(xy[:, 0], xy[:, 1], s=9, color="#3d6fb6", alpha=0.7)
    for i, pixels in thumbnails:
        box = AnnotationBbox(OffsetImage(pixels, zoom=0.8), xy[i], frameon=True, pad=0.1)
        ax.add_artist(box)
    ax.set_title(f"{method} map of the embeddings", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    return finish(fig, file, 90)


def plot_vote_agreement(rows: list[dict[str, Any]], file: Any) -> Any:
    """Box plots of each answer's share of its question's votes (the quartiles and
    whiskers of :func:`skysort.inspection.votes.agreement`), with 0.6, 0.8 and 0.9
    marked; None without them."""
    stats = [{"label": r["answer"], "whislo": r["whislo"], "q1": r["q1"], "med": r["med"],
              "q3": r["q3"], "whishi": r["whishi"], "fliers": []} for r in rows if "med" in r]
    if not stats:
        return None
    plt = pyplot()
    longest = max(len(str(s["label"])) for s in stats)  # slanted names take height too
    fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * len(stats) + 2), 2.8 + 0.06 * longest),
                           layout="constrained")
    ax.bxp(stats, showfliers=False)
    for level in (0.6, 0.8, 0.9):
        ax.axhline(level, color="#b3261e", lw=0.6, ls=":")
    ax.set_ylabel("share of the question's votes")
    ax.set_ylim(0, 1)
    ax.tick_params(axis="x", rotation=60, labelsize=8)
    return finish(fig, file, 80, tight=False)


def vote_histogram(totals: np.ndarray) -> dict[str, list[int]]:
    """Galaxies per number of votes: ``{"edges": [...], "galaxies": [...]}``, a bin per
    whole number of votes (wider bins, at most :data:`VOTE_BINS`, for larger totals); bin
    ``i`` holds totals from ``edges[i]`` up to, not including, ``edges[i + 1]``."""
    totals = np.asarray(totals, dtype=np.int64)
    most = int(totals.max()) if len(totals) else 0
    width = max(1, -(-(most + 1) // VOTE_BINS))
    edges = np.arange(0, most + width + 1, width)
    galaxies, _ = np.histogram(totals, bins=edges)
    return {"edges": edges.tolist(), "galaxies": galaxies.tolist()}


def plot_vote_totals(histogram: dict[str, list[int]], question: str, file: Any,
                     few_below: int | None = None) -> Any:
    """Bars of :func:`vote_histogram` (galaxies per number of votes on ``question``), with
    the "few votes" boundary marked when given; None without galaxies."""
    if not sum(histogram.get("galaxies", [])):
        return None
    plt = pyplot()
    edges = np.asarray(histogram["edges"], dtype=float)
    fig, ax = plt.subplots(figsize=(6.0, 3.2))
    ax.bar(edges[:-1], histogram["galaxies"], width=np.diff(edges), align="edge",
           color="#3d6fb6", edgecolor="white", linewidth=0.4)
    if few_below is not None:
        ax.axvline(few_below, color="#b3261e", lw=0.8, ls=":",
                   label=f"{few_below} votes (fewer: 'few votes')")
        ax.legend(frameon=False, fontsize=8)
    ax.set_xlabel(f"votes on {question} (per galaxy)")
    ax.set_ylabel("galaxies")
    return finish(fig, file, 80)
