"""Backbone embeddings, computed once per image and cached on disk.

With a frozen backbone, training only needs each image's pooled features. They are
stored in an SQLite file per *embedding key* (backbone name, weights identity,
preprocessing, its FITS decoding and channels included), indexed by the SHA-256 of the
image file's content, so

* a second run on the same data skips the backbone entirely;
* renaming or moving files keeps their cache entries; editing a file invalidates its own.

Each file the pass decodes is also fingerprinted from the same pixels, before they are
resized, into the fingerprint cache of the same folder (:mod:`skysort.data.fingerprinting`),
so the copies check of ``skysort train`` and ``skysort inspect`` that follows decodes
nothing.

The cache lives in ``$SKYSORT_CACHE`` or ``~/.cache/skysort`` unless a folder is given.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from skysort.data.batches import decode_chunk
from skysort.data.fingerprinting import (
    FingerprintCache,
    FingerprintingPreprocess,
    KeepingTransform,
    keep_fingerprints,
)
from skysort.data.images import file_digest
from skysort.data.loader import image_loader
from skysort.data.transforms import EvalTransform, Preprocess, create_transform
from skysort.models.streaming import OnnxWorkerModel, iter_outputs, torch_runner
from skysort.rundir import atomic_write

#: Bumped when the way embeddings are computed changes, to retire old cache entries
#: (2: FITS decoding changed, and the preprocessing names it).
EMBEDDING_VERSION = 2


def default_cache_dir() -> Path:
    """``$SKYSORT_CACHE``, else ``$XDG_CACHE_HOME/skysort``, else ``~/.cache/skysort``."""
    if os.environ.get("SKYSORT_CACHE"):
        return Path(os.environ["SKYSORT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "skysort"


def embedding_key(backbone: str, weights_id: str, preprocess: Preprocess) -> str:
    """A short hash naming everything that decides an image's embedding."""
    spec = json.dumps({"backbone": backbone, "weights": weights_id,
                       "preprocess": preprocess.to_dict(), "version": EMBEDDING_VERSION},
                      sort_keys=True)
    return hashlib.sha256(spec.encode()).hexdigest()[:20]


def content_hash(path: Path) -> str | None:
    """SHA-256 of a file's bytes, or None when it cannot be read."""
    try:
        return file_digest(path)
    except OSError:
        return None


class EmbeddingCache:
    """Float32 vectors by content hash, in one SQLite file per embedding key."""

    def __init__(self, cache_dir: str | Path | None, key: str) -> None:
        folder = Path(cache_dir) if cache_dir else default_cache_dir()
        folder = folder / "embeddings"
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{key}.sqlite"
        self._db = sqlite3.connect(self.path, timeout=60)
        self._db.execute("CREATE TABLE IF NOT EXISTS emb (hash TEXT PRIMARY KEY, vec BLOB)")

    def get_many(self, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        unique = sorted(set(hashes))
        for start in range(0, len(unique), 500):
            chunk = unique[start:start + 500]
            rows = self._db.execute(
                f"SELECT hash, vec FROM emb WHERE hash IN ({','.join('?' * len(chunk))})", chunk)
            for h, blob in rows:
                found[h] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO emb (hash, vec) VALUES (?, ?)",
                [(h, np.asarray(v, dtype=np.float32).tobytes()) for h, v in items.items()])

    def close(self) -> None:
        self._db.close()


def compute_embeddings(model: torch.nn.Module, preprocess: Preprocess, key: str,
                       paths: Sequence[Path], *, cache_dir: str | Path | None = None,
                       pixel_cache: str | Path | None = None, batch_size: int = 32,
                       workers: int | None = None, device: torch.device | str = "cpu",
                       engine: str = "auto", fingerprints: str | Path | None = None
                       ) -> tuple[dict[int, np.ndarray], dict[int, str]]:
    """Runs a backbone over image files.

    On a CPU (``engine="auto"`` or ``"onnx"``) the backbone, exported once per embedding
    key, runs under ONNX Runtime inside each worker process with one thread, beside the
    decoding of its own batches: one core each, as prediction does, and nothing
    competes for a core. On a GPU (or ``engine="torch"``) workers decode and the model
    runs in this process.

    Args:
        pixel_cache: also keep each file's resized pixels there (for fine-tuning).
        fingerprints: also fingerprint each file decoded, from the decoded image, into
            the fingerprint cache of this skysort cache folder.

    Returns:
        ``(embeddings, bad)``: the vector for each readable file's index, and the reason
        for each unreadable one.
    """
    out: dict[int, np.ndarray] = {}
    bad: dict[int, str] = {}
    if not paths:
        return out, bad
    if fingerprints is not None:  # decoded once for both: the fingerprint kept in the cache
        preprocess = FingerprintingPreprocess.of(preprocess, fingerprints)
    transform = create_transform(preprocess, cache_dir=pixel_cache)
    bar = tqdm(total=len(paths), desc="embedding", unit="img", dynamic_ncols=True)
    if engine == "onnx" or (engine == "auto" and torch.device(device).type == "cpu"):
        from skysort.models.onnx import cached_backbone_onnx

        folder = Path(cache_dir) if cache_dir else default_cache_dir()
        onnx = OnnxWorkerModel(str(cached_backbone_onnx(model, preprocess.input_size, key,
                                                        folder, preprocess.channels)), key)
        start = 0
        dim = int(getattr(model, "num_features"))  # noqa: B009 (timm's attribute)
        chosen, first = backbone_engine(onnx, folder, transform, paths[:batch_size], dim) \
            if engine == "auto" else (onnx, None)
        rest = paths if first is None else paths[len(first[0]):]
        for chunk, features, errors in itertools.chain(
                [first] if first is not None else [],
                iter_outputs(chosen, transform, rest, num_outputs=dim,
                             batch_size=batch_size, workers=workers)):
            for i in range(len(chunk)):
                if i in errors:
                    bad[start + i] = errors[i]
                else:
                    out[start + i] = features[i]
            start += len(chunk)
            bar.update(len(chunk))
        bar.close()
        return out, bad
    run = torch_runner(model, device)
    for index, images, errors in image_loader(paths, KeepingTransform(transform, batch_size),
                                              batch_size=batch_size, workers=workers):
        for i, reason in errors:
            bad[i] = reason
        if images is not None:
            for i, f in zip(index.tolist(), run(images), strict=True):
                out[i] = f
        bar.update(len(index) + len(errors))
    bar.close()
    keep_fingerprints(preprocess)  # what was decoded here (no workers)
    return out, bad


#: The least cosine between an embedding from OpenVINO and ONNX Runtime's f32 one, and the
#: speed-up, at which the embedding pass runs on OpenVINO. Another engine's embeddings
#: differ in their last digits, and so does the model trained on them: a run must not
#: change with a coin flip of timings, so only a large gain counts (OpenVINO bf16 ran
#: 2.4x on a CPU with AMX; OpenVINO f32 1.06-1.24x on an AVX2 one, within timing noise).
MIN_COSINE = 0.999
FASTER_BY = 1.5
#: The rules' version: a choice made under other rules is made again.
ENGINE_RULES = 2


def backbone_engine(onnx: OnnxWorkerModel, folder: Path, transform: EvalTransform,
                    first: Sequence[Path], dim: int
                    ) -> tuple[OnnxWorkerModel, tuple[list[Path], np.ndarray, dict[int, str]]
                               | None]:
    """The engine for the embedding pass: OpenVINO (bf16 where the CPU has it, else f32)
    where it is installed and, on the pass's first batch, gave embeddings within cosine
    :data:`MIN_COSINE` of ONNX Runtime f32 and ran at least :data:`FASTER_BY` times as
    fast; else ONNX Runtime. The choice is kept beside the backbone's ONNX file, per CPU;
    when it is made, that first batch (decoded once) is returned with ONNX Runtime's
    embeddings, ``(paths, features, errors)``, so the pass goes on from the next one."""
    from skysort.models import openvino as ovm

    if not ovm.available() or not first:
        return onnx, None
    record_file = Path(onnx.path).with_suffix(".engine.json")
    cpu = ovm.cpu_description()
    try:
        record = json.loads(record_file.read_text())
    except (OSError, ValueError):
        record = {}
    if (record.get("cpu"), record.get("rules")) == (cpu, ENGINE_RULES):
        return (OnnxWorkerModel(onnx.path, onnx.source, "openvino", record["precision"])
                if record["accepted"] else onnx), None
    precision = "bf16" if "bf16" in ovm.native_precisions() else "f32"
    pixels, good, bad = decode_chunk(transform, list(first))
    features = np.full((len(first), dim), np.nan, dtype=np.float32)
    if pixels is None:
        return onnx, (list(first), features, bad)
    candidate = OnnxWorkerModel(onnx.path, onnx.source, "openvino", precision)
    out, speed = ovm.run_timed({"onnxruntime": onnx.runner(1), "openvino": candidate.runner(1)},
                               transform.normalize_batch(pixels))
    a, b = out["onnxruntime"], out["openvino"]
    cosine = float(np.min(np.sum(a * b, axis=1) / np.maximum(
        np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)))
    speedup = speed["openvino"] / speed["onnxruntime"]
    record = {"cpu": cpu, "rules": ENGINE_RULES, "precision": precision, "images": len(a),
              "min_cosine": cosine, "speedup": round(speedup, 2),
              "accepted": cosine >= MIN_COSINE and speedup >= FASTER_BY}
    with contextlib.suppress(OSError):  # a read-only cache: chosen again next time
        atomic_write(record_file, json.dumps(record, indent=2).encode())
    features[good] = a
    return candidate if record["accepted"] else onnx, (list(first), features, bad)


def cached_embeddings(model: torch.nn.Module, preprocess: Preprocess, key: str,
                      paths: Sequence[Path], *, cache_dir: str | Path | None = None,
                      pixel_cache: str | Path | None = None, batch_size: int = 32,
                      workers: int | None = None, device: torch.device | str = "cpu",
                      engine: str = "auto", hashes: Sequence[str | None] | None = None,
                      fingerprints: bool = True) -> tuple[np.ndarray, dict[int, str]]:
    """Embeddings of ``paths``, reading the cache first and filling it after (see
    :func:`compute_embeddings` for the arguments; ``hashes``: the files' content hashes
    when the caller has them already, None for a file that cannot be read;
    ``fingerprints``: also fingerprint the files decoded, unless every one of them is in
    the fingerprint cache already; False where no fingerprints will be asked for).

    Returns:
        ``(features, bad)``: a ``(len(paths), d)`` float32 array (rows of unreadable files
        are zero) and the reason for each unreadable file's index.
    """
    cache = EmbeddingCache(cache_dir, key)
    try:
        hashes = [content_hash(p) for p in paths] if hashes is None else list(hashes)
        bad = {i: "cannot read file" for i, h in enumerate(hashes) if h is None}
        found = cache.get_many([h for h in hashes if h is not None])
        todo = [i for i, h in enumerate(hashes) if h is not None and h not in found]
        print(f"embeddings: {len(paths) - len(todo) - len(bad)} of {len(paths)} images read "
              f"from the cache, {len(todo)} to compute", file=sys.stderr)
        fresh: dict[int, np.ndarray] = {}
        fresh_bad: dict[int, str] = {}
        if todo:
            folder = _unprinted(cache_dir, [str(hashes[i]) for i in todo]) \
                if fingerprints else None
            fresh, fresh_bad = compute_embeddings(
                model, preprocess, key, [paths[i] for i in todo], cache_dir=cache_dir,
                pixel_cache=pixel_cache, batch_size=batch_size, workers=workers,
                device=device, engine=engine, fingerprints=folder)
        new = {str(hashes[todo[j]]): v for j, v in fresh.items()}
        cache.put_many(new)
        found.update(new)
        bad.update({todo[j]: why for j, why in fresh_bad.items()})
    finally:
        cache.close()
    dim = next(iter(found.values())).shape[0] if found else 0
    features = np.zeros((len(paths), dim), dtype=np.float32)
    for i, h in enumerate(hashes):
        if i not in bad and h is not None:
            features[i] = found[h]
    return features, bad


def _unprinted(cache_dir: str | Path | None, hashes: Sequence[str]) -> Path | None:
    """The cache folder, where the fingerprint cache lacks any of ``hashes``; else None."""
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    prints = FingerprintCache(folder)
    try:
        have = prints.get_many(hashes)
    finally:
        prints.close()
    return folder if len(have) < len(set(hashes)) else None
