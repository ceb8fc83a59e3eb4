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
from typing import Any

from dlrun.errors import RunError, SpecError, UsageError
from dlrun.spec import safeyaml
from dlrun.spec.keys import flatten
from dlrun.store import events
from dlrun.store.files import read_text
from dlrun.store.layout import TENSORBOARD
from dlrun.store.reading import Run, find_runs, open_run
from dlrun.textsafe import clean


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


SWEEP_FILE, SWEEP_TRIALS = "sweep.yaml", "trials"  # a sweep folder's (dlrun.sweep names them)
FIT_FOLDER = re.compile(r"fit(\d+)(?:-(fold\d+))?(?:-(seed\d+))?")
SEARCHES = ("grid", "random", "tpe", "cmaes")
MAX_NAME = 200  # bytes of a setting's name; a longer one is named by its fit number


def _leaves(config: dict) -> dict[str, Any]:
    """A config's HParams values: {dotted.path: bool, int, float or str}; a list of plain values
    reads "a, b" (as compare shows it)."""
    values = {}
    for key, value in flatten(config).items():
        if isinstance(value, list):
            value = ", ".join(map(str, value))
        if isinstance(value, (bool, int, float, str)):
            values[key] = value
    return values


def _searched(sweep_dir: Path) -> list[str]:
    """The dotted keys a sweep file searches over (its grid's or its space's), [] if unread."""
    try:
        raw = safeyaml.load(read_text(sweep_dir / SWEEP_FILE), str(sweep_dir / SWEEP_FILE))
    except (OSError, RunError, SpecError, ValueError):
        return []
    if not isinstance(raw, dict):
        return []
    for search in SEARCHES:
        space = raw.get(search)
        if isinstance(space, dict) and search != "grid":
            space = space.get("space")
        if isinstance(space, dict):
            return [str(key) for key in space if key != "training.epochs"]
    return []


def _cell(value: Any) -> str:
    text = "true" if value is True else "false" if value is False else str(value)
    return clean(text, newlines=False).replace("/", "_")


def shown_name(run: Run, runs_dir: Path) -> Path:
    """The name TensorBoard shows a run under: its path under runs_dir, except a sweep's trial,
    named by its setting (SWEEP/units=32,lr=0.01/fold0) rather than fit000-fold0-seed0."""
    name = run.path.relative_to(runs_dir) if run.path != runs_dir else Path(run.path.name)
    match = FIT_FOLDER.fullmatch(run.path.name)
    sweep_dir = run.path.parent.parent
    if not (match and run.path.parent.name == SWEEP_TRIALS and (sweep_dir / SWEEP_FILE).is_file()):
        return name
    keys, values = _searched(sweep_dir), _leaves(run.config)
    short = {key: key.rsplit(".", 1)[-1] for key in keys}
    if len(set(short.values())) < len(short):  # two keys end alike: their full names
        short = {key: key for key in keys}
    setting = ",".join(f"{_cell(short[k])}={_cell(values[k])}" for k in keys if k in values)
    if len(setting.encode()) > MAX_NAME:  # a folder name the file system takes
        setting = ""
    parts = [part for part in match.groups()[1:] if part]
    leaf = Path(setting or f"fit{match[1]}")
    return name.parent.parent / leaf / "-".join(parts) if parts else name.parent.parent / leaf


def varying(configs: list[dict[str, Any]]) -> set[str]:
    """The keys whose values (type included: 1 is not 1.0) differ among the configs, or that
    some lack."""
    keys = {key for config in configs for key in config}
    missing = object()
    return {
        key
        for key in keys
        if len({(type(c.get(key, missing)), repr(c.get(key, missing))) for c in configs}) > 1
    }


def hparams_values(config: dict[str, Any], keys: set[str], floats: set[str]) -> dict[str, Any]:
    """The run's values of `keys`; an integer reads as one (32, not 32.0: TensorBoard keeps
    numbers as doubles, so it is written as text) unless the key holds a float in another run."""
    return {
        key: str(value)
        if isinstance(value, int) and not isinstance(value, bool) and key not in floats
        else value
        for key, value in config.items()
        if key in keys
    }


def link_runs(runs_dir: Path, logdir: Path, linked: dict | None = None) -> int:
    """logdir/<name>/{train,validation} -> the run's tensorboard/ folders for every run under
    runs_dir not linked yet, so that TensorBoard names a run's curves <name>/train and
    <name>/validation (a sweep's trials by their setting: shown_name), and logdir/<name> holds
    the run's HParams, written here: only the config keys that vary among the runs found, with
    the run's final and test metrics. A tensorboard/ that is itself a symlink is skipped: a
    received run must not point TensorBoard out of it. `linked` (name -> run) carries over
    between calls: a run linked while it trained gets its HParams once it has finished.
    Returns how many runs were linked."""
    linked = {} if linked is None else linked
    runs = []
    for path in find_runs(runs_dir):
        source = path / TENSORBOARD
        if os.path.islink(source) or not source.is_dir():
            continue
        with contextlib.suppress(RunError, SpecError, OSError, ValueError):
            runs.append(open_run(path))
    configs = {}
    for run in runs:
        try:
            configs[run.path] = _leaves(run.config)
        except (RunError, SpecError, OSError, ValueError):
            configs[run.path] = {}
    keys = varying(list(configs.values())) if len(configs) > 1 else set()
    floats = {k for c in configs.values() for k, v in c.items() if isinstance(v, float)}
    made = 0
    for run in runs:
        try:
            name = shown_name(run, runs_dir)
        except (RunError, SpecError, OSError, ValueError):
            name = run.path.relative_to(runs_dir) if run.path != runs_dir else Path(run.path.name)
        folder = logdir / name
        key = str(name)
        while key in linked and linked[key]["path"] != run.path:  # two trials of one setting
            folder, key = folder.with_name(folder.name + "+"), key + "+"
        entry = linked.get(key)
        if entry is None and os.path.lexists(folder):  # linked by an earlier call
            written = any(folder.glob("events.out.tfevents.*"))
            entry = linked[key] = {"path": run.path, "hparams": written}
        if entry is None:
            folder.mkdir(parents=True, exist_ok=True)
            for part in sorted((run.path / TENSORBOARD).iterdir()):
                if part.is_dir() and not part.is_symlink():
                    os.symlink(part.resolve(), folder / part.name, target_is_directory=True)
            entry = linked[key] = {"path": run.path, "hparams": False}
            made += 1
        if not entry["hparams"] and isinstance(run.metrics.get("final"), dict):
            values = hparams_values(configs[run.path], keys, floats)
            writer = events.EventWriter(folder)
            writer.write(0, events.hparams(values, key))
            writer.write(0, events.scalars(events.hparams_scores(run.metrics)))
            writer.close()
            entry["hparams"] = True
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
    linked: dict = {}

    def relink() -> None:
        while not stop.wait(RELINK_SECONDS):
            with contextlib.suppress(OSError):
                link_runs(runs_dir, logdir, linked)

    link_runs(runs_dir, logdir, linked)
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
