"""Optuna's study for tpe and cmaes: the space as Optuna's distributions, the sampler and the
pruner, and ask, report and tell. Imported only by the sweeps that need it; Optuna itself is
imported only when a study is opened (or checked for).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

from dlrun.errors import BackendError
from dlrun.sweep.schema import PruneSpec

INSTALL = 'pip install "dlrun[optuna]"'
STUDY_NAME = "dlrun"
SETTING_ATTR = "setting"  # a trial's values by dotted path, as the sweep file names them
PLAIN = (type(None), bool, int, float, str)  # what Optuna's categorical choices may be


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
    ):
        optuna = self.optuna = optuna_module(search)
        storage = _sqlite(optuna, Path(path)) if path is not None else None
        self.prune = prune
        self.study = optuna.create_study(
            storage=storage,
            study_name=STUDY_NAME,
            direction="maximize",
            load_if_exists=True,
            pruner=self._pruner(prune, max_epochs),
        )
        # A resumed study draws on from a new seed: the first seed again would repeat the
        # first session's random start-up draws.
        self.study.sampler = self._sampler(search, seed + len(self.trials()))
        self.distributions, self.encoded = _distributions(optuna, space)

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

    def trials(self) -> list:
        return sorted(self.study.get_trials(deepcopy=False), key=lambda t: t.number)

    def ask(self) -> tuple[Any, dict[str, Any]]:
        """A new trial and its values by dotted path (recorded with the trial)."""
        trial = self.study.ask(self.distributions)
        values = {
            path: json.loads(trial.params[path]) if path in self.encoded else trial.params[path]
            for path in self.distributions
        }
        trial.set_user_attr(SETTING_ATTR, values)
        return trial, values

    def report(self, trial, value: float, step: int, judge: bool = True) -> bool:
        """An intermediate score (higher is better); True if the pruner stops the trial.
        `judge` False: recorded only (an epoch the pruner cannot stop it at)."""
        trial.report(value, step)
        return judge and trial.should_prune()

    def tell(self, trial, value: float | None) -> None:
        """A finished trial's score (higher is better); None or NaN: it failed."""
        state = self.optuna.trial.TrialState
        if value is None or not math.isfinite(value):
            self.study.tell(trial, state=state.FAIL)
        else:
            self.study.tell(trial, value)

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
