"""Starting TensorBoard on a runs folder; TensorBoard runs in a process of its own, on a
folder of links to each run's tensorboard/ (named <run>/train, <run>/validation)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from dlrun.errors import RunError, UsageError
from dlrun.store.layout import TENSORBOARD
from dlrun.store.reading import find_runs


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
    """TensorBoard's command line, without --logdir: run() gives it the folder of links."""
    if not runs_dir.is_dir():
        raise RunError(f"{runs_dir}: no such runs folder")
    check_port(port, host)
    return [sys.executable, "-m", "tensorboard.main", "--port", str(port), "--host", host]


# How often the folder of links picks up runs started after TensorBoard (TensorBoard itself
# reloads every 5 s).
RELINK_SECONDS = 5.0


def link_runs(runs_dir: Path, logdir: Path) -> int:
    """logdir/<run> -> the run's tensorboard/ folder for every run under runs_dir not linked
    yet (a sweep's trials as <sweep>/trials/<trial>), so that TensorBoard names a run's curves
    <run>/train and <run>/validation. A tensorboard/ that is itself a symlink is skipped: a
    received run must not point TensorBoard out of it. Returns how many links were made."""
    made = 0
    for run in find_runs(runs_dir):
        source = run / TENSORBOARD
        if os.path.islink(source) or not source.is_dir():
            continue
        name = run.relative_to(runs_dir) if run != runs_dir else Path(run.resolve().name)
        link = logdir / name
        if os.path.lexists(link):
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(source.resolve(), link, target_is_directory=True)
        made += 1
    return made


# TensorFlow's C++ logging (absl): `E0000 00:00:1733 ... cuInit failed`, and the notice before
# absl is set up. dlrun train hides it at import; TensorBoard's process prints it on stderr.
CPP_LOG = re.compile(
    r"^([IWEF]\d{4} \d\d:\d\d:\d\d|WARNING: All log messages before absl::InitializeLog)"
)


def _forward(stream, out) -> None:
    """TensorBoard's stderr to ours, less TensorFlow's C++ log lines."""
    for line in iter(stream.readline, b""):
        text = line.decode("utf-8", "replace")
        if not CPP_LOG.match(text):
            with contextlib.suppress(ValueError, OSError):  # our stderr closed: drop it
                out.write(text)
                out.flush()
    stream.close()


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


def run(command: list[str], runs_dir: Path) -> int:
    """Run TensorBoard in the foreground on a folder of links to the runs' event folders,
    kept up to date while it runs; Ctrl-C stops it and is a normal exit.

    SIGTERM stops TensorBoard too (exit 143); it never outlives this process on its port.
    """
    logdir = Path(tempfile.mkdtemp(prefix="dlrun-tensorboard-"))
    stop = threading.Event()

    def relink() -> None:
        while not stop.wait(RELINK_SECONDS):
            with contextlib.suppress(OSError):
                link_runs(runs_dir, logdir)

    link_runs(runs_dir, logdir)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    process = subprocess.Popen(
        [*command, "--logdir", str(logdir)],
        preexec_fn=_die_with_parent,
        stderr=subprocess.PIPE,
        env=env,
    )
    forward = threading.Thread(target=_forward, args=(process.stderr, sys.stderr), daemon=True)
    forward.start()
    threading.Thread(target=relink, name="relink", daemon=True).start()
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        code = process.wait()
        forward.join(timeout=5)  # its last lines, before the exit status
        return code
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
        stop.set()
        shutil.rmtree(logdir, ignore_errors=True)  # the links only, never what they point to
