"""The run's labelled images that look most like each image to label, by embedding: what
a person labelling wants beside an uncertain galaxy (how were ones like it called before?).

The run's images are indexed as ``skysort similar RUN`` indexes them
(:func:`skysort.inspection.similar.load_or_build_index`: the starting backbone, through
the embedding cache, which ``skysort train`` filled), and the images to label are
embedded alike, so a second session computes nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from skysort.inspection.similarity_index import Match

#: Labelled look-alikes shown beside each image.
LOOKALIKES = 4


def labelled_lookalikes(run: str | Path, paths: Sequence[Path], k: int = LOOKALIKES,
                        cache_dir: str | None = None, workers: int | None = None
                        ) -> list[list[Match]]:
    """Per image of ``paths``, the ``k`` labelled images of ``run`` most like it (none for
    an image that cannot be read)."""
    from skysort.inspection.inspector import embed_like
    from skysort.inspection.similar import load_or_build_index

    index = load_or_build_index(run)
    meta = index.meta
    print(f"skysort label: looking up each image's labelled look-alikes in {run}",
          file=sys.stderr, flush=True)
    features, bad, _, _ = embed_like(list(paths), meta["backbone"], meta.get("weights", "auto"),
                                     meta.get("input_size"), meta.get("center_fraction", 1.0),
                                     cache_dir, workers, fits=meta.get("fits") or {})
    return [[] if i in bad else index.query(features[i], k) for i in range(len(paths))]
