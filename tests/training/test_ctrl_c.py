"""A Ctrl-C that something swallowed (Python ignores an exception raised in its at-fork
hooks, which a Ctrl-C hits while a DataLoader starts its workers) still stops training."""

from __future__ import annotations

import os
import signal
import time

import pytest

from skysort.training.loop import CtrlC


def test_a_swallowed_ctrl_c_is_raised_again_at_the_next_check() -> None:
    before = signal.getsignal(signal.SIGINT)
    with CtrlC() as ctrl_c:
        ctrl_c.check()  # nothing pressed: nothing raised
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1.0)  # the handler runs here, between bytecodes
        except KeyboardInterrupt:
            pass  # what an at-fork hook does with it
        with pytest.raises(KeyboardInterrupt):
            ctrl_c.check()
    assert signal.getsignal(signal.SIGINT) is before
