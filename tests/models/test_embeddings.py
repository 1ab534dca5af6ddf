from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from skysort.data.transforms import Preprocess
from skysort.models.embeddings import cached_embeddings, embedding_key


class CountingModel(torch.nn.Module):
    """Mean colour per channel as the 'embedding'; counts the images it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += len(x)
        return x.mean(dim=(2, 3))


def _images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        Image.new("RGB", (20, 20), (10 * i, 0, 0)).save(folder / f"{i}.png")
        paths.append(folder / f"{i}.png")
    return paths


def test_second_run_reads_the_cache_and_skips_the_backbone(tmp_path: Path) -> None:
    pre = Preprocess(input_size=16, crop_pct=1.0)
    key = embedding_key("counting", "w1", pre)
    paths = _images(tmp_path / "a", 5)
    (tmp_path / "a" / "bad.png").write_bytes(b"")
    paths.append(tmp_path / "a" / "bad.png")
    model = CountingModel()
    first, bad = cached_embeddings(model, pre, key, paths, cache_dir=tmp_path / "c",
                                   workers=0, engine="torch")
    assert model.seen == 5 and list(bad) == [5] and "empty" in bad[5]
    # Red channel mean of image i is (10 i / 255 - 0.5) / 0.5.
    np.testing.assert_allclose(first[:5, 0], [(10 * i / 255 - 0.5) / 0.5 for i in range(5)],
                               atol=1e-5)
    model.seen = 0
    again, _ = cached_embeddings(model, pre, key, paths, cache_dir=tmp_path / "c",
                                 workers=0, engine="torch")
    assert model.seen == 0
    np.testing.assert_array_equal(first, again)


def test_cache_is_keyed_by_content_not_name(tmp_path: Path) -> None:
    pre = Preprocess(input_size=16, crop_pct=1.0)
    key = embedding_key("counting", "w1", pre)
    paths = _images(tmp_path / "a", 3)
    model = CountingModel()
    cached_embeddings(model, pre, key, paths, cache_dir=tmp_path / "c", workers=0,
                      engine="torch")
    moved = tmp_path / "b"
    shutil.copytree(tmp_path / "a", moved)
    Image.new("RGB", (20, 20), (0, 255, 0)).save(moved / "1.png")  # edited content
    model.seen = 0
    feats, _ = cached_embeddings(model, pre, key, sorted(moved.glob("*.png")),
                                 cache_dir=tmp_path / "c", workers=0, engine="torch")
    assert model.seen == 1  # only the edited file is recomputed
    assert feats[1, 1] > 0.9  # and it is the new, green image


def test_key_changes_with_backbone_weights_and_preprocessing() -> None:
    pre = Preprocess()
    keys = {embedding_key("a", "w", pre), embedding_key("b", "w", pre),
            embedding_key("a", "v", pre), embedding_key("a", "w", Preprocess(input_size=128))}
    assert len(keys) == 4


def test_onnx_and_torch_engines_give_the_same_embeddings(tmp_path: Path) -> None:
    from skysort.models.backbones import create_backbone

    backbone = create_backbone()
    paths = _images(tmp_path / "a", 4)
    key = embedding_key(backbone.name, backbone.weights_id, backbone.preprocess)
    by_torch, _ = cached_embeddings(backbone.model, backbone.preprocess, key, paths,
                                    cache_dir=tmp_path / "t", workers=0, engine="torch")
    by_onnx, _ = cached_embeddings(backbone.model, backbone.preprocess, key, paths,
                                   cache_dir=tmp_path / "o", workers=0, engine="onnx")
    assert (tmp_path / "o" / "onnx" / f"{key}.onnx").is_file()
    assert by_torch.shape == (4, 1280) and np.abs(by_torch).max() > 0.1
    np.testing.assert_allclose(by_onnx, by_torch, atol=1e-4)
