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
from dlrun.spec.paths import resolve
from dlrun.spec.schema import Spec
from dlrun.usercode import trust

CODE_FOLDER = store.CODE
MAX_CODE_BYTES = 4 * 1024 * 1024  # a code file far bigger than any hand-written module
MARK = "__dlrun_code__"  # set on the modules dlrun made, so that one may replace another


class CodeInterrupted(CodeError):
    """Ctrl-C while a code file was being imported (one that loops at import)."""

    exit_code = 130


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
    """The spec's code files, absolute: relative to the spec file, by the one rule of
    spec-relative paths (spec.paths.resolve)."""
    return [resolve(entry, spec._source) for entry in spec.code]


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
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        if stat.S_ISDIR(info.st_mode):
            raise CodeError(f"{path}: is a folder; expected a Python file")
        raise CodeError(f"{path}: is not a regular file (a FIFO or a device); refused unread")
    with os.fdopen(fd, "rb") as handle:
        if info.st_size > MAX_CODE_BYTES:
            raise CodeError(
                f"{path}: is {info.st_size / 2**20:.1f} MiB; a code file is at most "
                f"{MAX_CODE_BYTES // 2**20} MiB"
            )
        return handle.read(MAX_CODE_BYTES + 1)


def _files(spec: Spec | None, paths: list[Path], follow: bool) -> list[CodeFile]:
    """The files read and hashed; every problem at once (SpecError on the spec's `code`
    entries, or CodeError lines without a spec)."""
    found, problems, stems = [], [], {}

    def problem(index: int, message: str) -> None:
        problems.extend(spec.error(("code", index), message).problems if spec else [message])

    for index, path in enumerate(paths):
        stem = path.stem
        if path.suffix != ".py" or not stem.isidentifier() or keyword.iskeyword(stem):
            problem(index, f"{path.name}: expected a Python file named like a module (layers.py)")
            continue
        if stem in stems:
            problem(index, f"{path.name}: a second code file named {stem}; rename one of them")
            continue
        stems[stem] = index
        try:
            text = _read(path, follow)
        except CodeError as exc:
            problem(index, str(exc))
            continue
        found.append(CodeFile(path, stem, text, hashlib.sha256(text).hexdigest()))
    if problems:
        raise SpecError(problems) if spec else CodeError("; ".join(problems))
    return found


def read_files(paths: list[Path]) -> list[CodeFile]:
    """Code files read and hashed, not imported (a sweep copies them into its folder)."""
    return _files(None, paths, follow=True)


def check_trusted(folder: Path, paths: list[Path]) -> list[CodeFile]:
    """A run's or sweep's copies of code, read from inside it; UntrustedCode unless this user
    trained with every one of them or passed --trust-code."""
    for path in paths:
        store.within(folder, str(path.relative_to(folder)))  # no symlink on the way
    files = _files(None, paths, follow=False)
    unknown = [f for f in files if not trust.known(f.sha256)]
    if unknown and not trust.given():
        from dlrun.errors import UntrustedCode

        names = ", ".join(f"{CODE_FOLDER}/{f.path.name}" for f in unknown)
        raise UntrustedCode(
            f"{folder}: its code ({names}) is not code you trained with (edited, or it came "
            "from someone else); nothing was imported: read it, then pass --trust-code to run it"
        )
    return files


def _taken(stem: str) -> bool:
    """A module of that name that is not one of ours: importing over it would break it."""
    existing = sys.modules.get(stem)
    if existing is not None:
        return not getattr(existing, MARK, False)
    if stem in sys.stdlib_module_names:
        return True
    try:
        found = importlib.util.find_spec(stem)
    except (ImportError, ValueError):
        return True
    if found is None:
        return False
    # An installed package; a loose file of that name on the path is the user's own (a Ray
    # worker has the driver's folder, the spec's, on its path).
    origin = found.origin or ""
    return origin in ("", "built-in", "frozen") or any(
        part in ("site-packages", "dist-packages") for part in Path(origin).parts
    )


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
            raise CodeInterrupted(
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
    return _activate(spec, check_run(spec, run_dir))


def check_run(spec: Spec, run_dir: Path) -> list[CodeFile]:
    """A run's copies of its code, read and checked as use_run does, imported by nobody: a
    command that needs none of them (predict on the ONNX export) still refuses a run whose
    code is not trusted, as every reading command does."""
    paths = []
    for index, entry in enumerate(spec.code):
        parts = Path(entry).parts
        if len(parts) != 2 or parts[0] != CODE_FOLDER or Path(entry).is_absolute():
            raise spec.error(
                ("code", index),
                f"a run's code file lives in its {CODE_FOLDER}/ folder; got {entry!r}",
            )
        paths.append(store.within(run_dir, entry))
    try:
        return check_trusted(run_dir, paths)
    except CodeError as exc:
        raise spec.error(("code",), str(exc)) from None


def digests(files: list[CodeFile]) -> dict[str, str]:
    """{copy's name in the run: sha256}, for meta.json."""
    return {f"{CODE_FOLDER}/{f.path.name}": f.sha256 for f in files}


def copy_into_run(folder: Path, files: list[CodeFile]) -> list[str]:
    """The code files copied into a run's (or sweep's) code/ folder as they were imported;
    their names there, relative to the folder."""
    names = []
    for file in files:
        relative = f"{CODE_FOLDER}/{file.path.name}"
        with store.atomic_path(store.inside(folder, relative)) as tmp:
            Path(tmp).write_bytes(file.text)
        names.append(relative)
    return names


def add_base_code(spec: Spec) -> None:
    """A head on a run's checkpoint (model.base.run) needs the classes of that run's code: its
    copies, if trusted, join the spec's own code files (and so the new run's code/)."""
    base = spec.model.base
    if base is None or base.run is None:
        return
    run_dir = Path(base.run)
    config = run_dir / store.CONFIG
    if not config.is_file():
        return  # model.transfer says what is wrong with the base
    from dlrun.spec.loading import load_spec

    base_spec = load_spec(store.config_of(run_dir))
    if not base_spec.code:
        return
    paths = [store.within(run_dir, entry) for entry in base_spec.code]
    from dlrun.errors import UntrustedCode

    try:
        check_trusted(run_dir, paths)
    except (CodeError, UntrustedCode) as exc:
        raise spec.error(("model", "base", "run"), str(exc)) from None
    own = [str(path.resolve()) for path in code_paths(spec)]
    spec.code = [*own, *(str(path.resolve()) for path in paths)]
