"""`dlrun train` end to end: the lecture's configs for one epoch, and every file of a run."""

import json

import keras
import pandas as pd
import pytest
import tensorflow as tf
import yaml
from typer.testing import CliRunner

from conftest import CONFIGS, run_dirs
from dlrun.cli import app
from dlrun.spec.loading import load_spec

runner = CliRunner()
FAST = ["--set", "data.dataset=mnist_5k", "--set", "training.epochs=1"]
# The counts the lecture states for its models (batch norm: 784*512 + 4*512 + 512*128 + 4*128
# + 128*10 + 10, the Dense layers before BatchNormalization having no bias).
PARAMS = {
    "mnist_dense": 25_450,
    "mnist_dropout": 669_706,
    "mnist_batchnorm": 470_794,
    "mnist_cnn": 61_482,
    "quickstart": 25_450,
}


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_validate_prints_the_summary_and_parameter_count(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["validate", str(CONFIGS / f"{name}.yaml")])
    assert result.exit_code == 0, result.output
    assert f"Total params: {PARAMS[name]:,}" in result.stdout
    assert result.stdout.rstrip().endswith(f"valid; {PARAMS[name]:,} parameters")
    assert list(tmp_path.iterdir()) == []  # validate writes nothing


def event_tags(folder):
    tags = set()
    for path in folder.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags |= {value.tag for value in event.summary.value}
    return tags


@pytest.mark.parametrize("name", ["mnist_dense", "mnist_dropout", "mnist_batchnorm", "mnist_cnn"])
def test_lecture_config_trains_and_records_every_file(name, tmp_path):
    runs = tmp_path / "runs"
    result = runner.invoke(
        app, ["train", str(CONFIGS / f"{name}.yaml"), *FAST, "--runs-dir", str(runs)]
    )
    assert result.exit_code == 0, result.output
    (run,) = run_dirs(runs)
    spec_name = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())["name"]
    assert run.name.startswith(f"{spec_name}-")
    assert f"run folder: {run}" in result.stdout
    assert "epoch 1/1  " in result.stdout  # one plain line per epoch off a terminal

    config = load_spec(run / "config.yaml")  # the resolved spec is itself a valid spec
    assert config.data.dataset == "mnist_5k" and config.training.epochs == 1

    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "completed"
    assert meta["pid"] > 0 and meta["started"] <= meta["ended"]
    assert meta["command"] == [
        "dlrun",
        "train",
        str(CONFIGS / f"{name}.yaml"),
        "--set=data.dataset=mnist_5k",
        "--set=training.epochs=1",
        f"--runs-dir={runs}",
    ]
    assert set(meta["versions"]) == {"python", "tensorflow", "keras", "dlrun"}
    assert meta["devices"] and meta["seed"] == 0 and meta["epochs_done"] == 1

    assert f"Total params: {PARAMS[name]:,}" in (run / "summary.txt").read_text()

    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == [1]
    for column in [
        "loss",
        "accuracy",
        "val_loss",
        "val_accuracy",
        "learning_rate",
        "epoch_seconds",
    ]:
        assert column in history.columns

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["params"] == PARAMS[name]
    assert metrics["best_epoch"] == 1 and metrics["monitor"] == "val_loss"
    assert metrics["best_value"] == pytest.approx(history["val_loss"][0])
    assert set(metrics["test"]) == {"loss", "accuracy"}
    assert 0.3 < metrics["test"]["accuracy"] <= 1.0  # one epoch on 4,000 digits learns something
    assert metrics["train_seconds"] > 0 and metrics["samples_per_second"] > 0

    for checkpoint in ["best.keras", "last.keras"]:
        model = keras.models.load_model(run / "checkpoints" / checkpoint, safe_mode=True)
        assert model.count_params() == PARAMS[name]

    train_tags = event_tags(run / "tensorboard" / "train")
    assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate", "keras"} <= train_tags
    assert any(tag.endswith("/kernel/histogram") for tag in train_tags)
    assert {"epoch_loss", "epoch_accuracy"} <= event_tags(run / "tensorboard" / "validation")

    png = (run / "plots" / "history.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5_000


def test_resolved_config_alone_reproduces_the_run(tiny_spec, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    args = ["--set", "training.deterministic=true"]
    assert (
        runner.invoke(app, ["train", str(tiny_spec), *args, "--runs-dir", str(first)]).exit_code
        == 0
    )
    (run,) = run_dirs(first)
    result = runner.invoke(app, ["train", str(run / "config.yaml"), "--runs-dir", str(second)])
    assert result.exit_code == 0, result.output
    (again,) = run_dirs(second)
    columns = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
    pd.testing.assert_frame_equal(
        pd.read_csv(run / "history.csv")[columns], pd.read_csv(again / "history.csv")[columns]
    )


def test_same_name_same_second_gets_a_suffix(tiny_spec, tmp_path):
    from datetime import datetime

    from dlrun.store import create_run_dir

    now = datetime(2026, 1, 2, 3, 4, 5)
    paths = [create_run_dir(tmp_path, "tiny", now) for _ in range(3)]
    assert [p.name for p in paths] == [
        "tiny-20260102-030405",
        "tiny-20260102-030405-2",
        "tiny-20260102-030405-3",
    ]


def test_runs_dir_from_environment(tiny_spec, tmp_path, monkeypatch):
    monkeypatch.setenv("DLRUN_RUNS_DIR", str(tmp_path / "elsewhere"))
    result = runner.invoke(app, ["train", str(tiny_spec), "--set", "training.epochs=1"])
    assert result.exit_code == 0, result.output
    assert len(run_dirs(tmp_path / "elsewhere")) == 1


def test_training_and_scoring_pipelines_run_without_tf_data_autotuning():
    """bench/run.py found 4 to 5 s after the last epoch of a third of the CNN's fits: the
    training iterator's destructor waiting on tf.data's autotuning thread. Every pipeline dlrun
    fits or scores on is built without that thread, and still holds every batch."""
    import numpy as np

    from dlrun.backend import tensorflow
    from dlrun.data import feed as data

    tensorflow()
    x = np.arange(30, dtype="float32").reshape(10, 3)
    y = np.eye(2, dtype="float32")[np.arange(10) % 2]
    stream = data.shuffled_epochs(x, y, batch_size=4, seed=0, first_epoch=0, epochs=2)
    ordered = data.pipeline(x, y, batch_size=4)
    for dataset in (stream, ordered):
        assert dataset.options().autotune.enabled is False
    assert [len(batch[0]) for batch in stream] == [4, 4, 2, 4, 4, 2]
    assert np.array_equal(np.concatenate([batch[0] for batch in ordered]), x)
