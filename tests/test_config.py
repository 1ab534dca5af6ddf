from __future__ import annotations

from pathlib import Path

import pytest

from skysort.config import TrainConfig, parse_overrides
from skysort.errors import ConfigError


def test_overrides_are_converted_to_field_types() -> None:
    cfg = TrainConfig().updated(parse_overrides(
        ["epochs=7", "lr=1e-3", "split=0.8,0.1,0.1", "exist_ok=true", "input_size=128",
         "cache-dir=/tmp/x", "workers=null"]))
    assert (cfg.epochs, cfg.lr, cfg.split, cfg.exist_ok) == (7, 1e-3, (0.8, 0.1, 0.1), True)
    assert (cfg.input_size, cfg.cache_dir, cfg.workers) == (128, "/tmp/x", None)


def test_unknown_keys_are_rejected_with_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['epoch'\].*'epochs'"):
        TrainConfig().updated({"epoch": 3})


@pytest.mark.parametrize(("key", "value", "match"), [
    ("epochs", "many", "expected int"),
    ("epochs", 0, "at least 1"),
    ("balance", "oversample", "one of weights, sampler, none"),
    ("split", "0.5,0.5,0.5", "sum to 1"),
    ("dropout", 1.5, r"\[0, 1\)"),
    ("lr", 2.5e-1 - 1, "negative"),
])
def test_bad_values_name_the_key(key: str, value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        TrainConfig().updated({key: value})


def test_yaml_round_trip(tmp_path: Path) -> None:
    cfg = TrainConfig(epochs=12, backbone="resnet18", split=(0.6, 0.2, 0.2), name="mars")
    cfg.save(tmp_path / "config.yaml")
    assert TrainConfig.from_yaml(tmp_path / "config.yaml") == cfg
    (tmp_path / "bad.yaml").write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        TrainConfig.from_yaml(tmp_path / "bad.yaml")


def test_override_syntax_errors() -> None:
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["epochs"])


def test_readme_lists_every_file_of_a_run_directory() -> None:
    from skysort import rundir

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### What a run directory holds", 1)[1].split("###", 1)[0]
    missing = [name for name in (*rundir.RUN_FILES, rundir.ONNX_FILE) if name not in section]
    assert not missing
