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


def run(command: list[str]) -> int:
    """Run TensorBoard in the foreground; Ctrl-C stops it and is a normal exit."""
    process = subprocess.Popen(command)
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.send_signal(signal.SIGINT)
        process.wait()
        return 0
