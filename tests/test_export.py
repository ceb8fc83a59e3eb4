"""`dlrun export`: keras, savedmodel, onnx and litert verified in their own runtimes, the spec
as a plain Keras script that trains to the run's own numbers, and the exports refused."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import CONFIGS, DLRUN_ENV, TINY_SPEC, run_dirs
from dlrun import store
from dlrun.cli import app
from dlrun.data.arrays import load_data
from dlrun.report import export as exporting
from dlrun.report import script
from dlrun.spec.loading import load_spec

runner = CliRunner()


def train(folder: Path, spec: Path | str, *overrides: str) -> Path:
    if not isinstance(spec, Path):
        (folder / "spec.yaml").write_text(spec)
        spec = folder / "spec.yaml"
    runs = folder / "runs"
    sets = [arg for override in overrides for arg in ("--set", override)]
    result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(runs), *sets])
    assert result.exit_code == 0, result.output
    (run,) = run_dirs(runs)
    return run


def export(run: Path, fmt: str, out: Path, *extra: str):
    return runner.invoke(app, ["export", str(run), "--format", fmt, "--out", str(out), *extra])


def one_error_line(result, exit_code: int = 2) -> str:
    assert result.exit_code == exit_code, result.output
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr


@pytest.fixture(scope="module")
def digits_run(trained) -> Path:
    """TINY_SPEC trained (this module's copy of conftest's session run)."""
    return trained


@pytest.fixture(scope="module")
def samples(digits_run):
    """The first 64 test samples and the checkpoint's outputs on them."""
    x = load_data(load_spec(digits_run / "config.yaml")).x_test[:64]
    model = keras.models.load_model(digits_run / "checkpoints" / "best.keras")
    return x, model.predict(x, verbose=0)


def _keras(path: Path, x):
    return keras.models.load_model(path / "model.keras").predict(x, verbose=0)


def _savedmodel(path: Path, x):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))  # held: its functions need its variables
    return loaded.serve(tf.constant(x)).numpy()


def _onnx(path: Path, x):
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(str(path / "model.onnx"))
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _litert(path: Path, x):
    interpreter_module = pytest.importorskip("ai_edge_litert.interpreter")
    interpreter = interpreter_module.Interpreter(model_path=str(path / "model.tflite"))
    (given,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(given["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(given["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


RUNTIMES = {
    "keras": ("Keras", _keras),
    "savedmodel": ("TensorFlow", _savedmodel),
    "onnx": ("onnxruntime", _onnx),
    "litert": ("LiteRT interpreter", _litert),
}


@pytest.mark.parametrize("fmt", list(RUNTIMES))
def test_each_format_is_verified_in_its_own_runtime(digits_run, samples, tmp_path, fmt):
    name, load = RUNTIMES[fmt]
    if fmt in exporting.EXTRAS:
        for module in exporting.EXTRAS[fmt][0]:
            pytest.importorskip(module)
    out = tmp_path / fmt
    result = export(digits_run, fmt, out)
    assert result.exit_code == 0, result.output
    found = re.search(
        rf"verified with {name} \S+ on 64 test samples: max difference (\S+) \(tolerance 0.0001\)",
        result.stdout,
    )
    assert found, result.stdout
    assert float(found.group(1)) <= 1e-4
    assert f"wrote {out / 'preprocessing.json'}" in result.stdout
    x, expected = samples
    assert np.max(np.abs(load(out, x) - expected)) <= 1e-4  # and again, here
    prep = json.loads((out / "preprocessing.json").read_text())
    assert prep["input_shape"] == [64] and prep["scale"] == 16.0 and prep["flatten"] is True
    assert prep["class_names"] == [str(d) for d in range(10)]
    assert prep["image"] == {"size": [8, 8], "color_mode": "grayscale", "interpolation": "bilinear"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_an_existing_out_is_replaced_only_with_force_and_only_if_an_export(digits_run, tmp_path):
    out = tmp_path / "model"
    assert export(digits_run, "keras", out).exit_code == 0
    first = (out / "model.keras").stat().st_mtime_ns
    message = one_error_line(export(digits_run, "keras", out))
    assert f"--out {out}: already exists; pass --force to replace it" in message
    result = export(digits_run, "keras", out, "--force")
    assert result.exit_code == 0, result.output
    assert (out / "model.keras").stat().st_mtime_ns != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    message = one_error_line(export(digits_run, "keras", tmp_path / "mine", "--force"))
    assert "is not an earlier export" in message
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def _copy(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / run.name
    shutil.copytree(run, copy)
    return copy


def _meta(run: Path, **changes) -> None:
    meta = json.loads((run / "meta.json").read_text())
    meta.update(changes)
    (run / "meta.json").write_text(json.dumps(meta))


def test_a_run_still_training_is_refused(digits_run, tmp_path):
    run = _copy(digits_run, tmp_path)
    _meta(run, status="running", ended=None)
    held = store.take_lock(run)  # as the training process holds it
    try:
        message = one_error_line(export(run, "keras", tmp_path / "out"), exit_code=1)
    finally:
        os.close(held)
    assert "still training (2 of 2 epochs done); export it once it has ended" in message


def test_a_run_that_failed_before_its_first_checkpoint_is_one_line(digits_run, tmp_path):
    run = _copy(digits_run, tmp_path)
    shutil.rmtree(run / "checkpoints")
    _meta(run, status="failed", epochs_done=0)
    message = one_error_line(export(run, "onnx", tmp_path / "out"), exit_code=1)
    assert "no checkpoints/best.keras to export; the run saved no checkpoint (status failed" in (
        message
    )
    message = one_error_line(
        runner.invoke(app, ["predict", str(run), str(tmp_path / "x.npz")]), exit_code=1
    )
    assert "no checkpoints/best.keras to predict with" in message


def test_a_received_run_with_a_symlinked_checkpoint_is_one_line(digits_run, tmp_path):
    run = _copy(digits_run, tmp_path)
    elsewhere = tmp_path / "elsewhere.keras"
    (run / "checkpoints" / "best.keras").rename(elsewhere)
    (run / "checkpoints" / "best.keras").symlink_to(elsewhere)
    message = one_error_line(export(run, "keras", tmp_path / "out"), exit_code=1)
    assert "best.keras: is a symlink; refusing to read out of the run" in message
    assert not (tmp_path / "out").exists()


def test_a_missing_extra_is_one_line_naming_it(digits_run, tmp_path, monkeypatch):
    monkeypatch.setattr(exporting, "_installed", lambda module: module != "onnxruntime")
    message = one_error_line(export(digits_run, "onnx", tmp_path / "out"))
    assert (
        'onnx needs onnxruntime, not installed; install the extra: pip install "dlrun[onnx]"'
        in (message)
    )
    monkeypatch.setattr(exporting, "_installed", lambda module: False)
    message = one_error_line(export(digits_run, "litert", tmp_path / "out"))
    assert 'pip install "dlrun[litert]"' in message


@pytest.mark.parametrize(
    "extra, key",
    [
        ("  adversarial: {method: fgsm, eps: 0.1}\n", "training.adversarial"),
        ("  callbacks: [TerminateOnNaN]\n", "training.callbacks"),
        ("  class_weight: balanced\n", "training.class_weight"),
    ],
)
def test_a_spec_without_a_plain_script_form_is_refused(tmp_path, extra, key):
    path = tmp_path / "spec.yaml"
    path.write_text(TINY_SPEC + extra)
    with pytest.raises(Exception, match=f"--format script: {key} .* has no plain Keras script"):
        script.check_scriptable(load_spec(path))


# --- the spec as a plain Keras script ------------------------------------------------------------


# Several exported scripts run one after another in one fresh Python process, each as
# `python SCRIPT` would (its folder the working directory and first on sys.path, __main__, its
# own globals, Keras' session cleared before it: its seed gives it the weights a process of
# its own would), so the suite pays one TensorFlow import for them all. Each script's stdout,
# its error (a traceback) if it failed, and the backend Keras ran it on, as JSON.
RUN_SCRIPTS = """
import contextlib, io, json, os, runpy, sys, traceback
results = {}
for path in sys.argv[1:]:
    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session()
    os.chdir(os.path.dirname(path))
    sys.path.insert(0, os.path.dirname(path))
    sys.argv, out, error = [path], io.StringIO(), None
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(path, run_name="__main__")
    except BaseException:
        error = traceback.format_exc()
    sys.path.remove(os.path.dirname(path))
    backend = sys.modules["keras"].backend.backend() if "keras" in sys.modules else None
    results[path] = {"stdout": out.getvalue(), "error": error, "backend": backend}
print("SCRIPTS:" + json.dumps(results))
"""


def run_scripts(*paths: Path, env: dict | None = None) -> dict[Path, str]:
    """Each script's stdout, all run in one process (RUN_SCRIPTS); each must run through, on
    the backend it asks for."""
    result = subprocess.run(
        [sys.executable, "-c", RUN_SCRIPTS, *map(str, paths)],
        capture_output=True,
        text=True,
        env=DLRUN_ENV if env is None else env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ran = json.loads(result.stdout.rpartition("SCRIPTS:")[2])
    found = {}
    for path in paths:
        got = ran[str(path)]
        assert got["error"] is None, got["error"][-3000:]
        backend = f'os.environ["KERAS_BACKEND"] = "{got["backend"]}"'
        assert backend in path.read_text(), got["backend"]
        found[path] = got["stdout"]
    return found


def numbers(stdout: str) -> dict:
    """A script's parameter count and test accuracy, from its last lines."""
    found = dict(re.findall(r"^(parameters|test accuracy): (\S+)$", stdout, re.M))
    return {"params": int(found["parameters"]), "accuracy": float(found["test accuracy"])}


def exported_script(run: Path, out: Path) -> str:
    """`dlrun export RUN --format script`'s text: it imports only what a plain script may."""
    result = export(run, "script", out)
    assert result.exit_code == 0, result.output
    text = out.read_text()
    imports = set(re.findall(r"^(?:from|import) (\w+)", text, re.M))
    assert imports <= {"os", "csv", "importlib", "math", "pathlib", "keras", "numpy", "sklearn"}
    return text


def check_script(scripted: tuple[Path, str, dict]) -> str:
    """The script trains to the run's parameter count and test accuracy (within 0.5 points)."""
    run, text, got = scripted
    metrics = json.loads((run / "metrics.json").read_text())
    assert got["params"] == metrics["params"]
    assert abs(got["accuracy"] - metrics["test"]["accuracy"]) <= 0.005  # within 0.5 points
    return text


GRAPH = """\
name: tiny-graph
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
    - {block: residual, repeat: 2, name: features}
    - {type: Dropout, rate: 0.1, inputs: features}
    - {type: Dense, units: 10, activation: softmax}
training: {batch_size: 64, epochs: 3, validation_split: 0.2, deterministic: true}
"""


# What each script test trains: its spec and overrides.
SCRIPTED = {
    # Two epochs instead of five; measured: the same test accuracy to 4 places (0.8570).
    "quickstart": (
        CONFIGS / "quickstart.yaml",
        ("training.epochs=2", "training.deterministic=true"),
    ),
    # The lecture's CNN on 1,000 mnist_5k training images for one epoch (about 5 s to train
    # here); bench/export_script.py runs it on all of mnist_5k for more epochs.
    "cnn": (
        CONFIGS / "mnist_cnn.yaml",
        (
            "data.dataset=mnist_5k",
            "data.limit=1000",
            "training.epochs=1",
            "training.deterministic=true",
            "training.tensorboard=null",
        ),
    ),
    # bench/export_script.py does the same for configs/mnist_resnet.yaml (residual CNN blocks)
    "graph": (GRAPH, ()),
}


@pytest.fixture(scope="module")
def scripts(tmp_path_factory) -> dict[str, tuple[Path, str, dict]]:
    """Each of SCRIPTED trained by dlrun and exported as a script, the scripts then run (in
    one process, RUN_SCRIPTS): name -> (the run, the script's text, its numbers)."""
    made = {}
    for name, (spec, overrides) in SCRIPTED.items():
        folder = tmp_path_factory.mktemp(f"script-{name}")
        run = train(folder, spec, *overrides)
        made[name] = (run, exported_script(run, folder / "plain.py"), folder / "plain.py")
    got = run_scripts(*(path for _, _, path in made.values()))
    return {name: (run, text, numbers(got[path])) for name, (run, text, path) in made.items()}


def test_the_quickstart_as_a_script_trains_to_the_runs_numbers(scripts):
    text = check_script(scripts["quickstart"])
    assert 'model.add(keras.layers.Dense(units=32, activation="relu", name="dense"))' in text
    assert "# model.layers.1" in text and "# training.validation_split: 0.1" in text


def test_the_cnn_as_a_script_trains_to_the_runs_numbers(scripts):
    text = check_script(scripts["cnn"])
    assert "keras.layers.Conv2D(filters=32, kernel_size=3" in text
    assert "# data.limit: 1000 training samples" in text


def test_a_graph_as_a_script_uses_the_functional_api_and_trains_to_the_runs_numbers(scripts):
    text = check_script(scripts["graph"])
    assert 'inputs = keras.Input(shape=(64,), name="input")' in text
    assert 'keras.layers.Add(name="add_1")([' in text
    assert 'model = keras.Model(inputs, h, name="tiny_graph")' in text
