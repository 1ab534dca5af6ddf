from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from skysort.training.checkpoint import load_checkpoint, read_state, save_checkpoint


def _setup(seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer, object]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8),
                                torch.nn.Linear(8, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 / (1 + s))
    return model, optimizer, scheduler


def _step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: object) -> None:
    loss = model(torch.randn(16, 4)).square().mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step()  # type: ignore[attr-defined]


def test_round_trip_restores_training_exactly(tmp_path: Path) -> None:
    model, optimizer, scheduler = _setup(0)
    for _ in range(3):
        _step(model, optimizer, scheduler)
    np.random.seed(5)
    random.seed(5)
    save_checkpoint(tmp_path / "last.safetensors", model, optimizer, scheduler,
                    {"epoch": 3, "history": [{"loss": 0.5}]})
    # The run that was never interrupted goes on ...
    _step(model, optimizer, scheduler)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    expected_draws = (np.random.rand(), random.random())

    # ... and a fresh process restores the checkpoint and takes the same step.
    other, other_opt, other_sched = _setup(1)
    state = load_checkpoint(tmp_path / "last.safetensors", other, other_opt, other_sched)
    assert state == {"epoch": 3, "history": [{"loss": 0.5}]}
    assert other_sched.last_epoch == 3  # type: ignore[attr-defined]
    _step(other, other_opt, other_sched)
    for key, value in other.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0)
    assert (np.random.rand(), random.random()) == expected_draws
    assert read_state(tmp_path / "last.safetensors")["epoch"] == 3


def test_a_crash_while_writing_leaves_the_previous_checkpoint(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    model, optimizer, scheduler = _setup(0)
    path = tmp_path / "last.safetensors"
    save_checkpoint(path, model, optimizer, scheduler, {"epoch": 1})
    saved = {k: v.clone() for k, v in model.state_dict().items()}

    def crash(*args: object) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", crash)
    _step(model, optimizer, scheduler)
    with pytest.raises(OSError, match="power cut"):
        save_checkpoint(path, model, optimizer, scheduler, {"epoch": 2})
    monkeypatch.undo()
    assert read_state(path) == {"epoch": 1}
    fresh, _, _ = _setup(1)
    load_checkpoint(path, fresh)  # still a whole, readable file: epoch 1's weights
    moved = False
    for key, value in fresh.state_dict().items():
        torch.testing.assert_close(value, saved[key], rtol=0, atol=0)
        moved |= not torch.equal(value, model.state_dict()[key])
    assert moved  # the step after it changed the model, and none of that was saved
