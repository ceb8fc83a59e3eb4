"""`model.base` below a graph head: the base's output read as `base`, an inner layer of it
as `base.LAYER` (a tap, as U-Nets and FCNs read their encoder), frozen and finetuned as below a
stack. The base is a tiny CNN trained once on digits for the whole module (no download)."""

import json
import re
import textwrap

import keras
import numpy as np
import pytest
from test_graphs import evaluated, params_of, resumes_exactly, runner
from test_transfer import Snapshots, changed

from conftest import docs_text, pretrained_copy, run_dirs
from dlrun import api, store
from dlrun.cli import app
from dlrun.model.checkpoints import load_model


@pytest.fixture(scope="module")
def pretrained(pretrained_template, tmp_path_factory):
    """A completed run of conv -> BatchNormalization -> flatten -> out on digits: this module's
    copy of the one trained per process (conftest.PRETRAIN, shared with test_transfer)."""
    return pretrained_copy(pretrained_template, tmp_path_factory)


README = docs_text()
# The README's graph on a base: the base up to its batch normalization (6, 6, 4); the head adds
# the base's conv output, before normalization, to its own convolution of the base's output.
BLOCKS = re.findall(r"```yaml\n(.*?)```", README, re.S)
MODEL = textwrap.dedent(next(block for block in BLOCKS if "base.conv" in block))
HEADER = """\
name: graph-on-base
seed: 0
data: {dataset: digits, scale: 16, classes: [0, 1, 2]}
"""


def skip_spec(run, epochs: int = 1, tap: str = "base.conv", training: str = "") -> str:
    """The README's model on `run`, its tap replaced by `tap`, digits 0 to 2."""
    model = re.sub(r"run: [^,}]+", f"run: {run}", MODEL).replace("base.conv", tap)
    return (
        HEADER
        + model
        + f"training:\n  epochs: {epochs}\n  batch_size: 64\n  deterministic: true\n"
        + "  tensorboard: null\n"
        + training
    )


def keras_skip(pretrained) -> keras.Model:
    """The same model in plain Keras: the pretrained model's norm and conv outputs, the head."""
    source = keras.models.load_model(pretrained / "checkpoints" / "best.keras")
    base = keras.Model(
        source.inputs, [source.get_layer("norm").output, source.get_layer("conv").output]
    )
    image = keras.Input((8, 8, 1))
    normed, conv = base(image)
    up = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(normed)
    x = keras.layers.Flatten()(keras.layers.Add()([up, conv]))
    return keras.Model(image, keras.layers.Dense(3, activation="softmax")(x))


@pytest.fixture(scope="module")
def resumed(pretrained, tmp_path_factory):
    """Three epochs, whole and killed after two then resumed (the same history)."""
    return resumes_exactly(tmp_path_factory.mktemp("skip"), skip_spec(pretrained, epochs=3), 3)


def test_a_tap_of_the_base_has_plain_keras_parameters_and_the_base_stays_frozen(
    pretrained, resumed
):
    plain = keras_skip(pretrained)
    assert params_of(resumed) == plain.count_params() == 40 + 16 + 148 + 435
    # The same function too: the tap reads conv (before normalization), not the base's output.
    trained = load_model(resumed / "checkpoints" / "best.keras")
    plain.set_weights(trained.get_weights())
    images = np.random.default_rng(0).uniform(0, 1, (16, 8, 8, 1)).astype("float32")
    expected = plain.predict(images, verbose=0)
    np.testing.assert_allclose(trained.predict(images, verbose=0), expected, atol=1e-6)
    summary = (resumed / store.SUMMARY).read_text()
    # Only the head trains: the base's conv (40) and normalization (16) are frozen.
    assert "stage 1 (head): trainable 583, non-trainable 56" in summary
    graph = (resumed / store.GRAPH).read_text()
    assert "add (Add) (None, 6, 6, 4) <- up, base.conv" in graph


def test_a_graph_on_a_base_resumes_exactly_and_is_evaluated(resumed):
    assert json.loads((resumed / store.META).read_text())["status"] == "completed"
    evaluation = evaluated(resumed)
    assert np.sum(evaluation["confusion_matrix"]) == evaluation["samples"] > 0


def test_finetuning_a_graphs_base_unfreezes_it_as_for_a_stack(pretrained, tmp_path):
    spec = tmp_path / "finetune.yaml"
    finetune = "  finetune: {epochs: 1, unfreeze: all, learning_rate: 0.01}\n"
    spec.write_text(skip_spec(pretrained, training=finetune))
    snapshots = Snapshots()
    outcome = api.train(spec, runs_dir=tmp_path / "runs", verbose=False, callbacks=(snapshots,))
    assert outcome.status == "completed", outcome.message
    start, head_done, finetuned = snapshots.taken
    head = {"up/kernel", "up/bias", "dense/kernel", "dense/bias"}
    assert changed(start, head_done) == head
    # Batch normalization stays frozen (inference mode), as below a stack.
    assert changed(head_done, finetuned) == {"conv/kernel", "conv/bias", *head}


def test_an_unknown_tap_is_one_line_with_a_did_you_mean(pretrained, tmp_path):
    spec = tmp_path / "typo.yaml"
    spec.write_text(skip_spec(pretrained, tap="base.cnov"))
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(runs)])
    assert result.exit_code == 2, result.output
    line = next(n for n, text in enumerate(spec.read_text().splitlines(), 1) if "cnov" in text)
    assert result.stderr.splitlines() == [
        f"Error: {spec}:{line}: model.layers.1.inputs: the base model {pretrained} has no "
        "layer 'cnov' to read as base.cnov; did you mean 'conv'?"
    ]
    assert run_dirs(runs) == []


def validate(tmp_path, text: str):
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    return spec, runner.invoke(app, ["validate", str(spec)])


def test_augmentation_goes_before_the_base_of_a_graph(pretrained, tmp_path):
    augment = "  augment: [{type: RandomTranslation, height_factor: 0.1, width_factor: 0.1}]\n"
    text = skip_spec(pretrained).replace("model:\n", "model:\n" + augment)
    _, result = validate(tmp_path, text)
    assert result.exit_code == 0, result.output
    graph = [line.split(" ")[0] for line in result.output.splitlines() if " <- " in line]
    assert graph[:2] == ["random_translation", "base"]


def test_model_inputs_beside_a_base_is_one_line(pretrained, tmp_path):
    text = skip_spec(pretrained).replace("model:\n", "model:\n  inputs: {image: {}}\n")
    spec, result = validate(tmp_path, text)
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        f"Error: {spec}:5: model.inputs: a graph on a base reads the base's output as `base` "
        "(and an inner layer as base.LAYER); remove model.inputs"
    ]


def test_an_entry_named_base_beside_a_base_is_one_line(pretrained, tmp_path):
    spec, result = validate(tmp_path, skip_spec(pretrained).replace("name: up", "name: base"))
    assert result.exit_code == 2, result.output
    line = next(n for n, text in enumerate(spec.read_text().splitlines(), 1) if "Conv2D" in text)
    assert result.stderr.splitlines() == [
        f"Error: {spec}:{line}: model.layers.0.name: 'base' names the base; give this entry "
        "another name"
    ]


def test_a_tapped_base_exports_as_plain_keras(resumed, tmp_path):
    """`export --format keras` turns the base (dlrun's FrozenBase, two outputs here) into a
    plain functional model: the file loads without dlrun's classes and scores the same."""
    out = tmp_path / "export"
    result = runner.invoke(app, ["export", str(resumed), "--format", "keras", "--out", str(out)])
    assert result.exit_code == 0, result.output
    exported = keras.saving.load_model(out / "model.keras", custom_objects={})
    assert type(exported.get_layer("base")).__name__ == "Functional"
    images = np.random.default_rng(1).uniform(0, 1, (16, 8, 8, 1)).astype("float32")
    expected = load_model(resumed / "checkpoints" / "best.keras").predict(images, verbose=0)
    np.testing.assert_allclose(exported.predict(images, verbose=0), expected, atol=1e-6)
