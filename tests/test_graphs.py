"""Models beyond a stack: keras.io's graphs written in dlrun's syntax, against the same graphs
built in plain Keras here, parameter for parameter; each trains an epoch and is evaluated."""

import json

import keras
import numpy as np
import pandas as pd
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


def test_a_stack_written_as_a_graph_is_the_same_model(tmp_path):
    graph = TINY_SPEC.replace(
        "    - {type: Dense, units: 16, activation: relu}\n"
        "    - {type: Dense, units: 10, activation: softmax}\n",
        "    - {type: Dense, units: 16, activation: relu, name: hidden}\n"
        "    - {type: Dense, units: 10, activation: softmax, inputs: hidden, name: digit}\n"
        "  outputs: digit\n",
    )
    assert graph != TINY_SPEC
    stack, as_graph = train(tmp_path, TINY_SPEC, "stack"), train(tmp_path, graph, "graph")
    assert params_of(as_graph) == params_of(stack) == 64 * 16 + 16 + 16 * 10 + 10
    first, second = pd.read_csv(stack / store.HISTORY), pd.read_csv(as_graph / store.HISTORY)
    np.testing.assert_allclose(second["loss"], first["loss"], rtol=1e-5)


# --- a sweep over a block's param -------------------------------------------------------------

RESIDUAL = """\
name: residual
seed: 0
data: {dataset: digits, scale: 16}
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


def test_a_graph_killed_in_training_resumes_exactly(tmp_path):
    import signal

    from conftest import start_dlrun, wait_until

    # A residual MLP: the same graph machinery as the CNNs, at a fraction of their cost.
    text = DENSE_RESIDUAL
    whole = train(tmp_path, text, "whole")
    spec = tmp_path / "broken.yaml"
    spec.write_text(text)
    broken = tmp_path / "broken"
    process = start_dlrun("train", spec, "--runs-dir", broken)

    def two_epochs() -> bool:
        found = run_dirs(broken)
        rows = found[0] / store.HISTORY if found else None
        return rows is not None and rows.exists() and len(rows.read_text().splitlines()) > 2

    wait_until(two_epochs, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    (run,) = run_dirs(broken)
    assert json.loads((run / store.META).read_text())["epochs_done"] < 8
    result = runner.invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    resumed, reference = pd.read_csv(run / store.HISTORY), pd.read_csv(whole / store.HISTORY)
    assert list(resumed["epoch"]) == list(range(1, 9))
    np.testing.assert_allclose(resumed["loss"], reference["loss"], atol=1e-5)
    np.testing.assert_allclose(resumed["val_loss"], reference["val_loss"], atol=1e-5)
