"""The lock a training process holds on its run folder, and signals held while a run records."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from dlrun.errors import RunError, RunInUse
from dlrun.store.layout import LOCK


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP held back while a run's records are made to agree (history,
    checkpoints, meta.json), then delivered to the handler they would have reached.

    An interrupt inside Keras' model.save can surface as another exception type (and the run
    as failed) or leave the checkpoint and meta.json an epoch apart. Only handlers that raise
    are held; an ignored signal stays ignored. signal.signal works only in the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        handler = signal.getsignal(signum)
        if callable(handler):
            previous[signum] = handler
            signal.signal(signum, lambda number, frame: held.append(number))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if held:
            previous[held[0]](held[0], None)


def lock_held(path: Path) -> bool:
    """True while some process holds the lock of a run or sweep folder (it is training)."""
    try:
        fd = os.open(path / LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False  # no lock file (or not one we made): nobody trains here
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False  # closing the file drops our shared lock again
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def take_lock(path: Path, what: str = "run") -> int:
    """An exclusive flock on `path/.lock`, held until the returned descriptor is closed.

    Another holder means another process is training there: RunInUse (exit 2). A reader
    checking lock_held takes a shared lock for an instant, so a few quick retries tell that
    apart from a real holder.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path / LOCK, flags, 0o644)
    except OSError as exc:
        raise RunError(f"{path}: cannot make its {LOCK} file ({exc.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise RunError(f"{path}: {LOCK} is not a regular file; refusing to use this folder")
    for attempt in range(10):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            time.sleep(0.02 * (attempt + 1))
    os.close(fd)
    raise RunInUse(
        f"{path}: another dlrun process is using this {what} right now; "
        "wait for it to finish or stop it first"
    )
