"""`model.augment`: Keras' augmentation layers on the input, before the base where there is one.

They are random in training and the identity in inference, by Keras' own rule: a run trains
on changed images, and evaluate, features and attack score the images as they are, the same
every time.
"""

import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from test_image_splits import train, train_readme, write_splits
from typer.testing import CliRunner

from dlrun import api
from dlrun.cli import app
from dlrun.data.arrays import load_data
from dlrun.model.checkpoints import load_model
from dlrun.spec.loading import load_spec

runner = CliRunner()
PLAIN = """\
  layers:
    - {type: Conv2D, filters: 4, kernel_size: 3, activation: relu}
    - Flatten
    - {type: Dense, units: 2, activation: softmax}
"""


def spec_file(folder: Path, model: str, path: Path) -> Path:
    path.write_text(
        f"""\
name: augmented
data:
  dataset: directory
  path: {folder}
  image_size: [8, 8]
model:
{model}training:
  batch_size: 8
  epochs: 1
  tensorboard: null
"""
    )
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_splits(tmp_path_factory.mktemp("augment") / "pets")


@pytest.fixture(scope="module")
def augmented_run(folder, tmp_path_factory) -> Path:
    """The README's augmentation spec: RandomFlip, ..., RandAugment before a small CNN."""
    return train_readme("augment", folder, tmp_path_factory.mktemp("augmented-run"))


def decoded_test_images(run: Path) -> np.ndarray:
    data = load_data(load_spec(run / "config.yaml"))
    return np.concatenate(
        [np.asarray(x) for x, _ in data.source.pipeline(data.x_test, data.y_test, 8)]
    )


def assert_random_in_training_only(model, images: np.ndarray) -> None:
    inference = np.asarray(model(images, training=False))
    np.testing.assert_array_equal(inference, np.asarray(model(images, training=False)))
    trained_on = np.asarray(model(images, training=True))
    assert np.abs(trained_on - inference).max() > 1e-3  # the augmentation changed the batch


def test_augmentation_runs_in_training_and_not_in_inference(augmented_run):
    meta = json.loads((augmented_run / "meta.json").read_text())
    assert meta["status"] == "completed"
    model = load_model(augmented_run / "checkpoints" / "best.keras")
    names = [layer.name for layer in model.layers]
    assert names[:7] == [
        "random_flip",
        "random_rotation",
        "random_zoom",
        "random_translation",
        "random_contrast",
        "rand_augment",
        "conv2d",
    ]
    assert_random_in_training_only(model, decoded_test_images(augmented_run))


def test_evaluate_scores_the_same_twice(augmented_run):
    scored = []
    for _ in range(2):
        result = runner.invoke(app, ["evaluate", str(augmented_run), "--json"])
        assert result.exit_code == 0, result.output
        scored.append(json.loads(result.stdout))
    assert scored[0]["scores"] == scored[1]["scores"]
    assert scored[0]["confusion_matrix"] == scored[1]["confusion_matrix"]


def test_features_are_the_same_twice(augmented_run, tmp_path):
    arrays = []
    for name in ("one.npz", "two.npz"):
        out = tmp_path / name
        args = [
            "features",
            str(augmented_run),
            "--layer",
            "global_average_pooling2d",
            "--out",
            str(out),
        ]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        with np.load(out) as saved:
            arrays.append((saved["x_train"], saved["x_test"]))
    for first, second in zip(*arrays, strict=True):
        np.testing.assert_array_equal(first, second)


def test_attack_scores_the_images_as_evaluate_does(augmented_run):
    evaluated = runner.invoke(app, ["evaluate", str(augmented_run), "--json"])
    accuracy = json.loads(evaluated.stdout)["scores"]["accuracy"]
    args = ["attack", str(augmented_run), "--method", "fgsm", "--eps", "0,0.1"]
    attacked = []
    for _ in range(2):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        (latest,) = sorted((augmented_run / "attacks").glob("*.json"))[-1:]
        attacked.append(json.loads(latest.read_text())["results"])
        latest.unlink()  # two attacks in one second would share a name's stem
    assert attacked[0] == attacked[1]
    assert attacked[0][0]["clean_accuracy"] == pytest.approx(accuracy, abs=1e-6)


def test_augmentation_goes_before_a_base(augmented_run, folder, tmp_path):
    model = f"""\
  augment:
    - {{type: RandomFlip, mode: horizontal}}
    - {{type: RandomContrast, factor: 0.5}}
  base: {{run: {augmented_run}, until: global_average_pooling2d}}
  layers:
    - {{type: Dense, units: 2, activation: softmax}}
"""
    run = train(spec_file(folder, model, tmp_path / "transfer.yaml"), tmp_path / "runs")
    transfer = load_model(run / "checkpoints" / "best.keras")
    assert [layer.name for layer in transfer.layers] == [
        "image",
        "random_flip",
        "random_contrast",
        "resize_to_16x16",  # the adapters come after: augmentation sees the data's images
        "base",
        "dense",
    ]
    assert_random_in_training_only(transfer, decoded_test_images(run))
    result = runner.invoke(app, ["evaluate", str(run), "--json"])
    assert result.exit_code == 0, result.output


def one_line_error(tmp_path: Path, spec: Path) -> str:
    result = runner.invoke(app, ["validate", str(spec)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def test_label_mixing_layers_are_refused(folder, tmp_path):
    model = "  augment: [{type: MixUp}]\n" + PLAIN
    line = one_line_error(tmp_path, spec_file(folder, model, tmp_path / "mix.yaml"))
    assert "model.augment: MixUp mixes the labels as well as the images" in line


def test_an_augmentation_the_input_cannot_take_is_named(tmp_path):
    spec = tmp_path / "flat.yaml"
    spec.write_text(
        "data: {dataset: digits, scale: 16, flatten: true}\n"
        "model:\n"
        "  augment: [{type: RandomRotation, factor: 0.1}]\n"
        "  layers: [{type: Dense, units: 10, activation: softmax}]\n"
    )
    line = one_line_error(tmp_path, spec)
    assert "model.augment: augmentation layers take images (height, width, channels); " in line
    assert "the data gives shape (64,); set data.flatten: false" in line


class StopAfterFirstEpoch(keras.callbacks.Callback):
    """Ctrl-C right after the first epoch's checkpoints are written."""

    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt


def test_a_resumed_run_draws_as_an_uninterrupted_one(tmp_path):
    """Keras keeps no seed generator state in a checkpoint: dlrun sets it each epoch."""
    spec = tmp_path / "digits.yaml"
    spec.write_text(
        "data: {dataset: digits, scale: 16}\n"
        "model:\n"
        "  augment: [{type: RandomTranslation, height_factor: 0.2, width_factor: 0.2}]\n"
        "  layers: [Flatten, {type: Dense, units: 16, activation: relu},\n"
        "           {type: Dropout, rate: 0.3}, {type: Dense, units: 10, activation: softmax}]\n"
        "training: {epochs: 2, batch_size: 64, tensorboard: null, deterministic: true}\n"
    )
    whole = api.train(load_spec(spec), runs_dir=tmp_path / "whole", verbose=False)
    stopped = api.train(
        load_spec(spec),
        runs_dir=tmp_path / "stopped",
        verbose=False,
        callbacks=(StopAfterFirstEpoch(),),
    )
    assert stopped.status == "interrupted"
    assert api.resume(stopped.run_dir, verbose=False).status == "completed"
    history = pd.read_csv(stopped.run_dir / "history.csv")
    expected = pd.read_csv(whole.run_dir / "history.csv")
    for column in ["loss", "val_loss"]:
        np.testing.assert_allclose(history[column], expected[column], atol=1e-6)
    mine = load_model(stopped.run_dir / "checkpoints" / "last.keras").get_weights()
    theirs = load_model(whole.run_dir / "checkpoints" / "last.keras").get_weights()
    for a, b in zip(mine, theirs, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_augment_goes_in_front_of_a_graphs_input(folder, tmp_path):
    """Issue 34: a graph takes model.augment in front of its input, as a stack does (it was
    refused); every entry reading the input reads the augmented images."""
    model = (
        "  augment: [{type: RandomFlip}]\n"
        "  layers:\n"
        "    - {type: Conv2D, filters: 4, kernel_size: 3, name: conv}\n"
        "    - {type: Flatten, inputs: conv}\n"
        "    - {type: Dense, units: 2, activation: softmax}\n"
    )
    path = spec_file(folder, model, tmp_path / "graph.yaml")
    result = runner.invoke(app, ["train", str(path), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    (run,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    trained = load_model(run / "checkpoints" / "last.keras")
    assert [type(layer).__name__ for layer in trained.layers[:3]] == [
        "InputLayer",
        "RandomFlip",
        "Conv2D",
    ]
    assert_random_in_training_only(trained, decoded_test_images(run))
