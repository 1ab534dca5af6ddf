"""Training with DistributedDataParallel: ``torchrun`` with two processes on the CPU (gloo).

Each process takes every other image of an epoch's order, so the two batches of a step
together are the batch of twice the size that one process would take; with a plain mean
loss, averaging the two gradients gives that batch's gradient. Two processes with batch
``b`` must therefore train the model that one process trains with batch ``2b``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from skysort.models.backbones import create_backbone
from skysort.parallel import shard
from tests.conftest import write_color_folders
from tests.test_cli_end_to_end import read_csv, skysort

#: Deterministic apart from the processes' float sums: no dropout, a plain mean loss
#: (class weights make a weighted mean, whose halves do not average to the whole), fp32.
SETTINGS = ["finetune=last:1", "finetune_epochs=2", "epochs=5", "input_size=32",
            "workers=0", "dropout=0", "balance=none", "precision=fp32"]


def test_shards_are_equal_disjoint_and_interleaved() -> None:
    order = list(range(11))
    parts = [shard(order, r, 2) for r in range(2)]
    assert parts == [[0, 2, 4, 6, 8], [1, 3, 5, 7, 9]]  # the odd one out is dropped
    assert shard(order, 0, 1) == order


@pytest.mark.slow
def test_two_processes_train_the_model_one_process_trains_with_twice_the_batch(
        tmp_path: Path) -> None:
    data = write_color_folders(tmp_path / "data", per_class=16, size=32, seed=4)
    skysort("train", data, "--name", "single", *SETTINGS, "finetune_batch_size=8",
            cwd=tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
         "2", "-m", "skysort", "train", str(data), "--name", "ddp", *SETTINGS,
         "finetune_batch_size=4"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "distributed over 2 processes (gloo)" in out
    assert out.count("results in") == 1  # the second process prints nothing
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["ddp", "single"]

    single, ddp = tmp_path / "runs" / "single", tmp_path / "runs" / "ddp"
    history = read_csv(ddp / "history.csv")
    assert [r["epoch"] for r in history if r["stage"] == "finetune"] == ["1", "2"]
    assert (ddp / "weights" / "last.safetensors").is_file()
    a, b = load_file(single / "model.safetensors"), load_file(ddp / "model.safetensors")
    assert a.keys() == b.keys()
    pretrained = create_backbone("tf_efficientnet_lite0", input_size=32).model.state_dict()
    tuned = [k for k, v in pretrained.items()
             if not torch.equal(a[f"backbone.{k}"], v)]
    assert tuned and all(k.startswith(("blocks.6", "conv_head", "bn2")) for k in tuned)
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-4, worst  # float sums in another order; no step differs
    m1 = json.loads((single / "metrics.json").read_text())
    m2 = json.loads((ddp / "metrics.json").read_text())
    assert m1["n"] == m2["n"] > 0
    assert np.isclose(m1["model"]["accuracy"], m2["model"]["accuracy"])
