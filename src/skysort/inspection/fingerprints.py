"""What each image file is, decoded once and cached: the facts inspection needs beside
its embedding.

A *fingerprint* of a file holds

* what the file says of itself (format, mode, bits per sample, width, height);
* a SHA-256 of its decoded 8-bit RGB pixels, so two files with the same pixels are exact
  duplicates even when their bytes differ (a PNG saved again, other metadata); a JPEG
  of at least 512 px on its shorter side is decoded at the reduced scale a 224 px model
  reads, so that a large photograph is decoded once for its embedding and its
  fingerprint: two such JPEGs with the same pixels at that scale are exact copies, and a
  PNG of a large JPEG's pixels is found as a near copy;
* perceptual hashes (``imagehash.phash``) of its eight rotations and flips by multiples
  of 90 degrees, so a copy turned or mirrored is still found;
* a 32 x 32 grey thumbnail, whose fine structure confirms a near-duplicate;
* the grey mean and spread of the pixels (a blank frame has none).

Fingerprints are kept in one SQLite file in the skysort cache, keyed by the SHA-256 of
the file's bytes (as the embeddings are), so a second inspection decodes nothing. The
embedding pass fingerprints each file it decodes, from the same pixels
(:class:`~skysort.data.fingerprinting.FingerprintingPreprocess`), so after the embeddings
of a cold ``skysort train`` or ``skysort inspect`` nothing is left to decode here either.
How a fingerprint is computed, and the cache, live in :mod:`skysort.data.fingerprinting`,
below the embedding pass; what is here reads them for inspection.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skysort.data.batches import CRASHED, chunks, ordered_map
from skysort.data.fingerprinting import FINGERPRINT_VERSION as FINGERPRINT_VERSION  # re-exported
from skysort.data.fingerprinting import (
    THUMB,
    Entry,
    Fingerprint,
    FingerprintCache,
    fingerprint_image,
    load_fingerprinted,
)
from skysort.data.fingerprinting import dihedral as dihedral  # re-exported
from skysort.data.images import describe_image, read_or_reason
from skysort.device import default_workers


@dataclass
class Fingerprints:
    """Fingerprints of ``n`` files, row ``i`` for file ``i`` (zeros where unreadable).

    Attributes:
        info: per file, the header facts (format, mode, bits, width, height), grey
            ``mean`` and ``std`` of the pixels, and ``pixels`` (SHA-256 of the decoded
            pixels); an empty dict for an unreadable file.
        phash: ``(n, 8)`` uint64, the perceptual hash of each rotation/flip; column 0 is
            the image as it is.
        thumbs: ``(n, 32, 32)`` uint8 grey thumbnails.
        bad: the reason each unreadable file could not be read, by index.
    """

    info: list[dict[str, object]]
    phash: np.ndarray
    thumbs: np.ndarray
    bad: dict[int, str]


def fingerprint(path: Path) -> Fingerprint:
    """One file's fingerprint: ``(info, 8 perceptual hashes, 32 x 32 thumbnail)``, decoded
    here (:func:`~skysort.data.fingerprinting.fingerprint_image`, as the embedding pass
    makes it); raises :class:`~skysort.errors.ImageError` for a file that cannot be read."""
    image = load_fingerprinted(path)
    header, _ = read_or_reason(describe_image, path)
    return fingerprint_image(path, image, header)


def _fingerprint_chunk(paths: Sequence[Path]) -> list[Entry | str]:
    out: list[Entry | str] = []
    for path in paths:
        result, why = read_or_reason(fingerprint, path)
        out.append(why if result is None else
                   (result[0], result[1].tobytes(), result[2].tobytes()))
    return out


def _crashed(paths: Sequence[Path]) -> list[Entry | str]:
    return [CRASHED] * len(paths)


def cached_fingerprints(paths: Sequence[Path], hashes: Sequence[str | None],
                        cache_dir: str | Path, workers: int | None = None) -> Fingerprints:
    """Fingerprints of ``paths`` (whose content hashes are ``hashes``, None for a file
    that cannot be read), from the cache where it has them, else decoded in ``workers``
    processes (default one per core) and cached."""
    cache = FingerprintCache(cache_dir)
    try:
        found = cache.get_many([h for h in hashes if h is not None])
        bad = {i: "cannot read file" for i, h in enumerate(hashes) if h is None}
        todo = [i for i, h in enumerate(hashes) if h is not None and h not in found]
        if todo:
            print(f"fingerprints: decoding {len(todo)} of {len(paths)} images",
                  file=sys.stderr)
            n_workers = default_workers() if workers is None else workers
            results = ordered_map(_fingerprint_chunk, chunks((paths[i] for i in todo), 32),
                                  n_workers, _crashed)
            fresh: dict[str, Entry] = {}
            position = 0
            for _, batch in results:
                for result in batch:
                    index = todo[position]
                    if isinstance(result, str):
                        bad[index] = result
                    else:
                        fresh[str(hashes[index])] = result
                    position += 1
            cache.put_many(fresh)
            found.update(fresh)
    finally:
        cache.close()
    n = len(paths)
    info: list[dict[str, object]] = [{} for _ in range(n)]
    phash = np.zeros((n, 8), dtype=np.uint64)
    thumbs = np.zeros((n, THUMB, THUMB), dtype=np.uint8)
    for i, h in enumerate(hashes):
        if i in bad or h is None:
            continue
        meta, ph, th = found[h]
        info[i] = meta
        phash[i] = np.frombuffer(ph, dtype=np.uint64)
        thumbs[i] = np.frombuffer(th, dtype=np.uint8).reshape(THUMB, THUMB)
    return Fingerprints(info=info, phash=phash, thumbs=thumbs, bad=bad)
