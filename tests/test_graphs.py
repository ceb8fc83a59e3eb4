"""Models beyond a stack: keras.io's graphs written in dlrun's syntax, against the same graphs
built in plain Keras here, parameter for parameter; each trains an epoch and is evaluated."""

import importlib.util
import json
import shutil
import zipfile
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import TINY_SPEC, run_dirs
from dlrun import store
from dlrun.cli import app

runner = CliRunner()


def train(tmp_path, text: str, name: str = "graph", *extra: str):
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(text)
    runs = tmp_path / f"runs-{name}"
    result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(runs), *extra])
    assert result.exit_code == 0, result.output
    (run,) = run_dirs(runs)
    return run


def params_of(run) -> int:
    return json.loads((run / store.METRICS).read_text())["params"]


def evaluated(run) -> dict:
    result = runner.invoke(app, ["evaluate", str(run)])
    assert result.exit_code == 0, result.output
    return json.loads(next((run / store.EVALUATIONS).glob("*.json")).read_text())


# --- ResNet-20, as keras.io's cutmix example builds it ----------------------------------------

RESNET = """\
name: resnet20
seed: 0
data: {{dataset: npz, path: {path}, scale: 255}}
model:
  blocks:
    unit:                      # the identity-shortcut residual unit
      params: {{filters: 16}}
      layers:
        - {{type: Conv2D, filters: $filters, kernel_size: 3, padding: same}}
        - BatchNormalization
        - {{type: Activation, activation: relu}}
        - {{type: Conv2D, filters: $filters, kernel_size: 3, padding: same}}
        - {{type: BatchNormalization, name: y}}
        - {{type: Add, inputs: [in, y]}}
        - {{type: Activation, activation: relu}}
    down:                      # the first unit of a stage: strides 2 and a 1x1 projection
      params: {{filters: 32}}
      layers:
        - {{type: Conv2D, filters: $filters, kernel_size: 3, strides: 2, padding: same}}
        - BatchNormalization
        - {{type: Activation, activation: relu}}
        - {{type: Conv2D, filters: $filters, kernel_size: 3, padding: same}}
        - {{type: BatchNormalization, name: y}}
        - {{type: Conv2D, filters: $filters, kernel_size: 1, strides: 2, inputs: in,
           name: shortcut}}
        - {{type: Add, inputs: [shortcut, y]}}
        - {{type: Activation, activation: relu}}
  layers:
    - {{type: Conv2D, filters: 16, kernel_size: 3, padding: same}}
    - BatchNormalization
    - {{type: Activation, activation: relu}}
    - {{block: unit, repeat: 3}}
    - {{block: down, with: {{filters: 32}}}}
    - {{block: unit, repeat: 2, with: {{filters: 32}}}}
    - {{block: down, with: {{filters: 64}}}}
    - {{block: unit, repeat: 2, with: {{filters: 64}}}}
    - {{type: AveragePooling2D, pool_size: 8}}
    - Flatten
    - {{type: Dense, units: 10, activation: softmax}}
compile: {{jit_compile: false}}
training: {{epochs: 1, batch_size: 32, validation_split: 0.25, tensorboard: null}}
"""


def keras_resnet20() -> keras.Model:
    """The cutmix example's resnet_v20((32, 32, 3), 20), written out in plain Keras."""

    def unit(x, filters, strides=1, activation="relu", batch_norm=True, kernel=3):
        x = keras.layers.Conv2D(filters, kernel, strides=strides, padding="same")(x)
        if batch_norm:
            x = keras.layers.BatchNormalization()(x)
        return keras.layers.Activation(activation)(x) if activation else x

    inputs = keras.Input((32, 32, 3))
    x = unit(inputs, 16)
    filters = 16
    for stage in range(3):
        for block in range(3):
            strides = 2 if stage > 0 and block == 0 else 1
            y = unit(x, filters, strides)
            y = unit(y, filters, activation=None)
            if strides == 2:
                x = unit(x, filters, strides, None, batch_norm=False, kernel=1)
            x = keras.layers.Activation("relu")(keras.layers.add([x, y]))
        filters *= 2
    x = keras.layers.Flatten()(keras.layers.AveragePooling2D(pool_size=8)(x))
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))


def test_resnet20_has_the_cutmix_examples_parameters_trains_and_evaluates(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "cifar_like.npz"
    pixels = rng.integers(0, 256, (96, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(96) % 10
    np.savez(path, x_train=pixels[:64], y_train=labels[:64], x_test=pixels[64:], y_test=labels[64:])
    run = train(tmp_path, RESNET.format(path=path))
    assert keras_resnet20().count_params() == 274_442  # the example's own count
    assert params_of(run) == 274_442
    assert evaluated(run)["samples"] == 32


# --- a transformer encoder over sequences -----------------------------------------------------

TRANSFORMER = """\
name: encoder
seed: 0
data: {{dataset: npz, path: {path}, scale: 1}}
model:
  inputs: {{steps: {{shape: [12, 4]}}}}
  layers:
    - {{type: Dense, units: 16, name: x, inputs: steps}}
    - {{type: MultiHeadAttention, num_heads: 2, key_dim: 8, inputs: {{query: x, value: x}},
       name: attended}}
    - {{type: Add, inputs: [x, attended]}}
    - {{type: LayerNormalization, epsilon: 1.0e-6, name: a}}
    - {{type: Dense, units: 32, activation: relu}}
    - {{type: Dense, units: 16, name: ff}}
    - {{type: Add, inputs: [a, ff]}}
    - {{type: LayerNormalization, epsilon: 1.0e-6}}
    - GlobalAveragePooling1D
    - {{type: Dense, units: 3, activation: softmax}}
compile: {{jit_compile: false}}
training: {{epochs: 1, batch_size: 32}}
"""


def keras_encoder() -> keras.Model:
    steps = keras.Input((12, 4))
    x = keras.layers.Dense(16)(steps)
    attended = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8)(x, x)
    a = keras.layers.LayerNormalization(epsilon=1e-6)(keras.layers.Add()([x, attended]))
    ff = keras.layers.Dense(16)(keras.layers.Dense(32, activation="relu")(a))
    y = keras.layers.LayerNormalization(epsilon=1e-6)(keras.layers.Add()([a, ff]))
    y = keras.layers.GlobalAveragePooling1D()(y)
    return keras.Model(steps, keras.layers.Dense(3, activation="softmax")(y))


def test_a_transformer_encoder_over_float_sequences(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 12, 4)).astype("float32")  # float 3-D: sequences, no channel
    y = (x[:, :, 0].mean(axis=1) > 0).astype(int) + (x[:, :, 1].mean(axis=1) > 0.3)
    path = tmp_path / "sequences.npz"
    np.savez(path, x_train=x[:180], y_train=y[:180], x_test=x[180:], y_test=y[180:])
    run = train(tmp_path, TRANSFORMER.format(path=path))
    assert params_of(run) == keras_encoder().count_params()
    assert evaluated(run)["samples"] == 60


# --- a U-Net-like encoder/decoder with skip concatenations ------------------------------------

UNET = """\
name: unet
seed: 0
data: {dataset: digits, scale: 16}
model:
  layers:
    - {type: Conv2D, filters: 8, kernel_size: 3, padding: same, activation: relu, name: e1}
    - {type: MaxPooling2D, pool_size: 2}
    - {type: Conv2D, filters: 16, kernel_size: 3, padding: same, activation: relu, name: e2}
    - {type: MaxPooling2D, pool_size: 2}
    - {type: Conv2D, filters: 32, kernel_size: 3, padding: same, activation: relu}
    - {type: UpSampling2D, size: 2, name: u2}
    - {type: Concatenate, inputs: [u2, e2]}
    - {type: Conv2D, filters: 16, kernel_size: 3, padding: same, activation: relu}
    - {type: UpSampling2D, size: 2, name: u1}
    - {type: Concatenate, inputs: [u1, e1]}
    - {type: Conv2D, filters: 8, kernel_size: 3, padding: same, activation: relu}
    - GlobalAveragePooling2D
    - {type: Dense, units: 10, activation: softmax}
training: {epochs: 1, batch_size: 64}
"""


def keras_unet() -> keras.Model:
    conv = lambda filters: keras.layers.Conv2D(filters, 3, padding="same", activation="relu")  # noqa: E731
    inputs = keras.Input((8, 8, 1))
    e1 = conv(8)(inputs)
    e2 = conv(16)(keras.layers.MaxPooling2D(2)(e1))
    bottom = conv(32)(keras.layers.MaxPooling2D(2)(e2))
    x = conv(16)(keras.layers.Concatenate()([keras.layers.UpSampling2D(2)(bottom), e2]))
    x = conv(8)(keras.layers.Concatenate()([keras.layers.UpSampling2D(2)(x), e1]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))


def test_a_unet_like_graph_with_skip_concatenations(tmp_path):
    run = train(tmp_path, UNET)
    assert params_of(run) == keras_unet().count_params()
    assert evaluated(run)["report"]["accuracy"] >= 0  # scored on the whole test split


# --- a stack written as a graph ---------------------------------------------------------------


def test_a_stack_written_as_a_graph_is_the_same_model(trained, tmp_path):
    graph = TINY_SPEC.replace(
        "    - {type: Dense, units: 16, activation: relu}\n"
        "    - {type: Dense, units: 10, activation: softmax}\n",
        "    - {type: Dense, units: 16, activation: relu, name: hidden}\n"
        "    - {type: Dense, units: 10, activation: softmax, inputs: hidden, name: digit}\n"
        "  outputs: digit\n",
    )
    assert graph != TINY_SPEC
    # The stack: the session's TINY_SPEC run (conftest.trained), trained once per process.
    stack, as_graph = trained, train(tmp_path, graph, "graph")
    assert params_of(as_graph) == params_of(stack) == 64 * 16 + 16 + 16 * 10 + 10
    first, second = pd.read_csv(stack / store.HISTORY), pd.read_csv(as_graph / store.HISTORY)
    np.testing.assert_allclose(second["loss"], first["loss"], rtol=1e-5)


# --- a sweep over a block's param -------------------------------------------------------------

RESIDUAL = """\
name: residual
seed: 0
data: {dataset: digits, scale: 16, limit: 300}   # what is checked is the grid and the counts
model:
  blocks:
    residual:
      params: {filters: 4}
      layers:
        - {type: Conv2D, filters: $filters, kernel_size: 3, padding: same, activation: relu}
        - {type: Conv2D, filters: $filters, kernel_size: 3, padding: same, name: f}
        - {type: Conv2D, filters: $filters, kernel_size: 1, inputs: in, name: shortcut}
        - {type: Add, inputs: [shortcut, f]}
  layers:
    - {block: residual, repeat: 2}
    - GlobalAveragePooling2D
    - {type: Dense, units: 10, activation: softmax}
training: {epochs: 1, batch_size: 64}
"""


def test_a_sweep_ranges_over_a_blocks_param(tmp_path):
    (tmp_path / "residual.yaml").write_text(RESIDUAL)
    (tmp_path / "sweep.yaml").write_text(
        "base: residual.yaml\nname: blocks\n"
        "grid: {model.blocks.residual.params.filters: [4, 8]}\ncv: 0\nrefit: false\n"
    )
    result = runner.invoke(
        app, ["sweep", str(tmp_path / "sweep.yaml"), "--runs-dir", str(tmp_path / "runs")]
    )
    assert result.exit_code == 0, result.output
    (sweep,) = run_dirs(tmp_path / "runs")
    results = pd.read_csv(sweep / "cv_results.csv")
    assert list(results["param_model.blocks.residual.params.filters"]) == [4, 8]
    params = sorted(
        json.loads((trial / store.METRICS).read_text())["params"]
        for trial in run_dirs(sweep / "trials")
    )

    def block(channels: int, filters: int) -> int:  # two 3x3 convolutions and a 1x1 shortcut
        return (9 * channels + 1) * filters + (9 * filters + 1) * filters + (channels + 1) * filters

    def count(filters: int) -> int:
        return block(1, filters) + block(filters, filters) + filters * 10 + 10

    assert params == [count(4), count(8)]


# --- the example config, and a graph killed and resumed ---------------------------------------


def test_the_residual_config_validates_trains_and_draws_its_graph(tmp_path):
    from conftest import CONFIGS

    def residual(filters: int) -> int:  # two 3x3 convolutions of `filters` channels
        return 2 * ((9 * filters + 1) * filters)

    expected = (9 + 1) * 16 + 2 * residual(16) + (16 + 1) * 32 + 2 * residual(32) + 33 * 10
    result = runner.invoke(app, ["validate", str(CONFIGS / "mnist_resnet.yaml")])
    assert result.exit_code == 0, result.output
    assert result.stdout.rstrip().endswith(f"valid; {expected:,} parameters")
    assert "add (Add) (None, 28, 28, 16) <- conv2d, conv2d_2" in result.stdout
    run = train(
        tmp_path,
        (CONFIGS / "mnist_resnet.yaml").read_text(),
        "resnet",
        "--set",
        "training.epochs=1",
        "--set",
        "data.limit=300",
    )
    assert params_of(run) == expected
    graph = (run / store.GRAPH).read_text()
    assert "global_average_pooling2d (GlobalAveragePooling2D) (None, 32) <- activation_3" in graph
    # model.png where graphviz can draw it (pydot and `dot`); graph.txt is the picture elsewhere.
    drawn = importlib.util.find_spec("pydot") is not None and shutil.which("dot") is not None
    assert (run / store.MODEL_PNG).exists() == drawn
    if drawn:
        assert (run / store.MODEL_PNG).read_bytes().startswith(b"\x89PNG")


DENSE_RESIDUAL = """\
name: residual-mlp
seed: 0
data: {dataset: digits, scale: 16, flatten: true}
model:
  blocks:
    residual:
      layers:
        - {type: Dense, units: 16, activation: relu}
        - {type: Dense, units: 16, name: f}
        - {type: Add, inputs: [in, f]}
  layers:
    - {type: Dense, units: 16, activation: relu}
    - {block: residual, repeat: 2}
    - {type: Dense, units: 10, activation: softmax}
training: {epochs: 8, batch_size: 64, deterministic: true}
"""


def resumes_exactly(tmp_path, text: str, epochs: int) -> Path:
    """Trains `text` whole, then again killed (SIGKILL) once its first epoch is recorded, and
    resumed: the resumed history must be the whole one's. Returns the resumed run."""
    import signal

    from conftest import start_dlrun, wait_until

    whole = train(tmp_path, text, "whole")
    spec = tmp_path / "broken.yaml"
    spec.write_text(text)
    broken = tmp_path / "broken"
    process = start_dlrun("train", spec, "--runs-dir", broken)

    def one_epoch() -> bool:  # the kill then lands with epochs to spare
        found = run_dirs(broken)
        rows = found[0] / store.HISTORY if found else None
        return rows is not None and rows.exists() and len(rows.read_text().splitlines()) > 1

    wait_until(one_epoch, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    (run,) = run_dirs(broken)
    assert json.loads((run / store.META).read_text())["epochs_done"] < epochs
    result = runner.invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    resumed, reference = pd.read_csv(run / store.HISTORY), pd.read_csv(whole / store.HISTORY)
    assert list(resumed["epoch"]) == list(range(1, epochs + 1))
    np.testing.assert_allclose(resumed["loss"], reference["loss"], atol=1e-5)
    np.testing.assert_allclose(resumed["val_loss"], reference["val_loss"], atol=1e-5)
    return run


def test_a_graph_killed_in_training_resumes_exactly(tmp_path):
    # A residual MLP: the same graph machinery as the CNNs, at a fraction of their cost.
    resumes_exactly(tmp_path, DENSE_RESIDUAL, 8)


# --- several inputs ----------------------------------------------------------------------------

TWO_INPUTS = """\
name: two-inputs
seed: 0
data: {{dataset: npz, path: {path}, scale: 1}}
model:
  inputs:
    image: {{shape: [8, 8, 1]}}
    meta: {{}}                   # shape: the data's, (5,)
  layers:
    - {{type: Conv2D, filters: 4, kernel_size: 3, activation: relu, inputs: image}}
    - {{type: Flatten, name: img}}
    - {{type: Dense, units: 8, activation: relu, inputs: meta, name: m}}
    - {{type: Concatenate, inputs: [img, m]}}
    - {{type: Dense, units: 2, activation: softmax}}
training: {{epochs: 1, batch_size: 32, tensorboard: null}}
"""


def two_input_arrays() -> dict:
    """An image and a vector per sample, the label needing both: 120 to train, 20 to validate
    (the npz's own), 20 to test."""
    rng = np.random.default_rng(0)
    image = rng.random((160, 8, 8, 1)).astype(np.float32)
    meta = rng.random((160, 5)).astype(np.float32)
    y = (image.mean(axis=(1, 2, 3)) + meta.mean(axis=1) > 1).astype(int)
    splits = {"train": slice(0, 120), "val": slice(120, 140), "test": slice(140, None)}
    arrays = {}
    for split, rows in splits.items():
        arrays |= {f"x_{split}_image": image[rows], f"x_{split}_meta": meta[rows]}
        arrays[f"y_{split}"] = y[rows]
    return arrays


def keras_two_inputs() -> keras.Model:
    image, meta = keras.Input((8, 8, 1), name="image"), keras.Input((5,), name="meta")
    img = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, activation="relu")(image))
    m = keras.layers.Dense(8, activation="relu")(meta)
    x = keras.layers.Concatenate()([img, m])
    return keras.Model([image, meta], keras.layers.Dense(2, activation="softmax")(x))


@pytest.fixture(scope="module")
def two_inputs(tmp_path_factory):
    """(the npz path, a trained run) of the image + vector graph, shared by this section."""
    root = tmp_path_factory.mktemp("two_inputs")
    path = root / "two.npz"
    np.savez(path, **two_input_arrays())
    return path, train(root, TWO_INPUTS.format(path=path), "two")


def test_two_inputs_from_npz_keys_train_and_evaluate(two_inputs):
    path, run = two_inputs
    assert params_of(run) == keras_two_inputs().count_params() == 394
    shapes = json.loads((run / store.METRICS).read_text())["input_shape"]
    assert shapes == {"image": [8, 8, 1], "meta": [5]}
    assert "concatenate (Concatenate) (None, 152) <- img, m" in (run / store.GRAPH).read_text()
    evaluation = evaluated(run)
    assert evaluation["samples"] == 20
    assert np.sum(evaluation["confusion_matrix"]) == 20
    meta = json.loads((run / store.META).read_text())
    assert meta["validation"] == "own"  # x_val_image and x_val_meta


@pytest.mark.parametrize(
    "command",
    [
        ["attack", "{run}"],
        ["features", "{run}", "--layer", "m", "--out", "{tmp}/f.npz"],
        ["export", "{run}", "--format", "keras", "--out", "{tmp}/model.keras"],
        ["predict", "{run}", "{path}"],
    ],
    ids=lambda command: command[0],
)
def test_commands_of_one_input_refuse_several_in_one_line(two_inputs, tmp_path, command):
    path, run = two_inputs
    filled = [part.format(run=run, tmp=tmp_path, path=path) for part in command]
    result = runner.invoke(app, filled)
    assert result.exit_code != 0
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"Error: {run}: ") and "one input" in line, line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "change, problem",
    [
        (
            {"x_train_meta": lambda a: a[:-1]},
            "the inputs of a split need one row per sample each; found x_train_image 120, "
            "x_train_meta 119 samples",
        ),
        (
            {"x_test_meta": lambda a: np.where(np.arange(len(a))[:, None] == 3, np.nan, a)},
            "x_test_meta has missing (NaN) or infinite values",
        ),
        ({"x_train_meta": None}, "has no x_train_meta; expected keys x_train_image, x_train_meta"),
        ({"x_test_meta": None}, "has x_test_image but no x_test_meta; give all test keys or none"),
        (
            {"x_test_meta": lambda a: a[:, :4]},
            "x_test_meta has samples of shape (4,) but x_train_meta (5,)",
        ),
    ],
    ids=["counts", "nan", "missing", "half-split", "shape"],
)
def test_bad_input_arrays_are_one_line_before_any_run_folder(tmp_path, change, problem):
    arrays = two_input_arrays()
    for key, edit in change.items():
        if edit is None:
            del arrays[key]
        else:
            arrays[key] = edit(arrays[key])
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    spec = tmp_path / "two.yaml"
    spec.write_text(TWO_INPUTS.format(path=path))
    result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"Error: {spec}:3: data.path: {path}") and problem in line, line
    assert not (tmp_path / "runs").exists()


def test_a_declared_shape_the_data_contradicts_names_the_input(tmp_path):
    path = tmp_path / "two.npz"
    np.savez(path, **two_input_arrays())
    spec = tmp_path / "two.yaml"
    spec.write_text(TWO_INPUTS.format(path=path).replace("meta: {}", "meta: {shape: [6]}"))
    result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"Error: {spec}:7: model.inputs.meta.shape: input 'meta' is declared (6,) but its data "
        "has samples of shape (5,); declare the data's shape or leave shape out\n"
    )
    assert not (tmp_path / "runs").exists()


def test_every_split_and_feed_keeps_the_inputs_rows_together(tmp_path):
    """Rows stay aligned across inputs through the test split, data.limit, validation_split
    and each epoch's shuffle (tf.data and NumPy): input b is always 2 x input a."""
    from dlrun.data.arrays import load_data
    from dlrun.data.feed import EpochFeed, shuffled_epochs
    from dlrun.spec.loading import load_spec

    rows = np.arange(300)
    path = tmp_path / "rows.npz"
    np.savez(path, x_train_a=rows[:, None], x_train_b=2 * rows[:, None], y_train=rows % 3)
    spec_path = tmp_path / "rows.yaml"
    spec_path.write_text(
        f"data: {{dataset: npz, path: {path}, scale: 1, limit: 150, one_hot: false}}\n"
        "model:\n  inputs: {a: {}, b: {}}\n"
        "  layers:\n    - {type: Concatenate, inputs: [a, b]}\n"
        "    - {type: Dense, units: 3, activation: softmax}\n"
        "training: {validation_split: 0.2, batch_size: 16}\n"
    )
    data = load_data(load_spec(spec_path))
    assert (len(data.x_train["a"]), len(data.x_val["a"]), len(data.x_test["a"])) == (120, 30, 60)
    for x, y in (
        (data.x_train, data.y_train),
        (data.x_val, data.y_val),
        (data.x_test, data.y_test),
    ):
        np.testing.assert_array_equal(x["b"], 2 * x["a"])
        np.testing.assert_array_equal(y, x["a"][:, 0] % 3)
    stream = shuffled_epochs(data.x_train, data.y_train, 16, seed=0, first_epoch=0, epochs=2)
    seen = [(x["a"].numpy(), x["b"].numpy(), y.numpy()) for x, y in stream]
    a = np.concatenate([batch[0] for batch in seen])[:, 0]
    np.testing.assert_array_equal(np.concatenate([batch[1] for batch in seen])[:, 0], 2 * a)
    np.testing.assert_array_equal(np.concatenate([batch[2] for batch in seen]), a % 3)
    assert not np.array_equal(a[:120], data.x_train["a"][:, 0])  # shuffled
    assert sorted(a[:120]) == sorted(a[120:]) and not np.array_equal(a[:120], a[120:])
    feed = EpochFeed(data.x_train, data.y_train, seed=0, shuffle=True)
    feed.arrange(1)
    np.testing.assert_array_equal(feed.x["b"], 2 * feed.x["a"])
    np.testing.assert_array_equal(feed.y, feed.x["a"][:, 0] % 3)
    assert not np.array_equal(feed.x["a"], data.x_train["a"])


# The payment-card-fraud style of keras.io's structured-data examples: one scalar Input per
# feature, concatenated, then a small dense head with one sigmoid unit.
FEATURES = [f"v{i}" for i in range(1, 15)]
FRAUD = (
    "name: fourteen\nseed: 0\n"
    "data: {{dataset: csv, path: {path}, label_column: fraud, scale: 1, one_hot: false}}\n"
    "model:\n  inputs:\n"
    + "".join(f"    {name}: {{{{columns: [{name}]}}}}\n" for name in FEATURES)
    + "  layers:\n"
    + f"    - {{{{type: Concatenate, inputs: [{', '.join(FEATURES)}]}}}}\n"
    + "    - {{type: Dense, units: 16, activation: relu}}\n"
    + "    - {{type: Dropout, rate: 0.3}}\n"
    + "    - {{type: Dense, units: 1, activation: sigmoid}}\n"
    + "compile: {{loss: binary_crossentropy}}\n"
    + "training: {{epochs: {epochs}, batch_size: 16, deterministic: true, tensorboard: null}}\n"
)


def keras_fraud() -> keras.Model:
    inputs = [keras.Input((1,), name=name) for name in FEATURES]
    x = keras.layers.Dense(16, activation="relu")(keras.layers.Concatenate()(inputs))
    x = keras.layers.Dropout(0.3)(x)
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))


def test_fourteen_scalar_inputs_from_csv_columns_resume_exactly_and_evaluate(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(600, 14)).astype(np.float32), columns=FEATURES)
    frame.insert(3, "fraud", (frame["v1"] + frame["v9"] > 1).astype(int))  # a column among them
    path = tmp_path / "cards.csv"
    frame.to_csv(path, index=False)
    run = resumes_exactly(tmp_path, FRAUD.format(path=path, epochs=6), 6)
    assert params_of(run) == keras_fraud().count_params() == 14 * 16 + 16 + 17
    assert evaluated(run)["samples"] == 120  # test_split 0.2 of 600


def test_a_csv_input_column_the_file_lacks_is_named(tmp_path):
    frame = pd.DataFrame(np.zeros((20, 14), np.float32), columns=FEATURES)
    frame["fraud"] = np.arange(20) % 2
    path = tmp_path / "cards.csv"
    frame.to_csv(path, index=False)
    spec = tmp_path / "fourteen.yaml"
    spec.write_text(FRAUD.format(path=path, epochs=1).replace("columns: [v7]", "columns: [v77]"))
    result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"Error: {spec}:12: model.inputs.v7.columns: {path} has no column 'v77'")
    assert not (tmp_path / "runs").exists()


def test_the_two_input_config_adapts_each_input_on_its_own_columns(tmp_path, monkeypatch):
    from conftest import CONFIGS
    from dlrun.data.arrays import load_data
    from dlrun.spec.loading import load_spec

    monkeypatch.chdir(CONFIGS.parent)
    config = CONFIGS / "cancer_two_inputs.yaml"  # names its csvs relative to itself
    # Normalization (mean, variance, count) and Dense per input, then Dense 16 -> 1
    expected = (6 + 6 + 1) + (6 * 8 + 8) + (8 + 8 + 1) + (8 * 8 + 8) + (16 + 1)
    result = runner.invoke(app, ["validate", str(config)])
    assert result.exit_code == 0, result.output
    assert result.stdout.rstrip().endswith(f"valid; {expected:,} parameters")
    copied = config.read_text().replace("data/cancer_", f"{CONFIGS}/data/cancer_")  # elsewhere
    run = train(tmp_path, copied, "cancer", "--set", "training.epochs=1")
    assert params_of(run) == expected
    spec = load_spec(config)
    data = load_data(spec)
    frame = pd.read_csv(CONFIGS / "data" / "cancer_train.csv")
    for name in ("size", "texture"):
        columns = spec.model.inputs[name].columns
        rows = {tuple(row) for row in frame[columns].to_numpy(np.float32)}
        assert all(tuple(row) in rows for row in data.x_train[name])
    model = keras.models.load_model(run / store.LAST)
    size = model.get_layer("normalization")  # adapted on the size columns of the training split
    np.testing.assert_allclose(np.ravel(size.mean), data.x_train["size"].mean(axis=0), rtol=1e-4)
    assert evaluated(run)["samples"] == len(data.x_test["size"])


GRAPH_NORMALIZED = """\
name: graph-normalized
seed: 0
data: {dataset: digits, scale: 16, flatten: true}
model:
  layers:
    - {type: Normalization, name: first}                 # reads the input itself
    - {type: Dense, units: 8, activation: relu, name: h}
    - {type: Dense, units: 8, name: side, inputs: first}
    - {type: Normalization, name: later, inputs: side}   # reads a layer's output
    - {type: Concatenate, inputs: [h, later]}
    - {type: Dense, units: 10, activation: softmax}
training: {epochs: 1, batch_size: 64, tensorboard: null}
"""


def test_a_one_input_graph_adapts_its_normalizations_on_what_reaches_them(tmp_path):
    """keras.io's ViT and EANet normalise first in a graph: a functional model lists its
    InputLayer among its layers, which once made adapting a graph's Normalization fail."""
    from dlrun.data.arrays import load_data
    from dlrun.spec.loading import load_spec

    run = train(tmp_path, GRAPH_NORMALIZED, "normalized")
    data = load_data(load_spec(tmp_path / "normalized.yaml"))
    model = keras.models.load_model(run / store.LAST)
    first = model.get_layer("first")
    np.testing.assert_allclose(np.ravel(first.mean), data.x_train.mean(axis=0), atol=1e-4)
    later = model.get_layer("later")
    assert np.ravel(later.mean).shape == (8,) and np.any(np.ravel(later.mean) != 0)


# --- several outputs ---------------------------------------------------------------------------

TWO_OUTPUTS = """\
name: two-outputs
seed: 0
data: {{dataset: npz, path: {path}, scale: 16, one_hot: false}}
model:
  layers:
    - Flatten
    - {{type: Dense, units: 16, activation: relu, name: h}}
    - {{type: Dense, units: 10, activation: softmax, name: digit}}
    - {{type: Dense, units: 1, activation: sigmoid, inputs: h, name: odd}}
  outputs: [digit, odd]
compile:
  loss: {{digit: sparse_categorical_crossentropy, odd: binary_crossentropy}}
  metrics: {{digit: [accuracy], odd: [accuracy]}}
  loss_weights: {{digit: 1.0, odd: 0.5}}
training:
  epochs: {epochs}
  batch_size: 32
  deterministic: true
  tensorboard: null
  checkpoint: {{monitor: val_odd_accuracy}}   # maximised: Keras says accuracy goes up
"""


def keras_two_outputs() -> keras.Model:
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Dense(16, activation="relu")(keras.layers.Flatten()(inputs))
    digit = keras.layers.Dense(10, activation="softmax")(h)
    return keras.Model(inputs, [digit, keras.layers.Dense(1, activation="sigmoid")(h)])


def digits_npz(path: Path) -> Path:
    """digits as uint8 images, with two targets: the digit, and whether it is odd."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = digits.images[:500].astype(np.uint8), digits.target[:500]
    np.savez(
        path,
        x_train=x[:400],
        y_train_digit=y[:400],
        y_train_odd=y[:400] % 2,
        x_test=x[400:],
        y_test_digit=y[400:],
        y_test_odd=y[400:] % 2,
    )
    return path


def test_a_digit_head_and_an_odd_head_resume_exactly_and_evaluate_apart(tmp_path):
    path = digits_npz(tmp_path / "digits.npz")
    run = resumes_exactly(tmp_path, TWO_OUTPUTS.format(path=path, epochs=6), 6)
    assert params_of(run) == keras_two_outputs().count_params() == 64 * 16 + 16 + 170 + 17
    history = pd.read_csv(run / store.HISTORY)
    assert {"digit_loss", "odd_accuracy", "val_digit_accuracy", "val_odd_loss"} <= set(history)
    with zipfile.ZipFile(run / store.LAST) as archive:  # what Keras was compiled with
        compiled = json.loads(archive.read("config.json"))["compile_config"]
    assert compiled["loss_weights"] == {"digit": 1.0, "odd": 0.5}
    assert {out: loss["config"] for out, loss in compiled["loss"].items()} == {
        "digit": "sparse_categorical_crossentropy",
        "odd": "binary_crossentropy",
    }
    metrics = json.loads((run / store.METRICS).read_text())
    best = int(history["val_odd_accuracy"].to_numpy().argmax()) + 1  # the first best, maximised
    assert (metrics["monitor"], metrics["best_epoch"]) == ("val_odd_accuracy", best)
    evaluation = evaluated(run)
    assert set(evaluation["outputs"]) == {"digit", "odd"}
    assert evaluation["outputs"]["digit"]["classes"] == [str(d) for d in range(10)]
    assert evaluation["outputs"]["odd"]["classes"] == ["0", "1"]
    for output in ("digit", "odd"):
        assert np.sum(evaluation["outputs"][output]["confusion_matrix"]) == 100
        assert list((run / store.EVALUATIONS).glob(f"*-{output}-confusion_matrix.png"))
    result = runner.invoke(app, ["attack", str(run)])
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: {run}: attack takes models of one output; this run's model has 2 (digit, odd)\n"
    )


def test_several_outputs_need_their_targets_and_a_loss_each(tmp_path):
    path = digits_npz(tmp_path / "digits.npz")
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files if key != "y_test_odd"}
    partial = tmp_path / "partial.npz"
    np.savez(partial, **arrays)
    spec = tmp_path / "two.yaml"
    spec.write_text(TWO_OUTPUTS.format(path=partial, epochs=1))
    result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"Error: {spec}:3: data.path: {partial} has x_test but no y_test_odd; give all test "
        "keys or none (then the test split is cut from the training data)\n"
    )
    spec.write_text(
        TWO_OUTPUTS.format(path=path, epochs=1).replace(
            "{digit: sparse_categorical_crossentropy, odd: binary_crossentropy}",
            "binary_crossentropy",
        )
    )
    result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines()[0] == (
        f"Error: {spec}:12: compile.loss: several outputs need a loss each: "
        "{digit: ..., odd: ...}"
    )
    assert not (tmp_path / "runs").exists()
