"""The run folder: file names, atomic writes, reading runs back. No TensorFlow here.

Every file is written to a temporary name in the same folder and moved into place with
os.replace, so a reader (or a kill at any instant) sees the old complete file or the new one.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from dlrun.errors import RunError, SpecError
from dlrun.spec import NAME_PATTERN

# The files of a run, in one place.
CONFIG = "config.yaml"
META = "meta.json"
SUMMARY = "summary.txt"
HISTORY = "history.csv"
METRICS = "metrics.json"
CHECKPOINTS = "checkpoints"
BEST = "checkpoints/best.keras"
LAST = "checkpoints/last.keras"
LAST_EPOCH = "checkpoints/last.json"  # {"epoch": N}: the epoch last.keras ends, for --resume
TENSORBOARD = "tensorboard"
PLOTS = "plots"
HISTORY_PLOT = "plots/history.png"
CONFUSION_PLOT = "plots/confusion_matrix.png"
PREDICTED_PLOT = "plots/predicted_vs_true.png"
EVALUATIONS = "evaluations"

RUNNING, COMPLETED, FAILED = "running", "completed", "failed"
INTERRUPTED, DIVERGED, CRASHED = "interrupted", "diverged", "crashed"
TIMESTAMP = "%Y%m%d-%H%M%S"
_UMASK = os.umask(0)
os.umask(_UMASK)


def runs_root(path: str | Path | None = None) -> Path:
    """--runs-dir, else $DLRUN_RUNS_DIR, else ./runs."""
    return Path(path or os.environ.get("DLRUN_RUNS_DIR") or "runs")


def check_name(name: str) -> str:
    """A run name is one folder name: no separators, no '..', no control characters."""
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


def read_json(path: Path, run: Path | None = None) -> dict:
    """A JSON file of a run; a missing or damaged one is a RunError naming the run."""
    where = run or path.parent
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"{where}: {path.name} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RunError(f"{where}: {path.name} is damaged (not valid JSON)") from None
    if not isinstance(data, dict):
        raise RunError(f"{where}: {path.name} is damaged (expected a JSON object)")
    return data


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
        text = (run_dir / HISTORY).read_text()
    except FileNotFoundError:
        return []
    rows = []
    for record in csv.DictReader(io.StringIO(text)):
        row = {key: float(value) for key, value in record.items() if value not in ("", None)}
        row["epoch"] = int(row["epoch"])
        rows.append(row)
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
    root.mkdir(parents=True, exist_ok=True)
    stem = f"{name}-{(now or datetime.now()).strftime(TIMESTAMP)}"
    for attempt in range(1, 10_000):
        path = root / (stem if attempt == 1 else f"{stem}-{attempt}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RunError(f"{root}: could not find a free folder name for {stem}")


# --- reading runs -----------------------------------------------------------------------------


def pid_alive(pid: int | None, host: str | None = None) -> bool:
    if not pid or (host and host != socket.gethostname()):
        return bool(pid)  # another machine's run: trust what it says
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed process nobody has reaped yet is a zombie: gone all the same
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


# libyaml when present: reading 200 configs must stay well under a second.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class Run:
    """A run folder as read from disk; config.yaml is read only when asked for."""

    path: Path
    meta: dict
    metrics: dict = field(default_factory=dict)
    _config: dict | None = None

    @property
    def name(self) -> str:
        return self.path.name

    def epochs_done(self) -> int:
        """Epochs finished: from meta.json once the run ended, from history.csv while it runs."""
        if self.meta.get("ended"):
            return int(self.meta.get("epochs_done") or 0)
        try:
            return max(len((self.path / HISTORY).read_text().splitlines()) - 1, 0)
        except FileNotFoundError:
            return 0

    @property
    def status(self) -> str:
        """As recorded, except that a running run whose process is gone has crashed."""
        status = self.meta.get("status", "unknown")
        if status == RUNNING and not pid_alive(self.meta.get("pid"), self.meta.get("host")):
            return CRASHED
        return status

    @property
    def config(self) -> dict:
        if self._config is None:
            try:
                self._config = yaml.load((self.path / CONFIG).read_text(), _YAML_LOADER) or {}
            except FileNotFoundError:
                raise RunError(f"{self.path}: {CONFIG} is missing") from None
            except yaml.YAMLError:
                raise RunError(f"{self.path}: {CONFIG} is damaged (not valid YAML)") from None
        return self._config


def open_run(path: str | Path) -> Run:
    """Read a run's meta and (when present) metrics; RunError if it is no run or damaged."""
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"{path}: no such run folder")
    if not (path / META).exists():
        raise RunError(f"{path}: not a run folder ({META} is missing)")
    meta = read_json(path / META, path)
    metrics = read_json(path / METRICS, path) if (path / METRICS).exists() else {}
    return Run(path, meta, metrics)


def find_runs(root: Path) -> Iterator[Path]:
    """Folders holding a meta.json below root (a sweep nests its trials one level deeper)."""
    if (root / META).exists():
        yield root
        return
    if not root.is_dir():
        return
    for child in sorted(root.iterdir()):
        if child.is_dir() and not child.name.startswith("."):
            yield from find_runs(child)


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
