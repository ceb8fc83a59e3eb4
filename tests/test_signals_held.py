"""A stop that arrives while an epoch's records are written lands after them, never inside."""

import os
import signal
import time

import pytest

from dlrun import store


def test_ctrl_c_inside_is_delivered_after_the_block():
    # Ctrl-C as a terminal's Python has it (a shell that runs the suite in the background
    # starts it with SIGINT ignored, which signals_held rightly leaves ignored).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    reached = []
    try:
        with pytest.raises(KeyboardInterrupt):
            with store.signals_held():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # Python runs signal handlers between bytecodes
                reached.append("end of block")
        assert reached == ["end of block"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_an_ignored_signal_stays_ignored():
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with store.signals_held():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)
