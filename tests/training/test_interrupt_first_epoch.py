"""Ctrl-C before the first fine-tuning epoch finishes: no epoch was validated, so the
model saved is the head stage's, never the half-updated weights of the epoch cut short."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from skysort.training import recipe, stages
from tests.conftest import write_color_folders

pytestmark = pytest.mark.slow


def test_ctrl_c_in_the_first_fine_tuning_epoch_keeps_the_head_stage_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
        ) -> None:
    data = write_color_folders(tmp_path / "data", per_class=8, size=32)
    seen: dict[str, dict[str, torch.Tensor]] = {}

    def copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    real_head_stage, real_fit = recipe.head_stage, stages.fit

    def head_stage(model: Any, *args: Any, **kwargs: Any) -> Any:
        progress = real_head_stage(model, *args, **kwargs)
        seen["head"] = copy(model)  # validated: the head's best epoch
        return progress

    def fit(stage: Any, task: Any, progress: Any, **kwargs: Any) -> Any:
        if progress.stage == "finetune":
            batches = stage.batches

            def one_step_then_ctrl_c(epoch: int) -> Iterator[Any]:
                yield next(iter(batches(epoch)))
                seen["cut_short"] = copy(stage.model)  # after one optimizer step
                raise KeyboardInterrupt

            stage.batches = one_step_then_ctrl_c
        return real_fit(stage, task, progress, **kwargs)

    monkeypatch.setattr(recipe, "head_stage", head_stage)
    monkeypatch.setattr(stages, "fit", fit)
    run = tmp_path / "runs" / "ft"
    (run / "weights").mkdir(parents=True)
    # what an earlier run of the same name (exist_ok) left: no validated epoch of this one
    (run / "weights" / "best.safetensors").write_bytes(b"an earlier run's weights")
    with pytest.raises(KeyboardInterrupt):
        recipe.train(data, project=str(tmp_path / "runs"), name="ft", exist_ok=True,
                     epochs=3, finetune="last:1", finetune_epochs=2, finetune_batch_size=8,
                     input_size=64, precision="fp32", workers=0, ema_decay=0)
    assert "interrupted before the first fine-tuning epoch finished" in capsys.readouterr().err
    assert not (run / "weights" / "best.safetensors").exists()
    saved = load_file(str(run / "model.safetensors"))
    head, cut_short = seen["head"], seen["cut_short"]
    assert saved.keys() == head.keys()
    # the step that was cut short did change trainable weights ...
    changed = [k for k in head if not torch.equal(head[k], cut_short[k])]
    assert any(k.startswith("head.") for k in changed)
    assert any(k.startswith("backbone.") for k in changed)
    # ... and none of that was saved: the model is the head stage's, tensor for tensor
    for key, value in head.items():
        torch.testing.assert_close(saved[key], value, rtol=0, atol=0)
