"""skysort.active.suggest on a fake run: the backbone is the identity and embeddings come
from each file's bytes, so no model is trained and no image decoded."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from skysort.active.suggest import suggest
from skysort.errors import ConfigError, DataError

D = 16


def _vec(data: bytes) -> np.ndarray:
    seed = int(hashlib.sha256(data).hexdigest()[:8], 16)
    return np.random.default_rng(seed).normal(size=D).astype(np.float32)


@pytest.fixture
def fake_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: Any) -> Path:
    import skysort.models.embeddings as emb
    import skysort.models.info as mi
    import skysort.models.model as mm
    from skysort.data.transforms import Preprocess
    from skysort.models.info import ModelInfo
    from skysort.models.model import SkyModel
    from skysort.models.plan import ResolvedPlan
    from skysort.tasks import make_task

    kind, classes = getattr(request, "param", ("multiclass", ["a", "b", "c"]))
    task = make_task(kind, classes)
    info = ModelInfo(task=task, backbone="fake", weights_id="w", num_features=D,
                     preprocess=Preprocess(input_size=32), dropout=0.3)
    torch.manual_seed(0)
    model = SkyModel(torch.nn.Identity(), D, task, dropout=0.3).eval()

    def cached(model: Any, preprocess: Any, key: str, paths: list[Path], **kw: Any
               ) -> tuple[np.ndarray, dict[int, str]]:
        out, bad = np.zeros((len(paths), D), np.float32), {}
        for i, p in enumerate(paths):
            data = Path(p).read_bytes()
            if data.startswith(b"BAD"):
                bad[i] = "cannot decode"
            else:
                out[i] = _vec(data)
        return out, bad

    monkeypatch.setattr(emb, "cached_embeddings", cached)
    monkeypatch.setattr(mm, "load_model", lambda run: (model, info))
    monkeypatch.setattr(mi, "read_model_info", lambda run: info)
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.safetensors").write_bytes(b"x")
    ResolvedPlan(data_root=str(tmp_path / "lab"), input_size=32).save(run)
    for d in ("lab", "pool"):
        (tmp_path / d).mkdir()
    with open(run / "split.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "id", "label", "split"])
        for i in range(30):
            (tmp_path / "lab" / f"l{i}.png").write_bytes(b"lab%d" % i)
            writer.writerow([f"l{i}.png", i, "a", "train"])
    for i in range(200):
        (tmp_path / "pool" / f"p{i}.png").write_bytes(b"pool%d" % i)
    (tmp_path / "pool" / "copy.png").write_bytes(b"lab3")
    (tmp_path / "pool" / "broken.png").write_bytes(b"BAD")
    return run


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("fake_run", [("multiclass", ["a", "b", "c"]),
                                      ("binary", ["no", "yes"]), ("multilabel", ["ring", "bar"]),
                                      ("counts", ["smooth", "featured"])], indirect=True)
@pytest.mark.parametrize("strategy", ["default", "bald", "badge", "random"])
def test_suggest_writes_n_distinct_unlabelled(fake_run: Path, strategy: str) -> None:
    pool = fake_run.parent / "pool"
    out = suggest(fake_run, [pool, fake_run.parent / "lab" / "l1.png"], 10,
                  strategy=strategy, quiet=True)
    rows = _rows(out)
    assert [r["rank"] for r in rows] == [str(i) for i in range(1, 11)]
    assert len({r["path"] for r in rows}) == 10
    assert all(Path(r["path"]).parent == pool and "p" in Path(r["path"]).name for r in rows)
    left_out = _rows(out.with_name("to_label_skipped.csv"))
    skipped = {Path(r["path"]).name: r["reason"] for r in left_out}
    assert skipped["copy.png"].startswith("same content as labelled")
    assert skipped["l1.png"] == "already labelled" and skipped["broken.png"] == "cannot decode"


def test_suggest_bad_input(fake_run: Path) -> None:
    with pytest.raises(DataError, match="needs a label"):
        suggest(fake_run, [fake_run.parent / "lab"], 5, quiet=True)
    with pytest.raises(ConfigError, match="n=0"):
        suggest(fake_run, [fake_run.parent / "pool"], 0, quiet=True)
    with pytest.raises(ConfigError, match="strategy"):
        suggest(fake_run, [fake_run.parent / "pool"], 5, strategy="best", quiet=True)


def test_nearest_labelled_matches_brute_force_across_blocks() -> None:
    from skysort.active.scoring import nearest_labelled

    rng = np.random.default_rng(1)
    unit, known = rng.normal(size=(50, 8)), rng.normal(size=(700, 8))
    sims = unit @ known.T
    best, which = nearest_labelled(unit, known, k=5, block=128)
    assert np.allclose(best, -np.sort(-sims, axis=1)[:, :5])
    assert np.allclose(np.take_along_axis(sims, which, axis=1), best)
    one, at = nearest_labelled(unit, known, block=100)
    assert (at == sims.argmax(axis=1)).all() and np.allclose(one, sims.max(axis=1))
