"""Fine-tuning through the real command line: the run directory it writes, and resuming
after ``kill -9`` or Ctrl-C with the result an uninterrupted run gets. The runs interrupted
are programs of their own; the others run the command line in this process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from skysort.synth.sets import make_class_folders
from skysort.training.checkpoint import read_state
from tests.test_cli_end_to_end import cli, read_csv

pytestmark = pytest.mark.slow

#: Small and quick, but with epochs of several seconds so a kill can land inside one.
#: precision=fp32: with precision=auto each run times fp32 against bf16 (on a CPU with
#: native bf16) and may choose differently from the run it is compared with.
SETTINGS = ["precision=fp32", "finetune=last:1", "finetune_epochs=4", "finetune_batch_size=8",
            "finetune_patience=10", "epochs=20", "input_size=64", "workers=1"]


@pytest.fixture(scope="module")
def galaxies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ft") / "galaxies"
    return make_class_folders(root, {"elliptical": 45, "spiral": 45, "edge_on": 45}, size=48,
                              fmt="png", seed=2, snr_range=(30.0, 200.0))


@pytest.fixture(scope="module")
def uninterrupted(galaxies: Path) -> Path:
    work = galaxies.parent
    cli("train", galaxies, "--name", "whole", *SETTINGS, cwd=work)
    return work / "runs" / "whole"


def test_fine_tuning_writes_checkpoints_logs_and_curves(uninterrupted: Path) -> None:
    run = uninterrupted
    for name in ("weights/last.safetensors", "weights/best.safetensors", "model.safetensors",
                 "training_curves.png", "confusion_matrix.png", "history.csv", "metrics.json"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    history = read_csv(run / "history.csv")
    stages = [r["stage"] for r in history]
    assert stages.count("finetune") == 4 and stages[0] == "head"
    assert all(float(r["val_loss"]) > 0 and r["val_balanced_accuracy"] for r in history)
    info = json.loads((run / "model.json").read_text())
    assert info["backbone"]["frozen"] is False and info["augment"] == "sky"
    assert info["preprocess"]["input_size"] == 64
    state = read_state(run / "weights" / "last.safetensors")
    assert state["stage"] == "finetune" and state["epoch"] == 4
    # The final weights are the best validation epoch's.
    best = load_file(str(run / "weights" / "best.safetensors"))
    final = load_file(str(run / "model.safetensors"))
    for key, value in final.items():
        torch.testing.assert_close(value, best[f"model.{key}"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["model"]["balanced_accuracy"] > 0.6  # three bright, distinct classes


def _default_sigint() -> None:
    # A shell that starts jobs in the background (as CI may) makes them ignore SIGINT, and
    # the child would inherit that; a terminal's Ctrl-C reaches a process with the default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(galaxies: Path, name: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "skysort", "train", str(galaxies), "--name",
                             name, *SETTINGS], cwd=galaxies.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_default_sigint)


def _wait_for_epoch(run: Path, epoch: int, proc: subprocess.Popen, timeout: float = 300
                    ) -> float:
    """Waits for the checkpoint of ``epoch``; returns when it was seen."""
    last = run / "weights" / "last.safetensors"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if last.is_file():
            try:
                if read_state(last).get("epoch", 0) >= epoch:
                    return time.perf_counter()
            except Exception:  # a rename in progress; look again
                pass
        if proc.poll() is not None:
            raise AssertionError(f"training ended early:\n{proc.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared in time")


def _same_result(run: Path, reference: Path) -> None:
    """Equal metrics, and weights equal to within 1e-5 (CPU kernels may sum in another
    order when threads are scheduled differently; here they came out bit-identical)."""
    ours = json.loads((run / "metrics.json").read_text())
    theirs = json.loads((reference / "metrics.json").read_text())
    assert ours["model"] == theirs["model"]
    assert ours["confusion_matrix"] == theirs["confusion_matrix"]
    a, b = load_file(str(run / "model.safetensors")), load_file(str(reference /
                                                                      "model.safetensors"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-5
    rows = [(r["stage"], r["epoch"], round(float(r["val_loss"]), 5))
            for r in read_csv(run / "history.csv")]
    expected = [(r["stage"], r["epoch"], round(float(r["val_loss"]), 5))
                for r in read_csv(reference / "history.csv")]
    assert rows == expected


def test_kill_9_in_the_middle_of_an_epoch_then_resume(galaxies: Path,
                                                     uninterrupted: Path) -> None:
    run = galaxies.parent / "runs" / "killed"
    proc = _start(galaxies, "killed")
    first = _wait_for_epoch(run, 1, proc)
    second = _wait_for_epoch(run, 2, proc)
    time.sleep((second - first) / 2)  # halfway through epoch 3, however fast epochs are
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert read_state(run / "weights" / "last.safetensors")["epoch"] == 2
    assert not (run / "metrics.json").exists()
    resumed = cli("train", "--resume", run, cwd=galaxies.parent)
    assert "resuming fine-tuning after epoch 2" in resumed.stderr
    _same_result(run, uninterrupted)


def test_ctrl_c_saves_and_stops_cleanly_then_resumes(galaxies: Path,
                                                    uninterrupted: Path) -> None:
    run = galaxies.parent / "runs" / "stopped"
    proc = _start(galaxies, "stopped")
    _wait_for_epoch(run, 1, proc)
    # at once: with a warm pixel cache the last epochs can take under a second, and a
    # Ctrl-C after the run has finished is no test of one
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends to the terminal's process group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "continue with skysort train --resume runs/stopped" in err
    assert (run / "model.safetensors").is_file()  # the best weights so far, usable now
    assert read_state(run / "weights" / "last.safetensors")["epoch"] >= 1
    cli("train", "--resume", run, cwd=galaxies.parent)
    _same_result(run, uninterrupted)
