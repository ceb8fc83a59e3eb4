"""Files of a run, written atomically and read back through one guarded reader.

Every file is written to a temporary name in the same folder and moved into place with
os.replace, so a reader (or a kill at any instant) sees the old complete file or the new one.
Every file is read as a regular file of bounded size, opened without blocking, and never
through a symlink out of the run.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import math
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dlrun.errors import DamagedRun, RunError
from dlrun.store.layout import CONFIG, HISTORY, MAX_READ_BYTES, UMASK

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
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes 0600; give the file the usual mode
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


def json_text(data: Any) -> str:
    """A JSON file's text, as dlrun writes every JSON file."""
    return json.dumps(data, indent=2, default=jsonable) + "\n"


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json_text(data))


def write_new_json(folder: Path, stem: str, data: dict) -> Path:
    """folder/stem.json, or stem-2.json, ...: written whole, never over another file.

    The complete file is linked into place: os.link fails if the name is taken, even by a
    second evaluation or attack in the same second, and a reader never sees half a file.
    """
    text = json.dumps(data, indent=2, default=jsonable) + "\n"
    fd, name = tempfile.mkstemp(prefix=f".{stem}.", suffix=".tmp.json", dir=folder)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(text)
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes 0600
        for attempt in range(1, 10_000):
            path = folder / (f"{stem}.json" if attempt == 1 else f"{stem}-{attempt}.json")
            try:
                os.link(tmp, path)
            except FileExistsError:
                continue
            return path
    finally:
        tmp.unlink(missing_ok=True)
    raise RunError(f"{folder}: no free file name for {stem}")


def jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


@contextlib.contextmanager
def saving(result: dict, run_dir: Path) -> Iterator[None]:
    """Writing what a command computed into a run that may not take it (a read-only file
    system, a colleague's folder, a full disk): the failure goes to result["not_saved"], so the
    command prints its results first and then one line saying what was not saved."""
    try:
        yield
    except OSError as exc:
        where = exc.filename or run_dir
        result["not_saved"] = f"{where}: {exc.strerror or type(exc).__name__}"
    except RunError as exc:
        result["not_saved"] = str(exc)


def read_bytes(path: Path, limit: int = MAX_READ_BYTES) -> bytes:
    """A regular file's bytes, at most `limit` of them; RunError for anything else.

    A run folder may come from someone else: a FIFO would hang the reader, a symlink to
    /dev/zero would fill memory, so the file is opened without following a symlink and
    without blocking, and must be a regular file no bigger than `limit`.
    FileNotFoundError passes through: a missing file is the caller's business.
    """
    with _guarded(path) as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise RunError(f"{path}: larger than {limit // 1024 // 1024} MiB; not a file dlrun wrote")
    return data


def sha256(path: Path) -> str:
    """The sha256 of a regular file, read as read_bytes reads (no symlink, no FIFO), in
    chunks: a checkpoint may be far bigger than MAX_READ_BYTES."""
    digest = hashlib.sha256()
    with _guarded(path) as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _guarded(path: Path):
    """`path` opened for reading if it is a regular file reached through no symlink of its own
    (opened without blocking: a FIFO is refused, never waited on)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RunError(f"{path}: is a symlink; refusing to read it") from None
        raise RunError(f"{path}: cannot be read ({exc.strerror})") from None
    file = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
        file.close()
        raise RunError(f"{path}: not a regular file; refusing to read it")
    return file


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


def history_columns(rows: list[dict]) -> list[str]:
    """history.csv's columns: every key of the rows, in first-seen order."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    return columns


def history_text(rows: list[dict], columns: list[str] | None = None, header: bool = True) -> str:
    """history.csv: one row per epoch, columns in first-seen order, floats at full precision
    (`header` False and the columns given: the lines of these rows alone, to append)."""
    columns = history_columns(rows) if columns is None else columns
    out = io.StringIO()
    # The csv module quotes a metric name holding a comma or a quote (a name given in the spec).
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow(columns)
    for row in rows:
        writer.writerow("" if row.get(c) is None else repr(row[c]) for c in columns)
    return out.getvalue()


def append_text(path: Path, text: str, size: int) -> int:
    """Append `text` to the file at `path` (never through a symlink) whose length is `size`,
    in one write; a write that fails or comes out short is cut off again, so the file is
    as it was. Returns the new length. (A kill cannot tear one write() of a line, a full disk
    can: that is why readers of history.csv drop a last line without its newline.)"""
    data = text.encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
    try:
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, f"{path.name}: short write")
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)
    return size + len(data)


def complete_lines(text: str) -> str:
    """`text` without a last line that lacks its newline: a line being appended (a reader
    came in the middle of the write) or one a full disk cut short."""
    return text if text.endswith("\n") or "\n" not in text else text[: text.rindex("\n") + 1]


def read_history(run_dir: Path) -> list[dict]:
    """history.csv back as rows of numbers ([] when there is none yet)."""
    try:
        text = complete_lines(read_text(run_dir / HISTORY))
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
