"""The sweep file: its pydantic models, and the names of the files a sweep folder holds."""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dlrun.spec.names import NAME_MAX, NAME_PATTERN
from dlrun.spec.schema import MAX_CPUS, MAX_EPOCHS, MAX_FOLDS, MAX_GPUS, MAX_PROCESSES

SWEEP_FILE, BASE_FILE = "sweep.yaml", "base.yaml"
RESULTS, BEST_SPEC, TRIALS, REFIT = "cv_results.csv", "best.yaml", "trials", "refit"
STUDY = "study.db"  # Optuna's storage (SQLite) for tpe and cmaes, in the sweep folder
SEARCH_PLOT, IMPORTANCES = "plots/search.png", "importances.json"
# In a trial folder: the parent's answer after each epoch of a pruned search (sweep.verdicts).
VERDICT = ".verdict.json"
DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")
SEARCHES = ("grid", "random", "tpe", "cmaes")
ADAPTIVE = ("tpe", "cmaes")  # through Optuna: they learn from the fits done so far
PRUNERS = ("hyperband", "asha", "median")
EPOCHS, SEED = "training.epochs", "seed"
STOPPING = "training.early_stopping"
MAX_FITS = 10_000  # grid combinations (or n_iter) x folds x repeats
MAX_REPEATS = 100
# Every whole number in a search space (a grid's values, a choice's, a distribution's ends) is
# at most this in size, and every float finite. The values and ends are also put into the
# base spec and checked against its bounds before any fit (sweep.plan.load_sweep); this one
# bounds the counts the spec passes to Keras as they are (a layer's units, a kernel size),
# and keeps randint's draws within int64.
MAX_SPACE_NUMBER = 2**31 - 1
MAX_REDUCTION = 100  # a pruner keeping the best 1/100 of each rung already keeps almost none


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


class RandomSpec(_Strict):
    """random:, tpe: and cmaes: alike: how many settings, the space, the sampler's seed."""

    n_iter: int = Field(ge=1, le=MAX_FITS)  # parameter settings drawn
    space: dict[str, Any]  # path: [values] or {uniform|loguniform|randint|choice: [...]}
    seed: int = Field(0, ge=0, lt=2**32)  # the draws, not the training


class PruneSpec(_Strict):
    """Stopping the losers of a tpe or cmaes search after a few epochs (Optuna's pruners)."""

    method: str
    # the earliest epoch a fit can be stopped at (a fit trains at most MAX_EPOCHS)
    min_epochs: int = Field(1, ge=1, le=MAX_EPOCHS)
    # hyperband and asha: keep the best 1/factor; a rung per power of it, so it is bounded
    reduction_factor: int = Field(3, ge=2, le=MAX_REDUCTION)

    @field_validator("method")
    @classmethod
    def _method(cls, method: str) -> str:
        if method in SEARCHES:
            raise ValueError(
                f"{method!r} is a search, not a pruner; a pruner stops the losing fits of a "
                f"tpe or cmaes search early: expected one of {', '.join(PRUNERS)}"
            )
        if method not in PRUNERS:
            from dlrun.spec.problems import did_you_mean

            raise ValueError(
                f"expected one of {', '.join(PRUNERS)}, got {method!r}"
                + did_you_mean(method, PRUNERS)
            )
        return method


class ResourcesSpec(_Strict):
    """What each fit reserves on a Ray node (the local executor uses `workers` instead)."""

    cpu: float = Field(1, gt=0, le=MAX_CPUS)
    gpu: float = Field(0, ge=0, le=MAX_GPUS)


class SweepSpec(_Strict):
    base: str  # a spec file, relative to the sweep file
    name: str = Field("sweep", pattern=NAME_PATTERN, max_length=NAME_MAX)
    grid: dict[str, list] | None = None  # every combination
    random: RandomSpec | None = None  # independent draws, planned before anything trains
    tpe: RandomSpec | None = None  # Optuna's TPE: each draw learns from the fits done
    cmaes: RandomSpec | None = None  # Optuna's CMA-ES: numeric spaces only
    prune: PruneSpec | None = None  # tpe and cmaes: stop hopeless fits after a few epochs
    repeats: int = Field(1, ge=1, le=MAX_REPEATS)  # each fit with seeds seed, seed+1, ...
    # stratified k-fold on the training split; 0 = validation split
    cv: int = Field(3, ge=0, le=MAX_FOLDS)
    scoring: str = "accuracy"  # a logged metric; its Keras direction says which way is better
    # trials in parallel processes, at most one per core of this machine (_cores)
    workers: int = Field(1, ge=1, le=MAX_PROCESSES)
    refit: bool = True  # retrain the best on the whole training split, score the test split
    # GridSearchCV's return_train_score: each fit's model scored on its own training split
    # after every epoch (an inference pass over it, so off unless asked for, as there).
    return_train_score: bool = False
    resources: ResourcesSpec = ResourcesSpec()  # per fit, with --executor ray

    @model_validator(mode="after")
    def _one_search(self) -> SweepSpec:
        given = [name for name in SEARCHES if getattr(self, name) is not None]
        if len(given) != 1:
            found = f"got {' and '.join(given)}" if given else "got none"
            raise ValueError(f"give one search: grid, random, tpe or cmaes ({found})")
        return self

    @property
    def search(self) -> str:
        """grid, random, tpe or cmaes: the one the file gives."""
        return next(name for name in SEARCHES if getattr(self, name) is not None)

    @property
    def space(self) -> dict[str, Any]:
        """The grid, or the space of random, tpe or cmaes."""
        return self.grid if self.grid is not None else getattr(self, self.search).space

    @property
    def adaptive(self) -> bool:
        return self.search in ADAPTIVE

    @field_validator("workers")
    @classmethod
    def _cores(cls, workers: int) -> int:
        cores = os.cpu_count() or 1
        if workers > cores:
            raise ValueError(f"at most {cores} (the cores of this machine), got {workers}")
        return workers

    @field_validator("cv")
    @classmethod
    def _folds(cls, cv: int) -> int:
        if cv == 1:
            raise ValueError("1 fold is not cross-validation; use 0 (validation split) or >= 2")
        return cv
