"""A sweep's numbers against what separate fits give: early stopping's restored epoch, the
train scores of the fitted model, a grid mixing null with integers, and the refit."""

import json
import math

import keras
import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from conftest import TINY_SPEC, run_dirs
from dlrun.cli import app
from dlrun.data.arrays import load_data
from dlrun.spec.loading import load_spec

runner = CliRunner()
# A learning rate high enough that val_loss turns up again before the sixth epoch, and early
# stopping (restore_best_weights, dlrun's default) patient enough not to stop there.
BASE = (
    TINY_SPEC
    + """\
  deterministic: true
  early_stopping: {monitor: val_loss, patience: 2}
compile:
  optimizer: {type: adam, learning_rate: 0.05}
"""
)
SWEEP = """\
base: tiny.yaml
name: numbers
grid:
  data.limit: [null, 300]
  training.epochs: [3, 6]
cv: 0
workers: 1
return_train_score: true
"""


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    folder = tmp_path_factory.mktemp("numbers")
    (folder / "tiny.yaml").write_text(BASE)
    (folder / "sweep.yaml").write_text(SWEEP)
    result = runner.invoke(app, ["sweep", str(folder / "sweep.yaml"), "--runs-dir", str(folder)])
    assert result.exit_code == 0, result.output
    (sweep_dir,) = [p for p in run_dirs(folder) if p.name.startswith("numbers-")]
    frame = pd.read_csv(sweep_dir / "cv_results.csv", keep_default_na=False)
    return folder, sweep_dir, frame, result.output


def row_of(frame, limit: str, epochs: int):
    rows = frame[(frame["param_data.limit"] == limit) & (frame["param_training.epochs"] == epochs)]
    (index,) = rows.index
    return rows.loc[index]


def test_a_grid_mixing_null_with_integers_writes_best_and_refit_and_resumes(swept):
    folder, sweep_dir, frame, output = swept
    # cv_results.csv holds the values as given: 300, not 300.0; null as an empty cell.
    assert sorted(set(frame["param_data.limit"])) == ["", "300"]
    best = yaml.safe_load((sweep_dir / "best.yaml").read_text())
    winner = frame[frame["rank_test_score"] == 1].iloc[0]
    expected = None if winner["param_data.limit"] == "" else int(winner["param_data.limit"])
    assert best["data"]["limit"] == expected
    assert best["training"]["epochs"] == winner["param_training.epochs"]
    assert json.loads((sweep_dir / "refit" / "meta.json").read_text())["status"] == "completed"
    # --resume reads the same fits back and takes the winner from the plan again.
    (sweep_dir / "best.yaml").unlink()
    (sweep_dir / "cv_results.csv").unlink()
    result = runner.invoke(app, ["sweep", "--resume", str(sweep_dir)])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((sweep_dir / "best.yaml").read_text()) == best
    assert pd.read_csv(sweep_dir / "cv_results.csv", keep_default_na=False).equals(frame)


def test_fold_scores_are_those_of_separate_fits_with_early_stopping(swept):
    folder, sweep_dir, frame, _ = swept
    separate = folder / "separate"
    result = runner.invoke(
        app,
        ["train", str(folder / "tiny.yaml"), "--set", "training.epochs=6"]
        + ["--runs-dir", str(separate)],
    )
    assert result.exit_code == 0, result.output
    (run,) = run_dirs(separate)
    history = pd.read_csv(run / "history.csv")
    metrics = json.loads((run / "metrics.json").read_text())
    # The separate fit trained six epochs and keeps (restores) an earlier, better one.
    assert len(history) == 6 and metrics["best_epoch"] < 6
    kept = history[history["epoch"] == metrics["best_epoch"]].iloc[0]
    assert row_of(frame, "", 6)["split0_test_score"] == pytest.approx(
        kept["val_accuracy"], abs=1e-6
    )
    # The sweep's fit is the same fit: three epochs of it are a separate three-epoch fit.
    trial = pd.read_csv(sweep_dir / "trials" / "fit000" / "history.csv")
    assert np.allclose(trial["val_loss"], history["val_loss"], atol=1e-6)
    first3 = trial[trial["epoch"] <= 3]
    kept3 = first3.loc[first3["val_loss"].idxmin()]
    assert row_of(frame, "", 3)["split0_test_score"] == pytest.approx(kept3["val_accuracy"])


def test_train_scores_are_the_fitted_models_scores_on_its_training_split(swept):
    folder, sweep_dir, frame, _ = swept
    trial = sweep_dir / "trials" / "fit000"
    # best.keras is the epoch early stopping restores at the end of the six-epoch fit.
    model = keras.saving.load_model(trial / "checkpoints" / "best.keras")
    spec = load_spec(folder / "tiny.yaml")
    data = load_data(spec)
    assert len(data.x_train) == 1437 - len(data.x_val)
    by_hand = model.evaluate(data.x_train, data.y_train, batch_size=64, verbose=0)[1]
    assert row_of(frame, "", 6)["split0_train_score"] == pytest.approx(by_hand, abs=1e-6)
    assert row_of(frame, "", 6)["mean_train_score"] == pytest.approx(by_hand, abs=1e-6)
    # Not the running mean Keras logs during an epoch.
    history = pd.read_csv(trial / "history.csv")
    best_epoch = json.loads((trial / "metrics.json").read_text())["best_epoch"]
    running = history[history["epoch"] == best_epoch]["accuracy"].iloc[0]
    assert abs(running - by_hand) > 1e-4


def test_the_refit_stops_early_as_the_fits_did(swept):
    folder, sweep_dir, _, output = swept
    config = yaml.safe_load((sweep_dir / "refit" / "config.yaml").read_text())
    base = yaml.safe_load((sweep_dir / "base.yaml").read_text())
    assert config["training"]["early_stopping"] == base["training"]["early_stopping"]
    assert config["training"]["validation_split"] == base["training"]["validation_split"]
    # Its test score is the model early stopping returns: the best epoch on val_loss.
    assert config["training"]["checkpoint"]["monitor"] == "val_loss"
    history = pd.read_csv(sweep_dir / "refit" / "history.csv")
    recorded = json.loads((sweep_dir / "refit" / "metrics.json").read_text())
    assert recorded["best_epoch"] == int(history.loc[history["val_loss"].idxmin(), "epoch"])
    assert "refit on the training split less the validation split" in output


BROKEN = """
import importlib.util, json, sys
# As Ray sends it (by value): the module's code, without importing any dlrun first.
spec = importlib.util.spec_from_file_location("raytask", sys.argv[2])
raytask = importlib.util.module_from_spec(spec)
spec.loader.exec_module(raytask)
print(json.dumps(raytask.call(sys.argv[1], "dlrun.sweep.execute", "_run_fit", (), "tensorflow")))
"""


def test_a_ray_task_that_cannot_import_the_sweeps_dlrun_says_why(tmp_path):
    """The task runs in a worker whose dlrun (at the root the driver gave) fails to import: the
    import error itself comes back, not a guess about shared storage."""
    import subprocess
    import sys

    from conftest import ROOT

    (tmp_path / "dlrun").mkdir()
    (tmp_path / "dlrun" / "__init__.py").write_text("import secret_dependency_of_this_checkout\n")
    task = ROOT / "dlrun" / "sweep" / "raytask.py"
    done = subprocess.run(
        [sys.executable, "-P", "-c", BROKEN, str(tmp_path), str(task)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        "dlrun-import-failed",
        "ModuleNotFoundError: No module named 'secret_dependency_of_this_checkout'",
    ]


@pytest.mark.parametrize(
    "values, patience, min_delta, mode, restore",
    [
        ([0.9, 0.5, 0.6, 0.4, 0.45, 0.47, 0.3], 2, 0.0, "auto", True),
        ([0.9, 0.5, 0.6, 0.4, 0.45, 0.47, 0.3], 1, 0.0, "min", False),
        ([0.9, 0.85, 0.84, 0.7, 0.69, 0.5], 1, 0.05, "auto", True),
        ([0.1, 0.5, 0.4, 0.45, 0.6, 0.2, 0.1], 2, 0.0, "max", True),
        ([0.5, 0.5, 0.5], 0, 0.0, "auto", True),
    ],
)
def test_the_epoch_scored_is_the_one_keras_early_stopping_returns(
    values, patience, min_delta, mode, restore
):
    """returned_epoch replays early stopping on history rows: against Keras' own callback on
    the same values, for every requested number of epochs."""
    from dlrun.sweep.results import returned_epoch

    stopping = {
        "monitor": "val_loss",
        "patience": patience,
        "min_delta": min_delta,
        "mode": mode,
        "restore_best_weights": restore,
    }
    rows = [{"epoch": n + 1, "val_loss": value} for n, value in enumerate(values)]
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    for epochs in range(1, len(values) + 1):
        callback = keras.callbacks.EarlyStopping(**stopping)
        callback.set_model(model)
        model.stop_training = False
        callback.on_train_begin()
        end = epochs
        for epoch in range(epochs):
            callback.on_epoch_end(epoch, {"val_loss": values[epoch]})
            if model.stop_training:
                end = epoch + 1
                break
        kept = callback.best_epoch + 1 if restore else end
        assert returned_epoch(rows, epochs, stopping, {}) == (end, kept), epochs


def test_without_return_train_score_cv_results_has_no_train_columns(tmp_path):
    """GridSearchCV's default: train scores only when asked for."""
    from dlrun.sweep import load_sweep, results_table

    (tmp_path / "tiny.yaml").write_text(BASE)
    (tmp_path / "sweep.yaml").write_text(SWEEP.replace("return_train_score: true\n", ""))
    sweep = load_sweep(tmp_path / "sweep.yaml")
    history = [{"epoch": n, "val_accuracy": 0.5 + n / 20, "val_loss": 1 / n} for n in range(1, 7)]
    outcomes = {fit.folder: ("completed", history, None) for fit in sweep.fits()}
    frame = results_table(sweep, outcomes, {"val_loss": "min", "val_accuracy": "max"})
    assert not [column for column in frame.columns if column.endswith("_train_score")]
    assert list(frame["mean_test_score"]) == pytest.approx([0.65, 0.8, 0.65, 0.8])
    # A fit that ended short of its epochs without early stopping ending it has no score.
    short = {folder: ("completed", history[:4], None) for folder in outcomes}
    frame = results_table(sweep, short, {"val_loss": "min", "val_accuracy": "max"})
    assert list(frame["status"]) == ["completed", "diverged", "completed", "diverged"]


def test_a_fit_diverged_after_a_settings_epochs_keeps_that_settings_score(tmp_path):
    """One fit per data.limit trains to 6 epochs for the settings of 3 and of 6. It diverges
    in epoch 5 (its last row, recorded with a finite val_accuracy as NaN weights give). The
    settings of 3 epochs are scored as a separate fit of 3 epochs returns: early stopping's
    best epoch on val_loss, epoch 2 (patience 2, restore_best_weights); those of 6 have no
    score."""
    from dlrun.sweep import load_sweep, results_table

    (tmp_path / "tiny.yaml").write_text(BASE)
    (tmp_path / "sweep.yaml").write_text(SWEEP.replace("return_train_score: true\n", ""))
    sweep = load_sweep(tmp_path / "sweep.yaml")
    losses, accuracies = [0.5, 0.4, 0.45, 0.3], [0.55, 0.6, 0.65, 0.7]
    history = [
        {"epoch": n + 1, "val_accuracy": accuracy, "val_loss": loss}
        for n, (loss, accuracy) in enumerate(zip(losses, accuracies, strict=True))
    ]
    history.append({"epoch": 5, "val_accuracy": 0.1, "val_loss": math.nan})
    outcomes = {fit.folder: ("diverged", history, None) for fit in sweep.fits()}
    frame = results_table(sweep, outcomes, {"val_loss": "min", "val_accuracy": "max"})
    assert list(frame["param_training.epochs"]) == [3, 6, 3, 6]
    assert list(frame["mean_test_score"][[0, 2]]) == pytest.approx([0.6, 0.6])
    assert frame["mean_test_score"][[1, 3]].isna().all()
    assert list(frame["status"]) == ["diverged"] * 4


def test_a_fold_that_diverged_where_its_setting_was_pruned_is_not_scored_there(tmp_path):
    """Two folds of one setting: fold 0 pruned after epoch 2, fold 1 diverged in epoch 2
    (recorded with a finite val_accuracy). The setting is scored at epoch 2 on fold 0 alone:
    the pruner never saw fold 1's diverged epoch, and its weights were not kept."""
    from dlrun.sweep import load_sweep, results_table

    (tmp_path / "tiny.yaml").write_text(BASE)
    (tmp_path / "sweep.yaml").write_text(
        "base: tiny.yaml\nname: folds\ngrid:\n  data.limit: [null]\ncv: 2\nworkers: 1\n"
    )
    sweep = load_sweep(tmp_path / "sweep.yaml")
    pruned = [{"epoch": 1, "val_accuracy": 0.5, "val_loss": 1.0}]
    pruned.append({"epoch": 2, "val_accuracy": 0.6, "val_loss": 0.9})
    diverged = [{"epoch": 1, "val_accuracy": 0.55, "val_loss": 0.95}]
    diverged.append({"epoch": 2, "val_accuracy": 0.1, "val_loss": math.nan})
    first, second = (fit.folder for fit in sweep.fits())
    outcomes = {first: ("pruned", pruned, "pruned"), second: ("diverged", diverged, None)}
    frame = results_table(sweep, outcomes, {"val_loss": "min", "val_accuracy": "max"})
    assert frame["split0_test_score"][0] == pytest.approx(0.6)
    assert np.isnan(frame["split1_test_score"][0])
    assert frame["mean_test_score"][0] == pytest.approx(0.6)
