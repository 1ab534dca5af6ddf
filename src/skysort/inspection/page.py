"""``inspect.html``: the inspection as one self-contained page, rendered from its files.

It reads ``summary.json`` and the CSVs :mod:`skysort.inspection.inspector` wrote, and the
images they name (for thumbnails), through the run report's renderer
(:mod:`skysort.evaluation.render`): plots and thumbnails embedded, no script, nothing
fetched. Galleries are capped, so a large data set still gives a page of a few hundred KB.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from skysort.data.images import read_or_reason
from skysort.errors import RunError
from skysort.evaluation.plots import (
    plot_class_counts,
    plot_embedding_map,
    plot_image_sizes,
    plot_vote_agreement,
    plot_vote_totals,
)
from skysort.evaluation.render import (
    figure_uri,
    images_decoded_as,
    page_image,
    read_rows,
    render,
    thumbnail_uri,
)
from skysort.inspection.oddities import spread_points
from skysort.rundir import (
    BAD_FILES,
    DUPLICATES,
    INSPECT_IMAGES,
    INSPECT_PAGE,
    INSPECT_SUMMARY,
    LABEL_ERRORS,
    LABEL_ISSUES,
    ODDITIES,
    TREE_VIOLATIONS,
)

#: Images per gallery at most; duplicate groups shown at most.
GALLERY = 48
GROUPS = 24
#: Thumbnails placed on the map.
MAP_THUMBNAILS = 16
#: Rows of a table shown (the CSVs hold them all).
FIRST_ROWS = 20


def write_inspect_page(out: str | Path, output: str | Path | None = None) -> Path:
    """Renders ``out/inspect.html`` (or ``output``) from the files of an inspection."""
    out = Path(out)
    try:
        summary = json.loads((out / INSPECT_SUMMARY).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunError(f"{out}: no readable {INSPECT_SUMMARY} ({exc}); run skysort inspect "
                       "first") from exc
    root = Path(summary["data"])
    root = root if root.is_dir() else root.parent
    images = read_rows(out / INSPECT_IMAGES) or []
    by_path = {row["path"]: row for row in images}

    def item(path: str, caption: str) -> dict[str, Any]:
        row = by_path.get(path, {})
        return {"path": path, "uri": thumbnail_uri(root / path), "caption": caption,
                "label": row.get("label", ""), "split": row.get("split", "")}

    with images_decoded_as(summary.get("fits")):  # FITS images as the inspection saw them
        return _render_page(out, output, root, summary, images, item)


def _render_page(out: Path, output: str | Path | None, root: Path, summary: dict[str, Any],
                 images: list[dict[str, str]], item: Callable[[str, str], dict[str, Any]]
                 ) -> Path:
    groups = _group_rows(read_rows(out / DUPLICATES) or [])
    shown_groups = sorted(groups, key=lambda g: (-int(g["spans_splits"]),
                                                 -int(g["spans_labels"]), g["id"]))[:GROUPS]
    for group in shown_groups:
        group["items"] = [item(m["path"], f"{m['split']} · {m['label']}") for m in
                          group["members"][:8]]
    suspects = read_rows(out / LABEL_ERRORS) or []
    odd = read_rows(out / ODDITIES) or []
    context: dict[str, Any] = {
        "title": f"skysort inspect: {root.name or root}",
        "summary": summary,
        "class_plot": figure_uri(lambda buf: plot_class_counts(summary.get("per_class") or {},
                                                               buf)),
        "size_plot": figure_uri(lambda buf: plot_image_sizes(summary.get("sizes") or {}, buf)),
        "bad": (read_rows(out / BAD_FILES) or [])[:FIRST_ROWS],
        "issues": (read_rows(out / LABEL_ISSUES) or [])[:FIRST_ROWS],
        "groups": shown_groups,
        "suspects": [item(r["path"], "") | {
            "given": r["given_label"], "suggested": r["suggested_label"],
            "score": float(r["score"])} for r in suspects[:GALLERY]],
        "oddities": [item(r["path"], f"#{r['rank']} · {float(r['score']):.3f}")
                     for r in odd[:GALLERY // 2]],
        "map": _map(images, root, summary.get("map", ""), bool(summary.get("per_class"))),
        "fractions": _fractions(summary, out, images, item),
    }
    return render("inspect.html.j2", context, Path(output) if output else out / INSPECT_PAGE)


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
    votes = info.get("votes")  # vote counts only
    return {"agreement": info["agreement"], "derived": info["derived"],
            "questions": info.get("questions") or [], "votes": votes,
            "totals": figure_uri(lambda buf: plot_vote_totals(
                votes["histogram"], votes["question"], buf, votes["few_votes_below"]))
            if votes else None,
            "violations": (read_rows(out / TREE_VIOLATIONS) or [])[:FIRST_ROWS],
            "violation_count": info["violations"],
            "boxes": figure_uri(lambda buf: plot_vote_agreement(info["agreement"], buf)),
            "galleries": galleries}


def _map(images: list[dict[str, str]], root: Path, method: str, by_class: bool) -> str | None:
    """The map of the embeddings (the positions ``images.csv`` holds), with thumbnails of
    images spread over it; None with fewer than three placed images."""
    rows = [r for r in images if r.get("map_x") not in ("", None)]
    if len(rows) < 3:
        return None
    xy = np.array([[float(r["map_x"]), float(r["map_y"])] for r in rows])
    thumbnails = []
    for i in spread_points(xy, MAP_THUMBNAILS):
        image, _ = read_or_reason(page_image, root / rows[i]["path"])
        if image is not None:
            image.thumbnail((40, 40))
            thumbnails.append((i, np.asarray(image)))
    return figure_uri(lambda buf: plot_embedding_map(xy, [r["label"] for r in rows], thumbnails,
                                                     method, by_class, buf))
