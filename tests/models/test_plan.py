"""The resolved plan: each setting parsed and bounded once, what is decided from the data
saved beside the settings as given, and runs from before the plan still read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from skysort.cli import main
from skysort.config import TrainConfig
from skysort.data.transforms import INPUT_SIZES, Preprocess
from skysort.errors import ConfigError, RunError
from skysort.models.plan import (
    AUTO_EPOCHS,
    AUTO_FINETUNE,
    AUTO_FINETUNE_MIN_IMAGES,
    AUTO_LABEL_SMOOTHING,
    DEFAULT_EPOCHS,
    ResolvedPlan,
    choose_input_size,
    parse_finetune,
    resolve_epochs,
    resolve_finetune,
    resolve_recipe,
)


@pytest.mark.parametrize(("setting", "parsed"), [
    ("auto", ("auto", 0)), ("head", ("head", 0)), ("full", ("full", 0)),
    ("last:1", ("last", 1)), ("last:12", ("last", 12)),
])
def test_finetune_settings_parse_once(setting: str, parsed: tuple[str, int]) -> None:
    assert parse_finetune(setting) == parsed
    assert TrainConfig(finetune=setting).finetune == setting


@pytest.mark.parametrize("setting", ["last:0", "last:", "last:x", "LAST:2", "some", "", 5])
def test_a_bad_finetune_setting_is_the_same_config_error_everywhere(setting: object) -> None:
    messages = []
    for check in (parse_finetune, lambda s: resolve_finetune(s, 1000),
                  lambda s: TrainConfig(finetune=s)):
        with pytest.raises(ConfigError) as info:
            check(setting)
        messages.append(str(info.value))
    assert len(set(messages)) == 1 and "last:N" in messages[0] and "\n" not in messages[0]


def test_auto_fine_tunes_from_enough_training_images() -> None:
    assert resolve_finetune("auto", AUTO_FINETUNE_MIN_IMAGES - 1) == ("head", 0)
    assert resolve_finetune("auto", AUTO_FINETUNE_MIN_IMAGES) == AUTO_FINETUNE
    assert resolve_finetune("last:2", 10) == ("last", 2)


def test_the_recipe_says_its_epochs_and_why() -> None:
    # one schedule at every size from AUTO_FINETUNE_MIN_IMAGES on (no longer one for more)
    for n in (AUTO_FINETUNE_MIN_IMAGES, 999, 1000, 2100, 100_000):
        epochs, why = resolve_epochs("auto", None, n)
        assert epochs == AUTO_EPOCHS == 7 and f"{n} training images" in why
        assert "recipe study" in why
    assert resolve_epochs("auto", None, 10)[0] == 0  # the head alone
    assert resolve_epochs("auto", 3, 500) == (3, "finetune=auto: all layers, "
                                                 "finetune_epochs=3 as set")
    assert resolve_epochs("last:2", 3, 500) == (3, "finetune=last:2: the last 2 stages, "
                                                   "finetune_epochs=3 as set")
    assert resolve_epochs("full", None, 500)[0] == DEFAULT_EPOCHS


def test_the_input_size_has_one_bound(capsys: pytest.CaptureFixture[str]) -> None:
    low, high = INPUT_SIZES[0], INPUT_SIZES[-1]
    assert (low, high) == (32, 2048)
    for size in (low, high):
        assert TrainConfig(input_size=size).input_size == size
    for size in (low - 1, high + 1):
        with pytest.raises(ConfigError, match=f"input_size={size}: use 32 to 2048 pixels"):
            TrainConfig(input_size=size)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "DATA", "--input-size", str(low - 1)])
    assert exit_info.value.code == 2 and "--input-size" in capsys.readouterr().err
    # transforms built in code may be smaller than a model is trained at, never larger
    assert Preprocess(input_size=16).input_size == 16
    with pytest.raises(ConfigError, match="2048"):
        Preprocess(input_size=high + 1)


def test_the_input_size_is_as_set_native_for_the_head_else_fitted(tmp_path: Path) -> None:
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (300, 200)).save(paths[-1])
    assert choose_input_size(64, 1.0, paths, 224, "full") == 64
    assert choose_input_size(None, 1.0, paths, 224, "head") == 224
    assert choose_input_size(None, 1.0, paths, 224, "full") == 192  # the shorter side, 200
    assert choose_input_size(None, 0.5, paths, 224, "last") == 96  # 100, at least 96


def test_the_plan_is_saved_and_read_back(tmp_path: Path) -> None:
    plan = ResolvedPlan(data_root="/data/mars", input_size=160, finetune="last", stages=2,
                        pixel_cache="/cache/pixels")
    plan.save(tmp_path)
    assert json.loads((tmp_path / "resolved.json").read_text()) == plan.to_dict()
    assert ResolvedPlan.read(tmp_path) == plan
    (tmp_path / "resolved.json").write_text("[1, 2]")
    with pytest.raises(RunError, match=r"resolved\.json"):
        ResolvedPlan.read(tmp_path)


def test_a_run_from_before_the_plan_is_read_from_its_config(tmp_path: Path) -> None:
    """Older versions wrote data_root and the resolved input_size into config.yaml."""
    old = {**TrainConfig(data="/data/mars").to_dict(), "data_root": "/data/mars",
           "input_size": 128}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    assert ResolvedPlan.read(tmp_path) == ResolvedPlan(data_root="/data/mars", input_size=128)
    cfg = TrainConfig.from_yaml(tmp_path / "config.yaml")  # data_root: a retired key
    assert (cfg.data, cfg.input_size) == ("/data/mars", 128)
    assert "data_root" not in cfg.to_dict()
    assert ResolvedPlan.read(tmp_path / "nothing") == ResolvedPlan(None, None)


def test_a_resumed_run_keeps_the_recipe_it_started_with() -> None:
    started = ResolvedPlan("d", 96, "full", 0, None, 9, "finetune=auto: all layers, 9 epochs")
    assert resolve_recipe("auto", None, 500, started) == \
        ("full", 0, 9, "finetune=auto: all layers, 9 epochs", 0.0)  # no smoothing then
    smoothed = ResolvedPlan("d", 96, "full", 0, None, 7, "7 epochs", label_smoothing=0.1)
    assert resolve_recipe("auto", None, 5000, smoothed)[2:] == (7, "7 epochs", 0.1)
    # a run written before epochs were resolved: its settings' epochs, or the old default
    older = ResolvedPlan("d", 96, "full")
    assert resolve_recipe("auto", 12, 500, older)[:3] == ("full", 0, 12)
    assert resolve_recipe("auto", None, 500, older)[:3] == ("full", 0, DEFAULT_EPOCHS)
    # a new run resolves from the data
    assert resolve_recipe("auto", None, 300)[:3] == (*AUTO_FINETUNE, AUTO_EPOCHS)


def test_the_short_recipe_smooths_labels_and_nothing_else_does() -> None:
    for n in (300, 5000):
        short = resolve_recipe("auto", None, n)
        assert short[:3] == (*AUTO_FINETUNE, AUTO_EPOCHS)
        assert short[4] == AUTO_LABEL_SMOOTHING == 0.1
        assert f"label smoothing {AUTO_LABEL_SMOOTHING}" in short[3]
    # a task whose loss takes none (vote counts), the head alone, epochs or a mode set by
    # hand: none
    assert resolve_recipe("auto", None, 300, smooths=False)[2:] == \
        (AUTO_EPOCHS, resolve_epochs("auto", None, 300)[1], 0.0)
    for args in (("auto", None, AUTO_FINETUNE_MIN_IMAGES - 1),
                 ("auto", 5, 300), ("full", None, 300), ("last:2", None, 300)):
        resolved = resolve_recipe(*args)  # type: ignore[arg-type]
        assert resolved[4] == 0.0 and "label smoothing" not in resolved[3], args
    # a value set by hand is kept, and the recipe's words do not claim the recipe's
    assert resolve_recipe("auto", None, 300, None, 0.0)[4] == 0.0
    assert "label smoothing" not in resolve_recipe("auto", None, 300, None, 0.0)[3]
    assert resolve_recipe("full", None, 300, None, 0.2)[4] == 0.2
