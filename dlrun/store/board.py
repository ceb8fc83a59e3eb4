"""Starting TensorBoard on a runs folder; TensorBoard runs in a process of its own."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from dlrun.errors import RunError, UsageError


def exposed(host: str) -> bool:
    """True when the address listens beyond this machine."""
    return host not in ("127.0.0.1", "localhost", "::1") and not host.startswith("127.")


def check_port(port: int, host: str) -> None:
    """The port is a port, and free on host: TensorBoard would otherwise say it started and
    then exit, or another server would answer at the address printed."""
    import socket

    if not 1 <= port <= 65535:
        raise UsageError(f"--port: expected a number from 1 to 65535, got {port}")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, port))
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise UsageError(
            f"--port {port}: cannot listen on {host}:{port} ({reason}); another server may own "
            "it: choose another with --port"
        ) from None


def command(runs_dir: Path, port: int, host: str) -> list[str]:
    if not runs_dir.is_dir():
        raise RunError(f"{runs_dir}: no such runs folder")
    check_port(port, host)
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
