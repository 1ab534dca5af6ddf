"""What each image file is, decoded once and cached: the facts inspection needs beside
its embedding.

A *fingerprint* of a file holds

* what the file says of itself (format, mode, bits per sample, width, height);
* a SHA-256 of its decoded 8-bit RGB pixels, so two files with the same pixels are exact
  duplicates even when their bytes differ (a PNG saved again, other metadata);
* perceptual hashes (``imagehash.phash``) of its eight rotations and flips by multiples
  of 90 degrees, so a copy turned or mirrored is still found;
* a 32 x 32 grey thumbnail, whose fine structure confirms a near-duplicate;
* the grey mean and spread of the pixels (a blank frame has none).

Fingerprints are kept in one SQLite file in the skysort cache, keyed by the SHA-256 of
the file's bytes (as the embeddings are), so a second inspection decodes nothing.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from skysort.data.batches import CRASHED, chunks, ordered_map
from skysort.data.images import describe_image, image_suffix, load_image, read_or_reason
from skysort.device import default_workers

#: Bumped when a fingerprint's content changes, to retire old cache entries.
FINGERPRINT_VERSION = 1
#: Side of the grey thumbnail kept per image.
THUMB = 32


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


def dihedral(image: np.ndarray, axes: tuple[int, int] = (0, 1)) -> list[np.ndarray]:
    """The eight rotations and flips by multiples of 90 degrees of an array's two ``axes``
    (views, not copies); the first is the array itself."""
    views = []
    for turns in range(4):
        turned = np.rot90(image, turns, axes=axes)
        views += [turned, np.flip(turned, axis=axes[1])]
    return views


def _phash(grey: np.ndarray) -> int:
    import imagehash

    return int(str(imagehash.phash(Image.fromarray(np.ascontiguousarray(grey)))), 16)


def fingerprint(path: Path) -> tuple[dict[str, object], np.ndarray, np.ndarray]:
    """One file's fingerprint: ``(info, 8 perceptual hashes, 32 x 32 thumbnail)``; raises
    :class:`~skysort.errors.ImageError` for a file that cannot be read."""
    image = load_image(path)
    info, _ = read_or_reason(describe_image, path)
    if info is None:  # read by skysort's fallbacks (a float TIFF) but not by its header
        info = {"format": image_suffix(path).lstrip(".").upper(), "mode": "?", "bits": 0,
                "width": image.size[0], "height": image.size[1]}
    pixels = np.asarray(image)
    digest = hashlib.sha256(f"{pixels.shape}".encode())
    digest.update(pixels.tobytes())
    grey = image.convert("L")
    values = np.asarray(grey, dtype=np.float32)
    # Hashed at a common size, so a copy resized keeps its hash.
    small = np.asarray(grey.resize((64, 64), Image.Resampling.BOX))
    hashes = np.array([_phash(v) for v in dihedral(small)], dtype=np.uint64)
    thumb = np.asarray(grey.resize((THUMB, THUMB), Image.Resampling.BOX), dtype=np.uint8)
    info = {**info, "pixels": digest.hexdigest(), "mean": round(float(values.mean()), 3),
            "std": round(float(values.std()), 3)}
    return info, hashes, thumb


#: A cached fingerprint: (info, hashes as bytes, thumbnail as bytes).
Entry = tuple[dict[str, object], bytes, bytes]


def _fingerprint_chunk(paths: Sequence[Path]) -> list[Entry | str]:
    out: list[Entry | str] = []
    for path in paths:
        result, why = read_or_reason(fingerprint, path)
        out.append(why if result is None else
                   (result[0], result[1].tobytes(), result[2].tobytes()))
    return out


def _crashed(paths: Sequence[Path]) -> list[Entry | str]:
    return [CRASHED] * len(paths)


class FingerprintCache:
    """Fingerprints by the SHA-256 of a file's bytes, in one SQLite file."""

    def __init__(self, cache_dir: str | Path) -> None:
        folder = Path(cache_dir) / "fingerprints"
        folder.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(folder / f"v{FINGERPRINT_VERSION}.sqlite", timeout=60)
        self._db.execute("CREATE TABLE IF NOT EXISTS fp (hash TEXT PRIMARY KEY, info TEXT, "
                         "phash BLOB, thumb BLOB)")

    def get_many(self, hashes: Sequence[str]) -> dict[str, Entry]:
        found = {}
        unique = sorted(set(hashes))
        for start in range(0, len(unique), 500):
            part = unique[start:start + 500]
            rows = self._db.execute("SELECT hash, info, phash, thumb FROM fp WHERE hash IN "
                                    f"({','.join('?' * len(part))})", part)
            for h, info, phash, thumb in rows:
                found[h] = (json.loads(info), phash, thumb)
        return found

    def put_many(self, items: dict[str, Entry]) -> None:
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO fp VALUES (?, ?, ?, ?)",
                                 [(h, json.dumps(i), p, t) for h, (i, p, t) in items.items()])

    def close(self) -> None:
        self._db.close()


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
