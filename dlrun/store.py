"""The run folder: file names, atomic writes, reading runs back. No TensorFlow here.

Every file is written to a temporary name in the same folder and moved into place with
os.replace, so a reader (or a kill at any instant) sees the old complete file or the new one.
"""

from __future__ import annotations

import contextlib
import csv
import enum
import errno
import fcntl
import io
import json
import math
import os
import re
import signal
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from dlrun.errors import DamagedRun, RunError, RunInUse, SpecError

# The files of a run, in one place.
CONFIG = "config.yaml"
META = "meta.json"
SUMMARY = "summary.txt"
HISTORY = "history.csv"
METRICS = "metrics.json"
CHECKPOINTS = "checkpoints"
BEST = "checkpoints/best.keras"
LAST = "checkpoints/last.keras"
TENSORBOARD = "tensorboard"
PLOTS = "plots"
HISTORY_PLOT = "plots/history.png"
CONFUSION_PLOT = "plots/confusion_matrix.png"
PREDICTED_PLOT = "plots/predicted_vs_true.png"
EVALUATIONS = "evaluations"
ATTACKS = "attacks"
ADVERSARIAL_PLOT = "plots/adversarial.png"
LOCK = ".lock"  # held (flock) by the process that trains, for as long as it trains
# Folders a run writes into: each must be a real folder of the run, never a symlink out of it.
WRITTEN_FOLDERS = (CHECKPOINTS, TENSORBOARD, PLOTS, EVALUATIONS, ATTACKS)
# Files read back from a run folder are small; anything bigger is not ours.
MAX_READ_BYTES = 16 * 1024 * 1024


class Status(str, enum.Enum):
    """A run's status, as meta.json records it, and the exit code that goes with it."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    DIVERGED = "diverged"
    CRASHED = "crashed"  # never written: meta says running and nobody holds the lock

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def exit_code(self) -> int:
        return _EXIT_CODES[self]


_EXIT_CODES = {
    Status.COMPLETED: 0,
    Status.FAILED: 1,
    Status.DIVERGED: 3,
    Status.INTERRUPTED: 130,
    Status.CRASHED: 1,
    Status.RUNNING: 1,
}
SIGTERM_EXIT = 143  # interrupted by SIGTERM rather than Ctrl-C
RUNNING, COMPLETED, FAILED = Status.RUNNING, Status.COMPLETED, Status.FAILED
INTERRUPTED, DIVERGED, CRASHED = Status.INTERRUPTED, Status.DIVERGED, Status.CRASHED
TIMESTAMP = "%Y%m%d-%H%M%S"
_UMASK = os.umask(0)
os.umask(_UMASK)


def runs_root(path: str | Path | None = None) -> Path:
    """--runs-dir, else $DLRUN_RUNS_DIR, else ./runs."""
    return Path(path or os.environ.get("DLRUN_RUNS_DIR") or "runs")


def check_runs_root(root: Path) -> Path:
    """A runs folder that exists as a writable folder, or can be made: checked, not made."""
    existing = root
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "" if existing == root else f" ({existing} is not a folder)"
        raise SpecError(f"--runs-dir {root}: not a folder{where}; give a folder for the runs")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SpecError(
            f"--runs-dir {root}: {existing} is not writable (read-only file system or "
            "permissions); give a folder you can write to"
        )
    return root


def check_name(name: str) -> str:
    """A run name is one folder name: no separators, no '..', no control characters."""
    from dlrun.spec import NAME_PATTERN  # here, so that reading runs never loads pydantic

    if not re.fullmatch(NAME_PATTERN, name) or ".." in name:
        raise SpecError(
            f"run name {name!r} is not allowed; use letters, digits, '.', '_' and '-' "
            "(no path separators, no '..')"
        )
    return name


# --- atomic writes ----------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keep the suffix: Keras insists that a model file ends in .keras.
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent
    )
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_text(path: str | Path, text: str) -> None:
    # No fsync: os.replace already makes the swap atomic for a killed process, which is the
    # promise here; an fsync every epoch would also force out every dirty checkpoint page.
    # Surviving a power cut is left to the file system.
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def read_bytes(path: Path, limit: int = MAX_READ_BYTES) -> bytes:
    """A regular file's bytes, at most `limit` of them; RunError for anything else.

    A run folder may come from someone else: a FIFO would hang the reader, a symlink to
    /dev/zero would fill memory, so the file is opened without following a symlink and
    without blocking, and must be a regular file no bigger than `limit`.
    FileNotFoundError passes through: a missing file is the caller's business.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RunError(f"{path}: is a symlink; refusing to read it") from None
        raise RunError(f"{path}: cannot be read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise RunError(f"{path}: not a regular file; refusing to read it")
        data = file.read(limit + 1)
    if len(data) > limit:
        raise RunError(f"{path}: larger than {limit // 1024 // 1024} MiB; not a file dlrun wrote")
    return data


def safe_file(path: Path) -> Path:
    """`path` if it is a regular file and no symlink (a model file handed to a library)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise RunError(f"{path}: no such file") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a symlink" if stat.S_ISLNK(info.st_mode) else "not a regular file"
        raise RunError(f"{path}: is {kind}; refusing to read it")
    return path


def config_of(run_dir: Path) -> Path:
    """A run's config.yaml, checked to be a regular file of the run (no symlink out of it)."""
    read_bytes(run_dir / CONFIG)
    return run_dir / CONFIG


def read_text(path: Path, limit: int = MAX_READ_BYTES) -> str:
    """read_bytes as UTF-8; RunError when it is not text."""
    try:
        return read_bytes(path, limit).decode("utf-8")
    except UnicodeDecodeError:
        raise RunError(f"{path}: damaged (not UTF-8 text)") from None


def read_json(path: Path, run: Path | None = None) -> dict:
    """A JSON file of a run; a missing or damaged one is a RunError naming the run."""
    where = run or path.parent
    try:
        data = json.loads(read_text(path), parse_constant=_no_constant)
    except FileNotFoundError:
        raise RunError(f"{where}: {path.name} is missing") from None
    except (json.JSONDecodeError, RecursionError, ValueError):
        raise RunError(f"{where}: {path.name} is damaged (not valid JSON)") from None
    if not isinstance(data, dict):
        raise RunError(f"{where}: {path.name} is damaged (expected a JSON object)")
    return data


def _no_constant(name: str) -> float:
    # NaN and Infinity are how json.dumps writes non-finite floats: keep them.
    return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[name]


def history_text(rows: list[dict]) -> str:
    """history.csv: one row per epoch, columns in first-seen order, floats at full precision."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    lines = [",".join(columns)]
    for row in rows:
        lines.append(",".join("" if row.get(c) is None else repr(row[c]) for c in columns))
    return "\n".join(lines) + "\n"


def read_history(run_dir: Path) -> list[dict]:
    """history.csv back as rows of numbers ([] when there is none yet)."""
    try:
        text = read_text(run_dir / HISTORY)
    except FileNotFoundError:
        return []
    except RunError as exc:
        raise DamagedRun(str(exc)) from None
    rows, line = [], 1
    try:
        for record in csv.DictReader(io.StringIO(text)):
            line += 1
            if None in record:  # more cells than the header has columns
                raise ValueError("more cells than columns")
            row = {key: float(value) for key, value in record.items() if value not in ("", None)}
            epoch = row.get("epoch")
            if epoch is None or epoch != int(epoch) or int(epoch) != len(rows) + 1:
                raise ValueError(f"expected epoch {len(rows) + 1}")
            row["epoch"] = int(epoch)
            rows.append(row)
    except (ValueError, csv.Error) as exc:
        raise DamagedRun(
            f"{run_dir}: {HISTORY} is damaged (line {line}: {exc}); it cannot be read back"
        ) from None
    return rows


def remove_partial_files(run_dir: Path) -> None:
    """Temporary files a killed process left behind (never a complete file)."""
    for path in run_dir.rglob(".*.tmp*"):
        with contextlib.suppress(OSError):
            path.unlink()


# --- creating runs ----------------------------------------------------------------------------


def create_run_dir(root: Path, name: str, now: datetime | None = None) -> Path:
    """A new, empty folder `root/<name>-<YYYYMMDD-HHMMSS>`, with -2, -3... on a clash.

    os.mkdir is atomic, so processes started at the same second get distinct folders.
    """
    check_name(name)
    check_runs_root(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SpecError(f"--runs-dir {root}: cannot be made ({exc.strerror})") from None
    stem = f"{name}-{(now or datetime.now()).strftime(TIMESTAMP)}"
    for attempt in range(1, 10_000):
        path = root / (stem if attempt == 1 else f"{stem}-{attempt}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
        except OSError as exc:
            raise SpecError(f"--runs-dir {root}: cannot make a folder ({exc.strerror})") from None
    raise RunError(f"{root}: could not find a free folder name for {stem}")


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM held back while a run's records are made to agree (history,
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
    for signum in (signal.SIGINT, signal.SIGTERM):
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


# --- reading runs -----------------------------------------------------------------------------


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


def safe_folder(run_dir: Path, relative: str) -> Path:
    """run_dir/relative as a real folder of the run, made if missing; never through a symlink.

    A received run may hold `checkpoints -> /somewhere/else`: writing there would write out of
    the run, so every level is checked with lstat.
    """
    folder = run_dir
    for part in Path(relative).parts:
        folder = folder / part
        try:
            info = os.lstat(folder)
        except FileNotFoundError:
            with contextlib.suppress(FileExistsError):
                os.mkdir(folder)
            info = os.lstat(folder)
        if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
            kind = "a symlink" if stat.S_ISLNK(info.st_mode) else "not a folder"
            raise RunError(f"{folder}: is {kind}; refusing to write out of the run {run_dir.name}")
    return folder


def within(run_dir: Path, relative: str) -> Path:
    """run_dir/relative for reading, refusing any symlink on the way (the file's own too)."""
    path = run_dir
    for part in Path(relative).parts:
        path = path / part
        if os.path.islink(path):
            raise RunError(f"{path}: is a symlink; refusing to read out of the run {run_dir.name}")
    return path


def inside(run_dir: Path, relative: str) -> Path:
    """A path to write inside a run (e.g. PLOTS + '/x.png'), its folders checked and made."""
    relative_path = Path(relative)
    parent = relative_path.parent
    folder = safe_folder(run_dir, str(parent)) if str(parent) != "." else run_dir
    return folder / relative_path.name


# Field types of meta.json and metrics.json as dlrun writes them; anything else is damage.
_NUMBER = (int, float)
_META_TYPES: dict[str, tuple] = {
    "name": (str,),
    "status": (str,),
    "started": (str, type(None)),
    "ended": (str, type(None)),
    "message": (str, type(None)),
    "epochs_done": (int,),
    "epochs_planned": (int,),
}
_METRICS_TYPES: dict[str, tuple] = {
    "params": (int, type(None)),
    "epochs_done": (int,),
    "monitor": (str,),
    "best_epoch": (int, type(None)),
    "best_value": (*_NUMBER, type(None)),
    "final": (dict,),
    "test": (dict,),
    "train_seconds": (*_NUMBER, type(None)),
}


def _check_types(data: dict, types: dict[str, tuple], path: Path) -> None:
    for key, allowed in types.items():
        value = data.get(key)
        if key not in data:
            continue
        wrong = not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed)
        if not wrong and isinstance(value, dict):  # final/test: metric name -> number
            wrong = not all(
                isinstance(k, str) and isinstance(v, _NUMBER) and not isinstance(v, bool)
                for k, v in value.items()
            )
        if wrong:
            names = "/".join("null" if t is type(None) else t.__name__ for t in allowed)
            raise RunError(
                f"{path.parent}: {path.name} is damaged ({key}: expected {names}, "
                f"got {type(value).__name__})"
            )


@dataclass
class Run:
    """A run folder as read from disk; config.yaml is read only when asked for."""

    path: Path
    meta: dict
    metrics: dict = field(default_factory=dict)
    _config: dict | None = None
    owned: bool = False  # this process holds the run's lock (it is resuming it)

    @property
    def name(self) -> str:
        return self.path.name

    def epochs_done(self) -> int:
        """Epochs finished: from meta.json once the run ended, from history.csv while it runs."""
        if self.meta.get("ended"):
            return int(self.meta.get("epochs_done") or 0)
        try:
            return max(len(read_text(self.path / HISTORY).splitlines()) - 1, 0)
        except (FileNotFoundError, RunError):
            return int(self.meta.get("epochs_done") or 0)

    @property
    def status(self) -> Status | str:
        """As recorded, except that a running run whose lock nobody holds has crashed.

        Liveness is the lock, never a pid: in containers pids start again at 1, so a live pid
        may well be someone else's process.
        """
        status = self.meta.get("status", "unknown")
        if status == RUNNING:
            return CRASHED if self.owned or not lock_held(self.path) else RUNNING
        try:
            return Status(status)
        except ValueError:
            return status

    @property
    def config(self) -> dict:
        if self._config is None:
            from dlrun import safeyaml

            try:
                text = read_text(self.path / CONFIG)
                config = safeyaml.load(text, str(self.path / CONFIG))
            except FileNotFoundError:
                raise RunError(f"{self.path}: {CONFIG} is missing") from None
            except (yaml.YAMLError, SpecError, RecursionError):
                raise RunError(f"{self.path}: {CONFIG} is damaged (not valid YAML)") from None
            if config is not None and not isinstance(config, dict):
                raise RunError(f"{self.path}: {CONFIG} is damaged (expected a mapping)")
            self._config = config or {}
        return self._config


def open_run(path: str | Path) -> Run:
    """Read a run's meta and (when present) metrics; RunError if it is no run or damaged."""
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"{path}: no such run folder")
    if not os.path.lexists(path / META):
        raise RunError(f"{path}: not a run folder ({META} is missing)")
    meta = read_json(path / META, path)
    _check_types(meta, _META_TYPES, path / META)
    metrics = read_json(path / METRICS, path) if os.path.lexists(path / METRICS) else {}
    _check_types(metrics, _METRICS_TYPES, path / METRICS)
    return Run(path, meta, metrics)


def find_runs(root: Path) -> Iterator[Path]:
    """Folders holding a meta.json below root (a sweep nests its trials one level deeper).

    Symlinked folders below root are not followed: a link back up would list runs many
    times over, or never finish.
    """
    if os.path.lexists(root / META):
        yield root
        return
    if not root.is_dir():
        return
    try:
        children = sorted(os.scandir(root), key=lambda entry: entry.name)
    except OSError:
        return
    for child in children:
        if child.name.startswith("."):
            continue
        with contextlib.suppress(OSError):
            if child.is_dir(follow_symlinks=False):
                yield from find_runs(Path(child.path))


def run_files(run_dir: Path) -> list[Path]:
    """The files of a run, walking no symlinked folder (a received run may link anywhere)."""
    found = []
    for folder, folders, files in os.walk(run_dir):  # os.walk follows no links by default
        folders[:] = [name for name in folders if not name.startswith(".")]
        found += [Path(folder) / name for name in files if not name.startswith(".")]
    return found


def list_runs(paths: list[Path]) -> tuple[list[Run], list[str]]:
    """Every readable run under the given run folders or runs folders, newest first.

    A damaged run is skipped and reported in the warnings rather than stopping the listing.
    """
    runs, warnings = [], []
    for root in paths:
        if not root.exists():
            warnings.append(f"{root}: no such folder")
            continue
        for path in find_runs(root):
            try:
                runs.append(open_run(path))
            except RunError as exc:
                warnings.append(f"skipped {exc}")
    runs.sort(key=lambda run: str(run.meta.get("started", "")), reverse=True)
    return runs, warnings


# --- a run this process writes -----------------------------------------------------------------


class RunFolder:
    """A run folder this process trains into: its layout, its lock and its meta.json.

    The lock (flock on .lock) is taken before anything else and held until close(): while it
    is held the run is running; a meta.json saying running with the lock free has crashed.
    Every write goes through here, inside the run, never through a symlinked folder.
    """

    def __init__(self, path: Path, lock_fd: int):
        self.path = Path(path)
        self.meta: dict = {}
        self._lock_fd: int | None = lock_fd

    @classmethod
    def create(cls, root: Path, name: str, folder: str | None = None) -> RunFolder:
        """A new run folder, locked: `<name>-<timestamp>`, or exactly `folder` (a sweep's)."""
        if folder is None:
            path = create_run_dir(root, name)
        else:
            root.mkdir(parents=True, exist_ok=True)
            path = root / check_name(folder)
            path.mkdir()
        return cls(path, take_lock(path))

    @classmethod
    def acquire(cls, path: str | Path) -> RunFolder:
        """An existing run, locked for this process (to resume it); RunInUse if it is busy."""
        path = Path(path)
        if not path.is_dir():
            raise RunError(f"{path}: no such run folder")
        if not os.path.lexists(path / META):
            raise RunError(f"{path}: not a run folder ({META} is missing)")
        return cls(path, take_lock(path))

    def read(self) -> Run:
        """The run as it is on disk, seen by the lock's holder (running there means crashed)."""
        run = open_run(self.path)
        run.owned = True
        self.meta = dict(run.meta)
        return run

    def close(self) -> None:
        """Release the lock: from now on the run is whatever meta.json says."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- layout

    def file(self, relative: str) -> Path:
        """Where to write `relative` (e.g. store.LAST), its folders made inside the run."""
        return inside(self.path, relative)

    def write_text(self, relative: str, text: str) -> None:
        write_text(self.file(relative), text)

    def write_json(self, relative: str, data: Any) -> None:
        write_json(self.file(relative), data)

    # --- lifecycle

    def start(self, meta: dict) -> None:
        """The first meta.json of a run (status running)."""
        self.meta = dict(meta)
        self.save_meta()

    def update(self, **changes: Any) -> None:
        self.meta.update(changes)
        self.save_meta()

    def save_meta(self) -> None:
        write_json(self.path / META, self.meta)

    def record_epoch(self, rows: list[dict]) -> None:
        """history.csv with every row so far (before the epoch's checkpoints)."""
        self.write_text(HISTORY, history_text(rows))

    def epoch_done(self, epochs_done: int, steps_done: int, steps_per_epoch: int) -> None:
        """The epoch's checkpoints are saved: meta.json counts it, whatever happens next, with
        the optimizer's step count they hold and the steps the epoch took."""
        self.update(epochs_done=epochs_done, steps_done=steps_done, steps_per_epoch=steps_per_epoch)

    def finish(self, status: Status, message: str | None, **changes: Any) -> None:
        """The final meta.json. On a full disk the atomic write (which needs a second copy)
        can fail; then the file is overwritten in place, which needs no new blocks."""
        self.meta.update(status=Status(status).value, message=message, **changes)
        try:
            self.save_meta()
        except OSError:
            text = json.dumps(self.meta, indent=2, default=_jsonable) + "\n"
            fd = os.open(self.path / META, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd, "w") as file:
                file.write(text)
                file.truncate()
