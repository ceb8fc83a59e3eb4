"""Sweeps off the lecture's path: early stopping, any scoring metric, mapping values, --set."""

import json

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from conftest import CONFIGS, TINY_SPEC, run_dirs
from dlrun import sweep as sweeps
from dlrun.cli import app

runner = CliRunner()
# Macro F1 (maximised), early stopping that ends every fit after its second epoch (no epoch
# improves val_loss by 10), a grid over mappings (optimizers) beside epochs, and a base whose
# checkpoint maximises val_accuracy: the refit must not carry that mode over to `loss`.
STOPPING_SPEC = (
    TINY_SPEC
    + """\
  checkpoint: {monitor: val_accuracy, mode: max}
  early_stopping: {monitor: val_loss, patience: 0, min_delta: 10, restore_best_weights: false}
compile:
  metrics: [accuracy, {type: F1Score, average: macro}]
"""
)
STOPPING_SWEEP = """\
base: tiny.yaml
name: stops
grid:
  compile.optimizer: [{type: adam, learning_rate: 0.01}, {type: sgd, learning_rate: 0.01}]
  training.epochs: [1, 5]
cv: 0
scoring: f1_score
"""


@pytest.fixture(scope="module")
def stopping_sweep(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stopping")
    (folder / "tiny.yaml").write_text(STOPPING_SPEC)
    (folder / "sweep.yaml").write_text(STOPPING_SWEEP)
    result = runner.invoke(app, ["sweep", str(folder / "sweep.yaml"), "--runs-dir", str(folder)])
    assert result.exit_code == 0, result.output
    (sweep_dir,) = run_dirs(folder)
    return sweep_dir, pd.read_csv(sweep_dir / "cv_results.csv"), result.output


def test_a_fit_stopped_early_is_scored_where_it_stopped(stopping_sweep):
    sweep_dir, frame, _ = stopping_sweep
    assert (frame["status"] == "completed").all(), frame
    for number in (0, 1):
        rows = pd.read_csv(sweep_dir / "trials" / f"fit{number:03d}" / "history.csv")
        assert len(rows) == 2  # stopped by early stopping, not trained to 5
        stopped = frame.iloc[2 * number + 1]  # the setting with training.epochs 5
        assert stopped["param_training.epochs"] == 5
        assert stopped["mean_test_score"] == pytest.approx(rows["val_f1_score"].iloc[-1])


def test_scoring_by_a_maximised_metric_ranks_the_highest_first(stopping_sweep):
    _, frame, _ = stopping_sweep
    winner = frame.loc[frame["rank_test_score"] == 1, "mean_test_score"].iloc[0]
    assert winner == frame["mean_test_score"].max()
    assert winner > frame["mean_test_score"].min()


def test_pivot_with_mapping_values_prints(stopping_sweep):
    _, _, output = stopping_sweep
    assert "mean f1_score over the folds" in output
    assert '"learning_rate": 0.01, "type": "sgd"' in output
    assert "<- best" in output


def test_refit_stops_early_as_the_fits_did_and_keeps_the_base_checkpoint(stopping_sweep):
    """Early stopping without restore_best_weights: the refit keeps the validation split it
    watches and the base's checkpoint (val_accuracy, max), whose best epoch it is scored on."""
    sweep_dir, _, _ = stopping_sweep
    refit = sweep_dir / "refit"
    training = yaml.safe_load((refit / "config.yaml").read_text())["training"]
    base = yaml.safe_load((sweep_dir / "base.yaml").read_text())["training"]
    assert training["early_stopping"] == base["early_stopping"]
    assert training["validation_split"] == base["validation_split"]
    assert training["checkpoint"] == {"monitor": "val_accuracy", "mode": "max"}
    history = pd.read_csv(refit / "history.csv")
    recorded = json.loads((refit / "metrics.json").read_text())
    assert len(history) == 2  # stopped by early stopping, as its fits were
    assert recorded["best_epoch"] == int(history.loc[history["val_accuracy"].idxmax(), "epoch"])


def test_sweep_set_points_the_shipped_sweep_at_offline_data(tmp_path):
    path = CONFIGS / "sweep_hidden_epochs.yaml"
    sweep, sweep_dir = sweeps.start(path, tmp_path, ["data.dataset=mnist_5k"])
    assert yaml.safe_load((sweep_dir / "base.yaml").read_text())["data"]["dataset"] == "mnist_5k"
    trial = sweep.trial_spec(sweep.fits()[0].params, 0, 1)
    assert trial.data.dataset == "mnist_5k"
    # On the command line: a bad key is named, nothing is made.
    result = runner.invoke(
        app, ["sweep", str(path), "--set", "data.datset=digits", "--runs-dir", str(tmp_path / "r")]
    )
    assert result.exit_code == 2, result.output
    assert "datset" in result.output and "did you mean 'dataset'" in result.output
    assert run_dirs(tmp_path / "r") == []


def test_a_grid_over_the_data_set_trains_on_each(tmp_path):
    # The base names MNIST, which cannot be downloaded here: only the grid's data sets count.
    base = TINY_SPEC.replace("  epochs: 2", "  epochs: 1").replace("digits", "mnist")
    (tmp_path / "tiny.yaml").write_text(base)
    (tmp_path / "sweep.yaml").write_text(
        "base: tiny.yaml\ngrid:\n  data.dataset: [digits, mnist_5k]\ncv: 2\nrefit: false\n"
    )
    result = runner.invoke(
        app, ["sweep", str(tmp_path / "sweep.yaml"), "--runs-dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    (sweep_dir,) = run_dirs(tmp_path)
    inputs = {}
    for trial in sorted((sweep_dir / "trials").iterdir()):
        dataset = yaml.safe_load((trial / "config.yaml").read_text())["data"]["dataset"]
        inputs.setdefault(dataset, set()).add(
            json.loads((trial / "metrics.json").read_text())["params"]
        )
    # 64 digits pixels or 784 MNIST pixels into 16 units: different parameter counts.
    assert inputs == {"digits": {64 * 16 + 16 + 16 * 10 + 10}, "mnist_5k": {784 * 16 + 16 + 170}}
