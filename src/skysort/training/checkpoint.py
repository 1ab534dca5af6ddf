"""Checkpoints as single safetensors files, written atomically.

``last.safetensors`` holds everything a resumed run needs: the model weights, the
optimizer's tensors, and as JSON metadata the optimizer's settings, the scheduler state,
the epoch, the early-stopping counters, the history and the random generators' states.
One file, written to a temporary name and renamed, so a crash (or ``kill -9``) leaves
either the previous checkpoint or the new one, never half of one. safetensors holds no
pickled code, so loading a checkpoint cannot run anything.

``best.safetensors`` holds the weights of the best validation epoch.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save

from skysort.errors import RunError
from skysort.rundir import atomic_write, damaged, load_weights, read_safetensors

WEIGHTS = "model."
OPTIMIZER = "optimizer."


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu").contiguous()


def save_checkpoint(path: Path, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None, state: dict[str, Any] | None = None,
                    extra: dict[str, torch.nn.Module] | None = None) -> None:
    """Writes weights, optimizer tensors and JSON ``state`` (plus RNG states) to ``path``;
    ``extra`` modules (an EMA copy of the weights) are stored under their own prefix."""
    tensors = {WEIGHTS + k: _cpu(v) for k, v in model.state_dict().items()}
    for prefix, module in (extra or {}).items():
        tensors.update({f"{prefix}.{k}": _cpu(v) for k, v in module.state_dict().items()})
    meta: dict[str, Any] = {"state": state or {}}
    if optimizer is not None:
        opt = optimizer.state_dict()
        for pid, entries in opt["state"].items():
            for name, value in entries.items():
                tensors[f"{OPTIMIZER}{pid}.{name}"] = (_cpu(value) if torch.is_tensor(value)
                                                       else torch.tensor(value))
        meta["param_groups"] = opt["param_groups"]
    if scheduler is not None:
        # lr_lambdas: the schedule's fields (WarmupCosine), which a time budget may change
        meta["scheduler"] = scheduler.state_dict()
    tensors["rng.torch"] = torch.get_rng_state()
    meta["rng"] = {"numpy": _numpy_state(), "python": _python_state()}
    atomic_write(path, save(tensors, metadata={"skysort": json.dumps(meta)}))


def load_checkpoint(path: Path, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None, restore_rng: bool = True,
                    extra: dict[str, torch.nn.Module] | None = None) -> dict[str, Any]:
    """Restores what :func:`save_checkpoint` wrote; returns the JSON ``state``."""
    if not path.is_file():
        raise RunError(f"{path}: checkpoint not found")
    tensors, metadata = read_safetensors(path)
    meta = _meta(path, metadata)
    weights = {k[len(WEIGHTS):]: v for k, v in tensors.items() if k.startswith(WEIGHTS)}
    load_weights(model, weights, path)
    for prefix, module in (extra or {}).items():
        load_weights(module, {k[len(prefix) + 1:]: v for k, v in tensors.items()
                              if k.startswith(prefix + ".")}, path)
    if optimizer is not None and "param_groups" in meta:
        opt_state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith(OPTIMIZER):
                pid, name = key[len(OPTIMIZER):].split(".", 1)
                opt_state.setdefault(int(pid), {})[name] = value
        optimizer.load_state_dict({"state": opt_state, "param_groups": meta["param_groups"]})
    if scheduler is not None and "scheduler" in meta:
        scheduler.load_state_dict({**scheduler.state_dict(), **meta["scheduler"]})
    if restore_rng and "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
        np.random.set_state(_numpy_from(meta["rng"]["numpy"]))
        random.setstate(_python_from(meta["rng"]["python"]))
    return dict(meta.get("state", {}))


def read_state(path: Path) -> dict[str, Any]:
    """The JSON state of a checkpoint without loading its tensors."""
    return dict(_meta(path, read_safetensors(path, tensors=False)[1]).get("state", {}))


def _meta(path: Path, metadata: dict[str, str]) -> dict[str, Any]:
    try:
        meta = json.loads(metadata.get("skysort", "{}"))
    except ValueError as exc:
        raise damaged(path, f"its metadata is not JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise damaged(path, "its metadata is not a mapping")
    return meta


def _numpy_state() -> list[Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return [name, np.asarray(keys).tolist(), int(pos), int(has_gauss), float(cached)]


def _numpy_from(data: list[Any]) -> tuple[Any, ...]:
    return (data[0], np.array(data[1], dtype=np.uint32), data[2], data[3], data[4])


def _python_state() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _python_from(data: list[Any]) -> tuple[Any, ...]:
    return (data[0], tuple(data[1]), data[2])
