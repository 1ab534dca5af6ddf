"""Fine-tuning at the CPU's speed: decode once, every core to the model, precision chosen
by measurement, and none of it changing what is trained."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import skysort
from skysort.config import TrainConfig
from skysort.data.split import read_split_csv
from skysort.data.transforms import Preprocess
from skysort.device import cpu_count
from skysort.models.backbones import create_backbone
from skysort.models.model import SkyModel
from skysort.models.plan import ResolvedPlan, pixel_cache
from skysort.tasks import make_task
from skysort.training import stages, timing
from tests.conftest import write_color_folders


@pytest.mark.slow
def test_fine_tuning_decodes_each_image_once_and_gives_the_cores_to_the_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_color_folders(tmp_path / "data", per_class=10, size=48)
    decoded: list[Path] = []
    fitting: list[bool] = []
    real_fit, real_decode = stages.fit, Preprocess.decode

    def fit(*args: object, **kwargs: object) -> object:
        fitting.append(True)
        try:
            return real_fit(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            fitting.clear()

    def decode(self: Preprocess, path: Path) -> object:
        if fitting:
            decoded.append(Path(path))
        return real_decode(self, path)

    monkeypatch.setattr(stages, "fit", fit)
    monkeypatch.setattr(Preprocess, "decode", decode)
    threads = torch.get_num_threads()
    cache = tmp_path / "cache"
    result = skysort.train(data, project=str(tmp_path / "runs"), finetune="full",
                           finetune_epochs=2, epochs=3, input_size=32, cache_dir=str(cache))
    plan = json.loads((result.run_dir / "finetune_plan.json").read_text())
    assert plan["workers"] == 0 and plan["threads"] == cpu_count()
    assert plan["precision"] in ("fp32", "bf16") and plan["pixel_cache"] == str(cache / "pixels")
    assert ResolvedPlan.read(result.run_dir).pixel_cache == plan["pixel_cache"]
    # the embedding pass filled the pixel cache: the fine-tuning epochs and their
    # validation decoded no file
    assert decoded == []
    rows = read_split_csv(result.run_dir / "split.csv")
    used = sum(r["split"] in ("train", "val") for r in rows)
    assert len(list((cache / "pixels").glob("*.npy"))) >= used
    assert torch.get_num_threads() == threads  # given back after fine-tuning


def _model() -> tuple[SkyModel, object]:
    task = make_task("multiclass", ["a", "b", "c"])
    backbone = create_backbone(input_size=32)
    return SkyModel(backbone.model, backbone.num_features, task), task


def test_precision_is_measured_only_where_bf16_is_native(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    model, task = _model()
    loss_fn = task.loss_fn(np.array([0, 1, 2]), "none")  # type: ignore[attr-defined]
    cpu = torch.device("cpu")
    monkeypatch.setattr(timing, "resolve_precision", lambda name, device: None)
    assert timing.measure_precision(model, task, TrainConfig(), cpu, loss_fn, 32)[:2] == \
        (None, {})
    monkeypatch.setattr(timing, "resolve_precision", lambda name, device: torch.bfloat16)
    assert timing.measure_precision(model, task, TrainConfig(precision="bf16"), cpu, loss_fn,
                                    32)[:2] == (torch.bfloat16, {})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    model.train()
    dtype, timings, why = timing.measure_precision(model, task,
                                                   TrainConfig(finetune_batch_size=4), cpu,
                                                   loss_fn, 32)
    assert set(timings) == {"fp32", "bf16"} and all(t > 0 for t in timings.values())
    # bf16 only when clearly faster: a change of numerics is not a coin flip of timings
    ratio = timings["fp32"] / timings["bf16"]
    assert dtype == (torch.bfloat16 if ratio >= 1.25 else None)
    assert f"{ratio:.2f}x" in why and "pin it with precision=" in why
    # nothing the run depends on moved: weights, batch-norm statistics, generators
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training and all(p.grad is None for p in model.parameters())


def test_a_timing_near_the_margin_does_not_change_the_precision(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two timings of one model that differ by noise (0.95x and 1.10x) both keep fp32."""
    model, task = _model()
    loss_fn = task.loss_fn(np.array([0, 1, 2]), "none")  # type: ignore[attr-defined]
    monkeypatch.setattr(timing, "resolve_precision", lambda name, device: torch.bfloat16)
    for fp32, bf16, expected in ((0.0095, 0.0100, None), (0.0110, 0.0100, None),
                                 (0.0130, 0.0100, torch.bfloat16)):
        monkeypatch.setattr(timing, "time_step",
                            lambda *a, f=fp32, b=bf16, **k: b if a[-1] is not None else f)
        assert timing.measure_precision(model, task, TrainConfig(), torch.device("cpu"),
                                        loss_fn, 32)[0] == expected


def test_the_pixel_cache_refuses_what_cache_max_gb_cannot_hold(tmp_path: Path) -> None:
    pre = create_backbone(input_size=224).preprocess
    assert pixel_cache(str(tmp_path), 0.001, pre, 100) is None  # 100 x 256 x 384 x 3 > 1 MB
    assert pixel_cache(str(tmp_path), 0, pre, 1) is None
    assert pixel_cache(str(tmp_path), TrainConfig().cache_max_gb, pre, 100) == \
        tmp_path / "pixels"


def test_read_plan_tolerates_a_missing_or_damaged_plan(tmp_path: Path) -> None:
    assert stages.read_plan(tmp_path) == {}
    (tmp_path / "finetune_plan.json").write_text("{")
    assert stages.read_plan(tmp_path) == {}
    (tmp_path / "finetune_plan.json").write_text('{"precision": "fp32"}')
    assert stages.read_plan(tmp_path) == {"precision": "fp32"}


def test_layer_decay_lowers_each_earlier_layers_rate_and_the_default_none() -> None:
    """The default trains every layer at finetune_lr; layer_decay=0.5 halves the rate from
    one layer to the one before it, down to the stem (the first convolution)."""
    model, _ = _model()
    stem = {id(p) for p in model.backbone.conv_stem.parameters()}
    head = {id(p) for p in model.head.parameters()}

    def rates(decay: float | None) -> tuple[list[float], float, float]:
        cfg = TrainConfig() if decay is None else TrainConfig(layer_decay=decay)
        groups = stages.finetune_optimizer(model, cfg).param_groups
        of = {id(p): g["lr"] for g in groups for p in g["params"]}
        assert len(of) == sum(1 for _ in model.parameters())  # every parameter, once
        return (sorted({g["lr"] for g in groups}, reverse=True),
                min(of[i] for i in stem), min(of[i] for i in head))

    lr = TrainConfig().finetune_lr
    distinct, stem_lr, head_lr = rates(None)
    assert distinct == [lr] and stem_lr == head_lr == lr
    distinct, stem_lr, head_lr = rates(0.5)
    assert head_lr == lr and stem_lr == distinct[-1] and len(distinct) > 5
    np.testing.assert_allclose(distinct, [lr * 0.5 ** k for k in range(len(distinct))])
