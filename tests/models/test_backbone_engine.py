"""The embedding pass runs on OpenVINO only where its embeddings matched ONNX Runtime's
f32 ones on the pass's first batch and it ran faster; the choice is kept per CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from skysort.data.transforms import Preprocess
from skysort.models import embeddings
from skysort.models.embeddings import cached_embeddings, embedding_key

ov = pytest.importorskip("openvino")


class SmallNet(torch.nn.Module):
    """Two convolutions and a global mean: an 8-d embedding."""

    num_features = 8

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(8, 8, 3, stride=2), torch.nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))


def _images(folder: Path, n: int, seed: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(
            folder / f"{i}.png")
        paths.append(folder / f"{i}.png")
    return paths


def _raw_onnxruntime(onnx: Path, paths: list[Path], pre: Preprocess) -> np.ndarray:
    import onnxruntime as ort

    from skysort.data.transforms import create_transform

    transform = create_transform(pre)
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    images = np.stack([transform(p) for p in paths]).astype(np.float32)
    return session.run(None, {session.get_inputs()[0].name: images})[0]


def test_embedding_pass_checks_openvino_on_its_first_batch(tmp_path: Path) -> None:
    pre = Preprocess(input_size=16, crop_pct=1.0)
    key = embedding_key("small", "w", pre)
    paths = _images(tmp_path / "a", 20, seed=1)
    feats, bad = cached_embeddings(SmallNet(), pre, key, paths, cache_dir=tmp_path / "c",
                                   workers=0, batch_size=8, engine="auto")
    assert not bad
    onnx = tmp_path / "c" / "onnx" / f"{key}.onnx"
    record = json.loads(onnx.with_suffix(".engine.json").read_text())
    assert record["images"] == 8 and record["precision"] in ("f32", "bf16")
    assert record["accepted"] == (record["min_cosine"] >= embeddings.MIN_COSINE
                                  and record["speedup"] >= embeddings.FASTER_BY)
    # every embedding is ONNX Runtime's (the first batch) or within the cosine of it,
    # computed here with ONNX Runtime itself
    expected = _raw_onnxruntime(onnx, paths, pre)
    np.testing.assert_allclose(feats[:8], expected[:8], rtol=1e-5, atol=1e-6)
    cos = np.sum(feats * expected, axis=1) / (np.linalg.norm(feats, axis=1)
                                              * np.linalg.norm(expected, axis=1))
    assert cos.min() >= embeddings.MIN_COSINE


def test_a_refused_engine_is_remembered_and_not_checked_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from skysort.models import openvino as ovm

    pre = Preprocess(input_size=16, crop_pct=1.0)
    key = embedding_key("small", "w", pre)
    monkeypatch.setattr(embeddings, "MIN_COSINE", 1.5)  # no engine can pass
    cached_embeddings(SmallNet(), pre, key, _images(tmp_path / "a", 10, seed=2),
                      cache_dir=tmp_path / "c", workers=0, batch_size=4)
    record_file = tmp_path / "c" / "onnx" / f"{key}.engine.json"
    assert json.loads(record_file.read_text())["accepted"] is False

    def never(*args: object) -> None:
        raise AssertionError("checked again")

    monkeypatch.setattr(ovm, "run_timed", never)
    paths = _images(tmp_path / "b", 6, seed=3)
    feats, _ = cached_embeddings(SmallNet(), pre, key, paths, cache_dir=tmp_path / "c",
                                 workers=0, batch_size=4)
    onnx = record_file.with_suffix("").with_suffix(".onnx")
    np.testing.assert_allclose(feats, _raw_onnxruntime(onnx, paths, pre), rtol=1e-5,
                               atol=1e-6)
