"""dlrun sweep: grid, random, TPE and CMA-ES search with k-fold cross-validation and repeats.

Every (parameters, fold, seed) fit is an ordinary run folder under the sweep's folder, so
`runs`, `compare` and TensorBoard see the trials. A grid over training.epochs trains once per
fold to the largest value and scores each requested epoch from that one history: the
epoch-indexed shuffling makes the first E epochs of a long fit the same as a fit of E epochs.
grid and random plan every setting here; tpe and cmaes ask Optuna for each as they go
(sweep.search).
"""

from __future__ import annotations

import itertools
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from dlrun import store
from dlrun.data.splits import lead
from dlrun.errors import DlrunError, RunError, SpecError
from dlrun.model.outputs import true_classes
from dlrun.spec.keys import paths
from dlrun.spec.loading import validate, validate_model
from dlrun.spec.overrides import apply_override
from dlrun.spec.problems import did_you_mean, format_problem
from dlrun.spec.schema import EarlyStoppingSpec, Spec
from dlrun.spec.uris import config_without_credentials
from dlrun.spec.yamlfile import parse_yaml
from dlrun.sweep.schema import (
    BASE_FILE,
    EPOCHS,
    MAX_FITS,
    SEED,
    STOPPING,
    SWEEP_FILE,
    SweepSpec,
)
from dlrun.sweep.space import base_kind, candidates, check_rule, path_exists


@dataclass
class Fit:
    """One training: a setting of the parameters (epochs at its largest) on one fold, with
    one seed (`seed` is set only when the sweep repeats each fit over seeds)."""

    number: int
    params: dict[str, Any]  # without training.epochs
    fold: int | None
    epochs: int
    seed: int | None = None

    @property
    def folder(self) -> str:
        return (
            f"fit{self.number:03d}"
            + (f"-fold{self.fold}" if self.fold is not None else "")
            + (f"-seed{self.seed}" if self.seed is not None else "")
        )


@dataclass
class Setting:
    """One row of cv_results: the values searched (epochs included), the epoch it is scored
    at, and its fits, repeat by repeat and fold by fold (split0, split1, ... in that order)."""

    number: int
    values: dict[str, Any]
    epochs: int
    fits: list[Fit] = field(default_factory=list)


@dataclass
class Sweep:
    spec: SweepSpec
    base: dict  # the resolved base spec, raw
    source: str
    settings: list[dict[str, Any]]  # grid and random: every setting, epochs included

    @property
    def folds(self) -> list[int | None]:
        return list(range(self.spec.cv)) if self.spec.cv else [None]

    @property
    def seeds(self) -> list[int | None]:
        """The seed of each repeat; [None] (the base's own seed) without repeats."""
        if self.spec.repeats == 1:
            return [None]
        return [self.base["seed"] + repeat for repeat in range(self.spec.repeats)]

    def epochs_of(self, setting: dict[str, Any]) -> int:
        return setting.get(EPOCHS, self.base["training"]["epochs"])

    def fits_for(self, number: int, params: dict[str, Any], epochs: int) -> list[Fit]:
        """A setting's fits: every repeat's seed on every fold."""
        return [
            Fit(number, params, fold, epochs, seed) for seed in self.seeds for fold in self.folds
        ]

    def _groups(self) -> list[tuple[dict, int]]:
        """grid and random: one (setting without epochs, largest epochs asked) per fit number."""
        groups: dict[str, tuple[dict, int]] = {}
        for setting in self.settings:
            params = {k: v for k, v in setting.items() if k != EPOCHS}
            key = json.dumps(params, sort_keys=True, default=str)
            previous = groups.get(key, (params, 0))[1]
            groups[key] = (params, max(previous, self.epochs_of(setting)))
        return list(groups.values())

    def fits(self) -> list[Fit]:
        """grid and random: one fit per (setting without epochs, fold, seed), trained to the
        largest epochs asked."""
        return [
            fit
            for number, (params, epochs) in enumerate(self._groups())
            for fit in self.fits_for(number, params, epochs)
        ]

    def rows(self) -> list[Setting]:
        """grid and random: every setting with the fits it is scored on."""
        numbers = {
            json.dumps(params, sort_keys=True, default=str): (number, epochs)
            for number, (params, epochs) in enumerate(self._groups())
        }
        rows = []
        for setting in self.settings:
            params = {k: v for k, v in setting.items() if k != EPOCHS}
            number, trained = numbers[json.dumps(params, sort_keys=True, default=str)]
            rows.append(
                Setting(
                    number,
                    setting,
                    self.epochs_of(setting),
                    self.fits_for(number, params, trained),
                )
            )
        return rows

    @property
    def planned_fits(self) -> int:
        """How many fits the sweep trains at most (tpe and cmaes: n_iter settings)."""
        if self.spec.adaptive:
            return getattr(self.spec, self.spec.search).n_iter * len(self.folds) * len(self.seeds)
        return len(self.fits())

    def trial_spec(
        self,
        params: dict,
        fold: int | None,
        epochs: int | None = None,
        seed: int | None = None,
    ) -> Spec:
        raw = json.loads(json.dumps(self.base))
        for path, value in params.items():
            apply_override(raw, f"{path}={json.dumps(value)}")
        if epochs is not None:
            raw["training"]["epochs"] = epochs
        if fold is not None:
            raw["data"]["cv"] = {"folds": self.spec.cv, "index": fold}
        if seed is not None:
            raw["seed"] = seed
        raw["name"] = f"{self.spec.name}-trial"
        return validate(raw, self.source)

    def early_stopping(self, params: dict[str, Any]) -> dict | None:
        """The training.early_stopping a setting's fits train with, resolved (None: off)."""
        stopping = json.loads(json.dumps(self.base["training"].get("early_stopping")))
        raw = {"training": {"early_stopping": stopping}}
        for path, value in params.items():
            if path == STOPPING or path.startswith(f"{STOPPING}."):
                apply_override(raw, f"{path}={json.dumps(value)}")
        stopping = raw["training"]["early_stopping"]
        return None if stopping is None else EarlyStoppingSpec(**stopping).model_dump()

    def fit_spec(self, fit: Fit) -> Spec:
        return self.trial_spec(fit.params, fit.fold, fit.epochs, fit.seed)


def _draw(space: dict, n_iter: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    settings = []
    for _ in range(n_iter):
        setting = {}
        for path, rule in space.items():
            if isinstance(rule, list):
                setting[path] = rule[rng.integers(len(rule))]
                continue
            ((kind, bounds),) = rule.items()
            if kind == "choice":
                setting[path] = bounds[rng.integers(len(bounds))]
            elif kind == "uniform":
                setting[path] = float(rng.uniform(*bounds))
            elif kind == "loguniform":
                setting[path] = float(
                    math.exp(rng.uniform(math.log(bounds[0]), math.log(bounds[1])))
                )
            else:  # randint, both ends included
                setting[path] = int(rng.integers(bounds[0], bounds[1] + 1))
        settings.append(setting)
    return settings


def load_sweep(path: Path, overrides: list[str] | tuple[str, ...] = ()) -> Sweep:
    """Read and check a sweep file and every trial spec it implies; trains nothing.

    `overrides` (`dlrun sweep --set`) apply to the base spec, as `dlrun train --set` does.
    """
    try:
        text = store.read_text(path)
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except (OSError, DlrunError) as exc:
        raise SpecError(f"{path}: cannot be read ({exc})") from None
    raw, lines = parse_yaml(text, str(path))
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping with base and grid (or random, tpe, cmaes)")
    spec = validate_model(SweepSpec, raw, str(path), lines)
    search = spec.search
    folds = max(spec.cv, 1)
    if spec.grid is not None:
        planned = math.prod(len(values) for values in spec.grid.values()) * folds
    else:
        planned = getattr(spec, search).n_iter * folds
    planned *= spec.repeats
    if planned > MAX_FITS:
        raise SpecError(
            format_problem(
                str(path),
                lines,
                (search,),
                f"{planned:,} fits (settings x folds{' x repeats' * (spec.repeats > 1)}) is "
                f"more than the {MAX_FITS:,} allowed; narrow the search or use random with a "
                "smaller n_iter",
            )
        )
    _check_search_options(spec, str(path), lines)
    if spec.adaptive:
        from dlrun.sweep.study import optuna_module

        optuna_module(search)  # installed? Said before anything else is read or made
    from dlrun.spec.loading import load_spec

    base_path = (path.parent / spec.base).resolve()
    if not base_path.is_file():
        raise SpecError(format_problem(str(path), lines, ("base",), f"no such file: {base_path}"))
    base_spec = load_spec(base_path, overrides)
    base = base_spec.model_dump(mode="json")
    if base_spec.code:  # the fits' specs name the code files whole (relative to no file)
        from dlrun.usercode import code_paths

        base["code"] = [str(code.resolve()) for code in code_paths(base_spec)]
    space = spec.space
    loc_of = (
        (lambda key: ("grid", key))
        if spec.grid is not None
        else (lambda key: (search, "space", key))
    )
    from dlrun.backend import require

    require(base["backend"])
    problems = []
    distribute = base["training"].get("distribute")
    if isinstance(distribute, dict) and distribute.get("processes", 1) > 1:
        problems.append(
            format_problem(
                str(path),
                lines,
                ("base",),
                f"{spec.base}: training.distribute: {{processes: {distribute['processes']}}}: "
                "a sweep trains each fit on one process; use data_parallel, or train the "
                "spec with dlrun train",
            )
        )
    for key, rule in space.items():
        if key == "backend":
            message = "cannot vary within a sweep (a worker runs one backend); run one per backend"
            problems.append(format_problem(str(path), lines, loc_of(key), message))
        elif key == SEED and spec.repeats > 1:
            message = "the seed comes from repeats (seed, seed+1, ...); search it or repeat"
            problems.append(format_problem(str(path), lines, loc_of(key), message))
        elif key == EPOCHS and spec.prune is not None:
            message = (
                "the pruner decides how many epochs each fit trains; give the most in the base "
                "spec's training.epochs instead"
            )
            problems.append(format_problem(str(path), lines, loc_of(key), message))
        elif not path_exists(base, key):
            candidates_ = sorted(paths(base))
            problems.append(
                format_problem(
                    str(path),
                    lines,
                    loc_of(key),
                    f"no such key in the base spec {spec.base}" + did_you_mean(key, candidates_),
                )
            )
        elif message := check_rule(key, rule, numeric=search == "cmaes"):
            problems.append(format_problem(str(path), lines, loc_of(key), message))
        elif message := base_kind(base, key, candidates(rule)):
            problems.append(format_problem(str(path), lines, loc_of(key), message))
    logged = ["loss", *validate(base, str(base_path)).compile.metric_names]
    if base["training"].get("adversarial"):  # validation only: its train score stays empty
        logged.append("adversarial_accuracy")
    own_steps = base_spec.model.function is not None  # its steps may log any names
    if spec.scoring not in logged and not own_steps:
        problems.append(
            format_problem(
                str(path),
                lines,
                ("scoring",),
                f"{spec.scoring!r} is not logged by the base spec; "
                f"expected one of {', '.join(logged)}",
            )
        )
    last_seed = base["seed"] + spec.repeats - 1
    if last_seed >= 2**32:
        problems.append(
            format_problem(
                str(path),
                lines,
                ("repeats",),
                f"seeds {base['seed']} to {last_seed} go past the largest seed, 2**32 - 1",
            )
        )
    if problems:
        raise SpecError(problems)
    if spec.grid is not None:
        keys = list(spec.grid)
        settings = [
            dict(zip(keys, values, strict=True))
            for values in itertools.product(*spec.grid.values())
        ]
    elif search == "random":
        settings = _draw(spec.random.space, spec.random.n_iter, spec.random.seed)
    else:  # tpe, cmaes: asked for one by one as the sweep runs (sweep.search)
        settings = []
    sweep = Sweep(spec, base, str(path), settings)
    # Each value must make a valid spec, named by its sweep key: every value and both ends of
    # the space (what a random, tpe or cmaes search may draw), then every planned setting.
    ends = [{key: value} for key, rule in space.items() for value in candidates(rule)]
    checked = settings or ends
    for setting in (ends if spec.grid is None else []) + settings:
        for key, value in setting.items():
            try:
                sweep.trial_spec({key: value}, None)
            except SpecError as exc:
                detail = exc.problems[0].split(": ", 2)[-1]
                raise SpecError(
                    format_problem(str(path), lines, loc_of(key), f"value {value!r}: {detail}")
                ) from None
    if spec.cv:
        _check_folds(sweep, path, lines, checked)
    return sweep


def _check_search_options(spec: SweepSpec, source: str, lines) -> None:
    """prune and repeats with the search they go with, one line each."""
    prune = spec.prune
    if prune is None:
        return
    if not spec.adaptive:
        raise SpecError(
            format_problem(
                source,
                lines,
                ("prune",),
                f"prune goes with tpe or cmaes, which learn from the fits the pruner stops; "
                f"{spec.search} plans every fit before any trains and trains each in full "
                f"(give the same n_iter and space as tpe: to prune)",
            )
        )
    if prune.method == "median" and "reduction_factor" in prune.model_fields_set:
        raise SpecError(
            format_problem(
                source,
                lines,
                ("prune", "reduction_factor"),
                "applies to hyperband and asha; median stops a fit whose score is worse than "
                "the median of the completed fits at the same epoch",
            )
        )


def _check_folds(sweep: Sweep, path: Path, lines, settings: list[dict]) -> None:
    """cv folds cannot outnumber the samples of the smallest class of the training split, on
    every data set the sweep trains on (a grid over data.* replaces the base's data)."""
    from dlrun.data.arrays import load_data

    datas = {
        json.dumps({k: v for k, v in setting.items() if k.startswith("data.")}, sort_keys=True)
        for setting in settings
    }
    for data in sorted(datas):
        raw = json.loads(json.dumps(sweep.base))
        for key, value in json.loads(data).items():
            apply_override(raw, f"{key}={json.dumps(value)}")
        raw["training"]["validation_split"] = 0.0
        raw["training"]["checkpoint"]["monitor"] = "loss"
        raw["training"]["early_stopping"] = None
        checked = validate(raw, sweep.source)
        if checked.code:  # a data.function's data: its code first
            from dlrun import usercode
            from dlrun.backend import use

            use(checked.backend)
            usercode.use_spec(checked)
        loaded = load_data(checked)
        if loaded.task == "regression":  # plain k-fold: any count up to the samples works
            continue
        labels = true_classes(lead(loaded.y_train))  # several outputs: the first one's folds
        smallest = int(np.bincount(labels).min())
        if sweep.spec.cv > smallest:
            raise SpecError(
                format_problem(
                    str(path),
                    lines,
                    ("cv",),
                    f"{sweep.spec.cv} folds need at least {sweep.spec.cv} samples of every "
                    f"class; the smallest class has {smallest}",
                )
            )


def start(
    path: Path, runs_root: Path, overrides: list[str] | tuple[str, ...] = ()
) -> tuple[Sweep, Path]:
    """Check the sweep file, then make its folder with the resolved sweep and base spec
    (overrides included, so --resume needs none)."""
    store.check_runs_root(runs_root)
    sweep = load_sweep(path, overrides)
    from dlrun.sweep.tracking import check

    check(sweep)  # a tracking server without the mlflow extra: said before the folder exists
    sweep_dir = store.create_run_dir(runs_root, sweep.spec.name)
    try:
        _write_folder(sweep, sweep_dir)
    except OSError as exc:  # a full disk or a file size limit before the sweep began
        shutil.rmtree(sweep_dir, ignore_errors=True)  # the folder this process just made
        raise RunError(
            f"{sweep_dir}: cannot start the sweep ({exc.strerror or exc}); nothing was "
            "trained and the half-made folder was removed"
        ) from None
    return sweep, sweep_dir


def _write_folder(sweep: Sweep, sweep_dir: Path) -> None:
    """The sweep folder's sweep.yaml, base.yaml and code copies."""
    resolved = sweep.spec.model_dump(mode="json", exclude_none=True)
    resolved["base"] = BASE_FILE
    if sweep.spec.prune is not None:  # as given: median takes no reduction_factor
        resolved["prune"] = sweep.spec.prune.model_dump(mode="json", exclude_unset=True)
    store.write_text(sweep_dir / SWEEP_FILE, yaml.safe_dump(resolved, sort_keys=False))
    # a password in a tracking URI stays in memory, never in the sweep folder
    base = config_without_credentials(sweep.base)
    if base.get("code"):
        # The sweep keeps its own copy of the code; every fit, local or on Ray, imports that
        # copy (named whole in the fits' specs, relative to base.yaml in the sweep's own).
        from dlrun import usercode

        files = usercode.read_files([Path(code) for code in base["code"]])
        copies = usercode.copy_into_run(sweep_dir, files)
        usercode.remember([file.sha256 for file in files])
        base["code"] = copies
        sweep.base["code"] = [str((sweep_dir / copy).resolve()) for copy in copies]
    store.write_text(sweep_dir / BASE_FILE, yaml.safe_dump(base, sort_keys=False))


def reopen(sweep_dir: Path) -> Sweep:
    """A sweep folder's own sweep.yaml, for --resume."""
    if not (sweep_dir / SWEEP_FILE).is_file():
        from dlrun.errors import RunError

        raise RunError(f"{sweep_dir}: not a sweep folder ({SWEEP_FILE} is missing)")
    if (sweep_dir / store.CODE).is_dir():  # its copies run in every fit: trusted first
        from dlrun import usercode

        usercode.check_trusted(sweep_dir, sorted((sweep_dir / store.CODE).glob("*.py")))
    return load_sweep(sweep_dir / SWEEP_FILE)
