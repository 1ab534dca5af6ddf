from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from skimage import data as skdata

from skysort.errors import ModelError
from skysort.models.backbones import DEFAULT_BACKBONE, create_backbone, embedded_weights_file

CATS = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


@pytest.fixture(scope="module")
def imagenet_model():
    return create_backbone(DEFAULT_BACKBONE, weights="auto", num_classes=1000)


def _top(backbone, array: np.ndarray) -> tuple[int, float]:
    x = torch.from_numpy(backbone.preprocess(Image.fromarray(array)))[None]
    with torch.no_grad():
        probs = backbone.model(x).softmax(1)[0]
    return int(probs.argmax()), float(probs.max())


def test_embedded_weights_recognise_a_cat_and_an_espresso(imagenet_model) -> None:
    """The weights that ship with the install are the real ImageNet weights."""
    cat, _ = _top(imagenet_model, skdata.chelsea())
    coffee, confidence = _top(imagenet_model, skdata.coffee())
    assert cat in CATS
    assert coffee == ESPRESSO and confidence > 0.5


def test_feature_extractor_and_preprocessing_come_from_the_backbone() -> None:
    backbone = create_backbone()
    assert backbone.num_features == 1280
    assert backbone.preprocess.input_size == 224
    assert backbone.preprocess.mean == (0.5, 0.5, 0.5)  # the TF-ported lite models
    assert backbone.weights_id.startswith("embedded:")
    with torch.no_grad():
        assert backbone.model(torch.zeros(2, 3, 224, 224)).shape == (2, 1280)
    assert create_backbone(input_size=128).preprocess.input_size == 128


def test_unknown_backbone_lists_valid_names() -> None:
    with pytest.raises(ModelError, match="unknown backbone 'no_such_net'"):
        create_backbone("no_such_net")


def test_backbone_without_embedded_weights_says_what_to_do() -> None:
    with pytest.raises(ModelError, match="--weights FILE"):
        create_backbone("resnet18", weights="auto")


def test_local_weights_file(tmp_path: Path) -> None:
    source = create_backbone("resnet18", weights="none")
    state = {k: torch.randn_like(v) if v.is_floating_point() else v
             for k, v in source.model.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    loaded = create_backbone("resnet18", weights=str(tmp_path / "w.safetensors"))
    for k, v in loaded.model.state_dict().items():
        torch.testing.assert_close(v, state[k])
    assert loaded.weights_id.startswith("file:")
    # A torch checkpoint with the weights under "state_dict" (and a "module." prefix, as
    # DataParallel saves them) loads the same tensors.
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "w.pth")
    from_pth = create_backbone("resnet18", weights=str(tmp_path / "w.pth"))
    for k, v in from_pth.model.state_dict().items():
        torch.testing.assert_close(v, state[k])


def test_weights_that_do_not_fit(tmp_path: Path) -> None:
    save_file({"conv1.weight": torch.zeros(3)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ModelError, match="does not fit"):
        create_backbone("resnet18", weights=str(tmp_path / "bad.safetensors"))
    with pytest.raises(ModelError, match="not found"):
        create_backbone("resnet18", weights=str(tmp_path / "missing.pt"))
    assert embedded_weights_file(DEFAULT_BACKBONE).is_file()
