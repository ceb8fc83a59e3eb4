"""Optuna's study for tpe and cmaes: the space as Optuna's distributions, the sampler and the
pruner, and ask, report and tell. Imported only by the sweeps that need it; Optuna itself is
imported only when a study is opened (or checked for).

The study is a file dlrun did not necessarily write (a received or copied sweep folder), so it
is trusted only once checked: study.db is opened only as a regular file of the sweep folder,
never through a symlink, and only when it is an SQLite file with Optuna's tables; it carries
the sweep's identity (a hash of the resolved sweep file and base spec: search, space,
scoring, folds, repeats, pruner), and a study of another sweep is refused in one line; a
trial's values are checked against its fit's config.yaml before a score is paired with them
(`fit_mismatch`); Optuna's and SQLAlchemy's exceptions become one line (StudyError).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import sqlite3
import stat
import warnings
from pathlib import Path
from typing import Any

import yaml

from dlrun import store
from dlrun.errors import BackendError, DamagedRun, DlrunError, first_line
from dlrun.spec.keys import flatten
from dlrun.sweep.schema import PruneSpec

INSTALL = 'pip install "dlrun[optuna]"'
STUDY_NAME = "dlrun"
SETTING_ATTR = "setting"  # a trial's values by dotted path, as the sweep file names them
PLAIN = (type(None), bool, int, float, str)  # what Optuna's categorical choices may be
IDENTITY_ATTR = "dlrun_sweep"  # the hash of the sweep a study belongs to
SQLITE_MAGIC = b"SQLite format 3\x00"
OPTUNA_TABLES = {"studies", "trials", "version_info"}
SIDE_FILES = ("-wal", "-shm", "-journal")  # SQLite opens these beside study.db


class StudyError(DamagedRun):
    """The sweep's study.db cannot be used (not its own, damaged, not a file): one line."""


class StudyNotWritten(StudyError):
    """The file system refused the study (full, read-only, a size limit): exit 1, as every
    result that could not be written (store.output.NotWritten); the sweep resumes."""

    exit_code = 1


# What SQLite says when the file system refuses a write: SQLITE_FULL, SQLITE_READONLY, and
# SQLITE_IOERR, which is what a file-size limit (EFBIG) gives.
SQLITE_WRITE_FAULTS = ("database or disk is full", "readonly database", "disk I/O error")


def identity(spec_dump: dict, base: dict) -> str:
    """The hash a sweep's study carries: the resolved sweep file (search, space, scoring,
    folds, repeats, pruner) and the base spec, so that a study never pairs another sweep's
    values with this sweep's fits."""
    text = json.dumps({"sweep": spec_dump, "base": base}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def check_file(path: Path) -> None:
    """study.db (and SQLite's files beside it) as regular files of the sweep folder, never a
    symlink; an existing one must be an SQLite file with Optuna's tables. Made if missing."""
    for name in (path.name, *(path.name + side for side in SIDE_FILES)):
        found = path.with_name(name)
        try:
            info = os.lstat(found)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(info.st_mode):
            raise StudyError(
                f"{found}: is a symlink; the sweep's study is opened only as a file of its "
                "own folder, never through a link"
            )
        if not stat.S_ISREG(info.st_mode):
            raise StudyError(f"{found}: is not a regular file; expected the sweep's study")
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        refused = StudyNotWritten if store.output.os_reason(exc) else StudyError
        raise refused(f"{path}: cannot be opened ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise StudyError(f"{path}: is not a regular file; expected the sweep's study")
        head = file.read(len(SQLITE_MAGIC))
    if not head:
        return  # new: Optuna makes its tables
    if head != SQLITE_MAGIC:
        raise StudyError(
            f"{path}: not an SQLite file (damaged, or not the sweep's study); move it away "
            "to start the search again"
        )
    try:
        with contextlib.closing(
            sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True)
        ) as connection:
            rows = connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
            tables = {row[0] for row in rows}
    except sqlite3.Error as exc:
        message = f"{path}: damaged ({exc}); move it away to start the search again"
        raise StudyError(message) from None
    if not OPTUNA_TABLES <= tables:
        raise StudyError(
            f"{path}: an SQLite database of another program (no Optuna study in it); move it "
            "away to start the search again"
        )


def _storage_errors(method):
    """Optuna's and SQLAlchemy's exceptions (a damaged file, a full disk) as one line."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except DlrunError:
            raise
        except Exception as exc:
            if not _from_storage(exc):
                raise
            where = self.path if self.path is not None else "the study"
            fault = _write_fault(exc)
            if fault is not None:
                raise StudyNotWritten(
                    f"{where}: the sweep's study could not be written ({fault}); make room "
                    "(or lift the limit) and resume with dlrun sweep --resume"
                ) from None
            raise StudyError(f"{where}: the sweep's study failed ({first_line(exc)})") from None

    return wrapper


def _write_fault(exc: Exception) -> str | None:
    """The file system's refusal an exception of the storage reports, if it is one: said
    without SQLAlchemy's statement and link."""
    reason = store.output.os_reason(exc)
    if reason is not None:
        return reason
    text = str(exc)
    return next((fault for fault in SQLITE_WRITE_FAULTS if fault in text), None)


def _from_storage(exc: Exception) -> bool:
    module = type(exc).__module__ or ""
    return isinstance(exc, (OSError, sqlite3.Error)) or module.startswith(("sqlalchemy", "optuna"))


def fit_mismatch(run_dir: Path, spec_yaml: str) -> str | None:
    """A fit folder that exists already: None if its config.yaml is the spec the sweep gives
    it, else one line saying which keys differ (a folder left by another study)."""
    try:
        text = store.read_text(store.within(run_dir, store.CONFIG))
    except FileNotFoundError:
        return None
    except DlrunError as exc:
        return str(exc)
    try:
        theirs = flatten(yaml.safe_load(text))
    except yaml.YAMLError:
        return f"{run_dir.name}: its {store.CONFIG} is damaged"
    ours = flatten(yaml.safe_load(spec_yaml))
    keys = sorted(
        k for k in set(ours) | set(theirs) if k != "name" and ours.get(k) != theirs.get(k)
    )
    if not keys:
        return None
    shown = ", ".join(f"{k}: {theirs.get(k)!r} there, {ours.get(k)!r} here" for k in keys[:3])
    return (
        f"{run_dir.name}: its {store.CONFIG} is not the setting this sweep gives it ({shown}); "
        "not scored. Move the folder away to train it again"
    )


def optuna_module(search: str = "tpe"):
    """`import optuna` (and, for cmaes, its `cmaes` package), or one line naming the extra."""
    try:
        import optuna
    except ImportError:
        raise BackendError(f"{search} needs Optuna, which is not installed: {INSTALL}") from None
    if search == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise BackendError(
                f"cmaes needs the cmaes package, which is not installed: {INSTALL}"
            ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def _distributions(optuna, space: dict[str, Any]) -> tuple[dict, set[str]]:
    """The sweep file's space as Optuna's distributions, and the paths whose choices are
    passed to Optuna as JSON text (mappings and lists cannot be categorical values)."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    found, encoded = {}, set()
    for path, rule in space.items():
        kind, bounds = ("choice", rule) if isinstance(rule, list) else next(iter(rule.items()))
        if kind == "choice":
            if all(isinstance(value, PLAIN) for value in bounds):
                found[path] = CategoricalDistribution(tuple(bounds))
            else:
                encoded.add(path)
                found[path] = CategoricalDistribution(
                    tuple(json.dumps(value, sort_keys=True) for value in bounds)
                )
        elif kind == "uniform":
            found[path] = FloatDistribution(float(bounds[0]), float(bounds[1]))
        elif kind == "loguniform":
            found[path] = FloatDistribution(float(bounds[0]), float(bounds[1]), log=True)
        else:  # randint, both ends included
            found[path] = IntDistribution(int(bounds[0]), int(bounds[1]))
    return found, encoded


def _sqlite(optuna, path: Path):
    """Optuna's storage in an SQLite file, in WAL mode without a sync at every commit: a
    fit waits for the pruner's verdict, which takes a few commits. A killed process loses
    nothing committed; a power cut may lose the last commits (nothing here survives one)."""
    from sqlalchemy import event

    storage = optuna.storages.RDBStorage(f"sqlite:///{path.resolve()}")
    storage.engine.dispose()  # connections from now on get the pragmas below

    def pragmas(connection, record) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(storage.engine, "connect", pragmas)
    return storage


class Study:
    """An Optuna study over a sweep file's space: ask for values, report, tell.

    `path` None keeps it in memory (tests); a sweep keeps it in its folder's study.db.
    """

    def __init__(
        self,
        search: str,
        space: dict[str, Any],
        seed: int,
        prune: PruneSpec | None = None,
        max_epochs: int = 1,
        path: Path | None = None,
        sweep_identity: str | None = None,
    ):
        optuna = self.optuna = optuna_module(search)
        self.path = Path(path) if path is not None else None
        if self.path is not None:
            check_file(self.path)
        self.prune = prune
        self._open(search, seed, max_epochs, sweep_identity)
        self.distributions, self.encoded = _distributions(optuna, space)

    @_storage_errors
    def _open(self, search: str, seed: int, max_epochs: int, sweep_identity: str | None):
        optuna = self.optuna
        storage = _sqlite(optuna, self.path) if self.path is not None else None
        studies = optuna.get_all_study_summaries(storage) if storage is not None else []
        others = [summary.study_name for summary in studies if summary.study_name != STUDY_NAME]
        if others:
            raise StudyError(f"{self.path}: holds studies dlrun did not make ({others[0]!r})")
        self.study = optuna.create_study(
            storage=storage,
            study_name=STUDY_NAME,
            direction="maximize",
            load_if_exists=True,
            pruner=self._pruner(self.prune, max_epochs),
        )
        if self.study.direction != optuna.study.StudyDirection.MAXIMIZE:
            raise StudyError(f"{self.path}: a study that minimises; dlrun's studies maximise")
        self._check_identity(sweep_identity)
        # A resumed study draws on from a new seed: the first seed again would repeat the
        # first session's random start-up draws.
        self.study.sampler = self._sampler(search, seed + len(self.trials()))

    def _check_identity(self, sweep_identity: str | None) -> None:
        if sweep_identity is None:
            return
        found = self.study.user_attrs.get(IDENTITY_ATTR)
        if found is None and not self.study.get_trials(deepcopy=False):
            self.study.set_user_attr(IDENTITY_ATTR, sweep_identity)
            return
        if found != sweep_identity:
            theirs = f"identity {str(found)[:12]}" if found else "no sweep identity"
            raise StudyError(
                f"{self.path}: the study of another sweep ({theirs}, this sweep's "
                f"{sweep_identity[:12]}); a study is never shared: start a new sweep, or put "
                "this sweep's own study.db back"
            )

    def _sampler(self, search: str, seed: int):
        samplers = self.optuna.samplers
        if search == "cmaes":
            return samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
        return samplers.TPESampler(seed=seed)

    def _pruner(self, prune: PruneSpec | None, max_epochs: int):
        pruners = self.optuna.pruners
        if prune is None:
            return pruners.NopPruner()
        if prune.method == "hyperband":
            return pruners.HyperbandPruner(
                min_resource=prune.min_epochs,
                max_resource=max_epochs,
                reduction_factor=prune.reduction_factor,
            )
        if prune.method == "asha":
            return pruners.SuccessiveHalvingPruner(
                min_resource=prune.min_epochs, reduction_factor=prune.reduction_factor
            )
        return pruners.MedianPruner(n_warmup_steps=prune.min_epochs)

    @_storage_errors
    def trials(self) -> list:
        return sorted(self.study.get_trials(deepcopy=False), key=lambda t: t.number)

    @_storage_errors
    def ask(self) -> tuple[Any, dict[str, Any]]:
        """A new trial and its values by dotted path (recorded with the trial)."""
        trial = self.study.ask(self.distributions)
        values = {
            path: json.loads(trial.params[path]) if path in self.encoded else trial.params[path]
            for path in self.distributions
        }
        trial.set_user_attr(SETTING_ATTR, values)
        return trial, values

    @_storage_errors
    def report(self, trial, value: float, step: int, judge: bool = True) -> bool:
        """An intermediate score (higher is better); True if the pruner stops the trial.
        `judge` False: recorded only (an epoch the pruner cannot stop it at)."""
        trial.report(value, step)
        return judge and trial.should_prune()

    @_storage_errors
    def tell(self, trial, value: float | None) -> None:
        """A finished trial's score (higher is better); None or NaN: it failed."""
        state = self.optuna.trial.TrialState
        if value is None or not math.isfinite(value):
            self.study.tell(trial, state=state.FAIL)
        else:
            self.study.tell(trial, value)

    @_storage_errors
    def pruned(self, trial) -> None:
        self.study.tell(trial, state=self.optuna.trial.TrialState.PRUNED)

    def importances(self) -> dict[str, float] | None:
        """Optuna's parameter importances (fANOVA), or None where they cannot be computed
        (fewer than two completed settings, one parameter that never varied...)."""
        if len(self.distributions) < 1:
            return None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                found = self.optuna.importance.get_param_importances(self.study)
        except Exception:  # noqa: BLE001 - not computable here; the sweep says so
            return None
        return {name: float(value) for name, value in found.items()} or None
