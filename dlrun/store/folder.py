"""A run folder this process creates or resumes and writes into."""

from __future__ import annotations

import contextlib
import json
import os
import stat
from datetime import datetime
from pathlib import Path
from typing import Any

from dlrun.errors import RunError, SpecError
from dlrun.store import files
from dlrun.store.files import history_columns, history_text, inside, jsonable
from dlrun.store.layout import (
    CONFIG,
    HISTORY,
    LOCK,
    META,
    TIMESTAMP,
    Status,
    check_name,
    check_runs_root,
)
from dlrun.store.lock import take_lock
from dlrun.store.reading import Run, open_run


def remove_partial_files(run_dir: Path) -> None:
    """Temporary files a killed process left behind (never a complete file)."""
    for path in run_dir.rglob(".*.tmp*"):
        with contextlib.suppress(OSError):
            path.unlink()


# What a run folder holds before its first meta.json: all a killed start can have left.
UNSTARTED = {LOCK, CONFIG}


def remove_unstarted(run_dir: Path) -> None:
    """Remove a run folder this process is about to make again (a sweep's trial or refit
    killed early, or a refit that did not complete): only what dlrun made, never through a
    symlink, never a folder holding other files and no meta.json."""
    if run_dir.is_symlink() or (os.path.lexists(run_dir) and not run_dir.is_dir()):
        raise RunError(f"{run_dir}: is a symlink or not a folder; refusing to delete or use it")
    if not run_dir.exists():
        return
    if not os.path.lexists(run_dir / META):
        others = [
            entry.name
            for entry in os.scandir(run_dir)
            if entry.name not in UNSTARTED and ".tmp" not in entry.name
        ]
        if others:
            raise RunError(
                f"{run_dir}: has no {META} but holds {', '.join(sorted(others)[:5])}; not a run "
                "dlrun started, so it is not deleted: move it away and resume again"
            )
    import shutil

    shutil.rmtree(run_dir)


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


def _length(path: Path) -> int | None:
    """The length of a regular file at `path` (None: missing, a symlink, not a file)."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


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
        # history.csv as this process last wrote it: (columns, rows, length in bytes)
        self._history: tuple[list[str], int, int] | None = None

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
        files.write_text(self.file(relative), text)

    def write_json(self, relative: str, data: Any) -> None:
        files.write_json(self.file(relative), data)

    # --- lifecycle

    def start(self, meta: dict) -> None:
        """The first meta.json of a run (status running)."""
        self.meta = dict(meta)
        self.save_meta()

    def update(self, **changes: Any) -> None:
        self.meta.update(changes)
        self.save_meta()

    def save_meta(self, text: str | None = None) -> None:
        """meta.json as it stands, or as `text` (meta_text() of an earlier moment)."""
        files.write_text(self.path / META, self.meta_text() if text is None else text)

    def meta_text(self) -> str:
        """meta.json's text now: for a write off this thread (train.callbacks.RunRecorder)."""
        return files.json_text(self.meta)

    def record_epoch(self, rows: list[dict]) -> None:
        """history.csv with every row so far (before the epoch's checkpoints).

        The epoch's row is appended to the file this process wrote (one write of one line,
        cut off again if it fails) while the columns stay the same; otherwise, and whenever
        the file is not as it was left, it is written whole and moved into place. Rewriting
        it every epoch cost time that grew with the epochs.
        """
        columns, path = history_columns(rows), self.file(HISTORY)
        known = self._history
        self._history = None  # until this write is done
        if known and known[:2] == (columns, len(rows) - 1) and _length(path) == known[2]:
            size = files.append_text(path, history_text(rows[-1:], columns, header=False), known[2])
        else:
            text = history_text(rows, columns)
            self.write_text(HISTORY, text)
            size = len(text.encode())
        self._history = (columns, len(rows), size)

    def epoch_done(
        self,
        epochs_done: int,
        steps_done: int,
        steps_per_epoch: int,
        save: bool = True,
        **more: Any,
    ) -> None:
        """The epoch's checkpoints are saved: meta.json counts it, whatever happens next, with
        the optimizer's step count they hold and the steps the epoch took (and `more` that
        belongs to the same epoch: the spec's callbacks' state). save=False: the count goes
        into the next write of meta.json, which the caller makes."""
        self.meta.update(
            epochs_done=epochs_done, steps_done=steps_done, steps_per_epoch=steps_per_epoch, **more
        )
        if save:
            self.save_meta()

    def finish(self, status: Status, message: str | None, **changes: Any) -> str | None:
        """The final meta.json, never written in place: a write that fails (a full disk, a file
        size limit) leaves the previous, valid meta.json. When the full record cannot be written
        a compact one without the traceback is tried; returns why neither could be (else None).
        """
        self.meta.update(status=Status(status).value, message=message, **changes)
        try:
            self.save_meta()
            return None
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
        compact = {key: value for key, value in self.meta.items() if key != "traceback"}
        try:
            files.write_text(self.path / META, json.dumps(compact, default=jsonable) + "\n")
            return None
        except OSError:
            return reason
