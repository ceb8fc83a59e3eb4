"""A sweep's results: cv_results.csv as scikit-learn writes it, the lecture's pivot, and the
refit of the best setting on the whole training split."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from dlrun import store
from dlrun.errors import RunError
from dlrun.model.metrics import FITTED, MAX, higher_is_better, mode
from dlrun.spec.loading import validate
from dlrun.sweep.plan import Setting, Sweep
from dlrun.sweep.schema import BEST_SPEC, REFIT


def returned_epoch(
    rows: list[dict], epochs: int, stopping: dict | None, directions: dict[str, str]
) -> tuple[int, int]:
    """(the epoch a fit of `epochs` epochs ends at, the epoch whose weights it returns).

    Without early stopping both are the last epoch. With it, Keras' EarlyStopping is replayed
    on the rows: it ends the fit once `patience` epochs in a row failed to improve by
    `min_delta`, and with restore_best_weights it puts back the best epoch's weights at the end
    of every fit, stopped or not. A fit trained longer (a grid over training.epochs) has the
    same rows up to `epochs`, so this is what a separate fit of `epochs` epochs returns.
    Finetuning restarts early stopping: the last stage's rows count.
    """
    done = [row for row in rows if row["epoch"] <= epochs]
    if not done:
        return 0, 0
    if stopping is None:
        return epochs, epochs
    stage = done[-1].get("stage")
    done = [row for row in done if row.get("stage") == stage]
    monitor, delta = stopping["monitor"], stopping["min_delta"]
    higher = mode(monitor, stopping["mode"], directions) == MAX
    best = best_epoch = None
    wait, end = 0, epochs
    for row in done:
        value = row.get(monitor)
        if value is None:
            continue
        best_epoch = best_epoch or row["epoch"]  # Keras keeps the first epoch's weights
        wait += 1
        if best is None or (value - delta > best if higher else value + delta < best):
            best, best_epoch, wait = value, row["epoch"], 0
        elif wait >= stopping["patience"] and row["epoch"] > 1:
            end = row["epoch"]
            break
    restored = stopping["restore_best_weights"] and best_epoch is not None
    return end, best_epoch if restored else end


def score_setting(
    sweep: Sweep,
    setting: Setting,
    outcomes: dict[str, tuple[str, list[dict], str | None]],
    directions: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One row of cv_results: a setting's scores on each of its fits (split0, split1, ...,
    repeat by repeat and fold by fold), their mean and spread, its epochs and status.

    Each fit is scored on the model a separate fit of the setting's epochs returns
    (returned_epoch: with early stopping, where it stopped, and the best epoch's weights
    when it restores them); its train score is that model's score on its training split
    (return_train_score). A setting that was pruned has each fit scored at the epoch it was
    pruned at, and their mean, what the pruner judged (ranked after the settings that trained
    in full); a fit of it that never started has no score, and no epochs in epochs_trained.
    """
    scoring, epochs = sweep.spec.scoring, setting.epochs
    stopping = sweep.early_stopping(setting.values)
    row: dict[str, Any] = {f"param_{k}": v for k, v in setting.values.items()}
    tests, trains, times, statuses, trained = [], [], [], [], []
    found = [outcomes.get(fit.folder, (store.FAILED, [], None)) for fit in setting.fits]
    # A pruned setting was judged on the mean over its fits at the epoch it was stopped at
    # (its fits that trained on meanwhile, fewer workers than fits, included): each is scored
    # there, the quantity the pruner saw.
    stops = [len(h) for status, h, _ in found if status == store.PRUNED and h]
    pruned_at = min(stops) if stops else None
    for index, (status, history, _) in enumerate(found):
        done = [r for r in history if r["epoch"] <= epochs]
        # A diverged fit's last row is the epoch that diverged (its weights were not kept):
        # nothing is scored there or after it, its val_accuracy finite or not (NaN weights
        # predict one class). Before it, the fit is what a separate fit of fewer epochs is.
        diverged_at = history[-1]["epoch"] if status == store.DIVERGED and history else None
        if pruned_at is not None:
            ok, returned = len(done) >= pruned_at, pruned_at
        else:
            end, returned = returned_epoch(history, epochs, stopping, directions or {})
            ok = bool(done) and len(done) >= end and status in (store.COMPLETED, store.DIVERGED)
            if len(done) < end:
                returned = len(done)
            done = done[:end]
        scored = done[returned - 1] if ok and returned else {}
        if diverged_at is not None and scored and scored["epoch"] >= diverged_at:
            scored = {}
        test = scored.get(f"val_{scoring}", math.nan)
        train = scored.get(f"{FITTED}{scoring}", math.nan)
        ok = ok and math.isfinite(test)
        tests.append(test if ok else math.nan)
        trains.append(train if ok else math.nan)
        times.append(sum(r.get("epoch_seconds", 0.0) for r in done))
        if done or status != store.PRUNED:  # a fit of a pruned setting that never started
            trained.append(len(history) if pruned_at is not None else len(done))
        statuses.append(status if status != store.COMPLETED or ok else store.DIVERGED)
        row[f"split{index}_test_score"] = tests[-1]
    if sweep.spec.return_train_score:
        for index, value in enumerate(trains):
            row[f"split{index}_train_score"] = value
    pruned = store.PRUNED in statuses
    mean, std = (_nanmean, _nanstd) if pruned else (np.mean, np.std)
    row["mean_test_score"] = float(mean(tests))
    row["std_test_score"] = float(std(tests))
    if sweep.spec.return_train_score:
        row["mean_train_score"] = float(mean(trains))
        row["std_train_score"] = float(std(trains))
    row["mean_fit_time"] = float(np.mean(times))
    # The epochs each fit trained, over the fits that did (never a fit that never started).
    trained = trained or [0]
    row["epochs_trained"] = trained[0] if len(set(trained)) == 1 else float(np.mean(trained))
    row["status"] = ",".join(sorted(set(map(str, statuses))))
    return row


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _nanstd(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.std(finite)) if finite else math.nan


def results_table(
    sweep: Sweep,
    outcomes: dict[str, tuple[str, list[dict], str | None]],
    directions: dict[str, str] | None = None,
    rows: list[Setting] | None = None,
):
    """GridSearchCV's cv_results_ as a DataFrame: one row per parameter setting, plus
    `epochs_trained` and `status`.

    `rows` are the settings (grid and random: sweep.rows(); tpe and cmaes: those asked for).
    `directions` (recorded by the trials) say whether the scoring metric is maximised. With
    repeats, the splits are every (repeat, fold) pair, as RepeatedStratifiedKFold's are.
    """
    import pandas as pd

    rows = sweep.rows() if rows is None else rows
    frame = pd.DataFrame([score_setting(sweep, setting, outcomes, directions) for setting in rows])
    higher = higher_is_better(sweep.spec.scoring, directions)
    if frame.empty:
        return frame
    for key in rows[0].values:  # as given: pandas makes [null, 300] a column of floats
        frame[f"param_{key}"] = pd.Series([s.values.get(key) for s in rows], dtype=object)
    scores = frame["mean_test_score"] if higher else -frame["mean_test_score"]
    pruned = frame["status"].str.contains(str(store.PRUNED), regex=False)
    full = scores.notna() & ~pruned
    rank = pd.Series(float(len(frame)), index=frame.index)
    rank[full] = scores[full].rank(ascending=False, method="min")
    rank[scores.notna() & pruned] = int(full.sum()) + scores[pruned].rank(
        ascending=False, method="min"
    )
    frame["rank_test_score"] = rank.fillna(len(frame)).astype(int)
    if (frame["epochs_trained"] % 1 == 0).all():  # whole epochs unless a setting's fits differ
        frame["epochs_trained"] = frame["epochs_trained"].astype(int)
    order = [c for c in frame.columns if c.startswith("param_")]
    order += [c for c in frame.columns if c.startswith("split") and "test" in c]
    order += ["mean_test_score", "std_test_score", "rank_test_score"]
    order += [c for c in frame.columns if c.startswith("split") and "train" in c]
    if sweep.spec.return_train_score:
        order += ["mean_train_score", "std_train_score"]
    order += ["mean_fit_time", "epochs_trained", "status"]
    return frame[order]


def refit_spec(best_raw: dict) -> dict:
    """The refit's spec: the best setting, trained as each of its fits was.

    Without early stopping, on the whole training split. With it, early stopping needs the
    validation split it watched in the fits (the base's), and the test score is that of the
    model it returns: best.keras follows its monitor when it restores the best weights.
    """
    raw = json.loads(json.dumps(best_raw))
    stopping = raw["training"].get("early_stopping")
    if stopping is None:
        raw["training"]["validation_split"] = 0.0
        # No validation data: best.keras follows the training loss, which is minimised
        # whatever the base's checkpoint mode was (max for val_accuracy keeps the worst epoch).
        raw["training"]["checkpoint"] = {"monitor": "loss", "mode": "min"}
    elif stopping["restore_best_weights"]:
        raw["training"]["checkpoint"] = {"monitor": stopping["monitor"], "mode": stopping["mode"]}
    return raw


def refit_data(best_raw: dict) -> str:
    """What the refit trains on, in words."""
    if best_raw["training"].get("early_stopping") is None:
        return "the whole training split"
    return "the training split less the validation split that early stopping watches"


def refit(best_raw: dict, sweep_dir: Path, console) -> dict:
    """The best setting trained again (refit_spec), scored on the test split."""
    from rich.console import Console

    from dlrun.train import runner

    raw = refit_spec(best_raw)
    spec = validate(raw, BEST_SPEC)
    run_dir = sweep_dir / REFIT
    if run_dir.is_symlink():  # another run's scores must not pass as this sweep's refit
        raise RunError(f"{run_dir}: is a symlink; refusing to read or write out of the sweep")
    if (run_dir / store.META).exists() and store.open_run(run_dir).status == store.COMPLETED:
        return store.open_run(run_dir).metrics.get("test", {})
    store.remove_unstarted(run_dir)  # a refit that did not complete starts again
    quiet = Console(quiet=True)
    command = ["dlrun", "sweep", "refit"]
    outcome = runner.train(spec, sweep_dir, quiet, command, (), REFIT, track=False)
    return outcome.metrics.get("test", {})


TOP = 10  # the rows a tpe or cmaes sweep prints, best first


def pivot(frame, scoring: str, adaptive: bool = False):
    """The lecture's view: parameters as the index, mean test and train scores, best marked.

    `adaptive` (tpe, cmaes): the best TOP settings by rank, with their epochs and status.
    """
    params = [c for c in frame.columns if c.startswith("param_")]
    frame = frame.copy()
    for column in params:  # mappings (a grid over optimizers) cannot be index values
        frame[column] = frame[column].map(
            lambda v: json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v
        )
    columns = ["mean_test_score", "std_test_score", "mean_train_score", "rank_test_score"]
    if "mean_train_score" not in frame:  # return_train_score: false
        columns.remove("mean_train_score")
    if not ("std_test_score" in frame and (frame["std_test_score"].fillna(0) > 0).any()):
        columns.remove("std_test_score")  # one fit a setting: no spread to show
    if adaptive:
        frame = frame.sort_values("rank_test_score", kind="stable").head(TOP)
        frame.insert(0, "fit", [f"fit{n:03d}" for n in frame.index])
        params = ["fit", *params]
        columns += ["epochs_trained", "status"]
    table = frame.set_index(params)[columns]
    table.index.names = [name.removeprefix("param_") for name in params]
    table = table.rename(columns={"rank_test_score": "rank"})
    table["best"] = np.where(table["rank"] == 1, "<- best", "")
    return table
