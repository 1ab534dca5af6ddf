"""A time budget for the whole run (``time=10m``), and the same model from the same command."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

import skysort
from skysort.config import TrainConfig
from skysort.errors import ConfigError
from skysort.training import stages
from skysort.training.budget import Budget, EpochPlan, epoch_guard, plan_epochs
from skysort.training.distributed import Distributed
from skysort.training.loop import Progress, WarmupCosine
from tests.conftest import write_color_folders


@pytest.mark.parametrize("text", ["90", "10 minutes", "-2m", "0s", "m", "1.5d", ""])
def test_a_budget_needs_a_duration_with_its_unit(text: str) -> None:
    with pytest.raises(ConfigError, match=r"time=.*90s, 10m or 1\.5h") as info:
        TrainConfig(time=text)
    assert "\n" not in str(info.value)


def test_durations_in_seconds() -> None:
    assert [Budget.of(t).seconds for t in ("90s", "10m", "1.5h", ".5m")] == \
        [90, 600, 5400, 30]  # type: ignore[union-attr]
    assert Budget.of(None) is None
    # the setting as YAML gives it: `time: 10m` is text, `time: 10` is a number
    assert TrainConfig.from_mapping({"time": "10m"}).time == "10m"
    with pytest.raises(ConfigError, match="unit"):
        TrainConfig.from_mapping({"time": 10})


def _budget(seconds: float, spent: float) -> Budget:
    return Budget("test", seconds, started=time.monotonic() - spent)


def test_the_plan_fills_what_is_left_and_no_more() -> None:
    budget = _budget(300, spent=100)  # 200 s left
    plan = plan_epochs(budget, wanted=20, done=0, step_s=0.01, n_train=1000, n_val=300,
                       n_after=600)
    # an epoch: 1000 steps of 10 ms with their overhead, and 300 forward passes
    assert plan.epoch_s == pytest.approx(1000 * 0.01 * 1.1 + 300 * 0.01 / 3)
    assert plan.tail_s == pytest.approx(600 * 0.01 / 3 + 8)
    left = 200
    assert plan.epochs * plan.epoch_s + plan.tail_s <= left + 0.5
    assert (plan.epochs + 1) * plan.epoch_s + plan.tail_s > left
    assert plan.epochs == 15 and "15 of the 20 epoch(s) asked for fit" in plan.why
    # room for all: the settings' epochs; none: the head alone, and why
    assert plan_epochs(_budget(3600, 0), 15, 0, 0.01, 1000, 300, 600).epochs == 15
    none = plan_epochs(_budget(60, 50), 15, 0, 0.01, 1000, 300, 600)
    assert none.epochs == 0 and "the head alone is trained" in none.why
    # a resumed run counts the epochs it ran
    assert plan_epochs(_budget(300, 100), 15, 10, 0.01, 1000, 300, 600).epochs == 15


def test_epochs_slower_than_planned_end_the_schedule_sooner() -> None:
    budget = _budget(100, spent=0)
    plan = EpochPlan(epochs=8, epoch_s=10, tail_s=10, why="")
    schedule = WarmupCosine(warmup_steps=5, total_steps=8 * 5)
    guard = epoch_guard(budget, plan, schedule, steps=5, wanted=15)
    progress = Progress("finetune")
    assert guard(progress) is False  # the first epoch was planned
    # two epochs of 20 s (not 10): 40 s spent, 60 s left, 10 kept: two more fit
    progress.epoch = 2
    progress.history = [{"stage": "head", "time_s": 99.0},
                        {"stage": "finetune", "time_s": 20.0},
                        {"stage": "finetune", "time_s": 20.0}]
    budget.started -= 40
    assert guard(progress) is False
    assert schedule.total_steps == 4 * 5 and "ends after epoch 4, not 8" in budget.notes[-1]
    assert schedule(4 * 5 - 1) < 0.02  # the last step of epoch 4 at a low rate
    progress.epoch = 4  # the shortened schedule is done
    assert guard(progress) is True
    # an epoch that would end in the kept tail is not started
    progress.epoch = 3
    # 20 s left: an epoch of 20 s and the 10 s tail do not fit, not even with the 5%
    # (5 s) the budget may run over
    budget.started -= 40
    assert guard(progress) is True and "stopped after epoch 3" in budget.notes[-1]


def test_epochs_faster_than_planned_lengthen_the_schedule_up_to_the_settings() -> None:
    budget = _budget(1000, spent=0)
    schedule = WarmupCosine(warmup_steps=5, total_steps=3 * 5)
    guard = epoch_guard(budget, EpochPlan(epochs=3, epoch_s=100, tail_s=10, why=""),
                        schedule, steps=5, wanted=6)
    progress = Progress("finetune", epoch=1, history=[{"stage": "finetune", "time_s": 20.0}])
    budget.started -= 20  # 980 s left: 48 epochs of 20 s fit, the settings ask for 6
    assert guard(progress) is False
    assert schedule.total_steps == 6 * 5 and "ends after epoch 6, not 3" in budget.notes[-1]


def test_a_resumed_run_has_what_was_left_of_its_budget() -> None:
    budget = _budget(600, spent=5)
    plan = {"seconds_per_image": {"fp32": 0.01},
            "time": {"before_finetune_s": 100.0}}
    progress = Progress("finetune", epoch=2,
                        history=[{"stage": "finetune", "time_s": 50.0},
                                 {"stage": "finetune", "time_s": 50.0}])
    part = {"val": np.arange(300), "test": np.arange(300)}
    epochs = stages._plan_budget(budget, plan, progress, None, None, None,  # type: ignore[arg-type]
                                 TrainConfig(finetune_epochs=30), None, 32, 1000, part,
                                 Distributed.from_env(__import__("torch").device("cpu")), 60)
    left = 600 - 5 - 100 - 100  # this start's 5 s, the earlier start's 200 s
    assert budget.left() == pytest.approx(left, abs=1)
    epoch_s, tail_s = 1000 * 0.01 * 1.1 + 1, 600 * 0.01 / 3 + 8
    assert epochs == 2 + math.floor((left - tail_s) / epoch_s)
    assert plan["time"]["before_finetune_s"] == 100.0  # the first start's, kept


@pytest.mark.slow
def test_a_budget_too_small_for_one_epoch_trains_the_head_and_says_why(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_color_folders(tmp_path / "data", per_class=10, size=48)
    result = skysort.train(data, project=str(tmp_path / "runs"), finetune="full",
                           finetune_epochs=3, epochs=3, input_size=32, time="1s",
                           cache_dir=str(tmp_path / "cache"))
    said = capsys.readouterr()
    assert "the head alone is trained" in said.err
    assert "time=1s: the run took" in said.out and "over it by" in said.out
    # the end of the run says the cut once, without the setting again
    summary = next(ln for ln in said.out.splitlines() if ln.startswith("time=1s: the run"))
    assert "so the head alone is trained" in summary and summary.count("time=1s") == 1
    assert [r["stage"] for r in result.history] == ["head"] * 3
    plan = json.loads((result.run_dir / "finetune_plan.json").read_text())
    assert plan["time"]["plan"]["epochs"] == 0 and plan["time"]["setting"] == "1s"
    model = json.loads((result.run_dir / "model.json").read_text())
    assert model["backbone"]["frozen"] is True  # the backbone is the pretrained one
    assert "balanced_accuracy" in result.metrics["model"]


@pytest.mark.slow
def test_the_same_command_twice_gives_the_same_model(tmp_path: Path) -> None:
    data = write_color_folders(tmp_path / "data", per_class=10, size=48)
    runs = [skysort.train(data, project=str(tmp_path / "runs"), name=f"run{i}",
                          finetune="full", finetune_epochs=2, epochs=5, input_size=32,
                          cache_dir=str(tmp_path / "cache")).run_dir for i in range(2)]
    first, second = (json.loads((r / "metrics.json").read_text()) for r in runs)
    assert first == second
    a, b = (load_file(str(r / "model.safetensors")) for r in runs)
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    plans = [json.loads((r / "finetune_plan.json").read_text()) for r in runs]
    assert plans[0]["precision"] == plans[1]["precision"]
    assert "pin" in plans[0]["precision_why"] or "no native bf16" in plans[0]["precision_why"]
