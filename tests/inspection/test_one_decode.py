"""A cold `train` decodes each image once: the embedding pass fingerprints the pixels it
decodes, so the copies check (and a later `inspect`) decode nothing; and a fingerprint
made that way is the one :func:`~skysort.inspection.fingerprints.fingerprint` makes."""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import skysort
from skysort.data import images
from skysort.data.batches import BatchDecoder, decode_chunk
from skysort.data.fingerprinting import FingerprintCache, FingerprintingPreprocess
from skysort.data.images import file_digest
from skysort.data.transforms import Preprocess, create_transform
from skysort.inspection.fingerprints import fingerprint
from tests.conftest import write_color_folders


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> collections.Counter[str]:
    """How many times each file (``folder/name``) is decoded in this process to be
    embedded or fingerprinted (every PNG, JPEG, TIFF, ... goes through
    ``images._load_pil``; the report's thumbnails of test images are not counted)."""
    from skysort.evaluation import render

    counts: collections.Counter[str] = collections.Counter()
    load, show = images._load_pil, render.load_image
    shown = []

    def counted(path: Path, min_size: int | None) -> Image.Image:
        if not shown:
            counts["/".join(Path(path).parts[-2:])] += 1
        return load(path, min_size)

    def uncounted(*args: Any, **kwargs: Any) -> Image.Image:
        shown.append(True)
        try:
            return show(*args, **kwargs)
        finally:
            shown.pop()

    monkeypatch.setattr(images, "_load_pil", counted)
    monkeypatch.setattr(render, "load_image", uncounted)
    return counts


def test_cold_train_decodes_each_image_once_and_inspect_none(
        tmp_path: Path, decodes: collections.Counter[str]) -> None:
    data = write_color_folders(tmp_path / "data", per_class=8, size=32, classes=("red", "blue"))
    names = sorted("/".join(p.parts[-2:]) for p in data.rglob("*.png"))
    settings = {"workers": 0, "cache_dir": str(tmp_path / "cache")}
    skysort.train(data, project=str(tmp_path / "runs"), finetune="head", epochs=2,
                  **settings)
    assert sorted(decodes) == names
    assert set(decodes.values()) == {1}, decodes
    decodes.clear()
    skysort.inspect(data, out=tmp_path / "inspect", page=False, **settings)
    assert not decodes


def _write(folder: Path) -> list[Path]:
    """A few kinds of file: RGB PNG and JPEG, grey PNG, 16-bit grey PNG, a JPEG turned by
    its EXIF orientation, and a JPEG large enough to be decoded at a reduced scale."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    folder.mkdir()
    Image.fromarray(rgb).save(folder / "rgb.png")
    Image.fromarray(rgb).save(folder / "rgb.jpg", quality=85)
    Image.fromarray(rgb[..., 0]).save(folder / "grey.png")
    deep = (rng.random((40, 56)) * 4000).astype(np.uint16)
    Image.fromarray(deep).save(folder / "deep16.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned by 90 degrees
    Image.fromarray(rgb).save(folder / "turned.jpg", exif=exif)
    big = np.kron(rng.integers(0, 256, (60, 90, 3)), np.ones((12, 12, 1))).astype(np.uint8)
    Image.fromarray(big).save(folder / "big.jpg", quality=90)
    return sorted(folder.iterdir())


@pytest.mark.parametrize("input_size", [224, 32])
def test_a_fingerprint_made_while_decoding_for_embeddings_is_fingerprint_of_the_file(
        tmp_path: Path, decodes: collections.Counter[str], input_size: int) -> None:
    paths = _write(tmp_path / "images")
    cache = tmp_path / "cache"
    pre = FingerprintingPreprocess.of(Preprocess(input_size=input_size), cache)
    crops, good, bad = decode_chunk(create_transform(pre), paths)
    assert not bad and crops is not None and len(good) == len(paths)
    assert not pre.made  # written to the cache, not kept
    # A 224 px model reads the 720 x 1080 JPEG at half scale, as its fingerprint does: one
    # decode; a 32 px model reads it at an eighth, and the fingerprint decodes it again.
    twice = {"big.jpg"} if input_size == 32 else set()
    assert decodes == {f"images/{p.name}": 1 + (p.name in twice) for p in paths}
    store = FingerprintCache(cache)
    try:
        found = store.get_many([file_digest(p) for p in paths])
    finally:
        store.close()
    for path in paths:
        info, phash, thumb = fingerprint(path)
        made = found[file_digest(path)]
        assert made[0] == info, path.name
        assert made[1] == phash.tobytes() and made[2] == thumb.tobytes(), path.name
    # the large JPEG's pixels are those of Pillow's half-scale decode, not the whole file's
    with Image.open(tmp_path / "images" / "big.jpg") as img:
        img.draft("RGB", (256, 256))
        half = np.asarray(img.convert("RGB"))
    assert half.shape == (360, 540, 3)
    expected = hashlib.sha256(f"{half.shape}".encode())
    expected.update(half.tobytes())
    assert found[file_digest(tmp_path / "images" / "big.jpg")][0]["pixels"] == \
        expected.hexdigest()


def test_a_cold_train_on_large_jpegs_decodes_each_once(
        tmp_path: Path, decodes: collections.Counter[str]) -> None:
    """Large photographs: the model's reduced-scale read is the fingerprint's too."""
    rng = np.random.default_rng(1)
    names = []
    for label, colour in (("red", (200, 40, 40)), ("blue", (40, 40, 200))):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(5):
            small = rng.normal(colour, 40, (40, 60, 3)).clip(0, 255).astype(np.uint8)
            big = np.kron(small, np.ones((16, 16, 1), dtype=np.uint8))  # 640 x 960
            Image.fromarray(big).save(tmp_path / "data" / label / f"{i}.jpg", quality=90)
            names.append(f"{label}/{i}.jpg")
    settings = {"workers": 0, "cache_dir": str(tmp_path / "cache")}
    skysort.train(tmp_path / "data", project=str(tmp_path / "runs"), finetune="head",
                  epochs=2, **settings)
    assert sorted(decodes) == sorted(names)
    assert set(decodes.values()) == {1}, decodes


def test_worker_processes_put_their_fingerprints_into_the_cache(tmp_path: Path) -> None:
    paths = _write(tmp_path / "images")
    cache = tmp_path / "cache"
    pre = FingerprintingPreprocess.of(Preprocess(input_size=32), cache)
    decoded = list(BatchDecoder(create_transform(pre), batch_size=2, workers=2)(paths))
    assert sum(len(good) for _, (_, good, _) in decoded) == len(paths)
    store = FingerprintCache(cache)
    try:
        found = store.get_many([file_digest(p) for p in paths])
    finally:
        store.close()
    assert {file_digest(p): found[file_digest(p)][0] for p in paths} == \
        {file_digest(p): fingerprint(p)[0] for p in paths}


def test_the_torch_engine_fingerprints_what_it_decodes_too(
        tmp_path: Path, decodes: collections.Counter[str]) -> None:
    import torch

    from skysort.inspection.fingerprints import cached_fingerprints
    from skysort.models.embeddings import cached_embeddings

    data = write_color_folders(tmp_path / "data", per_class=5, size=24, classes=("red", "blue"))
    paths = sorted(data.rglob("*.png"))
    pool = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    cache = tmp_path / "cache"
    features, bad = cached_embeddings(pool, Preprocess(input_size=32), "pool", paths,
                                      cache_dir=cache, workers=0, engine="torch")
    assert not bad and features.shape == (len(paths), 3)
    prints = cached_fingerprints(paths, [file_digest(p) for p in paths], cache, workers=0)
    assert not prints.bad and all(prints.info)
    assert len(decodes) == len(paths) and set(decodes.values()) == {1}


def test_files_already_fingerprinted_are_not_fingerprinted_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from skysort.data import fingerprinting

    calls: list[str] = []
    made: Callable[..., object] = fingerprinting.fingerprint_image

    def counted(path: Path, *args: object) -> object:
        calls.append(Path(path).name)
        return made(path, *args)

    monkeypatch.setattr(fingerprinting, "fingerprint_image", counted)
    data = write_color_folders(tmp_path / "data", per_class=6, size=24, classes=("red", "blue"))
    settings = {"workers": 0, "cache_dir": str(tmp_path / "cache"), "page": False}
    skysort.inspect(data, out=tmp_path / "a", **settings)
    assert len(calls) == 12
    calls.clear()  # another backbone: new embeddings, the fingerprints kept
    skysort.inspect(data, out=tmp_path / "b", input_size=64, **settings)
    assert not calls
