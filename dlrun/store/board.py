"""Starting TensorBoard on a runs folder; TensorBoard runs in a process of its own."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from dlrun.errors import RunError


def exposed(host: str) -> bool:
    """True when the address listens beyond this machine."""
    return host not in ("127.0.0.1", "localhost", "::1") and not host.startswith("127.")


def command(runs_dir: Path, port: int, host: str) -> list[str]:
    if not runs_dir.is_dir():
        raise RunError(f"{runs_dir}: no such runs folder")
    return [
        sys.executable,
        "-m",
        "tensorboard.main",
        "--logdir",
        str(runs_dir),
        "--port",
        str(port),
        "--host",
        host,
    ]


class _Terminated(KeyboardInterrupt):
    pass


def _raise_terminated(signum, frame):
    raise _Terminated()


def _die_with_parent() -> None:
    """In the child: SIGTERM when dlrun is gone, even SIGKILLed (Linux; elsewhere a no-op)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run(command: list[str]) -> int:
    """Run TensorBoard in the foreground; Ctrl-C stops it and is a normal exit.

    SIGTERM stops TensorBoard too (exit 143); it never outlives this process on its port.
    """
    process = subprocess.Popen(command, preexec_fn=_die_with_parent)
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return process.wait()
    except KeyboardInterrupt as exc:
        process.send_signal(signal.SIGTERM if isinstance(exc, _Terminated) else signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        return 143 if isinstance(exc, _Terminated) else 0
    finally:
        signal.signal(signal.SIGTERM, previous)
