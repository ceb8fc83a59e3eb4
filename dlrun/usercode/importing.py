"""A spec's code files, read and imported as modules under their file stems.

The files a user's own spec names are the user's choice and are imported as they are (and,
for a run, copied into its `code/` folder and remembered as trusted). A run's copies are read
only from inside the run, never through a symlink, and imported only when `trust` knows their
hashes or the user passes --trust-code.

How dlrun protects itself from a code file: the file is read as a bounded regular file (a FIFO,
a folder or a device is refused unread); it is compiled before it runs (a syntax error is one
line with file:line); while it runs at import, whatever it prints goes to stderr, so stdout
stays dlrun's own (`--json`, `predict` rows); an exception becomes one line naming the file's
line and the exception; a file that never returns is stopped by Ctrl-C (one `Error:` line, exit
130, nothing written: no run folder exists before the code is imported). Beyond that, a code
file is a program and runs with the user's rights: that is why a received run is not imported
until its user says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import keyword
import os
import stat
import sys
import traceback
import types
from dataclasses import dataclass
from pathlib import Path

from dlrun import store
from dlrun.errors import CodeError, DlrunError, SpecError, first_line
from dlrun.spec.schema import Spec
from dlrun.usercode import trust

CODE_FOLDER = store.CODE
MAX_CODE_BYTES = 4 * 1024 * 1024  # a code file far bigger than any hand-written module
MARK = "__dlrun_code__"  # set on the modules dlrun made, so that one may replace another


@dataclass(frozen=True)
class CodeFile:
    path: Path  # where it was read
    stem: str  # its module name
    text: bytes
    sha256: str


# The code files imported now, in spec order, and what identifies them.
_ACTIVE: list[types.ModuleType] = []
_KEY: tuple = ()


def active() -> list[types.ModuleType]:
    """The modules of the code files imported for the spec in use (spec order)."""
    return list(_ACTIVE)


def code_paths(spec: Spec) -> list[Path]:
    """The spec's code files, relative to the spec file (absolute paths as given)."""
    root = Path(spec._source).parent
    return [Path(entry) if Path(entry).is_absolute() else root / entry for entry in spec.code]


def _read(path: Path, follow: bool) -> bytes:
    """A regular file's bytes, bounded, opened without blocking (a FIFO never hangs us)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise CodeError(f"no such file: {path}") from None
    except OSError as exc:
        if not follow and os.path.islink(path):
            raise CodeError(f"{path}: is a symlink; refusing to read it") from None
        raise CodeError(f"{path}: cannot be read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if stat.S_ISDIR(info.st_mode):
            raise CodeError(f"{path}: is a folder; expected a Python file")
        if not stat.S_ISREG(info.st_mode):
            raise CodeError(f"{path}: is not a regular file (a FIFO or a device); refused unread")
        if info.st_size > MAX_CODE_BYTES:
            raise CodeError(
                f"{path}: is {info.st_size / 2**20:.1f} MiB; a code file is at most "
                f"{MAX_CODE_BYTES // 2**20} MiB"
            )
        return handle.read(MAX_CODE_BYTES + 1)


def _files(spec: Spec, paths: list[Path], follow: bool) -> list[CodeFile]:
    found, problems, stems = [], [], {}
    for index, path in enumerate(paths):
        loc = ("code", index)
        stem = path.stem
        if path.suffix != ".py" or not stem.isidentifier() or keyword.iskeyword(stem):
            message = f"{path.name}: expected a Python file named like a module (layers.py)"
            problems += spec.error(loc, message).problems
            continue
        if stem in stems:
            message = f"{path.name}: a second code file named {stem}; rename one of them"
            problems += spec.error(loc, message).problems
            continue
        stems[stem] = index
        try:
            text = _read(path, follow)
        except CodeError as exc:
            problems += spec.error(loc, str(exc)).problems
            continue
        found.append(CodeFile(path, stem, text, hashlib.sha256(text).hexdigest()))
    if problems:
        raise SpecError(problems)
    return found


def _taken(stem: str) -> bool:
    """A module of that name that is not one of ours: importing over it would break it."""
    existing = sys.modules.get(stem)
    if existing is not None:
        return not getattr(existing, MARK, False)
    try:
        return importlib.util.find_spec(stem) is not None
    except (ImportError, ValueError):
        return True


def _where(exc: BaseException, files: list[CodeFile]) -> str:
    """file:line of the innermost frame in a code file (a syntax error: its own line)."""
    names = {str(f.path) for f in files}
    if isinstance(exc, SyntaxError) and exc.filename in names:
        return f"{exc.filename}:{exc.lineno}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename in names]
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else str(files[0].path)


def _import(spec: Spec, files: list[CodeFile]) -> list[types.ModuleType]:
    for index, file in enumerate(files):
        if _taken(file.stem):
            raise spec.error(
                ("code", index),
                f"{file.path.name}: a module named {file.stem!r} is installed already; "
                "rename the file",
            )
    for file in files:  # a stale module of an earlier spec must not satisfy an import
        old = sys.modules.get(file.stem)
        if old is not None and getattr(old, MARK, False):
            del sys.modules[file.stem]
    modules = []
    for index, file in enumerate(files):
        module = types.ModuleType(file.stem)
        module.__file__ = str(file.path)
        setattr(module, MARK, True)
        sys.modules[file.stem] = module  # code files may import each other by stem
        try:
            code = compile(file.text, str(file.path), "exec")
            with contextlib.redirect_stdout(sys.stderr):  # stdout stays dlrun's
                exec(code, module.__dict__)  # noqa: S102  the user's own code, by choice
        except KeyboardInterrupt:
            _forget(files)
            raise CodeError(
                f"{file.path}: interrupted while it was being imported (does it loop at import?); "
                "nothing was written"
            ) from None
        except DlrunError:
            _forget(files)
            raise
        except BaseException as exc:  # SystemExit too: a code file never ends dlrun
            _forget(files)
            raise spec.error(
                ("code", index),
                f"{_where(exc, files)}: {type(exc).__name__}: {first_line(exc)}",
            ) from None
        modules.append(module)
    return modules


def _forget(files: list[CodeFile]) -> None:
    for file in files:
        module = sys.modules.get(file.stem)
        if module is not None and getattr(module, MARK, False):
            del sys.modules[file.stem]
    _ACTIVE.clear()
    global _KEY
    _KEY = ()


def _activate(spec: Spec, files: list[CodeFile]) -> list[CodeFile]:
    global _KEY
    key = tuple((str(f.path), f.sha256) for f in files)
    if key == _KEY:
        return files
    _forget(files)
    modules = _import(spec, files)
    _ACTIVE[:] = modules
    _KEY = key
    return files


def use_spec(spec: Spec, remember: bool = False) -> list[CodeFile]:
    """Import the code files a user's spec names (the user chose them); `remember`: a run
    trains with them, so they are this user's trusted code from now on."""
    if not spec.code:
        _forget([])
        return []
    files = _files(spec, code_paths(spec), follow=True)
    _activate(spec, files)
    if remember:
        trust.remember([f.sha256 for f in files])
    return files


def use_run(spec: Spec, run_dir: Path) -> list[CodeFile]:
    """Import a run's copies of its code, if this user trained with them or trusts them now;
    UntrustedCode (nothing imported) otherwise. `spec` is the run's config.yaml."""
    if not spec.code:
        _forget([])
        return []
    paths = []
    for index, entry in enumerate(spec.code):
        parts = Path(entry).parts
        if len(parts) != 2 or parts[0] != CODE_FOLDER or Path(entry).is_absolute():
            raise spec.error(
                ("code", index),
                f"a run's code file lives in its {CODE_FOLDER}/ folder; got {entry!r}",
            )
        paths.append(store.within(run_dir, entry))
    files = _files(spec, paths, follow=False)
    unknown = [f for f in files if not trust.known(f.sha256)]
    if unknown and not trust.given():
        from dlrun.errors import UntrustedCode

        names = ", ".join(f"{CODE_FOLDER}/{f.path.name}" for f in unknown)
        raise UntrustedCode(
            f"{run_dir}: its code ({names}) is not code you trained with (edited, or the run "
            "came from someone else); read it, then pass --trust-code to run it"
        )
    return _activate(spec, files)


def digests(files: list[CodeFile]) -> dict[str, str]:
    """{copy's name in the run: sha256}, for meta.json."""
    return {f"{CODE_FOLDER}/{f.path.name}": f.sha256 for f in files}


def copy_into_run(run, files: list[CodeFile]) -> list[str]:
    """The code files copied into the run's code/ folder as trained; their names there."""
    names = []
    for file in files:
        relative = f"{CODE_FOLDER}/{file.path.name}"
        with store.atomic_path(run.file(relative)) as tmp:
            Path(tmp).write_bytes(file.text)
        names.append(relative)
    return names
