"""``channels=all``: every band of a multi-band FITS image into the network, from decoding
through the pixel cache, augmentation, the backbone's first convolution and ONNX export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.io import fits
from PIL import Image

from skysort.data.augment import BatchAugment
from skysort.data.fits_decode import FitsDecode
from skysort.data.images import load_pixels
from skysort.data.pixels import REDUCING_GAP, resize_channels
from skysort.data.transforms import EvalTransform, Preprocess, TrainPixels, create_transform
from skysort.errors import ConfigError, ModelError
from skysort.models.backbones import (
    DEFAULT_BACKBONE,
    create_backbone,
    embedded_weights_file,
    load_state_dict,
)

BANDS = ("u", "g", "r", "i", "z")
FIVE = FitsDecode(channels="all", count=5)


def _cube(path: Path, n: int = 5, shape: tuple[int, int] = (26, 21), seed: int = 0) -> Path:
    """A FITS cube of ``n`` planes of sky noise and a galaxy brighter in the redder bands."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    blob = np.exp(-((yy - shape[0] / 2) ** 2 + (xx - shape[1] / 3) ** 2) / 20.0)
    planes = [rng.normal(0, 0.05, shape) + (1 + i) * blob for i in range(n)]
    header = fits.Header()
    for i in range(n):
        header[f"BAND{i}"] = BANDS[i]
    fits.PrimaryHDU(np.stack(planes).astype(np.float32), header=header).writeto(path)
    return path


def _pre(fits_decode: FitsDecode = FIVE, **kwargs: object) -> Preprocess:
    base = Preprocess(input_size=16, crop_pct=0.875, mean=(0.485, 0.456, 0.406),
                      std=(0.229, 0.224, 0.225), **kwargs)  # type: ignore[arg-type]
    return base.with_fits(fits_decode)


# -- preprocessing --------------------------------------------------------------------


def test_a_five_band_cube_becomes_five_normalised_channels(tmp_path: Path) -> None:
    path = _cube(tmp_path / "five.fits")
    pre = _pre()
    assert pre.channels == 5 and len(pre.mean) == len(pre.std) == 5
    # the extra channels get the mean of the three RGB values
    assert pre.mean[:3] == (0.485, 0.456, 0.406)
    assert pre.mean[3:] == pytest.approx([np.mean([0.485, 0.456, 0.406])] * 2)
    out = create_transform(pre)(path)
    assert out.shape == (5, 16, 16) and out.dtype == np.float32
    # an independent computation: each band resized as an 8-bit Pillow image, centre
    # square, scaled and normalised with its own mean and std
    raw = load_pixels(path, fits=FIVE)
    assert raw.shape == (26, 21, 5) and raw.dtype == np.uint8
    short = pre.resize_size  # 18: the width; the height is int(26 * 18 / 21) = 22
    for c in range(5):
        band = Image.fromarray(raw[..., c]).resize((short, int(26 * short / 21)),
                                                   Image.Resampling.BICUBIC, reducing_gap=3.0)
        arr = np.asarray(band, dtype=np.float64)
        top, left = (arr.shape[0] - 16) // 2, (arr.shape[1] - 16) // 2
        expected = (arr[top:top + 16, left:left + 16] / 255 - pre.mean[c]) / pre.std[c]
        np.testing.assert_allclose(out[c], expected, atol=1e-5)
    # the pixels half and the batch normalisation give the same
    transform = create_transform(pre)
    crop = transform.pixels(path)
    assert crop.shape == (16, 16, 5)
    np.testing.assert_array_equal(transform.normalize_batch(crop[None])[0], out)


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear", "lanczos"])
@pytest.mark.parametrize("size", [(9, 7), (40, 52), (100, 71)])
def test_channels_resize_exactly_as_pillow_resizes_rgb(interpolation: str,
                                                       size: tuple[int, int]) -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (61, 47, 3), dtype=np.uint8)
    resample = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
                "lanczos": Image.Resampling.LANCZOS}[interpolation]
    expected = np.asarray(Image.fromarray(rgb).resize(size, resample,
                                                      reducing_gap=REDUCING_GAP))
    np.testing.assert_array_equal(resize_channels(rgb, size, interpolation), expected)


def test_preprocessing_with_fits_round_trips_and_old_descriptions_still_load() -> None:
    pre = _pre(FitsDecode(channels="all", bands=("g", "r", "z", "i"), stretch="percentile"))
    assert pre.channels == 4
    assert Preprocess.from_dict(pre.to_dict()) == pre
    assert pre.to_dict()["fits"]["bands"] == ["g", "r", "z", "i"]
    old = {k: v for k, v in Preprocess().to_dict().items() if k != "fits"}
    assert Preprocess.from_dict(old) == Preprocess() and Preprocess().channels == 3
    # back to three channels: the RGB values again
    assert pre.with_fits(FitsDecode()).mean == (0.485, 0.456, 0.406)
    with pytest.raises(ConfigError, match="mean has 4 values for 5 channels"):
        Preprocess(mean=(0.1, 0.2, 0.3, 0.4), fits=FIVE)


def test_a_cube_of_another_band_count_is_an_unreadable_image(tmp_path: Path) -> None:
    from skysort.data.images import read_or_reason

    path = _cube(tmp_path / "four.fits", n=4)
    crop, why = read_or_reason(create_transform(_pre()).pixels, path)
    assert crop is None and "4 bands" in why


# -- the pixel cache --------------------------------------------------------------------


def test_the_pixel_cache_holds_every_band_and_is_keyed_by_the_fits_decoding(
        tmp_path: Path) -> None:
    from skysort.data.images import file_digest

    path = _cube(tmp_path / "five.fits")
    pre, cache = _pre(), tmp_path / "pixels"
    first = TrainPixels(pre, str(cache))(path)
    assert first.shape == (18, 18, 5)
    entry = pre.pixel_file(file_digest(path), cache)
    assert [p.name for p in cache.glob("*.npy")] == [entry.name]
    assert np.load(entry).shape == (22, 18, 5)
    np.testing.assert_array_equal(TrainPixels(pre, str(cache))(path), first)
    np.testing.assert_array_equal(EvalTransform(pre, str(cache))(path),
                                  create_transform(pre)(path))
    # read, not decoded: a changed entry shows
    np.save(entry, np.zeros_like(np.load(entry)))
    assert not TrainPixels(pre, str(cache))(path).any()
    # another stretch, scale or channel choice is another entry
    names = {pre.pixel_file("d", cache).name}
    for other in (FitsDecode(channels="all", count=5, stretch="percentile"),
                  FitsDecode(channels="all", count=5, scale=2.0), FitsDecode()):
        names.add(pre.with_fits(other).pixel_file("d", cache).name)
    assert len(names) == 4
    # an entry of another channel count (never written under this name) is decoded again
    np.save(entry, np.zeros((22, 18, 3), dtype=np.uint8))
    np.testing.assert_array_equal(TrainPixels(pre, str(cache))(path), first)


# -- augmentation -----------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["sky", "photo", "none"])
def test_augmentation_moves_every_band_alike(preset: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Bands 3 and 4 are copies of bands 0 and 1: whatever the augmentation does, they
    stay copies (the same geometry, brightness and contrast; noise fields made alike)."""
    pre = Preprocess(input_size=16, fits=FIVE)
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (4, pre.resize_size, pre.resize_size, 3), dtype=np.uint8)
    pixels = torch.from_numpy(np.concatenate([rgb, rgb[..., :2]], axis=-1))
    original = BatchAugment._noise_bank

    def alike(self: BatchAugment, shape: torch.Size) -> torch.Tensor:
        bank = original(self, shape).clone()
        bank[:, 3:5] = bank[:, 0:2]
        return bank

    monkeypatch.setattr(BatchAugment, "_noise_bank", alike)
    aug = BatchAugment(pre, preset, seed=1)
    out = aug(pixels, [(0, i) for i in range(4)])
    assert out.shape == (4, 5, 16, 16) and out.dtype == torch.float32
    torch.testing.assert_close(out[:, 3:5], out[:, 0:2], rtol=0, atol=1e-6)
    if preset != "none":  # the draws changed the images
        centre = pre.resize_size // 2 - 8
        plain = (pixels[:, centre:centre + 16, centre:centre + 16].permute(0, 3, 1, 2)
                 .float() / 255 - 0.5) / 0.5
        assert (out - plain).abs().max() > 0.1


# -- the backbone -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def five() -> object:
    return create_backbone(DEFAULT_BACKBONE, weights="auto", input_size=32, in_chans=5)


def test_the_first_convolution_is_adapted_by_timms_rule(five: object) -> None:
    rgb = create_backbone(DEFAULT_BACKBONE, weights="auto", input_size=32)
    state = load_state_dict(embedded_weights_file(DEFAULT_BACKBONE))
    stem = [v for v in state.values() if v.ndim == 4 and v.shape[1] == 3]
    assert len(stem) == 1  # the stem's (32, 3, 3, 3): the only one that sees the image
    weight = stem[0].numpy()
    torch.testing.assert_close(rgb.model.conv_stem.weight, stem[0], rtol=0, atol=0)
    # repeated over the channels (R, G, B, R, G) and scaled by 3 / 5
    expected = np.concatenate([weight, weight[:, :2]], axis=1) * (3 / 5)
    got = five.model.conv_stem.weight.detach().numpy()  # type: ignore[attr-defined]
    assert got.shape == (32, 5, 3, 3)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    # every other tensor is the RGB model's
    theirs = five.model.state_dict()  # type: ignore[attr-defined]
    for key, value in rgb.model.state_dict().items():
        if key != "conv_stem.weight":
            torch.testing.assert_close(theirs[key], value, rtol=0, atol=0)
    # on [R, G, B, 0, 0] the stem sees 3/5 of what the RGB stem sees of [R, G, B]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        padded = torch.cat([x, torch.zeros(2, 2, 32, 32)], dim=1)
        torch.testing.assert_close(five.model.conv_stem(padded),  # type: ignore[attr-defined]
                                   rgb.model.conv_stem(x) * 0.6, rtol=1e-5, atol=1e-5)
        features = five.model(torch.randn(2, 5, 32, 32))  # type: ignore[attr-defined]
    assert features.shape == (2, 1280)
    assert five.preprocess.channels == 5  # type: ignore[attr-defined]
    assert five.preprocess.fits == FitsDecode(channels="all", count=5)  # type: ignore[attr-defined]


def test_a_fits_decoding_of_other_channels_than_in_chans_is_refused() -> None:
    with pytest.raises(ModelError, match="in_chans=3"):
        create_backbone(DEFAULT_BACKBONE, weights="none", input_size=32, fits=FIVE)


def test_a_five_band_model_saves_loads_and_exports(five: object, tmp_path: Path) -> None:
    from skysort.models.export import export_model, read_onnx_info
    from skysort.models.info import ModelInfo
    from skysort.models.model import Published, SkyModel, load_model, save_model
    from skysort.models.onnx import OnnxModule
    from skysort.tasks import make_task

    task = make_task("multiclass", ["a", "b", "c"])
    torch.manual_seed(0)
    model = SkyModel(five.model, five.num_features, task).eval()  # type: ignore[attr-defined]
    info = ModelInfo(task=task, backbone=DEFAULT_BACKBONE, weights_id="t",
                     num_features=1280, preprocess=five.preprocess)  # type: ignore[attr-defined]
    (tmp_path / "run").mkdir()
    save_model(model, info, tmp_path / "run")
    loaded, loaded_info = load_model(tmp_path / "run")
    assert loaded_info.preprocess == info.preprocess and loaded_info.preprocess.channels == 5
    x = torch.randn(3, 5, 32, 32)
    with torch.no_grad():
        expected = Published(model)(x).numpy()
        np.testing.assert_allclose(Published(loaded)(x).numpy(), expected, atol=1e-6)
    path = export_model(model, info, tmp_path / "five.onnx")
    assert read_onnx_info(path).preprocess.channels == 5
    session = OnnxModule(path, threads=1)
    assert session.session.get_inputs()[0].shape[1:] == [5, 32, 32]
    np.testing.assert_allclose(session(x.numpy()), expected, atol=1e-4)
    # prediction on files: both engines carry the five bands; a four-band cube is an error
    from skysort.prediction.predictor import Predictor

    files = [_cube(tmp_path / f"{i}.fits", shape=(40, 44), seed=i) for i in range(2)]
    files.append(_cube(tmp_path / "four.fits", n=4))
    by_onnx = Predictor(tmp_path / "run", engine="onnx", workers=0).predict_proba(files)
    by_torch = Predictor(tmp_path / "run", engine="torch", workers=0).predict_proba(files)
    np.testing.assert_allclose(by_onnx[:2], by_torch[:2], atol=1e-4)
    assert np.isfinite(by_onnx[:2]).all() and np.isnan(by_onnx[2]).all()


def test_embeddings_of_five_band_images_under_onnx_runtime(tmp_path: Path) -> None:
    from skysort.models.embeddings import cached_embeddings, embedding_key

    class MeanBands(torch.nn.Module):
        num_features = 5

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(2, 3))

    pre = _pre()
    paths = [_cube(tmp_path / f"{i}.fits", seed=i) for i in range(2)]
    key = embedding_key("mean-bands", "none", pre)
    assert key != embedding_key("mean-bands", "none", pre.with_fits(FitsDecode()))
    feats, bad = cached_embeddings(MeanBands(), pre, key, paths, cache_dir=tmp_path / "c",
                                   workers=0, engine="onnx")
    assert not bad and feats.shape == (2, 5)
    for i, path in enumerate(paths):
        np.testing.assert_allclose(feats[i], create_transform(pre)(path).mean(axis=(1, 2)),
                                   atol=1e-5)
