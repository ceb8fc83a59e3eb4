"""dlrun sweep on real (tiny) trainings: results table, epoch reuse, resume, failures, bad files."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from conftest import TINY_SPEC, run_dirs
from dlrun.cli import app

runner = CliRunner()
GRID_SWEEP = """\
base: tiny.yaml
name: small
grid:
  model.layers.0.units: [8, 16]
  training.epochs: [1, 2]
cv: 2
workers: 2
return_train_score: true
"""
GRIDSEARCH_COLUMNS = [
    "param_model.layers.0.units",
    "param_training.epochs",
    "split0_test_score",
    "split1_test_score",
    "mean_test_score",
    "std_test_score",
    "rank_test_score",
    "split0_train_score",
    "split1_train_score",
    "mean_train_score",
    "std_train_score",
    "mean_fit_time",
    "epochs_trained",
    "status",
]


def write(tmp_path, sweep_text, spec_extra="  deterministic: true\n", epochs=2):
    spec = TINY_SPEC.replace("epochs: 2", f"epochs: {epochs}")
    (tmp_path / "tiny.yaml").write_text(spec + spec_extra)
    path = tmp_path / "sweep.yaml"
    path.write_text(sweep_text)
    return path


def sweep_results(path):
    """Run a sweep file through the CLI; its folder and cv_results.csv."""
    runs = path.parent / "runs"
    result = runner.invoke(app, ["sweep", str(path), "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    (sweep_dir,) = run_dirs(runs)
    return sweep_dir, pd.read_csv(sweep_dir / "cv_results.csv")


def history(run):
    return pd.read_csv(run / "history.csv")


@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("sweep")
    path = write(tmp_path, GRID_SWEEP)
    result = runner.invoke(app, ["sweep", str(path), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    (sweep_dir,) = run_dirs(tmp_path / "runs")
    return tmp_path, sweep_dir, result


def test_cv_results_has_gridsearchcv_columns_and_the_trials_own_scores(grid_sweep):
    tmp_path, sweep_dir, _ = grid_sweep
    frame = pd.read_csv(sweep_dir / "cv_results.csv")
    assert list(frame.columns) == GRIDSEARCH_COLUMNS
    assert len(frame) == 4 and set(frame["status"]) == {"completed"}
    # Two settings of units x two folds: four fits, each trained to the largest epochs.
    trials = run_dirs(sweep_dir / "trials")
    assert [t.name for t in trials] == [
        "fit000-fold0",
        "fit000-fold1",
        "fit001-fold0",
        "fit001-fold1",
    ]
    for trial in trials:
        config = yaml.safe_load((trial / "config.yaml").read_text())
        assert config["training"]["epochs"] == 2
        assert config["data"]["cv"] == {"folds": 2, "index": int(trial.name[-1])}
    for _, row in frame.iterrows():
        number = 0 if row["param_model.layers.0.units"] == 8 else 1
        epoch = row["param_training.epochs"]
        for fold in (0, 1):
            rows = history(sweep_dir / "trials" / f"fit{number:03d}-fold{fold}")
            at = rows[rows["epoch"] == epoch].iloc[0]
            assert row[f"split{fold}_test_score"] == pytest.approx(at["val_accuracy"], abs=1e-12)
            # GridSearchCV's train score: the fitted model on its training folds after the
            # epoch (fitted_accuracy), not the running mean Keras logs during it (accuracy).
            assert row[f"split{fold}_train_score"] == pytest.approx(
                at["fitted_accuracy"], abs=1e-12
            )
        tests = [row["split0_test_score"], row["split1_test_score"]]
        assert row["mean_test_score"] == pytest.approx(np.mean(tests))
        assert row["std_test_score"] == pytest.approx(np.std(tests))
    ranked = frame.sort_values("mean_test_score", ascending=False)
    assert list(ranked["rank_test_score"]) == [1, 2, 3, 4]


def test_best_spec_refit_and_pivot(grid_sweep):
    tmp_path, sweep_dir, result = grid_sweep
    frame = pd.read_csv(sweep_dir / "cv_results.csv")
    winner = frame[frame["rank_test_score"] == 1].iloc[0]
    best = yaml.safe_load((sweep_dir / "best.yaml").read_text())
    assert best["model"]["layers"][0]["units"] == winner["param_model.layers.0.units"]
    assert best["training"]["epochs"] == winner["param_training.epochs"]
    assert "cv" not in best["data"] or best["data"]["cv"] is None
    refit = json.loads((sweep_dir / "refit" / "meta.json").read_text())
    assert refit["status"] == "completed"
    test = json.loads((sweep_dir / "refit" / "metrics.json").read_text())["test"]
    assert f"accuracy {test['accuracy']:.4f}" in result.stdout
    assert "<- best" in result.stdout and "mean_test_score" in result.stdout
    # Every trial is an ordinary run: `dlrun runs` on the sweep's folder lists them all, under
    # the sweep's own row.
    listing = runner.invoke(app, ["runs", str(sweep_dir)])
    assert listing.exit_code == 0
    assert listing.stdout.count("│ completed") == 5
    assert listing.stdout.count("│ sweep completed") == 1


def test_epoch_reuse_equals_a_separate_fit(grid_sweep):
    tmp_path, sweep_dir, _ = grid_sweep
    frame = pd.read_csv(sweep_dir / "cv_results.csv")
    row = frame[
        (frame["param_model.layers.0.units"] == 16) & (frame["param_training.epochs"] == 1)
    ].iloc[0]
    separate = tmp_path / "separate"
    args = ["train", str(tmp_path / "tiny.yaml"), "--runs-dir", str(separate)]
    args += ["--set", "model.layers.0.units=16", "--set", "training.epochs=1"]
    args += ["--set", "data.cv={folds: 2, index: 1}"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (run,) = run_dirs(separate)
    assert history(run)["val_accuracy"][0] == row["split1_test_score"]


def test_random_search_draws_within_bounds(tmp_path):
    path = write(
        tmp_path,
        """\
base: tiny.yaml
random:
  n_iter: 3
  seed: 1
  space:
    model.layers.0.units: {randint: [4, 12]}
    compile.optimizer.learning_rate: {loguniform: [0.001, 0.01]}
cv: 2
workers: 1
refit: false
""",
        spec_extra="",
        epochs=1,  # the draws are checked, not the training
    )
    sweep_dir, frame = sweep_results(path)
    assert len(frame) == 3 and not (sweep_dir / "refit").exists()
    assert frame["param_model.layers.0.units"].between(4, 12).all()
    assert frame["param_compile.optimizer.learning_rate"].between(0.001, 0.01).all()
    for trial in run_dirs(sweep_dir / "trials"):
        config = yaml.safe_load((trial / "config.yaml").read_text())
        assert config["compile"]["optimizer"]["type"] == "adam"
        assert 0.001 <= config["compile"]["optimizer"]["learning_rate"] <= 0.01


def test_a_diverging_trial_is_recorded_and_the_sweep_goes_on(tmp_path):
    path = write(
        tmp_path,
        """\
base: tiny.yaml
grid:
  compile.optimizer: [{type: sgd, learning_rate: 1.0e+12}, {type: sgd, learning_rate: 0.1}]
cv: 2
workers: 1
refit: false
""",
        spec_extra="",
    )
    sweep_dir, frame = sweep_results(path)
    assert frame["status"].tolist() == ["diverged", "completed"]
    assert np.isnan(frame["mean_test_score"][0]) and np.isfinite(frame["mean_test_score"][1])
    assert frame["rank_test_score"].tolist() == [2, 1]


def test_a_fit_that_diverges_in_its_last_epoch_has_no_score(tmp_path):
    """The diverged epoch's row is in history.csv (as recorded), and its val_accuracy can be a
    finite number (NaN weights predict one class): the setting still has no score, as when
    it diverges earlier, and ranks last."""
    path = write(
        tmp_path,
        "base: tiny.yaml\ngrid:\n  compile.optimizer: [{type: sgd, learning_rate: 1.0e+12}, "
        "{type: sgd, learning_rate: 0.1}]\ncv: 0\nworkers: 1\nrefit: false\n",
        spec_extra="",
        epochs=1,
    )
    sweep_dir, frame = sweep_results(path)
    assert frame["status"].tolist() == ["diverged", "completed"]
    (row,) = history(sweep_dir / "trials" / "fit000").to_dict("records")
    assert row["epoch"] == 1 and np.isfinite(row["val_accuracy"])  # what was scored before
    assert np.isnan(frame["mean_test_score"][0]) and np.isfinite(frame["mean_test_score"][1])
    assert frame["rank_test_score"].tolist() == [2, 1]


def test_a_killed_sweep_resumes_without_retraining_finished_fits(tmp_path):
    # One worker, fits of 6 epochs: three fits still to train when the first has finished.
    path = write(
        tmp_path, GRID_SWEEP.replace("[1, 2]", "[1, 6]").replace("workers: 2", "workers: 1")
    )
    runs = tmp_path / "runs"
    process = subprocess.Popen(
        [sys.executable, "-m", "dlrun", "sweep", str(path), "--runs-dir", str(runs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        start_new_session=True,  # the workers too, when the group is killed
    )
    deadline = time.monotonic() + 120
    finished = []
    while time.monotonic() < deadline and not finished:
        assert process.poll() is None, process.communicate()
        finished = [
            m
            for m in runs.glob("*/trials/*/meta.json")
            if json.loads(m.read_text() or "{}").get("status") == "completed"
        ]
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    (sweep_dir,) = run_dirs(runs)
    assert not (sweep_dir / "cv_results.csv").exists()
    done = finished[0].parent
    before = json.loads((done / "meta.json").read_text())

    result = runner.invoke(app, ["sweep", "--resume", str(sweep_dir)])
    assert result.exit_code == 0, result.output
    assert json.loads((done / "meta.json").read_text()) == before  # not trained again
    frame = pd.read_csv(sweep_dir / "cv_results.csv")
    assert set(frame["status"]) == {"completed"} and len(frame) == 4


@pytest.mark.parametrize(
    "sweep_text, expected",
    [
        (
            "base: tiny.yaml\ngrid:\n  training.epochz: [1, 2]\n",
            "{path}:3: grid.training.epochz: no such key in the base spec tiny.yaml; "
            "did you mean 'training.epochs'?",
        ),
        (
            "base: tiny.yaml\ngrid:\n  training.epochs: []\n",
            "{path}:3: grid.training.epochs: expected at least one value, got []",
        ),
        (
            "base: tiny.yaml\ngrid:\n  training.epochs: [1, ten]\n",
            "{path}:3: grid.training.epochs: value 'ten': expected a whole number, got 'ten'",
        ),
        (
            "base: tiny.yaml\ngrid:\n  training.epochs: [1]\ncv: 1\n",
            "{path}:4: cv: 1 fold is not cross-validation; use 0 (validation split) or >= 2",
        ),
        (
            "base: tiny.yaml\ngrid:\n  training.epochs: [1]\ncv: 500\n",
            "{path}:4: cv: 500 folds need at least 500 samples of every class; "
            "the smallest class has 139",  # 80% of the 174 eights
        ),
        (
            "base: tiny.yaml\nrandom:\n  n_iter: 2\n  space:\n"
            "    training.epochs: {gauss: [1, 3]}\n",
            "{path}:5: random.space.training.epochs: unknown distribution 'gauss'; expected one "
            "of uniform, loguniform, randint, choice",
        ),
        (
            "base: nope.yaml\ngrid:\n  training.epochs: [1]\n",
            "{path}:1: base: no such file: {tmp}/nope.yaml",
        ),
        (
            "base: tiny.yaml\ntpe:\n  n_iter: 2\n  space:\n    training.epochs: [1, 2]\n"
            "prune: {method: grid}\n",
            "{path}:6: prune.method: 'grid' is a search, not a pruner; a pruner stops the "
            "losing fits of a tpe or cmaes search early: expected one of hyperband, asha, median",
        ),
        (
            "base: tiny.yaml\ngrid:\n  training.batch_size: [32, 64]\nprune: {method: hyperband}\n",
            "{path}:4: prune: prune goes with tpe or cmaes, which learn from the fits the pruner "
            "stops; grid plans every fit before any trains and trains each in full (give the "
            "same n_iter and space as tpe: to prune)",
        ),
        (
            "base: tiny.yaml\ngrid:\n  training.epochs: [1]\nrepeats: 0\n",
            "{path}:4: repeats: expected a number >= 1, got 0",
        ),
        (
            "base: tiny.yaml\ntpe:\n  n_iter: 2\n  space:\n"
            "    compile.optimizer.learning_rate: {loguniform: 0.01}\n",
            "{path}:5: tpe.space.compile.optimizer.learning_rate: loguniform needs [low, high] "
            "with low < high, got 0.01",
        ),
        (
            "base: tiny.yaml\ntpe:\n  n_iter: 2\n  space:\n    training.batch_size: 32\n",
            "{path}:5: tpe.space.training.batch_size: expected a list of values or one of "
            "{{uniform, loguniform, randint, choice: ...}}, got 32",
        ),
        (
            "base: tiny.yaml\ncmaes:\n  n_iter: 2\n  space:\n"
            "    training.batch_size: {choice: [32, 64]}\n",
            "{path}:5: cmaes.space.training.batch_size: cmaes searches numbers only (uniform, "
            "loguniform, randint); use tpe for a choice",
        ),
        (
            "base: tiny.yaml\ntpe:\n  n_iter: 2\n  space:\n    training.epochs: [1, 2]\n"
            "prune: {method: asha}\n",
            "{path}:5: tpe.space.training.epochs: the pruner decides how many epochs each fit "
            "trains; give the most in the base spec's training.epochs instead",
        ),
        (
            "base: tiny.yaml\ngrid:\n  training.epochs: [1]\nrandom:\n  n_iter: 1\n"
            "  space: {seed: [1]}\n",
            "{path}: give one search: grid, random, tpe or cmaes (got grid and random)",
        ),
    ],
    ids=[
        "unknown-path",
        "empty-list",
        "wrong-type",
        "cv-1",
        "cv-too-many",
        "distribution",
        "no-base",
        "prune-method-grid",
        "prune-with-grid",
        "repeats-0",
        "space-not-a-range",
        "space-not-a-list",
        "cmaes-choice",
        "prune-epochs",
        "two-searches",
    ],
)
def test_bad_sweep_files_exit_2_before_training(tmp_path, sweep_text, expected):
    path = write(tmp_path, sweep_text, spec_extra="")
    result = runner.invoke(app, ["sweep", str(path), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == ["Error: " + expected.format(path=path, tmp=tmp_path)]
    assert not (tmp_path / "runs").exists()
