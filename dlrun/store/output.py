"""A result file written to a path the user gives: the one owner of `--out`, `--plot` and export.

predict --out, evaluate --out, features --out, compare --plot and every export format write
through `writing`, which promises, whatever is at the path or arrives there meanwhile:

- only a regular file (or, for an export folder, an earlier export) or nothing is ever
  replaced: a FIFO, a device node, a folder or a symlink is refused, before any work;
- an existing file is replaced only with --force, and never when it is one of the command's
  own inputs or lies inside a run or sweep folder, even with --force;
- a suffix that names another format (`--format csv --out x.npz`) is refused;
- the result is built under a temporary name beside the path and moved into place at the end,
  re-checked at that moment: without --force the move is a hard link (a folder: a rename onto
  nothing), so of two commands writing the same path at once exactly one succeeds;
- SIGTERM and SIGHUP stop the command at the next safe point: the end of the block, or a
  `stop_point` between units of work (predict's batches); never in the middle of library code,
  where an exception raised from a signal handler can come out as another error (a TypeError
  from a half-built structure, a SystemError from an import). The temporary file is removed;
- an OS error (a full disk, a file-size limit, a read-only folder, a name too long), raised
  as an OSError or reported in the text of a library's own exception (TensorFlow's), is one
  line naming the path, and nothing is left behind.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from dlrun.errors import DlrunError, RunError, UsageError
from dlrun.store.layout import META, SWEEP_STATE, UMASK

# A suffix names a format; a path whose suffix names another format than the one written is
# a mistake (csv bytes in x.npz), refused before anything is done.
SUFFIXES = {
    ".csv": "csv",
    ".json": "json",
    ".npz": "npz",
    ".png": "png",
    ".py": "script",
    ".keras": "keras",
    ".onnx": "onnx",
    ".tflite": "litert",
}
_TEMP_STEM = 60  # characters of the name kept in the temporary name: it must fit NAME_MAX too
_STOPS: list[list[int]] = []  # the signals noted by each `writing` block now running
# A full disk, a size limit or a read-only folder as libraries that write on their own report
# them (TensorFlow's SaveV2 raises OutOfRangeError "...; File too large"): in the message of
# an exception that is not an OSError. Such an exception is a NotWritten too.
_OS_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EROFS, errno.EDQUOT, errno.ENAMETOOLONG)
_OS_REASONS = tuple(os.strerror(code) for code in _OS_ERRNOS)


class OutputError(UsageError):
    """A result path dlrun refuses to write: nothing was written there."""


class NotWritten(RunError):
    """The file system refused the result (full, read-only, a size limit): nothing was left."""

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP while a result was being written: unwinds as Ctrl-C does."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class StoppedError(DlrunError):
    """The command was stopped by a signal; exit code 128 + the signal's number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


def check_suffix(out: Path, fmt: str, option: str = "--out") -> None:
    """Refuse a path whose suffix names a format other than `fmt`."""
    named = SUFFIXES.get(out.suffix.lower())
    if named is not None and named != fmt:
        raise OutputError(
            f"{option} {out}: its suffix {out.suffix} says {named}, but {fmt} is written; "
            f"give a name that does not contradict the format"
        )


def check(
    out: Path,
    *,
    option: str = "--out",
    force: bool = False,
    inputs: Iterable[Path] = (),
    folder: bool = False,
    earlier: Callable[[Path], bool] | None = None,
) -> None:
    """Refuse `out` now, before any work, if `writing` could not put a result there."""
    name = os.fsencode(out.name)
    if not out.name or out.name in (".", ".."):
        raise OutputError(f"{option} {out}: expected a file name")
    if b"\0" in name:
        raise OutputError(f"{option} {out!r}: a name cannot hold a NUL character")
    parent = _existing_parent(out, option)
    limit = _name_max(parent)
    if len(name) > limit:
        raise OutputError(
            f"{option} {out.name[:40]}...: the name is {len(name)} bytes; this file system "
            f"takes at most {limit}"
        )
    try:
        info = os.lstat(out)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OutputError(f"{option} {out}: cannot be used ({exc.strerror})") from None
    _check_existing(out, info, option, force, inputs, folder, earlier)


def _existing_parent(out: Path, option: str) -> Path:
    """The nearest folder of `out` that exists: it must be a folder (symlinks resolved)."""
    parent = out.parent
    while not os.path.lexists(parent) and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{option} {out}: {parent} is not a folder")
    return parent


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _check_existing(out, info, option, force, inputs, folder, earlier) -> None:
    mode = info.st_mode
    if stat.S_ISLNK(mode):
        raise OutputError(f"{option} {out}: is a symlink; refusing to write through it")
    wanted = stat.S_ISDIR(mode) if folder else stat.S_ISREG(mode)
    if not wanted:
        kind = _kind(mode)
        ours = "an earlier export" if folder else "a file"
        raise OutputError(
            f"{option} {out}: exists and is not {ours} (it is {kind}); refusing to replace "
            f"it, even with --force"
        )
    if not force:
        raise OutputError(f"{option} {out}: already exists; pass --force to replace it")
    owner = _run_or_sweep(out)
    if owner is not None:
        raise OutputError(
            f"{option} {out}: is inside the {owner[1]} {owner[0]}; refusing to replace "
            "anything of it, even with --force"
        )
    for given in inputs:
        with contextlib.suppress(OSError):
            if _same_or_inside(out, info, Path(given)):
                raise OutputError(
                    f"{option} {out}: is one of this command's inputs ({given}); refusing "
                    "to replace it, even with --force"
                )
    if folder and earlier is not None and not earlier(out):
        raise OutputError(
            f"{option} {out}: exists and is not an earlier export; refusing to replace it, "
            "even with --force"
        )


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISREG(mode):
        return "a file"
    return "not a regular file"


def _same_or_inside(out: Path, info: os.stat_result, given: Path) -> bool:
    theirs = os.stat(given)
    if (theirs.st_dev, theirs.st_ino) == (info.st_dev, info.st_ino):
        return True
    if stat.S_ISDIR(theirs.st_mode):
        real = os.path.realpath(given)
        return os.path.realpath(out).startswith(real.rstrip(os.sep) + os.sep)
    return False


def _run_or_sweep(out: Path) -> tuple[Path, str] | None:
    """The run or sweep folder that `out` lies in (symlinks resolved), if any."""
    real = Path(os.path.realpath(out.parent))
    for folder in (real, *real.parents):
        if os.path.lexists(folder / META):
            return folder, "run"
        if os.path.lexists(folder / SWEEP_STATE):
            return folder, "sweep"
    return None


@contextlib.contextmanager
def writing(
    out: Path,
    *,
    option: str = "--out",
    force: bool = False,
    inputs: Iterable[Path] = (),
    folder: bool = False,
    earlier: Callable[[Path], bool] | None = None,
) -> Iterator[Path]:
    """Yield a temporary file (or folder) beside `out`; move it to `out` if the block succeeds.

    Checks `out` first (see `check`), again at the move; SIGTERM and SIGHUP unwind the block
    as Ctrl-C does; an OSError becomes NotWritten. Nothing is left behind on any failure.
    """
    inputs = list(inputs)
    rules = {"option": option, "force": force, "inputs": inputs, "folder": folder}
    check(out, **rules, earlier=earlier)
    temporary: Path | None = None
    try:
        with _signals_stop():
            try:
                out.parent.mkdir(parents=True, exist_ok=True)
                temporary = _temporary(out, folder)
                yield temporary
                stop_point()  # a stop that came while the block ran: before the move
                _move(temporary, out, rules, earlier)
            except OSError as exc:
                raise _not_written(out, option, exc) from None
            except DlrunError:
                raise
            except Exception as exc:
                reason = os_reason(exc)
                if reason is None:
                    raise
                raise NotWritten(f"{option} {out}: not written ({reason})", reason) from None
            finally:
                if temporary is not None:
                    _remove(temporary)
    except Stopped as stop:
        name = signal.Signals(stop.signum).name
        message = f"stopped by {name}; nothing written to {option} {out}"
        raise StoppedError(message, stop.signum) from None


def _temporary(out: Path, folder: bool) -> Path:
    prefix = f".{out.name[:_TEMP_STEM]}."
    if folder:
        made = Path(tempfile.mkdtemp(prefix=prefix, suffix=".export", dir=out.parent))
        os.chmod(made, 0o777 & ~UMASK)
        return made
    # Keep the suffix: Keras and matplotlib read the format from it.
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=f".tmp{out.suffix[:16]}", dir=out.parent)
    os.close(fd)
    os.chmod(name, 0o666 & ~UMASK)  # mkstemp makes 0600; give the file the usual mode
    return Path(name)


def _move(temporary: Path, out: Path, rules: dict, earlier) -> None:
    """Into place, with `out` checked once more at this moment."""
    option = rules["option"]
    if rules["folder"]:
        _move_folder(temporary, out, rules, earlier)
        return
    try:
        os.link(temporary, out)  # fails if anything has taken the name meanwhile
        return
    except FileExistsError:
        if not rules["force"]:
            raise OutputError(
                f"{option} {out}: appeared while this command ran; left as it is, nothing "
                "written (pass --force to replace it)"
            ) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        # A file system without hard links: the check below, then a rename.
    with contextlib.suppress(FileNotFoundError):
        _check_existing(out, os.lstat(out), **rules, earlier=earlier)
    os.replace(temporary, out)


def _move_folder(temporary: Path, out: Path, rules: dict, earlier) -> None:
    option = rules["option"]
    if os.path.lexists(out):
        if not rules["force"]:
            raise OutputError(
                f"{option} {out}: appeared while this command ran; left as it is, nothing "
                "written (pass --force to replace it)"
            )
        _check_existing(out, os.lstat(out), **rules, earlier=earlier)
        prefix = f".{out.name[:_TEMP_STEM]}."
        old = Path(tempfile.mkdtemp(prefix=prefix, suffix=".old", dir=out.parent))
        os.replace(out, old / "previous")
        os.replace(temporary, out)
        shutil.rmtree(old, ignore_errors=True)
        return
    try:
        os.rename(temporary, out)  # onto nothing; a folder that appeared is never replaced
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise OutputError(
                f"{option} {out}: appeared while this command ran; left as it is, nothing written"
            ) from None
        raise


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()


def os_reason(exc: BaseException) -> str | None:
    """The OS error (full, too large, read-only) an exception is, or a library reported in
    the text of its own exception; None for any other error."""
    if isinstance(exc, OSError) and exc.errno in _OS_ERRNOS:
        return exc.strerror
    text = str(exc)
    return next((reason for reason in _OS_REASONS if reason in text), None)


def _not_written(out: Path, option: str, exc: OSError) -> NotWritten:
    reason = exc.strerror or type(exc).__name__
    return NotWritten(f"{option} {out}: not written ({reason})", reason)


@contextlib.contextmanager
def _signals_stop() -> Iterator[None]:
    """SIGTERM and SIGHUP noted while the block runs, for `stop_point` to raise Stopped (a
    KeyboardInterrupt, so that the `finally` blocks that remove temporary files run); an
    ignored signal stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stops: list[int] = []
    _STOPS.append(stops)
    previous = {}
    for signum in (signal.SIGTERM, signal.SIGHUP):
        handler = signal.getsignal(signum)
        if handler in (signal.SIG_DFL, None):
            previous[signum] = handler
            signal.signal(signum, functools.partial(_note_stop, stops))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        _STOPS.remove(stops)


def _note_stop(stops: list[int], signum, frame) -> None:
    stops.append(signum)


def stop_point() -> None:
    """Raise Stopped if SIGTERM or SIGHUP came while a result is being written: called
    between units of work (predict's batches) and at the end of `writing`'s block."""
    for stops in _STOPS:
        if stops:
            raise Stopped(stops[0])
