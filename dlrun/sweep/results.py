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
from dlrun.model.metrics import higher_is_better
from dlrun.spec.loading import validate
from dlrun.sweep.plan import Setting, Sweep
from dlrun.sweep.schema import BEST_SPEC, REFIT


def score_setting(
    sweep: Sweep, setting: Setting, outcomes: dict[str, tuple[str, list[dict], str | None]]
) -> dict[str, Any]:
    """One row of cv_results: a setting's scores on each of its fits (split0, split1, ...,
    repeat by repeat and fold by fold), their mean and spread, its epochs and status.

    A fit that early stopping ended before the setting's epochs is scored where it stopped:
    that is the model such a fit gives. A pruned fit is scored at its last epoch; a setting
    that was pruned has the mean of its fits' last scores (ranked after the settings that
    trained in full), and a fit of it that never started has no score.
    """
    scoring, epochs = sweep.spec.scoring, setting.epochs
    row: dict[str, Any] = {f"param_{k}": v for k, v in setting.values.items()}
    tests, trains, times, statuses, trained = [], [], [], [], []
    for index, fit in enumerate(setting.fits):
        status, history, _ = outcomes.get(fit.folder, (store.FAILED, [], None))
        done = [r for r in history if r["epoch"] <= epochs]
        if status == store.PRUNED:
            ok = bool(done)
        else:
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
        trained.append(len(done))
        statuses.append(status if status != store.COMPLETED or ok else store.DIVERGED)
        row[f"split{index}_test_score"] = tests[-1]
    for index, value in enumerate(trains):
        row[f"split{index}_train_score"] = value
    pruned = store.PRUNED in statuses
    mean, std = (_nanmean, _nanstd) if pruned else (np.mean, np.std)
    row["mean_test_score"] = float(mean(tests))
    row["std_test_score"] = float(std(tests))
    row["mean_train_score"] = float(mean(trains))
    row["std_train_score"] = float(std(trains))
    row["mean_fit_time"] = float(np.mean(times))
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
    frame = pd.DataFrame([score_setting(sweep, setting, outcomes) for setting in rows])
    higher = higher_is_better(sweep.spec.scoring, directions)
    if frame.empty:
        return frame
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
    order += ["mean_train_score", "std_train_score", "mean_fit_time", "epochs_trained", "status"]
    return frame[order]


def plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def refit(best_raw: dict, sweep_dir: Path, console) -> dict:
    """The best setting trained on the whole training split, scored on the test split."""
    from rich.console import Console

    from dlrun.train import runner

    raw = json.loads(json.dumps(best_raw))
    raw["training"]["validation_split"] = 0.0
    raw["training"]["early_stopping"] = None
    # No validation data: best.keras follows the training loss, which is minimised whatever
    # the base's checkpoint mode was (max for val_accuracy would keep the worst epoch).
    raw["training"]["checkpoint"] = {"monitor": "loss", "mode": "min"}
    spec = validate(raw, BEST_SPEC)
    run_dir = sweep_dir / REFIT
    if run_dir.is_symlink():  # another run's scores must not pass as this sweep's refit
        raise RunError(f"{run_dir}: is a symlink; refusing to read or write out of the sweep")
    if (run_dir / store.META).exists() and store.open_run(run_dir).status == store.COMPLETED:
        return store.open_run(run_dir).metrics.get("test", {})
    store.remove_unstarted(run_dir)  # a refit that did not complete starts again
    quiet = Console(quiet=True)
    outcome = runner.train(spec, sweep_dir, quiet, ["dlrun", "sweep", "refit"], (), REFIT)
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
