"""What real Keras training code uses: callbacks by name (their state kept on --resume), class
weights, validation data of its own, learning-rate schedules, array targets and csv text
columns. Every case trains for real on small data."""

import json
import math
import signal

import keras
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.metrics import r2_score
from sklearn.utils.class_weight import compute_class_weight
from typer.testing import CliRunner

from conftest import CONFIGS, run_dirs, start_dlrun, wait_until
from dlrun import store
from dlrun.cli import app

runner = CliRunner()

DENSE = """\
model:
  layers:
    - {type: Dense, units: 16, activation: relu}
    - {type: Dense, units: 10, activation: softmax}
"""


def train(tmp_path, spec_text: str, name: str = "spec", code: int = 0):
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(spec_text)
    runs = tmp_path / f"runs-{name}"
    result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(runs)])
    assert result.exit_code == code, result.output
    found = run_dirs(runs)
    return (found[0] if found else None), result


def history(run):
    return pd.read_csv(run / store.HISTORY)


def meta(run):
    return json.loads((run / store.META).read_text())


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory):
    """digits with its own validation and test sets, in known order."""
    digits = load_digits()
    x, y = digits.data.astype("float32"), digits.target
    path = tmp_path_factory.mktemp("npz") / "digits.npz"
    np.savez(
        path,
        x_train=x[:900],
        y_train=y[:900],
        x_val=x[900:1200],
        y_val=y[900:1200],
        x_test=x[1200:],
        y_test=y[1200:],
    )
    return path


# --- 1. Keras callbacks by name ---------------------------------------------------------------

# min_delta 10: no epoch after the first improves the loss by 10, so every epoch waits, and
# with patience 2 the learning rate halves every second epoch: a schedule resume must keep.
PLATEAU = f"""\
name: plateau
seed: 0
data: {{dataset: digits, scale: 16, flatten: true}}
{DENSE}compile:
  optimizer: {{type: adam, learning_rate: 0.01}}
training:
  batch_size: 32
  epochs: {{epochs}}
  deterministic: true
  callbacks:
    - {{type: ReduceLROnPlateau, monitor: loss, factor: 0.5, patience: 2, min_delta: 10}}
    - TerminateOnNaN
"""


def test_reduce_lr_on_plateau_lowers_the_learning_rate_in_history(tmp_path):
    run, _ = train(tmp_path, PLATEAU.replace("{epochs}", "5"))
    rates = list(history(run)["learning_rate"])
    # Keras' rule: epoch 1 sets best, epochs 2 and 3 wait, the end of 3 halves; 4, 5 wait and
    # the end of 5 halves again. history.csv records the rate after each epoch's callbacks.
    expected = [0.01, 0.01, 0.005, 0.005, 0.0025]
    np.testing.assert_allclose(rates, expected, rtol=1e-6)
    state = meta(run)["callback_state"]
    assert state[0]["type"] == "ReduceLROnPlateau" and state[0]["state"]["wait"] == 0
    assert state[1]["type"] == "TerminateOnNaN"


def test_callback_state_survives_a_kill_and_resume(tmp_path):
    spec = tmp_path / "plateau.yaml"
    spec.write_text(PLATEAU.replace("{epochs}", "12"))
    whole, _ = train(tmp_path, PLATEAU.replace("{epochs}", "12"), "whole")
    broken = tmp_path / "broken"
    process = start_dlrun("train", spec, "--runs-dir", broken)

    def two_epochs_done():
        found = run_dirs(broken)
        rows = (found[0] / store.HISTORY) if found else None
        return rows is not None and rows.exists() and len(rows.read_text().splitlines()) > 2

    wait_until(two_epochs_done, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    (run,) = run_dirs(broken)
    killed_at = meta(run)["epochs_done"]
    assert 1 <= killed_at < 12, "the kill must land inside the fit"
    result = runner.invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    resumed, reference = history(run), history(whole)
    assert len(resumed) == 12
    # Without the saved wait and best, the resumed callback would start counting again and
    # halve the rate at other epochs.
    np.testing.assert_allclose(resumed["learning_rate"], reference["learning_rate"], rtol=1e-6)
    np.testing.assert_allclose(resumed["loss"], reference["loss"], atol=1e-5)
    assert meta(run)["callback_state"] == meta(whole)["callback_state"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("ModelCheckpoint", "ModelCheckpoint is dlrun's own: use training.checkpoint"),
        ("BackupAndRestore", "BackupAndRestore is dlrun's own: use dlrun train --resume RUN"),
        ("LambdaCallback", "LambdaCallback is refused: it runs code from the file"),
        ("LearningRateScheduler", "LearningRateScheduler is refused: it takes a function"),
        ("{type: ReduceLROnPlateu}", "unknown callback 'ReduceLROnPlateu'; did you mean"),
        ("{type: ReduceLROnPlateau, patiense: 2}", "takes no argument 'patiense'; did you mean"),
    ],
)
def test_callbacks_dlrun_owns_or_that_take_code_are_refused_in_one_line(tmp_path, entry, message):
    text = f"data: {{dataset: digits, scale: 16, flatten: true}}\n{DENSE}"
    text += f"training: {{epochs: 1, callbacks: [{entry}]}}\n"
    run, result = train(tmp_path, text, code=2)
    assert run is None and "Traceback" not in result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith("Error: ") and message in line and "training.callbacks.0" in line


# --- 2. class weights -------------------------------------------------------------------------


def test_balanced_class_weights_are_scikit_learns_on_the_training_split(tmp_path, digits_npz):
    # Drop most of class 0 so that the weights differ from 1.
    archive = dict(np.load(digits_npz))
    keep = (archive["y_train"] != 0) | (np.arange(900) % 5 == 0)
    archive["x_train"], archive["y_train"] = archive["x_train"][keep], archive["y_train"][keep]
    path = tmp_path / "skewed.npz"
    np.savez(path, **archive)
    base = f"data: {{dataset: npz, path: {path}, scale: 16}}\n{DENSE}"
    weighted, _ = train(tmp_path, base + "training: {epochs: 1, class_weight: balanced}\n", "w")
    plain, _ = train(tmp_path, base + "training: {epochs: 1}\n", "p")
    labels = archive["y_train"]
    expected = compute_class_weight("balanced", classes=np.unique(labels), y=labels)
    recorded = meta(weighted)["class_weight"]
    assert list(recorded) == [str(c) for c in range(10)]
    np.testing.assert_allclose(list(recorded.values()), expected)
    assert recorded["0"] > 2  # the rare class counts more
    assert history(weighted)["loss"][0] != pytest.approx(history(plain)["loss"][0], abs=1e-4)


def test_class_weights_by_the_labels_own_names_and_refused_for_regression(tmp_path):
    frame = load_breast_cancer(as_frame=True).frame
    frame["diagnosis"] = np.where(frame.pop("target") == 1, "benign", "malignant")
    path = tmp_path / "cancer.csv"
    frame.to_csv(path, index=False)
    data = f"data: {{dataset: csv, path: {path}, label_column: diagnosis, scale: 1}}\n"
    model = "model: {layers: [Normalization, {type: Dense, units: 2, activation: softmax}]}\n"
    run, _ = train(tmp_path, data + model + "training: {epochs: 1, class_weight: {malignant: 3}}\n")
    assert meta(run)["class_weight"] == {"benign": 1.0, "malignant": 3.0}
    _, result = train(
        tmp_path, data + model + "training: {epochs: 1, class_weight: {malign: 3}}\n", "typo", 2
    )
    assert "training.class_weight.malign: no class 'malign'" in result.stderr
    assert "did you mean 'malignant'?" in result.stderr
    regression = data.replace("diagnosis", "mean radius") + (
        "model: {layers: [{type: Dense, units: 1}]}\ncompile: {loss: mse, metrics: [mae]}\n"
        "training: {epochs: 1, class_weight: balanced}\n"
    )
    _, result = train(tmp_path, regression, "regression", 2)
    assert "training.class_weight: class weights are for classes" in result.stderr


# --- 3. validation data of its own ------------------------------------------------------------


def test_npz_validation_arrays_are_the_validation_data(tmp_path, digits_npz):
    text = f"data: {{dataset: npz, path: {digits_npz}, scale: 16}}\n{DENSE}"
    run, _ = train(tmp_path, text + "training: {epochs: 2, batch_size: 64}\n")
    assert meta(run)["validation"] == "own"
    assert "validation_split: 0.0" in (run / store.CONFIG).read_text()
    archive = np.load(digits_npz)
    model = keras.models.load_model(run / store.LAST)
    scores = model.evaluate(
        archive["x_val"] / 16,
        keras.utils.to_categorical(archive["y_val"]),
        verbose=0,
        return_dict=True,
    )
    # The last epoch's val_loss is last.keras scored on x_val/y_val: nothing else.
    assert history(run)["val_loss"].iloc[-1] == pytest.approx(scores["loss"], rel=1e-5)
    both = text + "training: {epochs: 1, validation_split: 0.2}\n"
    _, result = train(tmp_path, both, "both", 2)
    (line,) = result.stderr.splitlines()
    assert (
        "training.validation_split: 0.2 holds out part of the training data, but the data" in line
    )


def test_a_validation_csv_is_the_validation_data(tmp_path):
    frame = load_breast_cancer(as_frame=True).frame
    frame.iloc[:400].to_csv(tmp_path / "train.csv", index=False)
    frame.iloc[400:].to_csv(tmp_path / "val.csv", index=False)
    text = (
        f"data: {{dataset: csv, path: {tmp_path / 'train.csv'}, label_column: target, scale: 1, "
        f"validation_path: {tmp_path / 'val.csv'}, one_hot: false}}\n"
        "model: {layers: [Normalization, {type: Dense, units: 1, activation: sigmoid}]}\n"
        "compile: {loss: binary_crossentropy}\ntraining: {epochs: 1}\n"
    )
    run, _ = train(tmp_path, text)
    model = keras.models.load_model(run / store.LAST)
    val = frame.iloc[400:]
    x_val = val.drop(columns=["target"]).to_numpy("float32")
    scores = model.evaluate(x_val, val["target"].to_numpy(), verbose=0, return_dict=True)
    assert history(run)["val_loss"].iloc[-1] == pytest.approx(scores["loss"], rel=1e-5)
    # Another set of columns is refused before any run folder exists.
    frame.iloc[400:, 1:].to_csv(tmp_path / "val.csv", index=False)
    _, result = train(tmp_path, text, "columns", 2)
    assert "give the validation csv the same columns in the same order" in result.stderr


# --- 5. learning-rate schedules in the short form ---------------------------------------------


def test_a_schedule_in_the_short_form_decays_in_history(tmp_path):
    text = (
        "data: {dataset: digits, scale: 16, flatten: true}\n" + DENSE + "compile:\n"
        "  optimizer: {type: sgd, learning_rate: {type: ExponentialDecay, "
        "initial_learning_rate: 0.1, decay_steps: 10, decay_rate: 0.5}}\n"
        "training: {epochs: 3, batch_size: 64}\n"
    )
    run, _ = train(tmp_path, text)
    steps = meta(run)["steps_per_epoch"]
    expected = [0.1 * 0.5 ** (steps * epoch / 10) for epoch in (1, 2, 3)]
    np.testing.assert_allclose(history(run)["learning_rate"], expected, rtol=1e-5)
    warmup = text.replace(
        "{type: ExponentialDecay, initial_learning_rate: 0.1, decay_steps: 10, decay_rate: 0.5}",
        "{type: CosineDecay, initial_learning_rate: 0.0, warmup_target: 0.1, warmup_steps: 40, "
        "decay_steps: 20}",
    )
    run, _ = train(tmp_path, warmup, "cosine")
    rates = list(history(run)["learning_rate"])
    assert rates[0] < rates[1] and rates[2] < rates[1]  # up during warmup, then down


# --- 6. targets that are arrays ---------------------------------------------------------------

AUTOENCODER = """\
name: autoencoder
data: {dataset: digits, scale: 16, targets: inputs}
model:
  layers:
    - Flatten
    - {type: Dense, units: 16, activation: relu}
    - {type: Dense, units: 64, activation: sigmoid}
    - {type: Reshape, target_shape: [8, 8, 1]}
compile: {loss: mse, metrics: [mae]}
training: {epochs: 2, batch_size: 64}
"""


def test_an_autoencoder_trains_on_its_inputs_and_evaluates_every_value(tmp_path):
    run, _ = train(tmp_path, AUTOENCODER)
    assert meta(run)["status"] == "completed"
    result = runner.invoke(app, ["evaluate", str(run)])
    assert result.exit_code == 0, result.output
    (written,) = (run / store.EVALUATIONS).glob("*.json")
    report = json.loads(written.read_text())
    assert written.with_name(f"{written.stem}-reconstructions.png").stat().st_size > 0
    # Scored again here, on every pixel of the digits test split dlrun holds out.
    from sklearn.model_selection import train_test_split

    x = load_digits().data.astype("float32") / 16
    _, x_test = train_test_split(x, test_size=0.2, random_state=0, stratify=None)
    x_test = x_test.reshape(-1, 8, 8, 1)
    model = keras.models.load_model(run / store.BEST)
    outputs = model.predict(x_test, verbose=0)
    assert report["samples"] == len(x_test)
    assert report["regression"]["r2"] == pytest.approx(
        r2_score(x_test.ravel(), outputs.ravel()), abs=1e-5
    )
    assert report["regression"]["mae"] == pytest.approx(
        float(np.abs(x_test - outputs).mean()), abs=1e-5
    )


def test_an_image_target_and_an_output_of_another_shape_is_one_line(tmp_path):
    text = AUTOENCODER.replace("    - {type: Reshape, target_shape: [8, 8, 1]}\n", "")
    _, result = train(tmp_path, text, code=2)
    (line,) = result.stderr.splitlines()
    assert "the model's output has shape (64,) but each target has shape (8, 8, 1)" in line
    assert "{type: Reshape, target_shape: [8, 8, 1]}" in line


# --- 8. text columns in a csv -----------------------------------------------------------------


def colours(tmp_path, rows: slice, colours_seen=("red", "green", "blue")):
    frame = load_breast_cancer(as_frame=True).frame.iloc[rows].reset_index(drop=True)
    rng = np.random.default_rng(0)
    frame.insert(0, "colour", rng.choice(list(colours_seen), len(frame)))
    path = tmp_path / f"colours-{rows.start}.csv"
    frame.to_csv(path, index=False)
    return path


def test_text_columns_are_named_or_one_hot_encoded_and_recorded(tmp_path):
    path = colours(tmp_path, slice(0, 450))
    spec = (
        f"data: {{dataset: csv, path: {path}, label_column: target, scale: 1, one_hot: false}}\n"
        "model: {layers: [Normalization, {type: Dense, units: 1, activation: sigmoid}]}\n"
        "compile: {loss: binary_crossentropy}\ntraining: {epochs: 1}\n"
    )
    _, result = train(tmp_path, spec, "text", 2)
    (line,) = result.stderr.splitlines()
    assert "columns ['colour'] hold text, not numbers; list them in data.categorical" in line
    run, _ = train(
        tmp_path, spec.replace("one_hot: false", "one_hot: false, categorical: [colour]")
    )
    assert meta(run)["data_encoding"] == {"categorical": {"colour": ["blue", "green", "red"]}}
    assert meta(run)["status"] == "completed"
    # Other data with a category never seen and one missing encodes as the training data did.
    other = colours(tmp_path, slice(450, 569), ("red", "purple"))
    result = runner.invoke(app, ["evaluate", str(run), "--set", f"data.path={other}"])
    assert result.exit_code == 0, result.output
    assert math.isfinite(
        json.loads(next((run / store.EVALUATIONS).glob("*.json")).read_text())["scores"]["loss"]
    )


# --- the example configs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "params"),
    [
        # Normalization (mean, variance, count of 30 features), Dense 30->16, Dense 16->1
        ("cancer_callbacks", (30 + 30 + 1) + (30 * 16 + 16) + (16 + 1)),
        # 784->64->16->64->784
        ("mnist_autoencoder", (784 * 64 + 64) + (64 * 16 + 16) + (16 * 64 + 64) + (64 * 784 + 784)),
    ],
)
def test_the_example_configs_validate_and_train(name, params, tmp_path, monkeypatch):
    monkeypatch.chdir(CONFIGS.parent)  # any folder: the configs name their csvs from theirs
    result = runner.invoke(app, ["validate", str(CONFIGS / f"{name}.yaml")])
    assert result.exit_code == 0, result.output
    assert result.stdout.rstrip().endswith(f"valid; {params:,} parameters")
    runs = tmp_path / "runs"
    result = runner.invoke(
        app,
        [
            "train",
            str(CONFIGS / f"{name}.yaml"),
            "--runs-dir",
            str(runs),
            "--set",
            "training.epochs=1",
        ],
    )
    assert result.exit_code == 0, result.output
    (run,) = run_dirs(runs)
    recorded = meta(run)
    if name == "cancer_callbacks":
        assert recorded["validation"] == "own" and set(recorded["class_weight"]) == {
            "benign",
            "malignant",
        }
        assert recorded["callback_state"][0]["type"] == "ReduceLROnPlateau"
    else:
        result = runner.invoke(app, ["evaluate", str(run)])
        assert result.exit_code == 0, result.output
        assert "R²:" in result.stdout
        assert list((run / store.EVALUATIONS).glob("*-reconstructions.png"))


def test_the_cancer_csvs_are_what_their_script_writes(tmp_path):
    import runpy
    import shutil

    script = tmp_path / "make_cancer.py"
    shutil.copy(CONFIGS / "data" / "make_cancer.py", script)
    # Run as `python make_cancer.py` runs it (as __main__, beside its copy), in this process:
    # what is checked is what it writes, and scikit-learn is already imported here.
    runpy.run_path(str(script), run_name="__main__")
    for name in ("cancer_train.csv", "cancer_val.csv"):
        assert (tmp_path / name).read_text() == (CONFIGS / "data" / name).read_text()


@pytest.mark.parametrize("optimizer", ["lamb", "{type: Lamb, learning_rate: 0.002}"])
def test_every_optimizer_dlrun_lists_compiles(tmp_path, optimizer):
    """`lamb` is among the names dlrun suggests, yet Keras' own `optimizers.get` table leaves
    it out: it must compile, with its arguments, not be refused as "did you mean 'lamb'"."""
    from dlrun.model.builder import build_model
    from dlrun.model.compiling import compile_model
    from dlrun.spec.loading import load_spec

    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(
        "data: {dataset: digits, flatten: true}\n"
        "model: {layers: [{type: Dense, units: 10, activation: softmax}]}\n"
        f"compile: {{optimizer: {optimizer}}}\n"
    )
    spec = load_spec(spec_file)
    model = build_model(spec, (64,))
    compile_model(model, spec, 10)
    assert type(model.optimizer) is keras.optimizers.Lamb
    expected = 0.002 if "0.002" in optimizer else keras.optimizers.Lamb().learning_rate
    assert float(model.optimizer.learning_rate) == pytest.approx(float(expected))
