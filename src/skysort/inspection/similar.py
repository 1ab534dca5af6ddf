"""``skysort similar``: the images of a source most like a query image.

The source's :class:`~skysort.inspection.similarity_index.SimilarityIndex` is read from an
inspection folder (``skysort inspect`` writes it), or built from a run directory or from
data, embedded as ``skysort inspect`` and ``skysort train`` embed them, so the embedding
cache serves all three; the query is embedded the same way and searched in a fraction of a
second.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from skysort.data.sources import first_occurrences
from skysort.errors import RunError
from skysort.inspection.inspector import count_once, embed_dataset, embed_like, training_split
from skysort.inspection.similarity_index import VECTORS, Match, SimilarityIndex
from skysort.rundir import CONFIG, MODEL_JSON, SIMILAR_DIR, SPLIT


def load_or_build_index(source: str | Path, config: Any = None) -> SimilarityIndex:
    """The similarity index of ``source``: an inspection folder (``skysort inspect``
    writes ``similar/``), a run directory (its images, embedded as it was trained), or
    data (anything ``skysort train`` reads; embedded through the cache)."""
    from skysort.config import TrainConfig
    from skysort.data.dataset import open_dataset
    from skysort.data.split import describe_target

    source = Path(source)
    for folder in (source / SIMILAR_DIR, source):
        if (folder / VECTORS).is_file():
            return SimilarityIndex.load(folder)
    if not source.exists():
        raise RunError(f"{source}: not found (give an inspection folder, a run directory or "
                       "image data)")
    cfg = config or TrainConfig()
    if (source / CONFIG).is_file() and (source / SPLIT).is_file():  # a run directory
        from skysort.data.split import read_split_csv
        from skysort.models.plan import ResolvedPlan

        run_cfg = TrainConfig.from_yaml(source / CONFIG)  # its backbone
        plan = ResolvedPlan.read(source)  # its data root and input size
        root = Path(plan.data_root or ".")
        rows = read_split_csv(source / SPLIT)
        rows = [rows[i] for i in first_occurrences([root / r["path"] for r in rows])]
        paths = [root / r["path"] for r in rows]
        labels = [r["label"] for r in rows]
        features, bad, _, meta = embed_like(paths, run_cfg.backbone, run_cfg.weights,
                                         plan.input_size, run_cfg.center_fraction,
                                         cfg.cache_dir, cfg.workers, fits=_run_fits(source))
    else:  # data: embedded as inspect and train embed it, so the cache serves all three
        cfg = cfg.updated({"data": str(source)})
        dataset, _ = count_once(open_dataset(cfg.data_spec()))  # each file once
        paths = list(dataset.paths)
        labels = [describe_target(dataset, i) for i in range(len(dataset))]
        features, bad, _, meta = embed_dataset(cfg, dataset, training_split(dataset, cfg)[0])
    keep = [i for i in range(len(paths)) if i not in bad]
    if len(keep) < 2:
        raise RunError(f"{source}: fewer than two readable images to search")
    return SimilarityIndex.build(features[keep], [str(paths[i]) for i in keep],
                                 [labels[i] for i in keep], meta)


def _run_fits(run: Path) -> dict[str, Any] | None:
    """How the run's model decodes FITS images (``model.json``); None for a run from before
    it said, or without a model."""
    try:
        fits = json.loads((run / MODEL_JSON).read_text(encoding="utf-8"))["preprocess"]["fits"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return fits if isinstance(fits, dict) else None


def find_similar(source: str | Path, query: str | Path, k: int = 12, *,
                 cache_dir: str | None = None, html: str | Path | None = None,
                 config: Any = None) -> list[Match]:
    """The ``k`` images of ``source`` most like the image ``query`` (see
    :func:`load_or_build_index` for what ``source`` may be); ``html``: also write them as
    a page with thumbnails.

    Raises:
        ImageError: the query image cannot be read.
    """
    from skysort.data.images import load_image
    from skysort.errors import ConfigError

    if k < 1:
        raise ConfigError(f"k={k}: ask for at least one similar image")
    load_image(query)  # a clear error for an unreadable query, before any work
    if config is None:
        from skysort.config import TrainConfig

        config = TrainConfig(cache_dir=cache_dir)
    index = load_or_build_index(source, config)
    meta = index.meta
    features, bad, _, _ = embed_like([Path(query)], meta["backbone"], meta.get("weights", "auto"),
                                  meta.get("input_size"), meta.get("center_fraction", 1.0),
                                  cache_dir, workers=0, fits=meta.get("fits") or {})
    if bad:
        from skysort.errors import ImageError

        raise ImageError(f"{query}: {bad[0]}")
    matches = index.query(features[0], k)
    if html is not None:
        _write_page(Path(html), Path(query), matches, source, meta.get("fits"))
    return matches


def _write_page(output: Path, query: Path, matches: list[Match], source: str | Path,
                fits: dict[str, Any] | None) -> Path:
    from skysort.evaluation.render import images_decoded_as, render, thumbnail_uri

    with images_decoded_as(fits):  # FITS images as the index saw them
        items = [{"path": m.path, "uri": thumbnail_uri(m.path), "label": m.label, "split": "",
                  "caption": f"#{m.rank} · {m.similarity:.3f} · {m.label}"} for m in matches]
        query_item = {"path": str(query), "uri": thumbnail_uri(query, 160)}
    return render("similar.html.j2", {"title": f"skysort similar: {query.name}",
                                      "query": query_item, "source": str(source),
                                      "matches": items}, output)
