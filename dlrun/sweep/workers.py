"""Worker processes for a sweep: one task each at a time, a dead one replaced, none left behind.

concurrent.futures' process pool breaks as a whole when one worker dies (OOM, SIGKILL) and
cannot say which task it was running; it also leaves its workers training when the parent is
killed. Here each worker has its own pipe, so the parent knows what every worker is doing:
a worker that dies is reported with its task and replaced, a stop sends the busy ones the
signal that stopped the sweep (they record their fit as interrupted by it) and none starts
another task, and a worker whose parent is gone stops itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing import connection, get_context
from typing import Any

Task = tuple[str, Callable, tuple]  # key, function, arguments
# (key, "ok" | "error" | "died" | "stopped", the function's result, an error message or the
# exit code);
# ("", "tick", None) when `tick` seconds passed with no result.
Result = tuple[str, str, Any]
TICK: Result = ("", "tick", None)

_PR_SET_PDEATHSIG = 1
PARENT_CHECK_SECONDS = 0.5
STOP_RESEND_SECONDS = 3.0  # a stopped worker that still runs gets SIGTERM again this often
STOP_ATTEMPTS = 20


def _follow_parent(parent: int) -> None:
    """SIGTERM to this worker once its parent is gone (Linux tells at once; else a poll)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        # In a fit, SIGTERM is recorded as interrupted. A signal that lands inside library code
        # can be swallowed there, so it is sent again until the worker is gone.
        for _ in range(STOP_ATTEMPTS):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(STOP_RESEND_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _main(conn, parent: int, initializer: Callable | None, initargs: tuple) -> None:
    # Ctrl-C goes to the parent, which decides: between tasks it is ignored here; during one,
    # the parent's SIGINT (stop) is Python's KeyboardInterrupt, which a fit records as Ctrl-C.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _follow_parent(parent)
    if initializer is not None:
        initializer(*initargs)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return  # the parent closed the pipe, or is gone
        if task is None:
            return
        key, function, args = task
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            reply = (key, "ok", function(*args))
        except KeyboardInterrupt:  # before or after the fit's own record of it
            reply = (key, "stopped", "stopped by Ctrl-C (SIGINT)")
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, never raised here
            reply = (key, "error", f"{type(exc).__name__}: {exc}")
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            conn.send(reply)
        except OSError:
            return


@dataclass
class _Slot:
    process: Any
    conn: Any
    key: str | None = None
    task: Task | None = None


class Workers:
    """Up to `count` spawned worker processes (a fresh interpreter each: TensorFlow is not
    fork-safe). Each starts when a task first finds no idle one: a sweep with fewer fits left
    than workers (none, once resumed after it completed) starts only as many, and each start
    costs seconds of CPU (importing TensorFlow or JAX)."""

    def __init__(self, count: int, initializer: Callable | None = None, initargs: tuple = ()):
        self.count = count  # fits at once
        self._context = get_context("spawn")
        self._initializer, self._initargs = initializer, initargs
        self._slots: list[_Slot] = []
        self._queue: deque[Task] = deque()  # taken, not yet sent: its worker died or is new
        self._source: Iterator[Task] = iter(())
        self._respawns = 0

    def _spawn(self) -> _Slot:
        ours, theirs = self._context.Pipe()
        process = self._context.Process(
            target=_main,
            args=(theirs, os.getpid(), self._initializer, self._initargs),
            daemon=True,
        )
        process.start()
        theirs.close()
        return _Slot(process, ours)

    def _replace(self, slot: _Slot) -> _Slot:
        self._respawns += 1
        with contextlib.suppress(OSError):
            slot.conn.close()
        slot.process.join(timeout=5)
        new = self._spawn()
        self._slots[self._slots.index(slot)] = new
        return new

    def _next(self) -> Task | None:
        if self._queue:
            return self._queue.popleft()
        return next(self._source, None)

    def _dispatch(self) -> None:
        for slot in list(self._slots):
            self._fill(slot)
        while len(self._slots) < self.count:
            task = self._next()
            if task is None:
                return
            self._queue.appendleft(task)
            slot = self._spawn()
            self._slots.append(slot)
            self._fill(slot)

    def _fill(self, slot: _Slot) -> None:
        """The next task to `slot` if it is idle."""
        while slot.task is None:
            task = self._next()
            if task is None:
                return
            try:
                slot.conn.send(task)
            except OSError:  # it died while idle: a new one takes the task
                self._queue.appendleft(task)
                if self._respawns > len(self._slots) + 100:
                    raise
                slot = self._replace(slot)
                continue
            slot.key, slot.task = task[0], task

    def run(self, tasks: Iterable[Task], tick: float | None = None) -> Iterator[Result]:
        """Run the tasks, yielding each result as it comes; a dead worker yields "died".

        `tasks` is read lazily, one task each time a worker is free (an adaptive search asks
        for the next setting only then), and a result is handled before the next task is
        taken. With `tick`, TICK is yielded whenever that many seconds pass without a result.
        """
        self._source = iter(tasks)
        while True:
            self._dispatch()
            busy = [slot for slot in self._slots if slot.task is not None]
            if not busy:
                return
            waits = [slot.conn for slot in busy] + [slot.process.sentinel for slot in busy]
            ready = connection.wait(waits, timeout=tick)
            if not ready:
                yield TICK
                continue
            for slot in busy:
                result = self._collect(slot, ready)
                if result is not None:
                    yield result

    def _collect(self, slot: _Slot, ready: list) -> Result | None:
        if slot.conn in ready:
            try:
                key, kind, value = slot.conn.recv()
                slot.key = slot.task = None
                return key, kind, value
            except (EOFError, OSError):
                pass  # died: see below
        elif slot.process.sentinel not in ready:
            return None
        slot.process.join(timeout=5)
        key = slot.key
        exitcode = slot.process.exitcode
        self._replace(slot)
        return key, "died", exitcode

    def stop(self, grace: float = 60.0, signum: int = signal.SIGTERM) -> list[Result]:
        """Start nothing more; pass the stop (SIGTERM, or SIGINT for Ctrl-C) to the busy
        workers, so that their fits record what stopped them, and collect what they report."""
        self._queue.clear()
        self._source = iter(())
        busy = [slot for slot in self._slots if slot.task is not None]
        for slot in busy:
            with contextlib.suppress(OSError):
                os.kill(slot.process.pid, signum)
        results: list[Result] = []
        deadline = time.monotonic() + grace
        resend = time.monotonic() + STOP_RESEND_SECONDS
        while busy and time.monotonic() < deadline:
            if time.monotonic() > resend:  # swallowed inside library code: once more
                for slot in busy:
                    with contextlib.suppress(OSError):
                        os.kill(slot.process.pid, signum)
                resend = time.monotonic() + STOP_RESEND_SECONDS
            waits = [slot.conn for slot in busy] + [slot.process.sentinel for slot in busy]
            ready = connection.wait(waits, timeout=min(STOP_RESEND_SECONDS, grace))
            for slot in list(busy):
                if slot.conn in ready or slot.process.sentinel in ready:
                    key = slot.key
                    try:
                        results.append(slot.conn.recv())
                    except (EOFError, OSError):
                        slot.process.join(timeout=5)
                        results.append((key, "died", slot.process.exitcode))
                    slot.key = slot.task = None
                    busy.remove(slot)
        return results

    def close(self) -> None:
        """Tell idle workers to exit; kill any that does not within a few seconds."""
        for slot in self._slots:
            with contextlib.suppress(OSError):
                if slot.task is None:
                    slot.conn.send(None)
                slot.conn.close()
        deadline = time.monotonic() + 5
        for slot in self._slots:
            slot.process.join(timeout=max(deadline - time.monotonic(), 0.1))
            if slot.process.is_alive():
                slot.process.kill()
                slot.process.join(timeout=5)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
