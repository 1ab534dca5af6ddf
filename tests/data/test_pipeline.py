"""One image pipeline: training's validation, embedding, evaluation and prediction turn a
file into the same array, and a bad file into the same reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.io import fits
from PIL import Image

from skysort.data.augment import BatchAugment
from skysort.data.batches import BatchDecoder, decode_chunk
from skysort.data.loader import ImageFiles, image_loader
from skysort.data.transforms import Preprocess, create_transform


@pytest.fixture
def mixed_files(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for name, size in (("small.png", (40, 56)), ("big.jpg", (900, 700)),
                       ("large.png", (600, 640))):
        pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        path = tmp_path / name
        Image.fromarray(pixels).save(path, quality=92) if name.endswith(".jpg") else \
            Image.fromarray(pixels).save(path)
        paths.append(path)
    grey16 = (rng.random((64, 80)) * 4000).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "deep.png")
    fits.PrimaryHDU(rng.normal(100, 5, (50, 50)).astype(np.float32)).writeto(tmp_path / "a.fits")
    return [*paths, tmp_path / "deep.png", tmp_path / "a.fits"]


@pytest.mark.parametrize("center_fraction", [1.0, 0.5])
def test_every_path_gives_identical_arrays(mixed_files: list[Path], tmp_path: Path,
                                           center_fraction: float) -> None:
    # input and resize sizes of the same parity (64 and 73 would not be): the training
    # square and the evaluation crop then share their centre exactly
    pre = Preprocess(input_size=56, crop_pct=0.875, center_fraction=center_fraction)
    cache = tmp_path / f"resized{center_fraction}"
    reference = np.stack([create_transform(pre)(p) for p in mixed_files])
    assert reference.shape == (len(mixed_files), 3, 56, 56)
    # embedding: the DataLoader over the evaluation transform
    loader = image_loader(mixed_files, create_transform(pre), batch_size=2, workers=0)
    embedded = np.concatenate([images.numpy() for _, images, _ in loader])
    # fine-tuning validation: through the resized-pixel cache, cold and then warm
    cached = create_transform(pre, cache_dir=cache)
    cold = np.stack([cached(p) for p in mixed_files])
    warm = np.stack([cached(p) for p in mixed_files])
    assert any(cache.glob("*.npy")), "the large files should have gone through the cache"
    # evaluation and prediction: uint8 crops from worker processes, normalised per batch
    transform = create_transform(pre)
    pixels, good, bad = decode_chunk(transform, mixed_files)
    assert (good, bad) == (list(range(len(mixed_files))), {})
    predicted = transform.normalize_batch(pixels)
    streamed = np.concatenate([transform.normalize_batch(d[0]) for _, d in
                               BatchDecoder(transform, batch_size=2, workers=2)(mixed_files)])
    for other in (embedded, cold, warm, predicted, streamed):
        np.testing.assert_array_equal(other, reference)
    # training with augmentation off: the same pixels, normalised in torch
    squares = torch.from_numpy(np.stack([
        create_transform(pre, training=True, cache_dir=cache)(p, (3, i))
        for i, p in enumerate(mixed_files)]))
    unaugmented = BatchAugment(pre, "none")(squares, [(3, i) for i in range(len(squares))])
    np.testing.assert_allclose(unaugmented.numpy(), reference, atol=1e-5)


def test_a_vanished_file_is_a_reason_everywhere(tmp_path: Path) -> None:
    """A file listed, then deleted before it is decoded (a night's run on a shared disk):
    fine-tuning used to stop with FileNotFoundError (the resized-pixel cache looks at the
    file before decoding it) while prediction listed it as an error row."""
    keep, gone = tmp_path / "keep.png", tmp_path / "gone.png"
    for path in (keep, gone):
        Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(path)
    paths = [keep, gone]
    gone.unlink()
    pre = Preprocess(input_size=32)
    cache = tmp_path / "resized"
    reasons = []
    train = ImageFiles(paths, create_transform(pre, training=True, cache_dir=cache))
    index, array, why = train[(1, 0)]
    assert (index, array) == (1, None)
    reasons.append(why)
    val = ImageFiles(paths, create_transform(pre, cache_dir=cache))
    assert val[0][1] is not None
    reasons.append(val[1][2])
    reasons.append(ImageFiles(paths, create_transform(pre))[1][2])
    _, good, bad = decode_chunk(create_transform(pre), paths)
    assert good == [0]
    reasons.append(bad[1])
    assert len(set(reasons)) == 1
    assert reasons[0].startswith("cannot read file") and "No such file" in reasons[0]
    # and a training batch with the vanished file still yields the other image
    loader = image_loader(paths, create_transform(pre, cache_dir=cache), batch_size=2,
                          workers=0)
    (index, images, errors), = list(loader)
    assert index.tolist() == [0] and images.shape == (1, 3, 32, 32)
    assert errors == [(1, reasons[0])]
