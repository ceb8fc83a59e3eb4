"""dlrun sweep: grid and random search with k-fold cross-validation.

Every (parameters, fold) fit is an ordinary run folder under the sweep's folder, so `runs`,
`compare` and TensorBoard see the trials. A grid over training.epochs trains once per fold to
the largest value and scores each requested epoch from that one history: the epoch-indexed
shuffling makes the first E epochs of a long fit the same as a fit of E epochs.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dlrun import store
from dlrun.errors import DlrunError, RunError, SpecError
from dlrun.metrics import higher_is_better
from dlrun.spec import (
    NAME_PATTERN,
    Spec,
    apply_override,
    did_you_mean,
    format_problem,
    parse_yaml,
    validate,
    validate_model,
)
from dlrun.workers import Workers

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
    name: str = Field("sweep", pattern=NAME_PATTERN)
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


@dataclass
class Fit:
    """One training: a setting of the parameters (epochs at its largest) on one fold."""

    number: int
    params: dict[str, Any]  # without training.epochs
    fold: int | None
    epochs: int

    @property
    def folder(self) -> str:
        return f"fit{self.number:03d}" + (f"-fold{self.fold}" if self.fold is not None else "")


@dataclass
class Sweep:
    spec: SweepSpec
    base: dict  # the resolved base spec, raw
    source: str
    settings: list[dict[str, Any]]  # every parameter setting, epochs included

    @property
    def folds(self) -> list[int | None]:
        return list(range(self.spec.cv)) if self.spec.cv else [None]

    def fits(self) -> list[Fit]:
        """One fit per (setting without epochs, fold), trained to the largest epochs asked."""
        groups: dict[str, tuple[dict, int]] = {}
        for setting in self.settings:
            params = {k: v for k, v in setting.items() if k != EPOCHS}
            key = json.dumps(params, sort_keys=True, default=str)
            epochs = setting.get(EPOCHS, self.base["training"]["epochs"])
            previous = groups.get(key, (params, 0))[1]
            groups[key] = (params, max(previous, epochs))
        fits = []
        for number, (params, epochs) in enumerate(groups.values()):
            fits += [Fit(number, params, fold, epochs) for fold in self.folds]
        return fits

    def trial_spec(self, params: dict, fold: int | None, epochs: int | None = None) -> Spec:
        raw = json.loads(json.dumps(self.base))
        for path, value in params.items():
            apply_override(raw, f"{path}={json.dumps(value)}")
        if epochs is not None:
            raw["training"]["epochs"] = epochs
        if fold is not None:
            raw["data"]["cv"] = {"folds": self.spec.cv, "index": fold}
        raw["name"] = f"{self.spec.name}-trial"
        return validate(raw, self.source)


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


def _check_rule(path: str, rule: Any) -> str | None:
    if isinstance(rule, list):
        return None if rule else "expected at least one value, got []"
    if not isinstance(rule, dict) or len(rule) != 1:
        return f"expected a list of values or one of {{{', '.join(DISTRIBUTIONS)}: ...}}"
    ((kind, bounds),) = rule.items()
    if kind not in DISTRIBUTIONS:
        return f"unknown distribution {kind!r}; expected one of {', '.join(DISTRIBUTIONS)}" + (
            did_you_mean(kind, DISTRIBUTIONS)
        )
    if kind == "choice":
        return None if isinstance(bounds, list) and bounds else "choice needs a non-empty list"
    if not (
        isinstance(bounds, list)
        and len(bounds) == 2
        and all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
        and bounds[0] < bounds[1]
    ):
        return f"{kind} needs [low, high] with low < high, got {bounds!r}"
    if kind == "loguniform" and bounds[0] <= 0:
        return f"loguniform needs low > 0, got {bounds[0]}"
    if kind == "randint" and not all(isinstance(b, int) for b in bounds):
        return f"randint needs whole numbers, got {bounds!r}"
    return None


def _flat_keys(value: Any, prefix: str = "") -> set[str]:
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return {prefix}
    keys = {prefix} if prefix else set()
    for key, item in items:
        keys |= _flat_keys(item, f"{prefix}.{key}" if prefix else str(key))
    return keys


def _path_exists(base: dict, path: str) -> bool:
    """In the resolved base spec, or an argument of a layer, optimizer or loss (Keras checks)."""
    if path in _flat_keys(base):
        return True
    parent = path.rsplit(".", 1)[0]
    parts = parent.split(".")
    return (
        parts[:2] == ["model", "layers"] and len(parts) == 3 and parent in _flat_keys(base)
    ) or parent in ("compile.optimizer", "compile.loss")


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
        raise SpecError(f"{path}: expected a mapping with base and grid (or random)")
    spec = validate_model(SweepSpec, raw, str(path), lines)
    folds = max(spec.cv, 1)
    if spec.grid is not None:
        planned = math.prod(len(values) for values in spec.grid.values()) * folds
    else:
        planned = spec.random.n_iter * folds
    if planned > MAX_FITS:
        where = "grid" if spec.grid is not None else "random"
        raise SpecError(
            format_problem(
                str(path),
                lines,
                (where,),
                f"{planned:,} fits (settings x folds) is more than the {MAX_FITS:,} allowed; "
                "narrow the search or use random with a smaller n_iter",
            )
        )
    from dlrun.spec import load_spec

    base_path = (path.parent / spec.base).resolve()
    if not base_path.is_file():
        raise SpecError(format_problem(str(path), lines, ("base",), f"no such file: {base_path}"))
    base = load_spec(base_path, overrides).model_dump(mode="json")
    space = spec.grid if spec.grid is not None else spec.random.space
    loc_of = (
        (lambda key: ("grid", key))
        if spec.grid is not None
        else (lambda key: ("random", "space", key))
    )
    from dlrun.backend import require

    require(base["backend"])
    problems = []
    for key, rule in space.items():
        if key == "backend":
            message = "cannot vary within a sweep (a worker runs one backend); run one per backend"
            problems.append(format_problem(str(path), lines, loc_of(key), message))
        elif not _path_exists(base, key):
            candidates = sorted(_flat_keys(base))
            problems.append(
                format_problem(
                    str(path),
                    lines,
                    loc_of(key),
                    f"no such key in the base spec {spec.base}" + did_you_mean(key, candidates),
                )
            )
        elif message := _check_rule(key, rule):
            problems.append(format_problem(str(path), lines, loc_of(key), message))
    logged = ["loss", *validate(base, str(base_path)).compile.metric_names]
    if base["training"].get("adversarial"):  # validation only: its train score stays empty
        logged.append("adversarial_accuracy")
    if spec.scoring not in logged:
        problems.append(
            format_problem(
                str(path),
                lines,
                ("scoring",),
                f"{spec.scoring!r} is not logged by the base spec; "
                f"expected one of {', '.join(logged)}",
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
    else:
        settings = _draw(spec.random.space, spec.random.n_iter, spec.random.seed)
    sweep = Sweep(spec, base, str(path), settings)
    for setting in settings:  # each value must make a valid spec, named by its sweep key
        for key, value in setting.items():
            try:
                sweep.trial_spec({key: value}, None)
            except SpecError as exc:
                detail = exc.problems[0].split(": ", 2)[-1]
                raise SpecError(
                    format_problem(str(path), lines, loc_of(key), f"value {value!r}: {detail}")
                ) from None
    if spec.cv:
        _check_folds(sweep, path, lines)
    return sweep


def _check_folds(sweep: Sweep, path: Path, lines) -> None:
    """cv folds cannot outnumber the samples of the smallest class of the training split, on
    every data set the sweep trains on (a grid over data.* replaces the base's data)."""
    from dlrun.data import load_data

    datas = {
        json.dumps({k: v for k, v in setting.items() if k.startswith("data.")}, sort_keys=True)
        for setting in sweep.settings
    }
    for data in sorted(datas):
        raw = json.loads(json.dumps(sweep.base))
        for key, value in json.loads(data).items():
            apply_override(raw, f"{key}={json.dumps(value)}")
        raw["training"]["validation_split"] = 0.0
        raw["training"]["checkpoint"]["monitor"] = "loss"
        raw["training"]["early_stopping"] = None
        loaded = load_data(validate(raw, sweep.source))
        if loaded.task == "regression":  # plain k-fold: any count up to the samples works
            continue
        labels = loaded.y_train
        labels = labels.argmax(axis=1) if labels.ndim > 1 else labels
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


# --- running ---------------------------------------------------------------------------------


def _init_worker(threads: int, backend: str = "tensorflow") -> None:
    """Each worker gets its share of the cores (TensorFlow reads these as it starts), then
    imports Keras on the sweep's backend at once."""
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from dlrun.backend import load, use
    from dlrun.errors import BackendError

    try:
        use(backend)
    except BackendError:
        return  # the main process reports it when it checks the sweep
    load()


def pool(workers: int, backend: str = "tensorflow") -> Workers:
    """Worker processes; start them only once the sweep file has been checked."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    return Workers(workers, _init_worker, (threads, backend))


def ray_pool(sweep: Sweep, sweep_dir: Path, address: str | None = None):
    """Fits as Ray tasks reserving the sweep file's resources (dlrun.raysweep)."""
    from dlrun.raysweep import RayWorkers

    resources = sweep.spec.resources
    return RayWorkers(
        sweep_dir / TRIALS, sweep.base["backend"], resources.cpu, resources.gpu, address
    )


def lock(sweep_dir: Path) -> int:
    """The sweep folder's lock, held by the sweep's parent process for its whole life."""
    if not sweep_dir.is_dir():
        raise RunError(f"{sweep_dir}: no such sweep folder")
    return store.take_lock(sweep_dir, "sweep")


class SweepStopped(DlrunError):
    """Ctrl-C or SIGTERM stopped the sweep: the fits running were recorded as interrupted."""

    def __init__(self, sweep_dir: Path, signum: int):
        self.sweep_dir, self.signum = sweep_dir, signum
        self.exit_code = store.SIGTERM_EXIT if signum == signal.SIGTERM else 130
        name = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C (SIGINT)"
        super().__init__(f"sweep stopped by {name}; the fits running were recorded as interrupted")


def _run_fit(spec_yaml: str, trials_dir: str, folder: str) -> tuple[str, list[dict], str | None]:
    """In a worker: train one fit (or finish an interrupted one); (status, rows, message)."""
    from rich.console import Console

    from dlrun import runner
    from dlrun.spec import validate as validate_spec

    console = Console(quiet=True)
    run_dir = Path(trials_dir) / folder
    try:
        if (run_dir / store.META).exists():
            status = store.open_run(run_dir).status
            if status == store.COMPLETED:
                return status, store.read_history(run_dir), None
            if status in runner.RESUMABLE:
                outcome = runner.resume(run_dir, console, ["dlrun", "sweep", "--resume"])
            else:
                return status, store.read_history(run_dir), "left as it was"
        else:
            if run_dir.exists():  # made, but killed before its meta.json: start it again
                import shutil

                shutil.rmtree(run_dir)
            spec = validate_spec(yaml.safe_load(spec_yaml), folder)
            outcome = runner.train(
                spec, Path(trials_dir), console, ["dlrun", "sweep"], (), folder, score_test=False
            )
        return outcome.status, store.read_history(run_dir), outcome.message
    except Exception as exc:  # one broken trial is recorded; the sweep goes on
        return store.FAILED, _history(run_dir), f"{type(exc).__name__}: {exc}"


def _stopped(run_dir: Path, message: str) -> tuple[str, list[dict], str | None]:
    try:
        run = store.open_run(run_dir)
    except RunError:  # it never started
        return store.INTERRUPTED, [], message
    return str(run.status), _history(run_dir), run.meta.get("message") or message


def _history(run_dir: Path) -> list[dict]:
    try:
        return store.read_history(run_dir)
    except DlrunError:
        return []


def results_table(
    sweep: Sweep,
    outcomes: dict[str, tuple[str, list[dict], str | None]],
    directions: dict[str, str] | None = None,
):
    """GridSearchCV's cv_results_ as a DataFrame: one row per parameter setting.

    `directions` (recorded by the trials) say whether the scoring metric is maximised.
    A fit that early stopping ended before an epoch value is scored where it stopped: that is
    the model such a fit gives.
    """
    import pandas as pd

    scoring, folds = sweep.spec.scoring, sweep.folds
    fits = {(json.dumps(f.params, sort_keys=True, default=str), f.fold): f for f in sweep.fits()}
    rows = []
    for setting in sweep.settings:
        params = {k: v for k, v in setting.items() if k != EPOCHS}
        epochs = setting.get(EPOCHS, sweep.base["training"]["epochs"])
        row: dict[str, Any] = {f"param_{k}": v for k, v in setting.items()}
        tests, trains, times, statuses = [], [], [], []
        for index, fold in enumerate(folds):
            fit = fits[(json.dumps(params, sort_keys=True, default=str), fold)]
            status, history, _ = outcomes.get(fit.folder, (store.FAILED, [], None))
            done = [r for r in history if r["epoch"] <= epochs]
            stopped_early = status == store.COMPLETED and bool(done) and done[-1] is history[-1]
            ok = (len(done) == epochs or stopped_early) and status in (
                store.COMPLETED,
                store.DIVERGED,
            )
            last = done[-1] if ok else {}
            test = last.get(f"val_{scoring}", math.nan)
            train = last.get(scoring, math.nan)
            ok = ok and math.isfinite(test)
            tests.append(test if ok else math.nan)
            trains.append(train if ok else math.nan)
            times.append(sum(r.get("epoch_seconds", 0.0) for r in done))
            statuses.append(status if status != store.COMPLETED or ok else store.DIVERGED)
            row[f"split{index}_test_score"] = tests[-1]
        for index, value in enumerate(trains):
            row[f"split{index}_train_score"] = value
        row["mean_test_score"] = float(np.mean(tests))
        row["std_test_score"] = float(np.std(tests))
        row["mean_train_score"] = float(np.mean(trains))
        row["std_train_score"] = float(np.std(trains))
        row["mean_fit_time"] = float(np.mean(times))
        row["status"] = ",".join(sorted(set(statuses)))
        rows.append(row)
    frame = pd.DataFrame(rows)
    higher = higher_is_better(scoring, directions)
    scores = frame["mean_test_score"] if higher else -frame["mean_test_score"]
    frame["rank_test_score"] = scores.rank(ascending=False, method="min").fillna(len(frame))
    frame["rank_test_score"] = frame["rank_test_score"].astype(int)
    order = [c for c in frame.columns if c.startswith("param_")]
    order += [c for c in frame.columns if c.startswith("split") and "test" in c]
    order += ["mean_test_score", "std_test_score", "rank_test_score"]
    order += [c for c in frame.columns if c.startswith("split") and "train" in c]
    order += ["mean_train_score", "std_train_score", "mean_fit_time", "status"]
    return frame[order]


def _progress(console):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("sweep"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[state]}"),
        console=console,
        disable=not console.is_terminal,
    )


def run_sweep(sweep: Sweep, sweep_dir: Path, console, executor: Workers) -> dict:
    """Run every fit (skipping finished ones), then write cv_results.csv, best.yaml, refit.

    Ctrl-C or SIGTERM: no further fit starts, the running ones are stopped and recorded as
    interrupted, and SweepStopped is raised (nothing of the results is written).
    """
    fits = sweep.fits()
    trials = sweep_dir / TRIALS
    trials.mkdir(parents=True, exist_ok=True)
    workers = sweep.spec.workers
    outcomes: dict[str, tuple[str, list[dict], str | None]] = {}
    directions: dict[str, str] = {}
    best: float | None = None
    started = time.perf_counter()
    tasks = [
        (
            fit.folder,
            _run_fit,
            (sweep.trial_spec(fit.params, fit.fold, fit.epochs).dump(), str(trials), fit.folder),
        )
        for fit in fits
    ]

    def record(folder: str, kind: str, value: Any) -> tuple[str, list[dict], str | None]:
        if kind == "ok":
            return value
        if kind == "died":  # killed (OOM, SIGKILL): the trial's lock is free, so it crashed
            message = f"its worker process died (exit code {value})"
            return store.CRASHED, _history(trials / folder), message
        if kind == "stopped":  # cancelled (Ray): as the fit itself recorded it, if it started
            return _stopped(trials / folder, str(value))
        return store.FAILED, _history(trials / folder), str(value)

    _terminated.clear()
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    previous_int = signal.getsignal(signal.SIGINT)
    try:
        with _progress(console) as progress:
            task = progress.add_task("sweep", total=len(fits), state="")
            for folder, kind, value in executor.run(tasks):
                status, history, message = outcomes[folder] = record(folder, kind, value)
                directions = directions or _directions(trials / folder)
                higher = higher_is_better(sweep.spec.scoring, directions)
                score = history[-1].get(f"val_{sweep.spec.scoring}") if history else None
                if score is not None and math.isfinite(score):
                    if best is None or (score > best if higher else score < best):
                        best = score
                line = f"{folder}: {status}" + (f" ({message})" if message else "")
                if not console.is_terminal:
                    console.print(line, highlight=False, markup=False)
                left = len(fits) - len(outcomes)
                running = min(left, workers)
                best_text = f"{best:.4f}" if best is not None else "-"
                progress.update(
                    task,
                    advance=1,
                    state=f"running {running}, left {left - running}, best {best_text}",
                )
    except KeyboardInterrupt:
        stopped = signal.SIGTERM if _terminated else signal.SIGINT
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for folder, kind, value in executor.stop():
            status, _, message = outcomes[folder] = record(folder, kind, value)
            if not console.is_terminal:
                console.print(f"{folder}: {status} ({message})", highlight=False, markup=False)
        raise SweepStopped(sweep_dir, stopped) from None
    finally:
        executor.close()
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    frame = results_table(sweep, outcomes, directions)
    store.write_text(sweep_dir / RESULTS, frame.to_csv(index=False))
    summary: dict[str, Any] = {
        "fits": len(fits),
        "seconds": round(time.perf_counter() - started, 2),
    }
    ranked = frame[np.isfinite(frame["mean_test_score"])]
    if ranked.empty:
        summary["best"] = None
        return {"frame": frame, **summary}
    winner = ranked.sort_values("rank_test_score").iloc[0]
    params = {
        c.removeprefix("param_"): _plain(winner[c]) for c in frame.columns if c.startswith("param_")
    }
    best_spec = sweep.trial_spec(
        {k: v for k, v in params.items() if k != EPOCHS}, None, params.get(EPOCHS)
    )
    best_raw = best_spec.model_dump(mode="json")
    best_raw["name"] = sweep.base["name"]
    store.write_text(sweep_dir / BEST_SPEC, yaml.safe_dump(best_raw, sort_keys=False))
    summary["best"] = {"params": params, "mean_test_score": float(winner["mean_test_score"])}
    if sweep.spec.refit:
        summary["refit"] = _refit(best_raw, sweep_dir, console)
    return {"frame": frame, **summary}


def _directions(run_dir: Path) -> dict[str, str]:
    """The metric directions a trial recorded (empty when it recorded none)."""
    try:
        return store.read_json(run_dir / store.METRICS).get("directions") or {}
    except DlrunError:
        return {}


# Set when SIGTERM arrived. Kept beside the exception, not in its type: Ray's blocking calls
# turn whatever a signal handler raised into a plain KeyboardInterrupt.
_terminated: list[int] = []


def _raise_stop(signum, frame):
    """SIGTERM in the sweep's parent is handled like Ctrl-C."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: a second must not cut the stop short
    _terminated.append(signum)
    raise KeyboardInterrupt


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _refit(best_raw: dict, sweep_dir: Path, console) -> dict:
    """The best setting trained on the whole training split, scored on the test split."""
    from rich.console import Console

    from dlrun import runner

    raw = json.loads(json.dumps(best_raw))
    raw["training"]["validation_split"] = 0.0
    raw["training"]["early_stopping"] = None
    # No validation data: best.keras follows the training loss, which is minimised whatever
    # the base's checkpoint mode was (max for val_accuracy would keep the worst epoch).
    raw["training"]["checkpoint"] = {"monitor": "loss", "mode": "min"}
    spec = validate(raw, BEST_SPEC)
    run_dir = sweep_dir / REFIT
    if (run_dir / store.META).exists() and store.open_run(run_dir).status == store.COMPLETED:
        return store.open_run(run_dir).metrics.get("test", {})
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    quiet = Console(quiet=True)
    outcome = runner.train(spec, sweep_dir, quiet, ["dlrun", "sweep", "refit"], (), REFIT)
    return outcome.metrics.get("test", {})


def start(
    path: Path, runs_root: Path, overrides: list[str] | tuple[str, ...] = ()
) -> tuple[Sweep, Path]:
    """Check the sweep file, then make its folder with the resolved sweep and base spec
    (overrides included, so --resume needs none)."""
    store.check_runs_root(runs_root)
    sweep = load_sweep(path, overrides)
    sweep_dir = store.create_run_dir(runs_root, sweep.spec.name)
    resolved = sweep.spec.model_dump(mode="json", exclude_none=True)
    resolved["base"] = BASE_FILE
    store.write_text(sweep_dir / SWEEP_FILE, yaml.safe_dump(resolved, sort_keys=False))
    store.write_text(sweep_dir / BASE_FILE, yaml.safe_dump(sweep.base, sort_keys=False))
    return sweep, sweep_dir


def reopen(sweep_dir: Path) -> Sweep:
    """A sweep folder's own sweep.yaml, for --resume."""
    if not (sweep_dir / SWEEP_FILE).is_file():
        from dlrun.errors import RunError

        raise RunError(f"{sweep_dir}: not a sweep folder ({SWEEP_FILE} is missing)")
    return load_sweep(sweep_dir / SWEEP_FILE)


def pivot(frame, scoring: str):
    """The lecture's view: parameters as the index, mean test and train scores, best marked."""
    params = [c for c in frame.columns if c.startswith("param_")]
    frame = frame.copy()
    for column in params:  # mappings (a grid over optimizers) cannot be index values
        frame[column] = frame[column].map(
            lambda v: json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v
        )
    table = frame.set_index(params)[["mean_test_score", "mean_train_score", "rank_test_score"]]
    table.index.names = [name.removeprefix("param_") for name in params]
    table = table.rename(columns={"rank_test_score": "rank"})
    table["best"] = np.where(table["rank"] == 1, "<- best", "")
    return table
