"""tpe and cmaes: Optuna's samplers and pruners, asked and told in the sweep's parent process.

The study is the sweep folder's study.db (SQLite). Only the process that holds the sweep's
lock opens it, so two processes never share one, and `--resume` opens the same study and goes
on with its trial numbers (setting N is Optuna's trial N, its fits fitN-...). The workers never
touch it: a setting goes to them as a spec, a fit's scores come back through its history.csv,
and with `prune` the parent's answer after each epoch goes back through sweep.verdicts.

The study maximises: a score goes to Optuna as it is when higher is better, negated when not
(the scoring metric's direction is recorded by the first fit that runs an epoch).
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlrun import store
from dlrun.errors import DlrunError
from dlrun.model.metrics import higher_is_better
from dlrun.sweep import verdicts
from dlrun.sweep.plan import EPOCHS, Fit, Setting, Sweep
from dlrun.sweep.results import score_setting
from dlrun.sweep.schema import STUDY, TRIALS
from dlrun.sweep.study import SETTING_ATTR, Study, identity

HIGHER_ATTR = "higher_is_better"
# Sweep-file keys that do not change what a study's values mean: left out of its identity.
RUNTIME_KEYS = {"base", "workers", "resources", "refit", "return_train_score"}
TICK_SECONDS = 0.02  # how often the parent looks at the running fits of a pruned search


@dataclass
class _Trial:
    """A setting of a tpe or cmaes search, as the parent follows it."""

    trial: Any  # optuna's Trial (None once finished in an earlier session)
    setting: Setting
    finished: bool = False  # told, or finished in an earlier session
    reported: int = 0  # the last epoch reported to the pruner
    pruned: str | None = None  # the stop message, once the pruner gave up on it
    answered: dict[str, int] = field(default_factory=dict)  # fit folder -> last verdict epoch


class SearchPlan:
    """The fits of a tpe or cmaes sweep, asked for one setting at a time as workers free up.

    execute.run_sweep takes fits from `fits()` lazily, tells each outcome to `done()`, and, for a
    pruned search, calls `watch()` every TICK_SECONDS with the fits running: their new epochs
    are reported (a setting's score at an epoch is the mean over all of its fits, folds and
    repeats, at that epoch: it is judged once every fit of the setting has reached it), and
    each fit gets its verdict.
    """

    def __init__(self, sweep: Sweep, sweep_dir: Path, outcomes: dict):
        self.sweep, self.outcomes = sweep, outcomes
        self.trials_dir = sweep_dir / TRIALS
        spec = sweep.spec
        options = getattr(spec, spec.search)
        self.n_iter = options.n_iter
        base_training = sweep.base["training"]
        max_epochs = base_training["epochs"] + (
            (base_training.get("finetune") or {}).get("epochs") or 0
        )
        self.study = Study(
            spec.search,
            options.space,
            options.seed,
            spec.prune,
            max_epochs,
            sweep_dir / STUDY,
            identity(spec.model_dump(mode="json", exclude=RUNTIME_KEYS), sweep.base),
        )
        self.max_epochs = max_epochs
        self.slots: int | None = None  # fits run at once (local workers); None: not known
        self.pruning = spec.prune is not None
        self.tick = TICK_SECONDS if self.pruning else None
        self.skipped: dict[str, tuple] = {}  # fits of a pruned setting that never started
        self._histories: dict[str, tuple[tuple, list[dict]]] = {}
        self._trials: dict[int, _Trial] = {}
        self._higher: bool | None = self.study.study.user_attrs.get(HIGHER_ATTR)
        self._directions: dict[str, str] = {}  # as the first fit that recorded them says
        self._load()

    def _load(self) -> None:
        """The settings of an earlier session (--resume), in their numbers' order."""
        state = self.study.optuna.trial.TrialState
        for frozen in self.study.trials():
            values = frozen.user_attrs.get(SETTING_ATTR)
            running = frozen.state in (state.RUNNING, state.WAITING)
            if not isinstance(values, dict):  # asked, then killed before it was recorded
                if running:
                    self.study.study.tell(frozen.number, state=state.FAIL)
                continue
            trial = self.study.optuna.trial.Trial(self.study.study, frozen._trial_id)
            entry = _Trial(
                trial if running else None,
                self._setting(frozen.number, values),
                finished=not running,
                reported=frozen.last_step or 0,
            )
            if frozen.state == state.PRUNED:
                entry.pruned = f"pruned by {self.sweep.spec.prune.method}" + (
                    f" after epoch {frozen.last_step}" if frozen.last_step else ""
                )
            self._trials[frozen.number] = entry

    def _setting(self, number: int, values: dict[str, Any]) -> Setting:
        epochs = self.sweep.epochs_of(values)
        params = {k: v for k, v in values.items() if k != EPOCHS}
        return Setting(number, values, epochs, self.sweep.fits_for(number, params, epochs))

    # --- what the driver asks

    @property
    def total(self) -> int:
        return self.sweep.planned_fits

    def rows(self) -> list[Setting]:
        return [entry.setting for _, entry in sorted(self._trials.items())]

    def fits(self) -> Iterator[Fit]:
        """Earlier settings' fits first (finished ones are only read back), then a new setting
        from Optuna each time a worker is free for one, until n_iter settings."""
        for number in sorted(self._trials):
            yield from self._fits_of(self._trials[number])
        while len(self._trials) < self.n_iter:
            trial, values = self.study.ask()
            entry = _Trial(trial, self._setting(trial.number, values))
            self._trials[trial.number] = entry
            yield from self._fits_of(entry)

    def _fits_of(self, entry: _Trial) -> Iterator[Fit]:
        for fit in entry.setting.fits:
            if entry.pruned:
                run_dir = self.trials_dir / fit.folder
                if not run_dir.is_dir():
                    message = "not trained: its setting was pruned"
                    self.skipped[fit.folder] = (str(store.PRUNED), [], message)
                    self.done(fit)
                    continue
                verdicts.write(run_dir, entry.reported, entry.pruned)
            yield fit

    def done(self, fit: Fit) -> None:
        """A fit's outcome is in (or it was skipped): once all of its setting's are, the
        setting's score is told to Optuna."""
        entry = self._trials[fit.number]
        if entry.finished or not all(
            f.folder in self.outcomes or f.folder in self.skipped for f in entry.setting.fits
        ):
            return
        entry.finished = True
        if entry.pruned:  # told when it was pruned
            return
        outcomes = {**self.outcomes, **self.skipped}
        self._learn_direction(entry.setting.fits)
        row = score_setting(self.sweep, entry.setting, outcomes, self._directions)
        score = row["mean_test_score"]
        self.study.tell(entry.trial, self._signed(score) if math.isfinite(score) else None)

    def watch(self, running: dict[str, Fit]) -> None:
        """Report the running fits' new epochs to the pruner and answer each fit."""
        if not self.pruning:
            return
        by_setting: dict[int, list[Fit]] = defaultdict(list)
        for fit in running.values():
            by_setting[fit.number].append(fit)
        for number, fits in by_setting.items():
            entry = self._trials[number]
            while not entry.pruned and self._reached(entry) > entry.reported:
                self._judge(entry, entry.reported + 1)
            for fit in fits:
                self._answer(entry, fit)

    def _reached(self, entry: _Trial) -> float:
        """The last epoch every fit of the setting has reached: a setting is judged on the
        mean over all of its fits (folds, repeats) at each epoch, the quantity it is scored
        on. A fit not handed out yet, or not through its first epoch, is at epoch 0; one
        that ended (early, or failed) holds no later epoch back."""
        reached = math.inf
        for fit in entry.setting.fits:
            if fit.folder in self.outcomes or fit.folder in self.skipped:
                continue
            reached = min(reached, len(self._history(fit.folder) or []))
        return reached

    def _all_started(self, entry: _Trial) -> bool:
        return all(
            fit.folder in self.outcomes or (self.trials_dir / fit.folder).is_dir()
            for fit in entry.setting.fits
        )

    # --- pruning

    def _judge(self, entry: _Trial, step: int) -> None:
        """The setting's score at `step`, over its fits that reached it, to the pruner."""
        scoring = f"val_{self.sweep.spec.scoring}"
        scores = []
        for fit in entry.setting.fits:
            rows = self._rows_of(fit.folder)
            row = next((r for r in rows if r.get("epoch") == step), None)
            if row is not None:
                value = row.get(scoring)
                scores.append(value if isinstance(value, (int, float)) else math.nan)
        value = sum(scores) / len(scores) if scores else math.nan
        self._learn_direction(entry.setting.fits)
        entry.reported = step
        # The last epoch is never judged: a setting that trained in full is complete.
        judged = self._prunable(step) and step < entry.setting.fits[0].epochs
        if self.study.report(entry.trial, self._signed(value), step, judged):
            over = f" over {len(scores)} fits" if len(scores) > 1 else ""
            mean = "mean " if len(scores) > 1 else ""
            entry.pruned = (
                f"pruned by {self.sweep.spec.prune.method} after epoch {step}: "
                f"{mean}{scoring} {value:.4f}{over}"
            )
            self.study.pruned(entry.trial)

    def _answer(self, entry: _Trial, fit: Fit) -> None:
        """Write the fit's verdict when it changed: stop, or go on up to the epoch before the
        next one the pruner could stop it at (it waits only there)."""
        if not (self.trials_dir / fit.folder).is_dir():  # not started: told once it has
            return
        answered = entry.answered.get(fit.folder)
        if entry.pruned:
            if answered != -1:
                verdicts.write(self.trials_dir / fit.folder, entry.reported, entry.pruned)
                entry.answered[fit.folder] = -1
            return
        free = self._next_prunable(entry.reported) - 1
        crowded = self.slots is None or self.slots < len(entry.setting.fits)
        if crowded and not self._all_started(entry):
            # Fewer workers than fits: a fit waiting for a verdict would hold its worker from
            # the fits the verdict waits for. It trains on; a stop can still reach it.
            free = self.max_epochs
        if answered is None or answered < free:
            verdicts.write(self.trials_dir / fit.folder, free)
            entry.answered[fit.folder] = free

    def _prunable(self, step: int) -> bool:
        """Whether the pruner can stop a setting at this epoch: hyperband and asha only at
        their rungs, min_epochs x reduction_factor^k; median from min_epochs on."""
        prune = self.sweep.spec.prune
        if prune.method == "median":
            return step >= prune.min_epochs
        rung = prune.min_epochs
        while rung < step:
            rung *= prune.reduction_factor
        return rung == step

    def _next_prunable(self, step: int) -> int:
        """The first epoch after `step` the pruner can stop a setting at."""
        step += 1
        while not self._prunable(step):
            step += 1
        return step

    def _rows_of(self, folder: str) -> list[dict]:
        if folder in self.outcomes:
            return self.outcomes[folder][1]
        return self._history(folder) or []

    def _history(self, folder: str) -> list[dict] | None:
        """A running fit's history.csv (re-read only when it changed); None before its first
        epoch."""
        path = self.trials_dir / folder / store.HISTORY
        try:
            stat = os.stat(path)
        except OSError:
            return None
        key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        cached = self._histories.get(folder)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            rows = store.read_history(self.trials_dir / folder)
        except (OSError, DlrunError):
            return cached[1] if cached else None
        self._histories[folder] = (key, rows)
        return rows

    # --- direction

    def _learn_direction(self, fits: list[Fit]) -> None:
        """Which way the scoring metric is better, from the first fit that recorded it."""
        if self._directions:
            return
        for fit in fits:
            run_dir = self.trials_dir / fit.folder
            for name in (store.META, store.METRICS):
                try:
                    directions = store.read_json(run_dir / name, run_dir).get("directions")
                except (OSError, DlrunError):
                    continue
                if isinstance(directions, dict) and directions:
                    self._directions = directions
                    if self._higher is None:
                        self._higher = higher_is_better(self.sweep.spec.scoring, directions)
                        self.study.study.set_user_attr(HIGHER_ATTR, self._higher)
                    return

    def _signed(self, score: float) -> float:
        higher = self._higher
        if higher is None:  # no fit recorded it: the name decides (accuracy up, the rest down)
            higher = higher_is_better(self.sweep.spec.scoring, {})
        return score if higher else -score

    def importances(self) -> dict[str, float] | None:
        return self.study.importances()


class StaticPlan:
    """grid and random: every fit planned before any trains."""

    tick = None

    def __init__(self, sweep: Sweep, outcomes: dict):
        self._fits, self._rows = sweep.fits(), sweep.rows()
        self.skipped: dict[str, tuple] = {}  # none: every fit planned is trained

    @property
    def total(self) -> int:
        return len(self._fits)

    def fits(self) -> Iterator[Fit]:
        yield from self._fits

    def rows(self) -> list[Setting]:
        return self._rows

    def done(self, fit: Fit) -> None:
        pass

    def watch(self, running: dict[str, Fit]) -> None:
        pass

    def importances(self) -> None:
        return None


def plan_for(sweep: Sweep, sweep_dir: Path, outcomes: dict) -> SearchPlan | StaticPlan:
    if sweep.spec.adaptive:
        return SearchPlan(sweep, sweep_dir, outcomes)
    return StaticPlan(sweep, outcomes)
