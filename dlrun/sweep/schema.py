"""The sweep file: its pydantic models, and the names of the files a sweep folder holds."""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dlrun.spec.names import NAME_MAX, NAME_PATTERN

SWEEP_FILE, BASE_FILE = "sweep.yaml", "base.yaml"
RESULTS, BEST_SPEC, TRIALS, REFIT = "cv_results.csv", "best.yaml", "trials", "refit"
DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")
EPOCHS = "training.epochs"
MAX_FITS = 10_000  # grid combinations x folds, or n_iter x folds


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class RandomSpec(_Strict):
    n_iter: int = Field(ge=1, le=MAX_FITS)  # parameter settings drawn
    space: dict[str, Any]  # path: [values] or {uniform|loguniform|randint: [low, high]}
    seed: int = Field(0, ge=0, lt=2**32)  # the draws, not the training


class ResourcesSpec(_Strict):
    """What each fit reserves on a Ray node (the local executor uses `workers` instead)."""

    cpu: float = Field(1, gt=0)
    gpu: float = Field(0, ge=0)


class SweepSpec(_Strict):
    base: str  # a spec file, relative to the sweep file
    name: str = Field("sweep", pattern=NAME_PATTERN, max_length=NAME_MAX)
    grid: dict[str, list] | None = None  # every combination
    random: RandomSpec | None = None
    cv: int = Field(3, ge=0)  # stratified k-fold on the training split; 0 = validation split
    scoring: str = "accuracy"  # a logged metric; its Keras direction says which way is better
    workers: int = Field(1, ge=1)  # trials in parallel processes, at most one per core
    refit: bool = True  # retrain the best on the whole training split, score the test split
    resources: ResourcesSpec = ResourcesSpec()  # per fit, with --executor ray

    @model_validator(mode="after")
    def _one_search(self) -> SweepSpec:
        if (self.grid is None) == (self.random is None):
            raise ValueError("give either grid or random, not both and not neither")
        return self

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
