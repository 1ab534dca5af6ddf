"""A time budget for a whole training run: ``time=10m``.

Like Ultralytics' ``time`` and AutoGluon's ``time_limit``, the budget is for the run
from start to end: reading the data, the embedding pass, the head, fine-tuning, and
what follows it (calibration, the test split, the report). Only fine-tuning's length
can give: before its first epoch the run plans how many epochs fit (from a measured
training step and the images per epoch) and sets its learning-rate schedule to end
there; after each epoch it measures again and moves the schedule's end to where the
budget now puts it (earlier when epochs ran slower than planned; later, up to the
epochs asked for, when they ran faster), and stops before an epoch that would not end
in time, so every epoch it runs ends cleanly and the best one is kept. When not even
one epoch fits, the head alone is trained and the run says why. A resumed run
(``--resume``) has what was left of the budget when it stopped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from skysort.config import parse_duration
from skysort.training.loop import Progress

#: Seconds kept for what follows fine-tuning besides its passes over the validation and
#: test images (writing the model, plots, the report): 7.9 s measured on 1,200 cutouts
#: (``bench_recipe.py --budget cutouts:2m``, 2-core AMD EPYC).
TAIL_FIXED_S = 8.0
#: A training step's measured time (forward and backward, batch of 16, no optimizer),
#: times this, for an epoch's work per image (augmentation, the optimizer, the moving
#: average): 1.09 measured on the same run (96 px).
STEP_OVERHEAD = 1.1
#: After each epoch, the next one is started when it and what follows are expected to end
#: within this share of the budget past its end (a run told 10m may end at 10m30s, not
#: 1m early).
SLACK = 0.05


def clock(seconds: float) -> str:
    """``95`` -> ``1m35s``."""
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


@dataclass
class Budget:
    """The time a run may take, counted from ``started`` (``time.monotonic()``).

    Attributes:
        setting: the budget as given (``10m``).
        seconds: the budget in seconds.
        started: when the run started; a resumed run sets it back by the time its
            earlier start spent (:meth:`spent_before`).
        notes: what the budget cut, in words, for the screen and the plan.
    """

    setting: str
    seconds: float
    started: float = field(default_factory=time.monotonic)
    notes: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, setting: str | None) -> Budget | None:
        """The budget of a ``time`` setting, starting now; None without one."""
        return None if setting is None else cls(setting, parse_duration(setting))

    def spent_before(self, seconds: float) -> None:
        """Counts ``seconds`` an earlier start of this run already used."""
        self.started -= seconds

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def epochs_that_fit(self, epoch_s: float, tail_s: float) -> int:
        """Whole epochs of ``epoch_s`` seconds that end before ``tail_s`` seconds before
        the end of the budget."""
        return max(0, math.floor((self.left() - tail_s) / max(epoch_s, 1e-9)))

    def summary(self) -> str:
        """The line said when the run ends."""
        used = self.elapsed()
        verdict = "within it" if used <= self.seconds else \
            f"over it by {clock(used - self.seconds)}"
        cut = "; " + "; ".join(self.notes) if self.notes else ""
        return f"time={self.setting}: the run took {clock(used)}, {verdict}{cut}"


@dataclass
class EpochPlan:
    """How many fine-tuning epochs the budget allows, and why.

    Attributes:
        epochs: the epoch fine-tuning ends after, counting those an earlier start ran
            (0: the head alone).
        epoch_s: the seconds one epoch is expected to take.
        tail_s: the seconds kept for what follows fine-tuning.
        why: the plan in words, as said (``time=...: reason``).
        reason: the words after the setting (a cut the run reports at its end).
    """

    epochs: int
    epoch_s: float
    tail_s: float
    why: str
    reason: str = ""  # absent from the plans of runs before it was recorded


def plan_epochs(budget: Budget, wanted: int, done: int, step_s: float, n_train: int,
                n_val: int, n_after: int) -> EpochPlan:
    """Fine-tuning epochs for what is left of ``budget``.

    Args:
        wanted: the epochs the settings ask for (``finetune_epochs``).
        done: epochs already run (a resumed run).
        step_s: measured seconds of a forward and backward pass per image.
        n_train: training images per epoch (this process's share).
        n_val: validation images, predicted after every epoch.
        n_after: images predicted after fine-tuning (validation again to calibrate, and test).
    """
    forward_s = step_s / 3  # the backward pass costs about twice the forward pass
    epoch_s = n_train * step_s * STEP_OVERHEAD + n_val * forward_s
    tail_s = n_after * forward_s + TAIL_FIXED_S
    fits = budget.epochs_that_fit(epoch_s, tail_s)
    epochs = min(wanted - done, fits)
    left = budget.left()
    if epochs >= wanted - done:
        reason = (f"{clock(left)} left; {wanted - done} epoch(s) of about "
                  f"{epoch_s:.0f} s fit with {tail_s:.0f} s kept for calibration, test and report")
    elif epochs < 1:
        reason = (f"{clock(left)} left after the embeddings and the head; "
                  f"one fine-tuning epoch takes about {epoch_s:.0f} s and {tail_s:.0f} s are kept "
                  "for calibration, test and report, so the head alone is trained")
    else:
        reason = (f"{clock(left)} left; {epochs} of the {wanted - done} "
                  f"epoch(s) asked for fit (about {epoch_s:.0f} s each, {tail_s:.0f} s kept for "
                  "calibration, test and report); the schedule ends after them")
    return EpochPlan(done + max(epochs, 0), epoch_s, tail_s,
                     f"time={budget.setting}: {reason}", reason)


def epoch_guard(budget: Budget, plan: EpochPlan, schedule: Any, steps: int, wanted: int,
                agree: Callable[[bool], bool] = lambda stop: stop
                ) -> Callable[[Progress], bool]:
    """The check before each fine-tuning epoch (:attr:`Stage.before_epoch`): True, to
    stop, when the schedule's planned epochs are done or the next epoch would not end
    ``plan.tail_s`` before the budget does. When epochs run slower (or faster) than
    planned it ends the cosine schedule (``schedule``, a
    :class:`~skysort.training.loop.WarmupCosine` of ``steps`` per epoch) after the epochs
    that fit, never more than ``wanted``, so the last one runs at a low learning rate.
    ``agree`` makes every process of a distributed run take the first process's answer."""
    last = [plan.epochs]

    def before_epoch(progress: Progress) -> bool:
        times = [r["time_s"] for r in progress.history if r["stage"] == progress.stage]
        if progress.epoch >= last[0]:
            return agree(True)
        if not times:
            return agree(False)
        epoch_s = sum(times[-3:]) / len(times[-3:])
        slack = SLACK * budget.seconds
        end = min(wanted, progress.epoch + budget.epochs_that_fit(epoch_s, plan.tail_s - slack))
        if end <= progress.epoch:
            budget.notes.append(
                f"fine-tuning stopped after epoch {progress.epoch} of the {last[0]} planned: "
                f"{clock(budget.left())} left, an epoch takes {epoch_s:.0f} s")
            return agree(True)
        if end != last[0]:
            budget.notes.append(f"epochs took {epoch_s:.0f} s, not the {plan.epoch_s:.0f} s "
                                f"planned: the schedule ends after epoch {end}, not "
                                f"{last[0]}")
            last[0] = end
            schedule.total_steps = end * steps
        return agree(False)

    return before_epoch
