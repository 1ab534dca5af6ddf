"""The recipe as a caller sees it: the caller's settings are never changed behind its
back, and a resumed run takes no other settings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from skysort import ImageClassifier
from skysort.cli import main
from skysort.config import TrainConfig
from skysort.data.sources import read_class_folders
from skysort.errors import ConfigError
from skysort.evaluation.evaluator import evaluate
from skysort.evaluation.report import write_report
from skysort.inspection.similar import find_similar
from skysort.models.plan import ResolvedPlan
from skysort.training.recipe import _setup_input_size, train
from tests.conftest import write_color_folders


@pytest.mark.slow
def test_training_leaves_the_callers_config_as_it_was(tmp_path: Path) -> None:
    first = write_color_folders(tmp_path / "first", per_class=8, size=32,
                                classes=("red", "blue"))
    second = write_color_folders(tmp_path / "second", per_class=8, size=32,
                                 classes=("red", "green"))
    cfg = TrainConfig(project=str(tmp_path / "runs"), epochs=3, finetune="head")
    before = cfg.to_dict()
    one = train(first, cfg)
    assert cfg.to_dict() == before  # no input_size, data or data_root written into it
    two = train(second, cfg)
    assert cfg.to_dict() == before
    saved = [TrainConfig.from_yaml(r.run_dir / "config.yaml") for r in (one, two)]
    assert [s.data for s in saved] == [str(first), str(second)]
    assert [s.input_size for s in saved] == [None, None]  # the settings as given
    plans = [ResolvedPlan.read(r.run_dir) for r in (one, two)]
    assert [p.input_size for p in plans] == [224, 224]  # resolved in the run's own plan
    assert [p.data_root for p in plans] == [str(first), str(second)]
    assert [(p.finetune, p.stages, p.pixel_cache) for p in plans] == [("head", 0, None)] * 2
    assert one.metrics["classes"] == ["blue", "red"]
    assert two.metrics["classes"] == ["green", "red"]


def _squares(root: Path, size: int, n: int = 8) -> tuple[list[Path], list[str]]:
    rng = np.random.default_rng(size)
    paths, labels = [], []
    for i in range(n):
        label = ("bright", "dark")[i % 2]
        level = 200 if label == "bright" else 50
        pixels = np.clip(level + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
        root.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / f"{i}.png")
        paths.append(root / f"{i}.png")
        labels.append(label)
    return paths, labels


@pytest.mark.slow
def test_a_second_fit_chooses_its_own_input_size(tmp_path: Path) -> None:
    """Fine-tuning fits the input size to the data; a second fit of the same estimator on
    larger images used to inherit the first fit's size."""
    model = ImageClassifier(finetune="full", finetune_epochs=1, epochs=2,
                            project=str(tmp_path / "runs"), workers=0, validation_fraction=0.5)
    model.fit(*_squares(tmp_path / "small", 40))
    small = ResolvedPlan.read(model.run_dir_).input_size
    model.fit(*_squares(tmp_path / "large", 200))
    large = ResolvedPlan.read(model.run_dir_).input_size
    assert (small, large) == (96, 192)
    assert model.input_size is None  # the setting itself is never changed by a fit


@pytest.mark.parametrize("extra", [["epochs=3"], ["--epochs", "3"], ["DATA"],
                                   ["--labels", "t.csv"], ["--config", "c.yaml"]])
def test_resume_refuses_settings_it_would_drop(extra: list[str],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", *(["DATA"] if extra == ["DATA"] else []), "--resume", "runs/train",
            *([] if extra == ["DATA"] else extra)]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--resume continues a run with its own settings" in err
    assert (extra[0] if extra != ["DATA"] else "DATA") in err.splitlines()[-1]


def test_resume_in_python_refuses_other_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="give resume= alone"):
        train(resume=tmp_path, epochs=3)


@pytest.mark.slow
def test_balanced_sampling_trains_on_an_imbalanced_set(tmp_path: Path) -> None:
    data = write_color_folders(tmp_path / "data", per_class={"red": 40, "blue": 8, "green": 8},
                               size=32)
    result = train(data, project=str(tmp_path / "runs"), balance="sampler", epochs=20,
                   finetune="head")
    assert TrainConfig.from_yaml(result.run_dir / "config.yaml").balance == "sampler"
    assert result.metrics["model"]["balanced_accuracy"] >= 0.9
    # nothing wrong with the model (its 7 validation images are too few to calibrate it)
    assert [w for w in result.metrics["warnings"] if not w.startswith("NOT CALIBRATED")] == []


def test_a_resumed_run_keeps_the_input_size_it_started_with(tmp_path: Path) -> None:
    data = write_color_folders(tmp_path / "data", per_class=2, size=32)
    dataset = read_class_folders(data)
    run = tmp_path / "run"
    run.mkdir()
    ResolvedPlan(str(data), 160, "full").save(run)
    assert _setup_input_size(TrainConfig(), dataset, "full", run) == 160
    (run / "resolved.json").unlink()  # an older run: the size its config.yaml recorded
    (run / "config.yaml").write_text(yaml.safe_dump({"data_root": str(data), "input_size": 128}))
    assert _setup_input_size(TrainConfig(), dataset, "full", run) == 128
    assert _setup_input_size(TrainConfig(), dataset, "full", None) == 96  # fitted: 32 px


@pytest.mark.slow
def test_runs_from_before_the_resolved_plan_still_evaluate_report_and_resume(
        tmp_path: Path) -> None:
    """Older runs kept data_root and the resolved input_size in config.yaml, and had no
    resolved.json; resuming one keeps that input size."""
    data = write_color_folders(tmp_path / "data", per_class=8, size=32,
                               classes=("red", "blue"))
    run = train(data, project=str(tmp_path / "runs"), epochs=3, finetune="head").run_dir
    new = evaluate(run, output=tmp_path / "new.json")
    config = yaml.safe_load((run / "config.yaml").read_text())
    (run / "resolved.json").unlink()
    # data: null, so evaluate can only find the images through data_root
    old_config = {**config, "data": None, "data_root": str(data), "input_size": 64}
    (run / "config.yaml").write_text(yaml.safe_dump(old_config, sort_keys=False))
    old = evaluate(run, output=tmp_path / "old.json")
    assert old["n"] == new["n"] > 0 and old["model"] == new["model"]
    assert write_report(run, tmp_path / "old.json").is_file()
    query = sorted(data.rglob("*.png"))[0]  # similar finds the run's images through data_root
    assert Path(find_similar(run, query, k=1)[0].path) == query
    (run / "config.yaml").write_text(yaml.safe_dump({**old_config, "data": str(data)}))
    resumed = train(resume=run)
    plan = ResolvedPlan.read(run)
    assert (plan.data_root, plan.input_size, plan.finetune, plan.epochs) == \
        (str(data), 64, "head", 0)  # the size kept
    assert json.loads((run / "model.json").read_text())["preprocess"]["input_size"] == 64
    assert resumed.metrics["n"] == new["n"]


@pytest.mark.slow
def test_the_short_default_recipe_trains_with_label_smoothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """finetune=auto on few images: both stages' losses get the recipe's label smoothing,
    resolved.json records it and config.yaml keeps the setting as given (unset)."""
    from skysort.models import plan
    from skysort.tasks.multiclass import MulticlassTask

    monkeypatch.setattr(plan, "AUTO_FINETUNE_MIN_IMAGES", 10)  # a small set fine-tunes
    monkeypatch.setattr(plan, "AUTO_EPOCHS", 1)
    given: list[float] = []
    loss_fn = MulticlassTask.loss_fn

    def recorded(self: MulticlassTask, targets: np.ndarray, balance: str,
                 label_smoothing: float = 0.0) -> object:
        given.append(label_smoothing)
        return loss_fn(self, targets, balance, label_smoothing)

    monkeypatch.setattr(MulticlassTask, "loss_fn", recorded)
    data = write_color_folders(tmp_path / "data", per_class=8, size=32,
                               classes=("red", "green", "blue"))
    result = train(data, TrainConfig(project=str(tmp_path / "runs"), epochs=2, input_size=32,
                                     cache_dir=str(tmp_path / "cache")))
    assert [r["stage"] for r in result.history].count("finetune") == 1
    assert given == [0.1, 0.1]  # the head's loss, then fine-tuning's
    resolved = json.loads((result.run_dir / "resolved.json").read_text())
    assert resolved["label_smoothing"] == 0.1 and "label smoothing 0.1" in resolved["recipe"]
    assert TrainConfig.from_yaml(result.run_dir / "config.yaml").label_smoothing is None


@pytest.mark.slow
def test_the_short_default_recipe_smooths_no_vote_counts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Vote counts have no labels to smooth: the short recipe's run records none and its
    words do not speak of it (they did: 0.1 recorded for a counts run, not applied)."""
    from skysort.models import plan
    from skysort.synth.counts import make_vote_count_set

    monkeypatch.setattr(plan, "AUTO_FINETUNE_MIN_IMAGES", 10)
    monkeypatch.setattr(plan, "AUTO_EPOCHS", 1)
    images, votes, _ = make_vote_count_set(tmp_path / "gz", 32, size=32, seed=4)
    result = train(images, TrainConfig(labels=str(votes), project=str(tmp_path / "runs"),
                                       epochs=2, input_size=32,
                                       cache_dir=str(tmp_path / "cache")))
    assert result.metrics["task"] == "counts"
    assert [r["stage"] for r in result.history].count("finetune") == 1  # the short recipe
    resolved = json.loads((result.run_dir / "resolved.json").read_text())
    assert resolved["label_smoothing"] == 0.0 and "smoothing" not in resolved["recipe"]
    assert resolved["epochs"] == 1
