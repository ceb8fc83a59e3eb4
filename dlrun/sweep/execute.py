"""Running a sweep's fits on local workers or Ray; Ctrl-C, SIGTERM and SIGHUP stop them all.

A fit that fails or whose worker dies is recorded and the sweep goes on; a stop records the
running fits as interrupted, and `--resume` finishes them.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from dlrun import store
from dlrun.errors import DlrunError, RunError, SpecError
from dlrun.model.metrics import higher_is_better
from dlrun.sweep.plan import Fit, Sweep
from dlrun.sweep.results import refit, refit_data, results_table
from dlrun.sweep.schema import BEST_SPEC, EPOCHS, IMPORTANCES, RESULTS, SEARCH_PLOT, TRIALS
from dlrun.sweep.search import plan_for
from dlrun.sweep.study import fit_mismatch
from dlrun.sweep.workers import Workers
from dlrun.train.life import STOPPED_BY, STOPPING


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
    """Worker processes, each started when a fit first needs it (call this only once the
    sweep file has been checked)."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    return Workers(workers, _init_worker, (threads, backend))


def ray_pool(sweep: Sweep, sweep_dir: Path, address: str | None = None):
    """Fits as Ray tasks reserving the sweep file's resources (dlrun.raysweep)."""
    from dlrun.sweep.ray import RayWorkers

    resources = sweep.spec.resources
    return RayWorkers(
        sweep_dir / TRIALS, sweep.base["backend"], resources.cpu, resources.gpu, address
    )


def lock(sweep_dir: Path) -> int:
    """The sweep folder's lock, held by the sweep's parent process for its whole life."""
    if not sweep_dir.is_dir():
        raise RunError(f"{sweep_dir}: no such sweep folder")
    return store.take_lock(sweep_dir, "sweep")


@contextlib.contextmanager
def recorded(sweep: Sweep, sweep_dir: Path) -> Iterator[None]:
    """The sweep's outcome in its folder's state.json: running (with the fits it plans) while
    the block runs, then completed, interrupted (a stop) or failed (with the one-line error).
    """
    state = {"status": str(store.RUNNING), "message": None, "fits_planned": sweep.planned_fits}
    with contextlib.suppress(FileNotFoundError, DlrunError):  # a resumed sweep's MLflow run
        record = store.read_json(sweep_dir / store.SWEEP_STATE, sweep_dir).get("mlflow")
        if isinstance(record, dict):
            state["mlflow"] = record
    try:
        store.write_json(sweep_dir / store.SWEEP_STATE, state)
        yield
    except (KeyboardInterrupt, SweepStopped) as exc:
        state.update(status=str(store.INTERRUPTED), message=str(exc) or "stopped")
        raise
    except OSError as exc:  # the sweep's own files (state.json, cv_results.csv, best.yaml)
        reason = store.output.os_reason(exc)
        if reason is None:  # not the file system refusing a write: as any other fault
            state.update(status=str(store.FAILED), message=f"{type(exc).__name__}: {exc}"[:500])
            raise
        fault = store.output.NotWritten(
            f"{sweep_dir}: the sweep's files could not be written ({reason}); make room (or "
            f"lift the limit) and resume with dlrun sweep --resume {sweep_dir}",
            reason,
        )
        state.update(status=str(store.FAILED), message=str(fault))
        raise fault from None
    except Exception as exc:
        message = str(exc) if isinstance(exc, DlrunError) else f"{type(exc).__name__}: {exc}"
        state.update(status=str(store.FAILED), message=message.strip()[:500])
        raise
    else:
        state.update(status=str(store.COMPLETED))
    finally:
        with contextlib.suppress(OSError):  # a full disk: the error at hand says more
            store.write_json(sweep_dir / store.SWEEP_STATE, state)


class SweepStopped(DlrunError):
    """Ctrl-C, SIGTERM or SIGHUP stopped the sweep: the fits running were recorded as
    interrupted."""

    def __init__(self, sweep_dir: Path, signum: int):
        self.sweep_dir, self.signum = sweep_dir, signum
        self.exit_code = 128 + signum  # 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP
        name = STOPPED_BY.get(signum, f"signal {signum}")
        super().__init__(f"sweep stopped by {name}; the fits running were recorded as interrupted")


def _run_fit(
    spec_yaml: str,
    trials_dir: str,
    folder: str,
    pruning: bool = False,
    train_scores: bool = False,
) -> tuple[str, list[dict], str | None]:
    """In a worker: train one fit (or finish an interrupted one); (status, rows, message).

    `pruning`: after each epoch the fit waits for the sweep parent's verdict (sweep.verdicts)
    and stops as `pruned` when told to. `train_scores`: after each epoch the model is scored
    on its training split (FittedScores), for return_train_score.
    """
    from rich.console import Console

    from dlrun.spec.loading import validate as validate_spec
    from dlrun.train import runner

    console = Console(quiet=True)
    run_dir = Path(trials_dir) / folder
    callbacks: tuple = ()
    if train_scores:
        from dlrun.train.callbacks import FittedScores

        callbacks = (FittedScores(),)
    if pruning:
        from dlrun.sweep import verdicts
        from dlrun.train.callbacks import Pruning

        callbacks = (*callbacks, Pruning(verdicts.waiter(run_dir)))
    try:
        if run_dir.is_symlink():  # a received sweep's trial pointing elsewhere: never followed
            raise RunError(f"{run_dir}: is a symlink; refusing to train out of the sweep")
        if (run_dir / store.META).exists():
            status = store.open_run(run_dir).status
            if status in (store.COMPLETED, store.PRUNED):
                return status, store.read_history(run_dir), None
            if status in runner.RESUMABLE:
                if pruning and (message := verdicts.stopped(run_dir)):
                    # its setting was pruned while it was stopped: recorded so, not trained on
                    status = runner.finish_pruned(run_dir, message)
                    return status, store.read_history(run_dir), message
                command = ["dlrun", "sweep", "--resume"]
                outcome = runner.resume(
                    run_dir,
                    console,
                    command,
                    extra_callbacks=callbacks,
                    score_test=False,
                    plot=False,
                    track=False,  # the sweep sends its fits, as its MLflow run's children
                )
            else:
                return status, store.read_history(run_dir), "left as it was"
        else:
            store.remove_unstarted(run_dir)  # made, but killed before its meta.json: again
            spec = validate_spec(yaml.safe_load(spec_yaml), folder)
            outcome = runner.train(
                spec,
                Path(trials_dir),
                console,
                ["dlrun", "sweep"],
                callbacks,
                folder,
                score_test=False,
                plot=False,
                track=False,
            )
        return outcome.status, store.read_history(run_dir), outcome.message
    except Exception as exc:  # one broken trial is recorded; the sweep goes on
        return store.FAILED, _history(run_dir), f"{type(exc).__name__}: {exc}"


def _refused(message: str) -> tuple[str, list[dict], str | None]:
    """In a worker: a fit whose spec was refused, recorded as failed without a folder."""
    return store.FAILED, [], message


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

    grid and random: the fits planned; tpe and cmaes: a setting asked of Optuna each time a
    worker is free for one, and with `prune` each running fit judged after every epoch
    (sweep.search). Ctrl-C or SIGTERM: no further fit starts, the running ones are stopped
    and recorded as interrupted, and SweepStopped is raised (nothing of the results is
    written).
    """
    sweep_dir.mkdir(parents=True, exist_ok=True)
    trials = store.safe_folder(sweep_dir, TRIALS)  # never a symlinked trials/ out of the sweep
    outcomes: dict[str, tuple[str, list[dict], str | None]] = {}
    plan = plan_for(sweep, sweep_dir, outcomes)
    if hasattr(plan, "slots"):  # local workers: how many fits run at once
        plan.slots = getattr(executor, "count", None)
    pruning = sweep.spec.prune is not None
    directions: dict[str, str] = {}
    best: float | None = None
    started = time.perf_counter()
    running: dict[str, Fit] = {}  # handed to the executor, not yet back

    def tasks():
        for fit in plan.fits():
            running[fit.folder] = fit
            try:
                spec_yaml = sweep.fit_spec(fit).dump()
            except SpecError as exc:  # a value Optuna drew that the spec refuses: that fit fails
                yield fit.folder, _refused, (" ".join(exc.problems),)
                continue
            # A folder of this number trained another setting (another study's): not scored.
            if (mismatch := fit_mismatch(trials / fit.folder, spec_yaml)) is not None:
                yield fit.folder, _refused, (mismatch,)
                continue
            # Absolute: a Ray worker's current folder is its node's, not this process' (a
            # relative --runs-dir had a running cluster's workers write their fits there).
            folder = str(trials.absolute())
            arguments = (spec_yaml, folder, fit.folder, pruning, sweep.spec.return_train_score)
            yield fit.folder, _run_fit, arguments

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
    previous = {signum: signal.signal(signum, _raise_stop) for signum in STOPPING}
    previous_int = signal.getsignal(signal.SIGINT)
    try:
        with _progress(console) as progress:
            task = progress.add_task("sweep", total=plan.total, state="")
            for folder, kind, value in executor.run(tasks(), tick=plan.tick):
                if kind != "tick":
                    fit = running.pop(folder)
                    status, history, message = outcomes[folder] = record(folder, kind, value)
                    plan.done(fit)
                    directions = directions or _directions(trials / folder)
                    higher = higher_is_better(sweep.spec.scoring, directions)
                    score = history[-1].get(f"val_{sweep.spec.scoring}") if history else None
                    if status != store.PRUNED and score is not None and math.isfinite(score):
                        if best is None or (score > best if higher else score < best):
                            best = score
                    done = len(outcomes) + len(plan.skipped)
                    line = fit_line(sweep, fit, (done, plan.total), outcomes[folder], best)
                    if not console.is_terminal:
                        console.print(line, highlight=False, markup=False)
                plan.watch(running)
                finished = len(outcomes) + len(plan.skipped)
                left = max(plan.total - finished, 0)
                best_text = f"{best:.4f}" if best is not None else "-"
                progress.update(
                    task,
                    completed=finished,
                    state=f"running {len(running)}, left {max(left - len(running), 0)}, "
                    f"best {best_text}",
                )
    except KeyboardInterrupt:
        stopped = _terminated[0] if _terminated else signal.SIGINT
        for signum in (*STOPPING, signal.SIGINT):  # a second one must not cut the cleanup
            signal.signal(signum, signal.SIG_IGN)
        for folder, kind, value in executor.stop(signum=stopped):
            status, _, message = outcomes[folder] = record(folder, kind, value)
            if not console.is_terminal:
                console.print(f"{folder}: {status} ({message})", highlight=False, markup=False)
        raise SweepStopped(sweep_dir, stopped) from None
    finally:
        executor.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        signal.signal(signal.SIGINT, previous_int)
    frame = results_table(sweep, {**outcomes, **plan.skipped}, directions, plan.rows())
    store.write_text(sweep_dir / RESULTS, frame.to_csv(index=False))
    summary: dict[str, Any] = {
        "fits": len(outcomes),
        "seconds": round(time.perf_counter() - started, 2),
        "epochs": sum(len(history) for _, history, _ in outcomes.values()),
    }
    higher = higher_is_better(sweep.spec.scoring, directions)
    if not frame.empty:
        from dlrun.report.plots import search_plot

        summary["plot"] = search_plot(
            frame, sweep.spec.scoring, higher, sweep_dir / SEARCH_PLOT, sweep.spec.search
        )
    importances = plan.importances()
    if importances:
        store.write_json(sweep_dir / IMPORTANCES, importances)
        summary["importances"] = importances
    # The best setting is one that trained in full: a pruned one's score is of fewer epochs.
    ranked = frame[np.isfinite(frame["mean_test_score"]) & ~_pruned(frame)] if len(frame) else frame
    if ranked.empty:
        summary["best"] = None
        return {"frame": frame, **summary}
    winner = ranked.sort_values("rank_test_score", kind="stable").iloc[0]
    # The winner's values from the plan, as given: a DataFrame column mixing null with
    # integers holds floats (300.0), which the spec refuses where it wants an integer.
    params = plan.rows()[winner.name].values
    best_spec = sweep.trial_spec(
        {k: v for k, v in params.items() if k != EPOCHS}, None, params.get(EPOCHS)
    )
    # only the data keys that apply, as config.yaml, and no tracking password
    best_raw = best_spec.resolved()
    best_raw["name"] = sweep.base["name"]
    store.write_text(sweep_dir / BEST_SPEC, yaml.safe_dump(best_raw, sort_keys=False))
    summary["best"] = {
        "params": params,
        "mean_test_score": float(winner["mean_test_score"]),
        "std_test_score": float(winner["std_test_score"]),
    }
    if sweep.spec.refit:
        summary["refit"] = refit(best_raw, sweep_dir, console)
        summary["refit_data"] = refit_data(best_raw)
    return {"frame": frame, **summary}


def fit_line(sweep: Sweep, fit: Fit, count: tuple[int, int], outcome: tuple, best) -> str:
    """One finished fit for a log: `fit 12/72 (setting 4/12, fold 1/3) val_accuracy 0.981 ·
    best so far 0.989`, a pruned fit `pruned at epoch k`, a failed one its status and why."""
    status, history, message = outcome
    per_setting = len(sweep.folds) * len(sweep.seeds)
    where = [f"setting {fit.number + 1}/{max(sweep.planned_fits // per_setting, 1)}"]
    if fit.fold is not None:
        where.append(f"fold {fit.fold + 1}/{len(sweep.folds)}")
    if fit.seed is not None:
        where.append(f"seed {fit.seed - sweep.base['seed'] + 1}/{len(sweep.seeds)}")
    line = f"fit {count[0]}/{count[1]} ({', '.join(where)})"
    scoring = f"val_{sweep.spec.scoring}"
    score = history[-1].get(scoring) if history else None
    if status == store.PRUNED:
        line += f" pruned at epoch {len(history)}" + (f" ({message})" if message else "")
    elif status == store.COMPLETED and isinstance(score, float) and math.isfinite(score):
        line += f" {scoring} {score:.4g}"
    else:  # a fit that failed or crashed: its folder, where its meta.json says the rest
        line += f" {fit.folder}: {status}" + (f" ({message})" if message else "")
    return line + (f" · best so far {best:.4g}" if best is not None else "")


def _pruned(frame):
    """The rows of settings that were pruned."""
    return frame["status"].str.contains(str(store.PRUNED), regex=False)


def _directions(run_dir: Path) -> dict[str, str]:
    """The metric directions a trial recorded (empty when it recorded none)."""
    try:
        return store.read_json(run_dir / store.METRICS).get("directions") or {}
    except DlrunError:
        return {}


# The signal (SIGTERM or SIGHUP: train.life.STOPPING, as for a run) that stopped the sweep.
# Kept beside the exception, not in its type: Ray's blocking calls turn whatever a signal
# handler raised into a plain KeyboardInterrupt.
_terminated: list[int] = []


def _raise_stop(signum, frame):
    """SIGTERM or SIGHUP in the sweep's parent is handled like Ctrl-C."""
    for stopping in STOPPING:  # once: a second must not cut the stop short
        signal.signal(stopping, signal.SIG_IGN)
    _terminated.append(signum)
    raise KeyboardInterrupt
