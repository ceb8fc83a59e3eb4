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
from dlrun.sweep.plan import Sweep
from dlrun.sweep.schema import BEST_SPEC, EPOCHS, REFIT


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
