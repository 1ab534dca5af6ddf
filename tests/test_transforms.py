from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm.data
from PIL import Image

from skysort.data.transforms import Preprocess
from skysort.errors import ConfigError


@pytest.mark.parametrize("shape", [(300, 200), (200, 300), (224, 224), (97, 131)])
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
    # Identical up to float rounding and our faster reducing_gap resampling.
    assert np.abs(ours - theirs).mean() < 0.01
    assert np.abs(ours - theirs).max() < 0.2


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
    out = Preprocess(input_size=32).load(tmp_path / "white.png")
    assert out.shape == (3, 32, 32) and out.dtype == np.float32
    np.testing.assert_allclose(out, 1.0, atol=1e-5)  # (1 - 0.5) / 0.5
