"""Adding a task kind is one class in tasks/ and its registration: a kind written here, in
the test (a two-output regression, which skysort does not have), trains, evaluates,
reports and predicts with no edit anywhere else."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pytest
from PIL import Image

import skysort
from skysort.evaluation.report import write_report
from skysort.tasks import Task, register_task
from skysort.tasks.base import _REGISTRY, LossFn

if TYPE_CHECKING:
    import torch
    from torch import nn

KIND = "test_two_outputs"


class TwoOutputRegression(Task):
    """Two unbounded numbers per image, a linear head, mean squared error, RMSE beside the
    training mean: nothing of it exists in skysort outside this class."""

    kind: ClassVar[str] = KIND
    headline_key: ClassVar[str] = "rmse"
    lower_is_better: ClassVar[bool] = True
    value_rule: ClassVar[str] = "any number"

    def output_layer(self) -> nn.Module:
        from torch import nn

        return nn.Identity()

    def fit_statistics(self, targets: np.ndarray) -> None:
        super().fit_statistics(targets)
        self.mean = targets.mean(axis=0).tolist()

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "mean": self.mean}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Task:
        task = super().from_dict(data)
        task.mean = list(data["mean"])  # type: ignore[attr-defined]
        return task

    def loss_fn(self, train_targets: np.ndarray, balance: str,
                label_smoothing: float = 0.0) -> LossFn:
        from torch import nn

        mse = nn.MSELoss()

        def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            return mse(logits, targets)

        return loss

    def metrics(self, y_true: np.ndarray, outputs: np.ndarray, *, threshold: float = 0.5,
                derived_thresholds: Sequence[float] = (0.6, 0.9)) -> dict[str, Any]:
        y = np.asarray(y_true, dtype=np.float64)
        pred = np.asarray(outputs, dtype=np.float64)
        base = np.broadcast_to(np.asarray(self.mean), y.shape)
        return {"task": self.kind, "n": len(y), "columns": list(self.classes),
                "model": {"rmse": float(np.sqrt(np.mean((pred - y) ** 2)))},
                "baseline": {"kind": "training mean", "rmse":
                             float(np.sqrt(np.mean((base - y) ** 2)))},
                "warnings": []}


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def registered() -> Iterator[type[Task]]:
    register_task(TwoOutputRegression)
    yield TwoOutputRegression
    _REGISTRY.pop(KIND)


def _make_set(folder: Path, n: int = 90) -> Path:
    """Discs of known brightness and radius on black; targets are two affine maps of them,
    outside [0, 1] on purpose (no kind of skysort's would keep them)."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:64, :64] - 31.5
    rows = []
    for i in range(n):
        brightness, radius = rng.uniform(0.2, 1.0), rng.uniform(5, 25)
        disc = (xx ** 2 + yy ** 2 <= radius ** 2) * brightness * 255
        Image.fromarray(np.repeat(disc[..., None], 3, axis=2).astype(np.uint8)).save(
            folder / f"g{i:03d}.png")
        rows.append((f"g{i:03d}", 10 * brightness - 4, radius / 5 - 2))
    table = folder / "targets.csv"
    with open(table, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "glow", "size"])
        writer.writerows(rows)
    return table


@pytest.mark.slow
def test_a_kind_defined_in_a_test_trains_evaluates_reports_and_predicts(
        registered: type[Task], tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    table = _make_set(images)
    truth = {r["id"]: (float(r["glow"]), float(r["size"])) for r in _rows(table)}
    result = skysort.train(str(images), labels=str(table), task=KIND, finetune="head",
                           project=tmp_path / "runs", name="toy", epochs=40, seed=0,
                           cache_dir=str(tmp_path / "cache"), split_groups="none")
    run = result.run_dir

    # trained: the saved model is of the new kind, and its targets were not clipped
    model_json = json.loads((run / "model.json").read_text())
    assert model_json["task"]["kind"] == KIND
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == KIND
    rows = _rows(run / "metrics_predictions.csv")
    assert len(rows) == metrics["n"] > 0
    true = np.array([[float(r["true_glow"]), float(r["true_size"])] for r in rows])
    np.testing.assert_allclose(true, [truth[Path(r["path"]).stem] for r in rows], atol=1e-5)
    assert true.min() < 0 or true.max() > 1

    # evaluated: the RMSE in metrics.json is that of the per-image rows, computed here
    pred = np.array([[float(r["glow"]), float(r["size"])] for r in rows])
    assert metrics["model"]["rmse"] == pytest.approx(np.sqrt(np.mean((pred - true) ** 2)),
                                                     rel=1e-5)
    train_ids = [Path(r["path"]).stem for r in _rows(run / "split.csv") if r["split"] == "train"]
    mean = np.mean([truth[i] for i in train_ids], axis=0)
    assert metrics["baseline"]["rmse"] == pytest.approx(
        np.sqrt(np.mean((mean - true) ** 2)), rel=1e-4)
    # and it learned something the training mean does not know (glow and size are visible)
    assert metrics["model"]["rmse"] < 0.9 * metrics["baseline"]["rmse"]
    again = skysort.evaluate(run)
    assert again["model"]["rmse"] == pytest.approx(metrics["model"]["rmse"], rel=1e-5)
    printed = skysort.format_metrics(again)
    assert "rmse" in printed and f"{again['model']['rmse']:.5f}" in printed

    # reported: the page names the kind and the headline, lower being better
    page = write_report(run).read_text()
    assert KIND in page and "rmse" in page and f"{metrics['model']['rmse']:.3f}" in page

    # predicted: the table layout (id, one column per output), as evaluation computed them
    out = skysort.predict(run, [images], tmp_path / "pred.csv", quiet=True)
    predicted = {r["id"]: (float(r["glow"]), float(r["size"]))
                 for r in _rows(out)}
    assert set(predicted) == set(truth)
    for r in rows:
        np.testing.assert_allclose(predicted[Path(r["path"]).stem],
                                   (float(r["glow"]), float(r["size"])), atol=1e-4)
