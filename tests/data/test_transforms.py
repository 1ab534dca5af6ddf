from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import timm.data
from PIL import Image

from skysort.data.transforms import Preprocess, create_transform
from skysort.errors import ConfigError


@pytest.mark.parametrize("shape", [(300, 200), (200, 300), (224, 224), (97, 131), (1200, 900)])
def test_eval_transform_matches_timm(shape: tuple[int, int]) -> None:
    """Our Pillow/NumPy pipeline is timm's eval transform (resize, centre crop, normalise)."""
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8))
    pre = Preprocess(input_size=224, crop_pct=0.875, interpolation="bicubic",
                     mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    reference = timm.data.create_transform(input_size=(3, 224, 224), crop_pct=0.875,
                                           interpolation="bicubic", mean=pre.mean, std=pre.std)
    ours = pre(img)
    theirs = reference(img).numpy()
    assert ours.shape == theirs.shape == (3, 224, 224)
    # The same pixels: only the float rounding of the normalisation differs (one part in
    # 10^7; a grey level is 0.0078 here).
    assert np.abs(ours - theirs).max() < 1e-6


def test_normalisation_uses_mean_and_std() -> None:
    pre = Preprocess(input_size=16, crop_pct=1.0, mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 0.1))
    img = Image.new("RGB", (16, 16), (255, 0, 51))
    out = pre(img)
    expected = (np.array([1.0, 0.0, 0.2]) - np.array(pre.mean)) / np.array(pre.std)
    np.testing.assert_allclose(out[:, 5, 5], expected, rtol=1e-5)


def test_from_pretrained_cfg_and_round_trip() -> None:
    cfg = {"input_size": (3, 240, 240), "crop_pct": 0.9, "interpolation": "bilinear",
           "mean": (0.4, 0.4, 0.4), "std": (0.2, 0.2, 0.2)}
    pre = Preprocess.from_pretrained_cfg(cfg)
    assert (pre.input_size, pre.resize_size, pre.interpolation) == (240, 266, "bilinear")
    assert Preprocess.from_pretrained_cfg(cfg, input_size=128).input_size == 128
    assert Preprocess.from_dict(pre.to_dict()) == pre


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="interpolation"):
        Preprocess(interpolation="cubic-ish")
    with pytest.raises(ConfigError, match="crop_pct"):
        Preprocess(crop_pct=1.5)
    with pytest.raises(ConfigError, match="unknown preprocessing keys"):
        Preprocess.from_dict({"input_size": 224, "colour": "yes"})


def test_load_reads_and_transforms_a_file(tmp_path: Path) -> None:
    Image.new("L", (50, 80), 255).save(tmp_path / "white.png")
    out = create_transform(Preprocess(input_size=32))(tmp_path / "white.png")
    assert out.shape == (3, 32, 32) and out.dtype == np.float32
    np.testing.assert_allclose(out, 1.0, atol=1e-5)  # (1 - 0.5) / 0.5


def _gray_disk(size: int = 96) -> Image.Image:
    yy, xx = np.mgrid[0:size, 0:size]
    disk = np.hypot(yy - size / 2, xx - size / 2) < size / 4
    arr = np.where(disk, 200, 60).astype(np.uint8)
    return Image.fromarray(np.stack([arr] * 3, axis=-1))


def test_center_fraction_keeps_the_middle(tmp_path: Path) -> None:
    arr = np.zeros((424, 424, 3), dtype=np.uint8)
    arr[106:318, 106:318] = 255  # the central 212 px are white
    Image.fromarray(arr).save(tmp_path / "gz.png")
    pre = Preprocess(input_size=64, crop_pct=1.0, center_fraction=0.5)
    assert pre.center_cut(Image.fromarray(arr)).size == (212, 212)
    np.testing.assert_allclose(create_transform(pre)(tmp_path / "gz.png"), 1.0, atol=1e-5)
    assert Preprocess.from_dict(pre.to_dict()) == pre


def test_tta_views_are_the_dihedral_group() -> None:
    from skysort.data.transforms import tta_views

    batch = np.random.default_rng(0).random((2, 3, 8, 8)).astype(np.float32)
    views = tta_views(batch, "sky")
    assert len(views) == 8
    flat = {v.tobytes() for v in views}
    assert len(flat) == 8
    np.testing.assert_array_equal(views[0], batch)
    assert len(tta_views(batch, "photo")) == 2


def test_the_pixel_cache_is_keyed_by_content_and_read_instead_of_decoding(
        tmp_path: Path) -> None:
    from skysort.data.transforms import EvalTransform

    noise = np.random.default_rng(0).integers(0, 256, (700, 900, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "big.png")
    Image.fromarray(noise[:40, :40]).save(tmp_path / "small.png")
    pre = Preprocess(input_size=64)
    cache = tmp_path / "pixels"
    first = EvalTransform(pre, str(cache))(tmp_path / "big.png")
    np.testing.assert_array_equal(first, create_transform(pre)(tmp_path / "big.png"))
    assert len(list(cache.glob("*.npy"))) == 1
    np.testing.assert_array_equal(EvalTransform(pre, str(cache))(tmp_path / "big.png"), first)
    EvalTransform(pre, str(cache))(tmp_path / "small.png")
    assert len(list(cache.glob("*.npy"))) == 2
    # An entry is read, not decoded: a changed entry shows (and so would be a stale one)...
    entry = max(cache.glob("*.npy"), key=lambda p: p.stat().st_size)
    np.save(entry, np.zeros_like(np.load(entry)))
    assert np.abs(EvalTransform(pre, str(cache))(tmp_path / "big.png") - first).max() > 0.5
    # ...and a changed file is a new key, whatever its modification time.
    stat = (tmp_path / "big.png").stat()
    Image.fromarray(noise[::-1]).save(tmp_path / "big.png")
    os.utime(tmp_path / "big.png", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    flipped = EvalTransform(pre, str(cache))(tmp_path / "big.png")
    np.testing.assert_array_equal(flipped, create_transform(pre)(tmp_path / "big.png"))
    assert len(list(cache.glob("*.npy"))) == 3


def test_a_pixel_cache_that_cannot_be_written_still_gives_the_image(tmp_path: Path) -> None:
    from skysort.data.transforms import EvalTransform

    noise = np.random.default_rng(1).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "a.png")
    (tmp_path / "not-a-folder").write_text("a file where the cache folder would be")
    pre = Preprocess(input_size=32)
    out = EvalTransform(pre, str(tmp_path / "not-a-folder"))(tmp_path / "a.png")
    np.testing.assert_array_equal(out, create_transform(pre)(tmp_path / "a.png"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "not-a-folder"]


def test_batches_are_normalised_exactly_as_single_images() -> None:
    rng = np.random.default_rng(3)
    batch = rng.integers(0, 256, (4, 20, 24, 3), dtype=np.uint8)
    pre = Preprocess(input_size=20, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    out = pre.normalize_batch(batch)
    assert out.shape == (4, 3, 20, 24) and out.dtype == np.float32
    assert np.array_equal(out, np.stack([pre.normalize(img) for img in batch]))
