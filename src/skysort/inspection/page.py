"""``inspect.html``: the inspection as one self-contained page, rendered from its files.

It reads ``summary.json`` and the CSVs :mod:`skysort.inspection.inspector` wrote, and the
images they name (for thumbnails), through the run report's renderer
(:mod:`skysort.evaluation.render`): plots and thumbnails embedded, no script, nothing
fetched. Galleries are capped, so a large data set still gives a page of a few hundred KB.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from skysort.errors import RunError
from skysort.evaluation.plots import pyplot
from skysort.evaluation.render import figure_uri, render, thumbnail_uri

#: Images per gallery at most; duplicate groups shown at most.
GALLERY = 48
GROUPS = 24
#: Thumbnails placed on the map.
MAP_THUMBNAILS = 16
#: Rows of a table shown (the CSVs hold them all).
FIRST_ROWS = 20


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as fh:
        return list(csv.DictReader(fh))


def write_inspect_page(out: str | Path, output: str | Path | None = None) -> Path:
    """Renders ``out/inspect.html`` (or ``output``) from the files of an inspection."""
    from skysort.inspection import inspector as names

    out = Path(out)
    try:
        summary = json.loads((out / names.SUMMARY).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunError(f"{out}: no readable {names.SUMMARY} ({exc}); run skysort inspect "
                       "first") from exc
    root = Path(summary["data"])
    root = root if root.is_dir() else root.parent
    images = _rows(out / names.IMAGES)
    by_path = {row["path"]: row for row in images}

    def item(path: str, caption: str) -> dict[str, Any]:
        row = by_path.get(path, {})
        return {"path": path, "uri": thumbnail_uri(root / path), "caption": caption,
                "label": row.get("label", ""), "split": row.get("split", "")}

    groups = _group_rows(_rows(out / names.DUPLICATES))
    shown_groups = sorted(groups, key=lambda g: (-int(g["spans_splits"]),
                                                 -int(g["spans_labels"]), g["id"]))[:GROUPS]
    for group in shown_groups:
        group["items"] = [item(m["path"], f"{m['split']} · {m['label']}") for m in
                          group["members"][:8]]
    suspects = _rows(out / names.LABEL_ERRORS)
    odd = _rows(out / names.ODDITIES)
    context: dict[str, Any] = {
        "title": f"skysort inspect: {root.name or root}",
        "summary": summary,
        "class_plot": figure_uri(lambda buf: _plot_classes(summary, buf)),
        "size_plot": figure_uri(lambda buf: _plot_sizes(summary, buf)),
        "bad": _rows(out / names.BAD_FILES)[:FIRST_ROWS],
        "issues": _rows(out / names.LABEL_ISSUES)[:FIRST_ROWS],
        "groups": shown_groups,
        "suspects": [item(r["path"], "") | {
            "given": r["given_label"], "suggested": r["suggested_label"],
            "score": float(r["score"])} for r in suspects[:GALLERY]],
        "oddities": [item(r["path"], f"#{r['rank']} · {float(r['score']):.3f}")
                     for r in odd[:GALLERY // 2]],
        "map": figure_uri(lambda buf: _plot_map(images, root, summary.get("map", ""),
                                                bool(summary.get("per_class")), buf)),
        "fractions": _fractions(summary, out, images, item),
    }
    return render("inspect.html.j2", context, Path(output) if output else out / names.PAGE)


def _group_rows(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {}
    for row in rows:
        group = groups.setdefault(row["group"], {"id": int(row["group"]), "kind": row["kind"],
                                                 "spans_splits": row["spans_splits"] == "1",
                                                 "spans_labels": row["spans_labels"] == "1",
                                                 "members": []})
        group["members"].append(row)
    return list(groups.values())


def _fractions(summary: dict[str, Any], out: Path, images: list[dict[str, str]],
               item: Callable[..., dict[str, Any]]) -> dict[str, Any] | None:
    from skysort.inspection import inspector as names

    info = summary.get("fractions")
    if not info:
        return None
    galleries = []
    for key in [k for k in (images[0] if images else {}) if k.startswith("derived_")]:
        threshold = key.removeprefix("derived_")
        for name in ("elliptical", "spiral", "barred spiral"):
            paths = [r["path"] for r in images if r[key] == name]
            galleries.append({"threshold": threshold, "name": name, "count": len(paths),
                              "images": [item(p, name) for p in paths[:8]]})
    return {"agreement": info["agreement"], "derived": info["derived"],
            "violations": _rows(out / names.VIOLATIONS)[:FIRST_ROWS],
            "violation_count": info["violations"],
            "boxes": figure_uri(lambda buf: _plot_agreement(info["agreement"], buf)),
            "galleries": galleries}


def _plot_classes(summary: dict[str, Any], buffer: Any) -> Any:
    per_class = summary.get("per_class") or {}
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
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer


def _plot_sizes(summary: dict[str, Any], buffer: Any) -> Any:
    sizes = summary.get("sizes") or {}
    if not sizes.get("width"):
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.0))
    ax.hist([sizes["width"], sizes["height"]], bins=30, label=["width", "height"],
            color=["#3d6fb6", "#e69f00"])
    ax.set_xlabel("pixels")
    ax.set_ylabel("images")
    ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer


def _plot_map(images: list[dict[str, str]], root: Path, method: str, by_class: bool,
              buffer: Any) -> Any:
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    from skysort.data.images import load_image, read_or_reason
    from skysort.inspection.oddities import spread_points

    rows = [r for r in images if r.get("map_x") not in ("", None)]
    if len(rows) < 3:
        return None
    plt = pyplot()
    xy = np.array([[float(r["map_x"]), float(r["map_y"])] for r in rows])
    labels = [r["label"] for r in rows]
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
    for i in spread_points(xy, MAP_THUMBNAILS):
        image, _ = read_or_reason(load_image, root / rows[i]["path"])
        if image is None:
            continue
        image.thumbnail((40, 40))
        box = AnnotationBbox(OffsetImage(np.asarray(image), zoom=0.8), xy[i], frameon=True,
                             pad=0.1)
        ax.add_artist(box)
    ax.set_title(f"{method} map of the embeddings", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer


def _plot_agreement(rows: list[dict[str, Any]], buffer: Any) -> Any:
    stats = [{"label": r["answer"], "whislo": r["whislo"], "q1": r["q1"], "med": r["med"],
              "q3": r["q3"], "whishi": r["whishi"], "fliers": []} for r in rows if "med" in r]
    if not stats:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * len(stats) + 2), 3.6), layout="constrained")
    ax.bxp(stats, showfliers=False)
    for level in (0.6, 0.8, 0.9):
        ax.axhline(level, color="#b3261e", lw=0.6, ls=":")
    ax.set_ylabel("share of the question's votes")
    ax.set_ylim(0, 1)
    ax.tick_params(axis="x", rotation=60, labelsize=8)
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer
