"""Fingerprints of decoded images, and the cache that keeps them.

What :mod:`skysort.inspection.fingerprints` says of each file (header facts, a SHA-256 of
its decoded pixels, perceptual hashes of its eight rotations and flips, a grey thumbnail,
its grey mean and spread) is computed here from pixels already decoded (a JPEG of at least
512 px on its shorter side at a reduced scale, :func:`load_fingerprinted`), by
:func:`fingerprint_image`, so that whoever decodes a file anyway can fingerprint it too:
the embedding pass does, through :class:`FingerprintingPreprocess`, in its worker
processes, and inspection's copies check then finds every fingerprint in the cache and
decodes nothing. Both routes use this one function, so a file's fingerprint is the same
whichever made it.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any, cast

import numpy as np
from PIL import Image

from skysort.data.fits import FITS_EXTENSIONS
from skysort.data.images import (
    describe_image,
    file_digest,
    image_size,
    image_suffix,
    load_image,
    read_or_reason,
)
from skysort.data.transforms import EvalTransform, Preprocess

#: Bumped when a fingerprint's content changes, to retire old cache entries.
FINGERPRINT_VERSION = 2
#: A JPEG is fingerprinted at the reduced scale that keeps both sides at least this long
#: (a 224 px model reads it so): its hashes and thumbnail need 64 px.
FINGERPRINT_SIDE = 256
#: Side of the grey thumbnail kept per image.
THUMB = 32

#: One file's fingerprint: (info, 8 perceptual hashes, 32 x 32 grey thumbnail).
Fingerprint = tuple[dict[str, object], np.ndarray, np.ndarray]
#: A cached fingerprint: (info, hashes as bytes, thumbnail as bytes).
Entry = tuple[dict[str, object], bytes, bytes]


def load_fingerprinted(path: str | Path) -> Image.Image:
    """The pixels a fingerprint is made of: the file as
    :func:`~skysort.data.images.load_image` decodes it, a JPEG larger than twice
    :data:`FINGERPRINT_SIDE` at the reduced scale Pillow's draft mode gives for it
    (what a model at 224 px reads of it, so a large photograph is decoded once for both)."""
    return load_image(path, min_size=FINGERPRINT_SIDE)


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


def fingerprint_image(path: Path, image: Image.Image, header: dict[str, object] | None
                      ) -> Fingerprint:
    """The fingerprint of the file ``path`` from its pixels ``image`` (8-bit RGB, as
    :func:`load_fingerprinted` decodes it) and ``header``, what
    :func:`~skysort.data.images.describe_image` reads of it (None where it cannot)."""
    info = header
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


def fingerprint_decoded(path: Path, decoded: Image.Image | np.ndarray) -> Entry:
    """The fingerprint of ``path``, made from ``decoded`` (what a model's preprocessing
    decoded of it) when that is the image :func:`load_fingerprinted` gives (always, but
    for a large JPEG a model reads at another reduced scale than the fingerprint's, or a
    FITS file decoded as a model takes it); else from the file decoded again. Raises like
    :func:`~skysort.data.images.load_image`."""
    header, _ = read_or_reason(describe_image, path)
    image = None
    if isinstance(decoded, Image.Image) and decoded.mode == "RGB" and \
            image_suffix(path) not in FITS_EXTENSIONS:
        # Compared with the size the fingerprint's own decode would have (the header's
        # but for a JPEG's reduced scale); an EXIF orientation may have swapped the sides.
        if header is not None and header.get("format") != "JPEG":
            sides = cast("tuple[int, int] | None", (header["width"], header["height"]))
        else:
            sides, _ = read_or_reason(partial(image_size, min_size=FINGERPRINT_SIDE), path)
        if sides is None or decoded.size in (sides, sides[::-1]):
            image = decoded
    if image is None:
        image = load_fingerprinted(path)
    info, hashes, thumb = fingerprint_image(path, image, header)
    return info, hashes.tobytes(), thumb.tobytes()


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


@dataclass(frozen=True)
class FingerprintingPreprocess(Preprocess):
    """A preprocessing that also fingerprints each file it decodes, from the decoded image
    before it is resized (:func:`fingerprint_decoded`): the embedding pass's, so that a
    file is decoded once for both. The fingerprints wait in :attr:`made` (by the SHA-256
    of the file's bytes, the cache's key) until :func:`keep_fingerprints` puts them into
    the cache in :attr:`cache_dir`, after each batch; a worker process holds its own copy.
    """

    cache_dir: str = ""
    made: dict[str, Entry] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, preprocess: Preprocess, cache_dir: str | Path) -> FingerprintingPreprocess:
        """``preprocess`` (the same pixels, the same embedding), also fingerprinting into
        the fingerprint cache of the skysort cache folder ``cache_dir``."""
        given = {f.name: getattr(preprocess, f.name) for f in fields(preprocess) if f.init}
        return cls(**given, cache_dir=str(cache_dir))

    def to_dict(self) -> dict[str, Any]:
        """The description of the preprocessing it is (fingerprinting changes no pixel)."""
        out = super().to_dict()
        for name in ("cache_dir", "made"):
            out.pop(name)
        return out

    def decode(self, path: str | Path) -> Image.Image | np.ndarray:
        decoded = super().decode(path)
        made, _ = read_or_reason(partial(fingerprint_decoded, decoded=decoded), path)
        digest, _ = read_or_reason(file_digest, path)
        if made is not None and digest is not None:  # else inspection says why, later
            self.made[digest] = made
        return decoded


def keep_fingerprints(preprocess: Preprocess) -> None:
    """Puts the fingerprints a :class:`FingerprintingPreprocess` has made into its cache
    and forgets them (nothing for another preprocessing). A cache that cannot be written
    only costs a decode later."""
    if not isinstance(preprocess, FingerprintingPreprocess) or not preprocess.made:
        return
    try:
        cache = FingerprintCache(preprocess.cache_dir)
        try:
            cache.put_many(preprocess.made)
        finally:
            cache.close()
    except (sqlite3.Error, OSError):
        pass
    preprocess.made.clear()


@dataclass(frozen=True)
class KeepingTransform:
    """The evaluation transform of a :class:`FingerprintingPreprocess`, for a DataLoader
    (the torch engine's embedding pass), which has no end of batch in its workers: the
    fingerprints are put into the cache every ``every`` files a worker decodes. Those a
    worker made after its last ``every`` are left to inspection, which decodes them again
    (with no workers, the caller keeps them at the end: :func:`keep_fingerprints`)."""

    transform: EvalTransform
    every: int = 32

    def __call__(self, path: str | Path) -> np.ndarray:
        try:
            return self.transform(path)
        finally:
            preprocess = self.transform.preprocess
            if isinstance(preprocess, FingerprintingPreprocess) and \
                    len(preprocess.made) >= self.every:
                keep_fingerprints(preprocess)
