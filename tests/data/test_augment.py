"""Batch augmentation in the training process: deterministic per image, faithful to each
preset, and the same input as evaluation with ``augment=none``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from skysort.data.augment import BatchAugment
from skysort.data.transforms import Preprocess, create_transform
from skysort.errors import ConfigError


def _disks(n: int, side: int) -> torch.Tensor:
    """Grey squares of background 60 with a bright disk (200) off centre."""
    yy, xx = np.mgrid[0:side, 0:side]
    out = []
    for i in range(n):
        disk = np.hypot(yy - side * (0.4 + 0.02 * i), xx - side / 2) < side / 5
        out.append(np.stack([np.where(disk, 200, 60)] * 3, axis=-1))
    return torch.from_numpy(np.stack(out).astype(np.uint8))


def _pixels(pre: Preprocess, images: torch.Tensor) -> torch.Tensor:
    return images[:, :pre.resize_size, :pre.resize_size]


@pytest.mark.parametrize("preset", ["sky", "photo"])
def test_an_image_gets_the_same_draw_in_any_batch(preset: str) -> None:
    pre = Preprocess(input_size=64)
    images = _pixels(pre, _disks(6, 80))
    aug = BatchAugment(pre, preset, seed=3)
    keys = [(2, i) for i in range(6)]
    whole = aug(images, keys)
    assert whole.shape == (6, 3, 64, 64) and whole.dtype == torch.float32
    assert whole.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(aug(images[3:5], keys[3:5]), whole[3:5], rtol=0, atol=0)
    reordered = aug(images.flip(0), keys[::-1])  # another order, another batch
    torch.testing.assert_close(reordered.flip(0), whole, rtol=0, atol=0)
    # another epoch or another seed draws again
    assert (aug(images, [(3, i) for i in range(6)]) - whole).abs().max() > 0.1
    assert (BatchAugment(pre, preset, seed=4)(images, keys) - whole).abs().max() > 0.1


def test_sky_rotates_without_black_corners_and_keeps_the_light() -> None:
    pre = Preprocess(input_size=64, mean=(0, 0, 0), std=(1, 1, 1))
    images = _pixels(pre, _disks(8, 80))
    plain = BatchAugment(pre, "none")(images, [(0, i) for i in range(8)])
    for epoch in range(4):
        out = BatchAugment(pre, "sky", seed=0)(images, [(epoch, i) for i in range(8)])
        # The background is 60/255 and reflection fills the borders: nothing near black
        # (contrast and noise move it a little).
        assert out.min() > 25 / 255
        # the disk stays in view: brightness is preserved within the jitter
        ratio = out.mean(dim=(1, 2, 3)) / plain.mean(dim=(1, 2, 3))
        assert ((ratio > 0.8) & (ratio < 1.2)).all(), ratio


def test_sky_rotation_turns_an_edge_by_the_drawn_angle() -> None:
    """A vertical edge, rotated: its orientation follows the draw of each image."""
    pre = Preprocess(input_size=64, mean=(0, 0, 0), std=(1, 1, 1))
    side = pre.resize_size
    half = np.zeros((side, side, 3), dtype=np.uint8)
    half[:, side // 2:] = 255
    images = torch.from_numpy(np.stack([half] * 16))
    aug = BatchAugment(pre, "sky", seed=1)
    keys = [(0, i) for i in range(16)]
    out = aug(images, keys)[:, 0].numpy()
    for i, key in enumerate(keys):
        rng = np.random.default_rng([1, *key])
        angle = np.radians(rng.uniform(0, 360))
        gy, gx = np.gradient(out[i])
        flipped = aug._draws(key, side, side)["theta"][0, 0] * np.cos(angle) < 0
        direction = np.arctan2(gy.sum(), gx.sum())  # where brightness increases
        expected = angle if not flipped else np.pi - angle
        assert abs(np.angle(np.exp(1j * (direction - expected)))) < 0.35, (i, direction)


def test_photo_crops_and_none_is_the_evaluation_input(tmp_path: Path) -> None:
    pre = Preprocess(input_size=224)
    noise = np.random.default_rng(0).integers(0, 256, (300, 420, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "p.png")
    square = torch.from_numpy(create_transform(pre, training=True)(tmp_path / "p.png"))[None]
    assert tuple(square.shape) == (1, 256, 256, 3)
    out = BatchAugment(pre, "none")(square, [(0, 0)])
    expected = create_transform(pre)(tmp_path / "p.png")
    np.testing.assert_allclose(out[0].numpy(), expected, atol=1e-5)
    crop = BatchAugment(pre, "photo", seed=0)(square, [(0, 0)])
    assert crop.shape == (1, 3, 224, 224) and (crop - out).abs().mean() > 0.1
    with pytest.raises(ConfigError, match="augment='flip'"):
        BatchAugment(pre, "flip")
