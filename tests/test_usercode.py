"""The user's own Python beside the YAML (`code:`): keras.io's ViT layers in a stack and in a
graph, a plain-function loss, a metric function as a monitor with its direction, a callback,
a data function and a subclassed model with its own train_step, each trained, evaluated,
predicted and exported; a run's code copies and the trust that guards them; every refusal."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner
from usercode_files import EXTRAS, OWN_MODEL, VIT

from conftest import DLRUN_ENV, run_dirs, start_dlrun, wait_until
from dlrun.cli import app

runner = CliRunner()

VIT_SPEC = """\
name: vit
code: [vit.py, extras.py]
data: {function: load, args: {n: 600}, scale: 16}
model:
  layers:
    - {type: Patches, patch_size: 2}
    - {type: PatchEncoder, num_patches: 16, projection_dim: 8}
    - Flatten
    - {type: Dense, units: 10, activation: softmax}
compile:
  loss: focal
  metrics: [accuracy, {type: hit_rate, direction: max}]
training:
  epochs: 2
  batch_size: 64
  tensorboard: null
  checkpoint: {monitor: val_hit_rate}
  callbacks: [{type: CountEpochs, every: 1}]
"""

OWN_SPEC = """\
name: own
code: [own.py]
data: {dataset: digits, scale: 16, flatten: true, one_hot: false}
model: {function: build, args: {units: 12}}
compile: {loss: null, metrics: []}
training:
  epochs: 2
  batch_size: 64
  checkpoint: {monitor: val_accuracy}
"""


@pytest.fixture(scope="module", autouse=True)
def user_data(tmp_path_factory):
    """The trusted-code file in a folder of this module's own (never the real user's)."""
    folder = tmp_path_factory.mktemp("xdg")
    saved = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(folder)
    DLRUN_ENV["XDG_DATA_HOME"] = str(folder)
    yield folder
    if saved is None:
        os.environ.pop("XDG_DATA_HOME", None)
        DLRUN_ENV.pop("XDG_DATA_HOME", None)
    else:
        os.environ["XDG_DATA_HOME"] = DLRUN_ENV["XDG_DATA_HOME"] = saved


def write_project(folder: Path, spec: str = VIT_SPEC, **files: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in {"vit.py": VIT, "extras.py": EXTRAS, "own.py": OWN_MODEL, **files}.items():
        (folder / name).write_text(text)
    (folder / "spec.yaml").write_text(spec)
    return folder / "spec.yaml"


def train(spec: Path, runs: Path, *more: str):
    result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(runs), *more])
    return result, run_dirs(runs)


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("vit")
    os.environ["COUNT_EPOCHS_FILE"] = str(folder / "epochs.txt")
    result, runs = train(write_project(folder / "project"), folder / "runs")
    assert result.exit_code == 0, result.output
    (run,) = runs
    return run


@pytest.fixture(scope="module")
def own_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("own")
    result, runs = train(write_project(folder / "project", OWN_SPEC), folder / "runs")
    assert result.exit_code == 0, result.output
    (run,) = runs
    return run


def history(run: Path):
    import pandas as pd

    return pd.read_csv(run / "history.csv")


# --- layers -----------------------------------------------------------------------------------


GRAPH_SPEC = """\
name: vitgraph
code: [vit.py, extras.py]
data: {function: load, args: {n: 200}, scale: 16}
model:
  blocks:
    encode:
      params: {dim: 8}
      layers:
        - {type: Patches, patch_size: 2, inputs: in}
        - {type: PatchEncoder, num_patches: 16, projection_dim: $dim}
  layers:
    - {block: encode, inputs: input, with: {dim: 6}, name: tokens}
    - {type: LayerNormalization, epsilon: 1.0e-6, name: normed}
    - {type: MultiHeadAttention, num_heads: 2, key_dim: 6, name: attended,
       inputs: {query: normed, value: normed}}
    - {type: Add, inputs: [tokens, attended]}
    - Flatten
    - {type: Dense, units: 10, activation: softmax}
"""


def built(spec_path: Path):
    """The model dlrun builds for a spec (its code imported as `dlrun train` does)."""
    from dlrun import usercode
    from dlrun.data.arrays import signature
    from dlrun.model.builder import build_model
    from dlrun.spec.loading import load_spec

    spec = load_spec(spec_path)
    usercode.use_spec(spec)
    return build_model(spec, signature(spec)[0])


def plain_vit_layers():
    """keras.io's layers, imported by the test itself as a plain Keras user would."""
    namespace: dict = {}
    exec(compile(VIT, "vit_plain.py", "exec"), namespace)
    return namespace["Patches"], namespace["PatchEncoder"]


def test_vit_layers_in_a_stack_count_as_in_plain_keras(tmp_path):
    import keras

    model = built(write_project(tmp_path))
    Patches, PatchEncoder = plain_vit_layers()
    plain = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            Patches(2),
            PatchEncoder(16, 8),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    assert model.count_params() == plain.count_params() == 16 * 8 + 4 * 8 + 8 + 128 * 10 + 10
    assert [type(layer).__name__ for layer in model.layers][:2] == ["Patches", "PatchEncoder"]


def test_vit_layers_in_a_graph_block_count_as_in_plain_keras(tmp_path):
    import keras

    model = built(write_project(tmp_path, GRAPH_SPEC))
    Patches, PatchEncoder = plain_vit_layers()
    inputs = keras.Input((8, 8, 1))
    tokens = PatchEncoder(16, 6)(Patches(2)(inputs))
    normed = keras.layers.LayerNormalization(epsilon=1e-6)(tokens)
    attended = keras.layers.MultiHeadAttention(num_heads=2, key_dim=6)(normed, normed)
    out = keras.layers.Dense(10, activation="softmax")(
        keras.layers.Flatten()(keras.layers.Add()([tokens, attended]))
    )
    plain = keras.Model(inputs, out)
    assert model.count_params() == plain.count_params()
    assert {"Patches", "PatchEncoder"} <= {type(layer).__name__ for layer in model.layers}


# --- a trained run ----------------------------------------------------------------------------


def test_a_run_keeps_its_code_as_trained_with_hashes_and_config_naming_the_copies(vit_run):
    for name, text in (("vit.py", VIT), ("extras.py", EXTRAS)):
        assert (vit_run / "code" / name).read_text() == text
    meta = json.loads((vit_run / "meta.json").read_text())
    assert meta["code"] == {
        f"code/{name}": hashlib.sha256(text.encode()).hexdigest()
        for name, text in (("vit.py", VIT), ("extras.py", EXTRAS))
    }
    config = yaml.safe_load((vit_run / "config.yaml").read_text())
    assert config["code"] == ["code/vit.py", "code/extras.py"]
    assert config["data"]["function"] == "load" and config["data"]["args"] == {"n": 600}


def test_custom_loss_metric_with_direction_and_callback_train(vit_run):
    frame = history(vit_run)
    assert {"loss", "hit_rate", "val_hit_rate", "accuracy"} <= set(frame.columns)
    # hit_rate is accuracy by another name: the function metric is really computed
    np.testing.assert_allclose(frame["hit_rate"], frame["accuracy"], atol=1e-6)
    metrics = json.loads((vit_run / "metrics.json").read_text())
    assert metrics["directions"]["val_hit_rate"] == "max"
    assert metrics["best_epoch"] == int(frame["val_hit_rate"].idxmax()) + 1
    written = Path(os.environ["COUNT_EPOCHS_FILE"]).read_text().split()
    assert written == ["0", "1"]  # CountEpochs(every=1) ran once an epoch


def test_evaluate_json_stays_clean_though_a_code_file_prints_at_import(vit_run):
    result = subprocess.run(
        [sys.executable, "-m", "dlrun", "evaluate", str(vit_run), "--json", "--no-save"],
        capture_output=True,
        text=True,
        env=DLRUN_ENV,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    scores = json.loads(result.stdout)["scores"]  # nothing but JSON on stdout
    assert set(scores) >= {"loss", "hit_rate"}
    assert "extras imported" in result.stderr


def test_predict_and_onnx_export_of_custom_layers(vit_run, tmp_path):
    from sklearn.datasets import load_digits

    images = load_digits().images[:5].reshape(-1, 8, 8, 1).astype("float32")
    np.savez(tmp_path / "new.npz", x=images)
    result = runner.invoke(app, ["predict", str(vit_run), str(tmp_path / "new.npz")])
    assert result.exit_code == 0, result.output
    assert result.output.count("\n") >= 5
    out = tmp_path / "onnx"
    result = runner.invoke(app, ["export", str(vit_run), "--format", "onnx", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "verified with onnxruntime" in result.output and (out / "model.onnx").is_file()


def test_a_subclassed_model_with_its_own_train_step_records_its_metrics(own_run):
    frame = history(own_run)
    assert {"ce", "accuracy", "val_ce", "val_accuracy"} <= set(frame.columns)
    assert "loss" not in frame.columns  # compile.loss: null, the model's steps give ce
    metrics = json.loads((own_run / "metrics.json").read_text())
    assert metrics["directions"]["val_accuracy"] == "max"
    config = yaml.safe_load((own_run / "config.yaml").read_text())
    assert config["model"] == {"function": "build", "args": {"units": 12}}


def test_a_subclassed_model_is_evaluated_and_predicted(own_run, tmp_path):
    result = runner.invoke(app, ["evaluate", str(own_run), "--no-save", "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)["scores"]
    assert set(scores) == {"ce", "accuracy"}
    np.savez(tmp_path / "new.npz", x=np.ones((3, 64), dtype="float32"))
    result = runner.invoke(app, ["predict", str(own_run), str(tmp_path / "new.npz")])
    assert result.exit_code == 0, result.output


# --- trust ------------------------------------------------------------------------------------

SIDE_EFFECT = "\nopen({marker!r}, 'w').write('the code ran')\n"


def received(run: Path, tmp_path: Path, edit: bool = True) -> tuple[Path, Path]:
    """A copy of the run whose code (when `edit`) now leaves a marker file when imported."""
    copy = tmp_path / "received" / run.name
    shutil.copytree(run, copy)
    marker = tmp_path / "marker"
    if edit:
        with open(copy / "code" / "extras.py", "a") as code:
            code.write(SIDE_EFFECT.format(marker=str(marker)))
    return copy, marker


READING = {
    "evaluate": ["evaluate", "{run}", "--no-save"],
    "predict": ["predict", "{run}", "{npz}"],
    "export": ["export", "{run}", "--format", "keras", "--out", "{tmp}/out.keras"],
    "features": ["features", "{run}", "--layer", "flatten", "--out", "{tmp}/features.npz"],
    "attack": ["attack", "{run}", "--no-save"],
    "resume": ["train", "--resume", "{run}", "--epochs", "3"],
}


@pytest.mark.parametrize("command", list(READING))
def test_edited_code_of_a_run_is_refused_by_every_reading_command_and_never_runs(
    vit_run, tmp_path, command
):
    copy, marker = received(vit_run, tmp_path)
    np.savez(tmp_path / "new.npz", x=np.zeros((2, 8, 8, 1), dtype="float32"))
    meta = (copy / "meta.json").read_text()
    args = [a.format(run=copy, npz=tmp_path / "new.npz", tmp=tmp_path) for a in READING[command]]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1
    assert "code/extras.py" in lines[0] and "--trust-code" in lines[0]
    assert "code/vit.py" not in lines[0]  # unedited: its hash is remembered
    assert not marker.exists()  # nothing of the code ran
    assert (copy / "meta.json").read_text() == meta


def test_trust_code_runs_it_once_without_remembering_it(vit_run, tmp_path, user_data):
    copy, marker = received(vit_run, tmp_path)
    trusted = (user_data / "dlrun" / "trusted-code.txt").read_text()
    result = runner.invoke(app, ["evaluate", str(copy), "--no-save", "--trust-code"])
    assert result.exit_code == 0, result.output
    assert marker.read_text() == "the code ran"
    assert (user_data / "dlrun" / "trusted-code.txt").read_text() == trusted
    marker.unlink()
    result = runner.invoke(app, ["evaluate", str(copy), "--no-save"])  # not remembered
    assert result.exit_code == 2 and not marker.exists()


def test_a_run_from_another_user_is_refused_though_unedited(vit_run, tmp_path):
    copy, _ = received(vit_run, tmp_path, edit=False)
    os.environ["XDG_DATA_HOME"] = str(tmp_path / "someone-else")
    try:
        result = runner.invoke(app, ["evaluate", str(copy), "--no-save"])
    finally:
        os.environ["XDG_DATA_HOME"] = DLRUN_ENV["XDG_DATA_HOME"]
    assert result.exit_code == 2
    assert "code/vit.py, code/extras.py" in result.output and "--trust-code" in result.output


HEAD_SPEC = """\
name: head
data: {{function: load, args: {{n: 300}}, scale: 16}}
model:
  base: {{run: {base}}}
  layers: [{{type: Dense, units: 10, activation: softmax}}]
compile: {{loss: focal}}
training: {{epochs: 1, batch_size: 64, tensorboard: null}}
"""


def test_a_head_on_a_run_imports_that_runs_code_if_trusted(vit_run, tmp_path):
    copy, marker = received(vit_run, tmp_path)
    spec = tmp_path / "head.yaml"
    spec.write_text(HEAD_SPEC.format(base=copy))
    result, runs = train(spec, tmp_path / "refused")
    assert result.exit_code == 2 and runs == [] and not marker.exists()
    assert "model.base.run" in result.output and "--trust-code" in result.output
    spec.write_text(HEAD_SPEC.format(base=vit_run))  # a run of this user's: its code is known
    result, runs = train(spec, tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (runs[0] / "code").iterdir()) == ["extras.py", "vit.py"]
    result = runner.invoke(app, ["evaluate", str(runs[0]), "--no-save"])
    assert result.exit_code == 0, result.output


# --- refusals ---------------------------------------------------------------------------------


def with_code(spec: str, code: str) -> str:
    return spec.replace("code: [vit.py, extras.py]", f"code: {code}")


LOSS_ONLY = VIT_SPEC.replace("  callbacks: [{type: CountEpochs, every: 1}]\n", "")
REFUSALS = {
    "missing": (with_code(LOSS_ONLY, "[vit.py, extras.py, gone.py]"), {}, "no such file"),
    "folder": (with_code(LOSS_ONLY, "[vit.py, extras.py, pkg.py]"), {"pkg.py/": ""}, "is a folder"),
    "fifo": (with_code(LOSS_ONLY, "[vit.py, extras.py, pipe.py]"), {"pipe.py|": ""}, "FIFO"),
    "syntax": (
        with_code(LOSS_ONLY, "[vit.py, extras.py, bad.py]"),
        {"bad.py": "x = 1\ndef broken(:\n"},
        "bad.py:2: SyntaxError: invalid syntax",
    ),
    "raises": (
        with_code(LOSS_ONLY, "[vit.py, extras.py, bad.py]"),
        {"bad.py": "import os\n\nraise RuntimeError('no GPU here')\n"},
        "bad.py:3: RuntimeError: no GPU here",
    ),
    "keras clash": (
        LOSS_ONLY.replace("- Flatten", "- {type: Flatten}"),
        {"extras.py": EXTRAS + "\n\nclass Flatten(keras.layers.Flatten):\n    pass\n"},
        "Flatten is defined by keras and extras.Flatten; write extras.Flatten",
    ),
    "two files": (
        with_code(LOSS_ONLY, "[vit.py, extras.py, more.py]"),
        {"more.py": "from vit import Patches as P\n\n\nclass Patches(P):\n    pass\n"},
        "Patches is defined by vit.Patches and more.Patches; write vit.Patches or more.Patches",
    ),
    "argument": (
        LOSS_ONLY.replace("projection_dim: 8", "projection_dims: 8"),
        {},
        "PatchEncoder has no argument 'projection_dims'; did you mean 'projection_dim'?",
    ),
    "layers and function": (
        OWN_SPEC.replace("args: {units: 12}}", "args: {units: 12}, layers: [Flatten]}"),
        {},
        "give layers or a function, not both",
    ),
    "data not a mapping": (
        LOSS_ONLY.replace("function: load, args: {n: 600}", "function: not_a_mapping"),
        {},
        "not_a_mapping() returned list; expected a mapping of the npz keys",
    ),
    "unknown function": (
        LOSS_ONLY.replace("function: load,", "function: laod,"),
        {},
        "no function 'laod' in the code files",
    ),
    "unknown function argument": (
        LOSS_ONLY.replace("args: {n: 600}", "args: {n: 600, sied: 8}"),
        {},
        "data.args.sied: load() has no argument 'sied'; did you mean 'side'?",
    ),
    "monitor without direction": (
        LOSS_ONLY.replace("{type: hit_rate, direction: max}", "hit_rate"),
        {},
        "cannot tell whether a higher or a lower hit_rate is better",
    ),
    "module name taken": (
        with_code(LOSS_ONLY, "[vit.py, extras.py, json.py]"),
        {"json.py": ""},
        "json.py: a module named 'json' is installed already",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_each_bad_code_input_is_one_error_line_exit_2_and_no_run_folder(tmp_path, case):
    spec_text, files, expected = REFUSALS[case]
    project = tmp_path / "project"
    spec = write_project(project, spec_text)
    for name, text in files.items():
        if name.endswith("/"):
            (project / name[:-1]).mkdir()
        elif name.endswith("|"):
            os.mkfifo(project / name[:-1])
        else:
            (project / name).write_text(text)
    result, runs = train(spec, tmp_path / "runs")
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    assert expected in errors[0]
    assert "Traceback" not in result.output
    assert runs == []


def test_a_code_file_that_loops_at_import_stops_on_ctrl_c_with_one_line(tmp_path):
    project = tmp_path / "project"
    marker = tmp_path / "looping"
    loop = f"open({str(marker)!r}, 'w').close()\nwhile True:\n    pass\n"
    spec = write_project(project, with_code(LOSS_ONLY, "[vit.py, extras.py, loop.py]"))
    (project / "loop.py").write_text(loop)
    process = start_dlrun("train", spec, "--runs-dir", tmp_path / "runs")
    wait_until(marker.exists, process, timeout=120)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "loop.py: interrupted while it was being imported" in errors[0]
    assert "Traceback" not in err
    assert run_dirs(tmp_path / "runs") == []


# --- export --format script ---------------------------------------------------------------


@pytest.fixture(scope="module")
def scripts(own_run, tmp_path_factory) -> dict[str, tuple[Path, Path, str]]:
    """LOSS_ONLY trained and own_run, each exported as a script, the two scripts then run one
    after the other in one fresh process (tests/test_export.py's run_scripts), as `python
    SCRIPT` runs each: name -> (the run, the script, its stdout)."""
    from test_export import run_scripts

    folder = tmp_path_factory.mktemp("scripts")
    result, runs = train(write_project(folder / "project", LOSS_ONLY), folder / "runs")
    assert result.exit_code == 0, result.output
    made = {
        "vit": (runs[0], folder / "out" / "vit_script.py"),
        "own": (own_run, folder / "own_script.py"),
    }
    made["vit"][1].parent.mkdir()
    for run, out in made.values():
        result = runner.invoke(app, ["export", str(run), "--format", "script", "--out", str(out)])
        assert result.exit_code == 0, result.output
    env = {**DLRUN_ENV, "CUDA_VISIBLE_DEVICES": "-1"}
    ran = run_scripts(*(out for _, out in made.values()), env=env)
    return {name: (run, out, ran[out]) for name, (run, out) in made.items()}


def test_a_script_of_custom_layers_imports_the_runs_code_copied_beside_it(scripts):
    run, out, stdout = scripts["vit"]
    assert (out.parent / "vit_script_code" / "code" / "vit.py").read_text() == VIT
    text = out.read_text()
    assert "import vit" in text and "vit.PatchEncoder(" in text and "extras.load(n=600)" in text
    params = json.loads((run / "metrics.json").read_text())["params"]
    assert f"Total params: {params:,}" in stdout or str(params) in stdout


def test_a_script_of_a_model_function_calls_the_same_build_and_fit(scripts):
    _, out, _ = scripts["own"]  # it ran through (run_scripts)
    text = out.read_text()
    assert "model = own.build(units=12)" in text and "loss=None" in text


# --- the documentation's example ------------------------------------------------------------


def test_the_documented_example_is_the_shipped_one_and_trains(tmp_path):
    from conftest import ROOT, docs_text

    spec = ROOT / "configs" / "code" / "vit_digits.yaml"
    assert f"```yaml\n{spec.read_text()}```" in docs_text()
    result = runner.invoke(
        app, ["train", str(spec), "--runs-dir", str(tmp_path), "--set", "training.epochs=1"]
    )
    assert result.exit_code == 0, result.output
    (run,) = run_dirs(tmp_path)
    assert sorted(p.name for p in (run / "code").iterdir()) == ["focal.py", "vit.py"]


OPTIMIZERS = """\
import keras


class PlainSGD(keras.optimizers.SGD):
    \"\"\"The user's own optimizer: SGD under another name, no momentum.\"\"\"


class Halving(keras.optimizers.schedules.LearningRateSchedule):
    \"\"\"The rate halves every `every` steps.\"\"\"

    def __init__(self, start=0.2, every=5):
        self.start, self.every = start, every

    def __call__(self, step):
        return self.start * 0.5 ** keras.ops.floor(keras.ops.cast(step, "float32") / self.every)

    def get_config(self):
        return {"start": self.start, "every": self.every}
"""

OPTIMIZER_SPEC = """\
name: own-optimizer
code: [optimizers.py]
data: {dataset: digits, scale: 16, flatten: true, limit: 320}
model:
  layers:
    - {type: Dense, units: 8, activation: relu}
    - {type: Dense, units: 10, activation: softmax}
compile:
  optimizer: {type: PlainSGD, learning_rate: {type: Halving, start: 0.2, every: 3}}
training:
  epochs: 3
  batch_size: 64
  validation_split: 0.2
  tensorboard: null
"""


def test_an_optimizer_and_a_schedule_of_a_code_file_train_and_resume(tmp_path):
    """The code file's optimizer class and learning-rate schedule are the ones used (every
    recorded rate is one of Halving's values, 0.2 / 2**k, falling), and a run of two epochs
    continued to three has the uninterrupted run's history."""
    spec = write_project(tmp_path / "project", OPTIMIZER_SPEC, **{"optimizers.py": OPTIMIZERS})
    result, (whole,) = train(spec, tmp_path / "whole")
    assert result.exit_code == 0, result.output
    result, (run,) = train(spec, tmp_path / "runs", "--set", "training.epochs=2")
    assert result.exit_code == 0, result.output
    resumed = runner.invoke(app, ["train", "--resume", str(run), "--epochs", "3"])
    assert resumed.exit_code == 0, resumed.output
    rates = [float(rate) for rate in history(whole)["learning_rate"]]
    assert len(rates) == 3
    assert rates[0] < 0.2 and np.all(np.diff(rates) < 0)
    for rate in rates:  # Halving's values, not a constant rate nor one of Keras' schedules
        k = np.log2(0.2 / rate)
        assert k == pytest.approx(round(k), abs=1e-5)
    columns = ["loss", "val_loss", "learning_rate"]
    np.testing.assert_allclose(history(run)[columns], history(whole)[columns], atol=1e-5)
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["compile"]["optimizer"]["type"] == "PlainSGD"
