"""Attacks and adversarial training off the softmax path (issue 22): one sigmoid unit, loss
objects, regression runs, a frozen base with Dropout, shuffle: false, JAX with several steps
per execution, and the files and panels an attack and a run draw.

Each test trains at most a few epochs of a 16-unit net on a few hundred samples; the binary run
is shared by the module.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from sklearn import datasets
from typer.testing import CliRunner

from conftest import TINY_SPEC, docs_text, run_dirs
from dlrun import store
from dlrun.adversarial.attacks import Threat, perturb
from dlrun.adversarial.gradients import model_loss
from dlrun.cli import app
from dlrun.errors import RunError, SpecError
from dlrun.spec.loading import load_spec

runner = CliRunner()
FGSM = "  adversarial: {method: fgsm, eps: 0.02, ratio: 0.5}\n"


def train(folder: Path, text: str, name: str = "spec") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(text)
    runs = folder / f"runs-{name}"
    result = runner.invoke(app, ["train", str(folder / f"{name}.yaml"), "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    (run,) = run_dirs(runs)
    return run


def history(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / store.HISTORY)


def readme_binary_spec() -> str:
    """The README's binary recipe (one sigmoid unit, string binary_crossentropy, integer labels)."""
    text = docs_text()
    block = text.split("<!-- binary -->", 1)[1].split("<!-- /binary -->", 1)[0]
    return block.split("```yaml\n", 1)[1].split("```", 1)[0]


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory) -> Path:
    """The README's binary recipe on (standardized) breast-cancer, adversarially
    trained."""
    folder = tmp_path_factory.mktemp("binary")
    cancer = datasets.load_breast_cancer()
    x = (cancer.data - cancer.data.mean(axis=0)) / cancer.data.std(axis=0)  # eps: of one range
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
    frame["label"] = cancer.target
    frame.to_csv(folder / "cancer.csv", index=False)
    spec = readme_binary_spec().replace("path: cancer.csv", f"path: {folder / 'cancer.csv'}")
    spec = spec.replace("epochs: 10\n", "epochs: 10\n  validation_split: 0.2\n" + FGSM)
    # A faster learner than the recipe's default Adam, for a clear score in 10 short epochs.
    spec = spec.replace("compile:\n", "compile:\n  optimizer: {type: Adam, learning_rate: 0.01}\n")
    return train(folder, spec)


def attack(run: Path, *args: str) -> tuple[dict, Path]:
    """`dlrun attack RUN ARGS`: the json it wrote, read back, and the plot it names."""
    result = runner.invoke(app, ["attack", str(run), *args])
    assert result.exit_code == 0, result.output
    lines = [line.removeprefix("wrote ") for line in result.stdout.splitlines()]
    (written,) = [Path(line) for line in lines if line.endswith(".json")]
    (plot,) = [Path(line) for line in lines if line.endswith(".png")]
    return json.loads(written.read_text()), plot


def test_a_sigmoid_run_is_attacked_on_its_thresholded_classes(binary_run):
    """Item 1: eps 0 is evaluate's accuracy (0.5 threshold), with string binary_crossentropy
    and integer labels in the input gradient, in training and in the attack."""
    rows = history(binary_run)
    assert len(rows) == 10 and rows["val_adversarial_accuracy"].between(0, 1).all()
    evaluated = runner.invoke(app, ["evaluate", str(binary_run), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    scores = json.loads(evaluated.stdout)
    data, _ = attack(binary_run, "--method", "pgd", "--eps", "0,0.1", "--steps", "3")
    clean, attacked = data["results"]
    assert data["samples"] == scores["samples"]
    assert clean["adversarial_accuracy"] == clean["clean_accuracy"]
    assert clean["clean_accuracy"] == pytest.approx(scores["scores"]["accuracy"], abs=1e-6)
    assert clean["clean_accuracy"] > 0.8  # not the share of one class (0.37 or 0.63)
    assert attacked["adversarial_accuracy"] < clean["clean_accuracy"]


def test_each_attack_has_its_own_plot_named_like_its_json(binary_run):
    """Item 15: two attacks keep two plots, which name the method, eps and target."""
    untargeted, first = attack(binary_run, "--method", "fgsm", "--eps", "0,0.2")
    targeted, second = attack(binary_run, "--method", "pgd", "--eps", "0.1", "--target", "1")
    folder = binary_run / store.PLOTS
    assert first.parent == second.parent == folder and first != second
    assert first.read_bytes().startswith(b"\x89PNG") and second.read_bytes().startswith(b"\x89PNG")
    stems = sorted(p.stem for p in (binary_run / store.ATTACKS).glob("*.json"))
    fgsm_stem = next(s for s in stems if s.endswith("-fgsm"))
    assert first.name == f"adversarial-{fgsm_stem}-eps0.2.png"
    assert second.name.endswith("-pgd-eps0.1-target1.png")
    assert not (folder / "adversarial.png").exists()
    assert untargeted["method"] == "fgsm" and targeted["target"] == 1


def test_history_panels_leave_out_the_stage_and_keep_validation_only_metrics():
    """Item 15: `stage` is no metric; val_adversarial_accuracy has no train column."""
    from dlrun.report.plots import history_panels

    columns = ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]
    columns += ["val_adversarial_accuracy", "learning_rate", "stage", "epoch_seconds"]
    assert history_panels(columns) == [
        ("accuracy", "accuracy", "val_accuracy"),
        ("loss", "loss", "val_loss"),
        ("adversarial_accuracy", None, "val_adversarial_accuracy"),
    ]


def test_a_regression_run_is_refused_in_one_line(tmp_path):
    """Item 1: no classes, no attack (and no adversarial training)."""
    diabetes = datasets.load_diabetes()
    frame = pd.DataFrame(diabetes.data[:200], columns=[f"d{i}" for i in range(10)])
    frame["label"] = diabetes.target[:200]
    frame.to_csv(tmp_path / "diabetes.csv", index=False)
    text = (
        f"name: sugar\ndata: {{dataset: csv, path: {tmp_path / 'diabetes.csv'}, scale: 1}}\n"
        "model: {layers: [{type: Dense, units: 8, activation: relu}, {type: Dense, units: 1}]}\n"
        "compile: {loss: mse, metrics: [mae]}\ntraining: {epochs: 1}\n"
    )
    run = train(tmp_path, text)
    result = runner.invoke(app, ["attack", str(run), "--eps", "0,0.1"])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {run.name} is a regression")
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.output
    assert not (run / store.ATTACKS).exists()
    adversarial = text.replace("epochs: 1}", "epochs: 1, adversarial: {method: fgsm}}")
    (tmp_path / "adversarial.yaml").write_text(adversarial)
    with pytest.raises(SpecError, match="training.adversarial: adversarial training attacks"):
        load_spec(tmp_path / "adversarial.yaml")


def test_pgd_keeps_each_samples_best_iterate_with_a_loss_object():
    """Item 6: a Loss object (from_logits) reduces over the batch when called; the best iterate
    is still chosen per sample. Checked against PGD of one step worked out here."""
    keras.utils.set_random_seed(0)
    # Large tanh weights: a step of 0.6 overshoots for some samples and lowers their loss.
    large = keras.initializers.RandomNormal(stddev=3.0)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(32, "tanh", kernel_initializer=large),
            keras.layers.Dense(3, kernel_initializer=large),
        ]
    )
    model.compile(loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (64, 6)).astype("float32")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, 64)]
    threat = Threat("pgd", eps=0.3, steps=1, step=0.6, low=0.0, high=1.0)
    got = perturb(model, model_loss(model), x, y, threat, np.random.default_rng(5))

    # By hand: the random start, one signed gradient step, and per sample the worse of the two.
    noise = np.random.default_rng(5).uniform(-0.3, 0.3, x.shape).astype("float32")
    lower, upper = np.maximum(x - 0.3, 0), np.minimum(x + 0.3, 1)
    start = np.clip(x + noise, lower, upper)

    def losses(inputs):
        logits = model(inputs)
        return keras.ops.convert_to_numpy(
            keras.losses.categorical_crossentropy(y, logits, from_logits=True)
        )

    inputs = tf.constant(start)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        total = tf.reduce_sum(keras.losses.categorical_crossentropy(y, model(inputs), True))
    moved = np.clip(start + 0.6 * np.sign(tape.gradient(total, inputs).numpy()), lower, upper)
    before, after = losses(start), losses(moved)
    keep_start = before >= after  # a later iterate replaces an earlier one only if it is worse
    assert np.sum(before > after) and np.sum(before < after)  # the step helps some, not others
    expected = np.where(keep_start[:, None], start, moved)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert tuple(model_loss(model)(tf.constant(y), model(x)).shape) == (64,)


def test_adversarial_training_without_shuffle_trains_every_epoch(tmp_path):
    """Item 2: shuffle: false on TensorFlow, two real epochs, no empty second one."""
    spec = TINY_SPEC.replace("epochs: 2\n", "epochs: 2\n  shuffle: false\n") + FGSM
    run = train(tmp_path, spec)
    rows = history(run)
    meta = json.loads((run / store.META).read_text())
    assert meta["status"] == "completed" and list(rows["epoch"]) == [1, 2]
    assert rows["loss"].iloc[1] > 0.5 * rows["loss"].iloc[0] > 0


@pytest.mark.filterwarnings("ignore:Your input ran out of data", "ignore:`shuffle=True`")
def test_an_epoch_that_got_no_batches_fails_the_run(tmp_path):
    """Item 2, generally: Keras ends an epoch whose data ran out as if it trained (loss 0)."""
    from dlrun.train.callbacks import RunRecorder

    run = store.RunFolder.create(tmp_path, "empty")
    try:
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, "softmax")])
        model.compile(loss="categorical_crossentropy")
        x = np.ones((64, 4), "float32")
        y = np.eye(2, dtype="float32")[np.arange(64) % 2]
        one_pass = ((x[i : i + 32], y[i : i + 32]) for i in (0, 32))
        recorder = RunRecorder(run, "loss", "min")
        with pytest.raises(RunError, match="epoch 2 got no training batches"):
            model.fit(one_pass, steps_per_epoch=2, epochs=2, callbacks=[recorder], verbose=0)
        assert list(history(run.path)["epoch"]) == [1]
    finally:
        run.close()


BASE_SPEC = """\
name: base
seed: 0
data: {dataset: digits, scale: 16, limit: 400}
model:
  layers:
    - Flatten
    - {type: Dense, units: 16, activation: relu}
    - {type: Dropout, rate: 0.9}
    - {type: Dense, units: 10, activation: softmax}
training: {batch_size: 64, epochs: 1, validation_split: 0.2}
"""


@pytest.fixture(scope="module")
def transfer_run(tmp_path_factory) -> Path:
    """A head trained on a base run whose Dropout(0.9) sits below the cut (until: -2)."""
    folder = tmp_path_factory.mktemp("transfer")
    base = train(folder, BASE_SPEC, "base")
    head = BASE_SPEC.replace("name: base", "name: head").split("model:")[0] + (
        f"model:\n  base: {{run: {base}, until: -2}}\n"
        "  layers: [{type: Dense, units: 10, activation: softmax}]\n"
        "training: {batch_size: 64, epochs: 1, validation_split: 0.2}\n"
    )
    return train(folder, head, "head")


DIGITS = datasets.load_digits().images[:32, :, :, None].astype("float32") / 16


def test_a_frozen_base_runs_in_inference_mode(transfer_run):
    """Item 7: the Dropout(0.9) inside a frozen base is off while the head trains."""
    from dlrun.model.checkpoints import load_model
    from dlrun.model.transfer import base_of

    model = load_model(transfer_run / store.BEST)
    dropouts = [x for x in base_of(model).layers if isinstance(x, keras.layers.Dropout)]
    assert [d.rate for d in dropouts] == [0.9]
    training = keras.ops.convert_to_numpy(model(DIGITS, training=True))
    np.testing.assert_allclose(training, keras.ops.convert_to_numpy(model(DIGITS, training=False)))


PLAIN_KERAS = """
import sys, numpy as np, keras
model = keras.saving.load_model(sys.argv[1])
np.save(sys.argv[2], keras.ops.convert_to_numpy(model(np.load(sys.argv[3]))))
print("dlrun imported:", "dlrun" in sys.modules)
"""


def test_a_transfer_runs_keras_export_loads_without_dlrun(transfer_run, tmp_path):
    """The frozen base is dlrun's class; `export --format keras` writes plain Keras."""
    out = tmp_path / "export"
    result = runner.invoke(
        app, ["export", str(transfer_run), "--format", "keras", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    np.save(tmp_path / "x.npy", DIGITS)
    arguments = [out / "model.keras", tmp_path / "y.npy", tmp_path / "x.npy"]
    loaded = subprocess.run(
        [sys.executable, "-c", PLAIN_KERAS, *arguments],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # not the checkout: dlrun is not importable by accident
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ""},
        timeout=120,
    )
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert "dlrun imported: False" in loaded.stdout
    from dlrun.model.checkpoints import load_model

    expected = keras.ops.convert_to_numpy(load_model(transfer_run / store.BEST)(DIGITS))
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, atol=1e-5)


JAX_SPEC = (
    TINY_SPEC.replace("seed: 0\n", "seed: 0\nbackend: jax\n").replace(
        "scale: 16\n", "scale: 16\n  limit: 400\n"
    )
    + "  adversarial: {method: pgd, eps: 0.1, steps: 2}\n"
    + "compile: {steps_per_execution: 4}\n"
)


def test_jax_adversarial_training_with_several_steps_per_execution(tmp_path):
    """Item 8: JAX's multi-step function donates the state a batch generator used to read."""
    (tmp_path / "jax.yaml").write_text(JAX_SPEC)
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dlrun",
            "train",
            tmp_path / "jax.yaml",
            "--runs-dir",
            tmp_path / "runs",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (run,) = run_dirs(tmp_path / "runs")
    meta = json.loads((run / store.META).read_text())
    assert meta["backend"] == "jax" and meta["status"] == "completed"
    rows = history(run)
    assert list(rows["epoch"]) == [1, 2] and (rows["loss"] > 0).all()
    assert rows["val_adversarial_accuracy"].between(0, 1).all()
