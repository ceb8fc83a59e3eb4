"""A run's life, from meta.json's `running` to its recorded outcome, in one `with` block.

Everything between the two, adapting layers, the fit, the test scores, the plots, runs inside
`with RunLife(folder) as life:`. Ctrl-C, SIGTERM and SIGHUP become `interrupted`, any other
exception `failed` (its traceback kept in meta.json, one line for the user), and the block
always ends by writing the final meta.json. So no fault between creating the folder and the
last file leaves a run that says `running`, or prints a traceback.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from datetime import datetime

from dlrun import store
from dlrun.errors import shortened
from dlrun.textsafe import clean

SIGINT_EXIT = 130


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (a closed terminal or ssh session), handled like Ctrl-C: stop, keep
    what is saved, record `interrupted`."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__()
        self.signum = signum


# Signals that stop a run as SIGTERM does; SIGINT is Ctrl-C's own.
STOPPING = (signal.SIGTERM, signal.SIGHUP)
# What stopped a run or a sweep, as its message and `Error:` line say it.
STOPPED_BY = {
    signal.SIGINT: "Ctrl-C (SIGINT)",
    signal.SIGTERM: "SIGTERM",
    signal.SIGHUP: "SIGHUP (its terminal or ssh session closed)",
}


def now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


# The stop that arrived and was not yet recorded. Its exception can be lost: raised while
# Python runs a finalizer (a TensorFlow resource's __del__) it is printed and dropped, and the
# signal is ignored from then on. raise_unrecorded_stop raises it again at the next epoch end.
_unrecorded: list[int] = []


def _raise_terminated(signum, frame):
    # One stop is enough: a second signal while Keras unwinds would escape the handler that
    # records the stop and leave meta.json saying running.
    for stopping in STOPPING:
        signal.signal(stopping, signal.SIG_IGN)
    _unrecorded.append(signum)
    raise Terminated(signum)


def _raise_interrupted(signum, frame):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _unrecorded.append(signum)
    raise KeyboardInterrupt()


def raise_unrecorded_stop() -> None:
    """A stop whose exception library code swallowed, raised again (at an epoch's end), so that
    one Ctrl-C, SIGTERM or SIGHUP always stops the run."""
    if _unrecorded:
        signum = _unrecorded[0]
        raise Terminated(signum) if signum in STOPPING else KeyboardInterrupt()


class RunLife:
    """The outcome of one attempt at a run: status, message and exit code, recorded on exit.

    `phase(...)` blocks inside it catch a stop or a fault, record it and skip the rest of that
    phase; once stopped or failed, later phases do not run. Signal handlers are installed only
    in the main thread (signal.signal works nowhere else): in a thread the run is stopped by
    its caller instead.
    """

    def __init__(self, folder: store.RunFolder):
        self.folder = folder
        self.status = store.COMPLETED
        self.message: str | None = None
        self.exit_code = 0
        self.epochs_done = 0
        self._main = threading.current_thread() is threading.main_thread()
        self._previous: dict[int, object] = {}

    @property
    def ok(self) -> bool:
        """Nothing has stopped or failed the run so far (diverged and pruned still count as
        ok: their results are written as a completed run's are)."""
        return self.status in (store.COMPLETED, store.DIVERGED, store.PRUNED)

    def __enter__(self) -> RunLife:
        _unrecorded.clear()
        if self._main:
            self._previous = {s: signal.getsignal(s) for s in (*STOPPING, signal.SIGINT)}
            for stopping in STOPPING:
                signal.signal(stopping, _raise_terminated)
            if self._previous[signal.SIGINT] is signal.default_int_handler:  # not in a worker
                signal.signal(signal.SIGINT, _raise_interrupted)
        return self

    @contextlib.contextmanager
    def phase(self) -> Iterator[bool]:
        """A part of the attempt that a stop or fault ends; yields False (the body should
        then do nothing) once the run has stopped or failed."""
        if not self.ok:
            yield False
            return
        try:
            yield True
        except KeyboardInterrupt as exc:
            self.stopped(exc)
        except Exception as exc:
            self.failed(exc)

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Writing the results (metrics, plots): done whatever the outcome so far. Once the run
        is stopped, a repeated SIGTERM cannot cut it short; a full disk here is recorded."""
        if self._main:
            stopping = self.status == store.INTERRUPTED
            for signum in STOPPING:
                signal.signal(signum, signal.SIG_IGN if stopping else _raise_terminated)
        try:
            yield
        except KeyboardInterrupt as exc:
            self.stopped(exc)
        except Exception as exc:
            if self.status != store.FAILED:  # else the first fault stays the run's message
                self.failed(exc, "writing the run's results failed: ")

    def stopped(self, exc: KeyboardInterrupt) -> None:
        _unrecorded.clear()
        signum = exc.signum if isinstance(exc, Terminated) else signal.SIGINT
        self.status = store.INTERRUPTED
        self.message = f"stopped by {STOPPED_BY.get(signum, STOPPED_BY[signal.SIGINT])}"
        self.exit_code = 128 + signum  # 143 for SIGTERM, 129 for SIGHUP, 130 for Ctrl-C

    def failed(self, exc: BaseException, prefix: str = "") -> None:
        """A fault in training or in writing: one line for the user, the traceback kept.

        After a stop whose exception was not recorded, the fault is that stop's: raised
        inside C code (a TensorFlow step), the stop's KeyboardInterrupt comes out as another
        exception (SystemError: bad argument to internal function, seen when Ctrl-C reached
        a sweep's fit on Ray). The run is then recorded as stopped, and can be resumed."""
        if _unrecorded:
            signum = _unrecorded[0]
            self.stopped(Terminated(signum) if signum in STOPPING else KeyboardInterrupt())
            self.folder.meta["traceback"] = traceback.format_exc()
            return
        self.status, self.exit_code = store.FAILED, store.FAILED.exit_code
        self.message = f"{prefix}{type(exc).__name__}: {shortened(str(exc), 500)}"
        self.folder.meta["traceback"] = traceback.format_exc()

    def diverged(self, message: str) -> None:
        self.status, self.message = store.DIVERGED, message

    def pruned(self, message: str) -> None:
        """A sweep's pruner stopped the fit after an epoch: recorded as `pruned`, exit 0."""
        self.status, self.message = store.PRUNED, message

    def __exit__(self, exc_type, exc, tb) -> bool:
        if isinstance(exc, KeyboardInterrupt):
            self.stopped(exc)
        elif isinstance(exc, Exception):
            self.failed(exc)
        self.exit_code = self.exit_code or self.status.exit_code
        if self._main:  # nor Ctrl-C, for the last few lines
            for signum in (*STOPPING, signal.SIGINT):
                signal.signal(signum, signal.SIG_IGN)
        try:
            meta = self.folder.meta
            attempts = meta.get("attempts")
            attempts = (
                [a for a in attempts if isinstance(a, dict)] if isinstance(attempts, list) else []
            )
            attempts = attempts or [{}]
            attempts[-1].update(ended=now(), status=str(self.status))
            unrecorded = self.folder.finish(
                self.status,
                self.message,
                ended=now(),
                epochs_done=self.epochs_done,
                attempts=attempts,
            )
            if unrecorded:  # meta.json keeps its last valid content: the run shows as crashed
                print(
                    f"Error: {clean(self.folder.path, newlines=False)}: the outcome "
                    f"({self.status}: {clean(self.message or 'no message', newlines=False)}) "
                    f"could not be recorded in {store.META} ({unrecorded}); it keeps its "
                    "previous content, and the run can be resumed once there is space",
                    file=sys.stderr,
                )
        finally:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)
        # A stop or fault is recorded and becomes the Outcome; anything else (SystemExit) goes on.
        return exc is None or isinstance(exc, (KeyboardInterrupt, Exception))
