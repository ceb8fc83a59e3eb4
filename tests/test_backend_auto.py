"""`backend: auto`, the default: the backend a spec gets when it names none, chosen from the
model, recorded in the run (config.yaml, meta.json) and kept by resume, evaluate and sweeps; a
spec that names a backend always gets it.

Runs in subprocesses without KERAS_BACKEND (this test process sets it, and runs Keras on
TensorFlow, which auto would otherwise take); the JAX ones with TensorFlow made unimportable
(tests/blocker), which proves they never touched it. `runs` and `compare`, which only read
run folders, run in this process.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, TINY_SPEC, run_dirs
from dlrun import store
from dlrun.spec.backends import FAST_ON_JAX, _needs_tensorflow
from dlrun.spec.loading import load_spec

BLOCKER = Path(__file__).resolve().parent / "blocker"
ONE_EPOCH = TINY_SPEC.replace("epochs: 2", "epochs: 1")
CNN_SPEC = ONE_EPOCH.replace("  flatten: true\n", "  flatten: false\n").replace(
    "    - {type: Dense, units: 16, activation: relu}\n",
    "    - {type: Conv2D, filters: 4, kernel_size: 3, activation: relu}\n    - Flatten\n",
)


def environment(block_tensorflow: bool = False, **extra: str) -> dict:
    """No KERAS_BACKEND unless given; this tree's dlrun first on the path."""
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    path = [str(BLOCKER)] if block_tensorflow else []
    env["PYTHONPATH"] = os.pathsep.join([*path, str(ROOT)])
    if block_tensorflow:
        env["DLRUN_BLOCK"] = "tensorflow"
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


def dlrun(*args, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dlrun", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def meta_of(run: Path) -> dict:
    return json.loads((run / store.META).read_text())


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory) -> Path:
    """The tiny dense net with no backend named, trained one epoch by `dlrun train`."""
    root = tmp_path_factory.mktemp("auto")
    (root / "tiny.yaml").write_text(ONE_EPOCH)
    result = dlrun(
        "train", "tiny.yaml", "--runs-dir", "runs", env=environment(block_tensorflow=True), cwd=root
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_dirs(root / "runs")
    return run


def test_a_dense_net_with_no_backend_trains_on_jax_and_says_why(auto_run):
    meta = meta_of(auto_run)
    assert meta["backend"] == "jax"
    assert meta["backend_auto"] == "layers that JAX runs faster on the CPU"
    assert set(meta["versions"]) == {"python", "jax", "keras", "dlrun"}  # no TensorFlow
    # config.yaml names the backend chosen: the run describes itself, and reproduces
    assert "backend: jax\n" in (auto_run / store.CONFIG).read_text()
    assert meta["status"] == store.COMPLETED


def test_runs_and_compare_show_the_backend_chosen(auto_run):
    # They only read the run (no Keras), so in this process.
    from typer.testing import CliRunner

    from dlrun.cli import app

    runner = CliRunner()
    runs = runner.invoke(app, ["runs", "--runs-dir", str(auto_run.parent)])
    assert runs.exit_code == 0, runs.output
    header, row = runs.stdout.splitlines()[1], runs.stdout.splitlines()[3]
    assert "backend" in header and " jax " in row
    compare = runner.invoke(app, ["compare", str(auto_run), "--format", "csv"])
    assert compare.exit_code == 0, compare.output
    lines = compare.stdout.splitlines()
    assert lines[1].split(",")[lines[0].split(",").index("backend")] == "jax"


def test_resume_and_evaluate_keep_the_backend_chosen(auto_run, tmp_path):
    # Even where the environment asks for TensorFlow, the run's config.yaml decides.
    env = environment(KERAS_BACKEND="tensorflow")
    result = dlrun("train", "--resume", auto_run, "--epochs", "2", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    meta = meta_of(auto_run)
    assert meta["backend"] == "jax" and meta["epochs_done"] == 2
    assert len(store.read_history(auto_run)) == 2
    result = dlrun("evaluate", auto_run, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (written,) = sorted((auto_run / "evaluations").glob("*.json"))
    assert json.loads(written.read_text())["backend"] == "jax"


def test_a_sweep_fits_on_the_backend_its_base_gets(tmp_path):
    (tmp_path / "tiny.yaml").write_text(ONE_EPOCH)
    (tmp_path / "sweep.yaml").write_text(
        "base: tiny.yaml\nname: autosweep\ngrid:\n  model.layers.0.units: [8, 16]\n"
        "cv: 0\nrefit: false\n"
    )
    env = environment(block_tensorflow=True)
    result = dlrun("sweep", "sweep.yaml", "--runs-dir", "runs", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = run_dirs(tmp_path / "runs")
    trials = sorted((sweep / "trials").iterdir())
    assert len(trials) == 2
    assert {meta_of(trial)["backend"] for trial in trials} == {"jax"}


def test_a_cnn_with_no_backend_trains_on_tensorflow(tmp_path):
    (tmp_path / "cnn.yaml").write_text(CNN_SPEC)
    result = dlrun("train", "cnn.yaml", "--runs-dir", "runs", env=environment(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_dirs(tmp_path / "runs")
    meta = meta_of(run)
    assert meta["backend"] == "tensorflow"
    assert meta["backend_auto"].startswith("Conv2D")
    assert "backend: tensorflow\n" in (run / store.CONFIG).read_text()


@pytest.mark.parametrize("named", ["tensorflow", "jax"])
def test_a_named_backend_always_wins(tmp_path, named):
    # The CNN named onto JAX, the dense net onto TensorFlow: the opposite of auto's choice,
    # and with KERAS_BACKEND saying the other one.
    text = (CNN_SPEC if named == "jax" else ONE_EPOCH).replace(
        "seed: 0\n", f"seed: 0\nbackend: {named}\n"
    )
    (tmp_path / "spec.yaml").write_text(text)
    other = "tensorflow" if named == "jax" else "jax"
    env = environment(KERAS_BACKEND=other)
    result = dlrun("train", "spec.yaml", "--runs-dir", "runs", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_dirs(tmp_path / "runs")
    meta = meta_of(run)
    assert meta["backend"] == named and meta["backend_auto"] is None
    assert named in meta["versions"]


def test_keras_backend_in_the_environment_decides_auto(tmp_path):
    code = (
        "from dlrun.spec.loading import load_spec; s = load_spec('tiny.yaml'); "
        "print(s.backend, '|', s._backend_auto)"
    )
    (tmp_path / "tiny.yaml").write_text(ONE_EPOCH)
    for given, expected in [("torch", "torch"), (None, "jax")]:
        env = environment(**({"KERAS_BACKEND": given} if given else {}))
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr
        backend, why = result.stdout.strip().split(" | ")
        assert backend == expected
        assert (why == f"KERAS_BACKEND={given} in the environment") == (given is not None)


@pytest.mark.parametrize(
    "text, change, why",
    [
        (ONE_EPOCH, {}, None),
        (CNN_SPEC, {}, "Conv2D"),
        (ONE_EPOCH, {"training.deterministic": True}, "training.deterministic"),
        (ONE_EPOCH, {"compile.jit_compile": False}, "compile.jit_compile"),
        (ONE_EPOCH, {"training.mixed_precision": True}, "adversarial training"),
        (ONE_EPOCH, {"model.augment": [{"type": "GaussianNoise", "stddev": 0.1}]}, "a transfer"),
    ],
)
def test_the_rule_sends_only_fast_dense_nets_to_jax(tmp_path, text, change, why):
    path = tmp_path / "spec.yaml"
    path.write_text(text.replace("seed: 0\n", "seed: 0\nbackend: tensorflow\n"))
    spec = load_spec(path, [f"{key}={json.dumps(value)}" for key, value in change.items()])
    found = _needs_tensorflow(spec)  # the rule alone: the spec names its backend
    assert (found is None) if why is None else found.startswith(why)


def test_the_lecture_nets_split_as_measured():
    # bench/speed_results.md: JAX wins the dense nets on this CPU, TensorFlow the CNN.
    for config, backend in [
        ("mnist_dense", "jax"),
        ("mnist_dropout", "jax"),
        ("mnist_batchnorm", "jax"),
        ("mnist_cnn", "tensorflow"),
        ("mnist_resnet", "tensorflow"),
    ]:
        spec = load_spec(ROOT / "configs" / f"{config}.yaml", ["backend=tensorflow"])
        assert ("jax" if _needs_tensorflow(spec) is None else "tensorflow") == backend, config
    assert {"Dense", "Dropout", "BatchNormalization"} <= FAST_ON_JAX


def test_steps_per_execution_auto_groups_only_small_dense_nets_on_jax():
    # bench/speed.py: 8 made the dense net 1.7x faster on JAX on the CPU; the dropout and
    # batch-norm nets no faster, the CNN slower (bench/steps_per_execution.md).
    def resolved(config: str, backend: str, params: int, on_gpu: bool = False) -> int:
        spec = load_spec(ROOT / "configs" / f"{config}.yaml", [f"backend={backend}"])
        return spec.steps_per_execution(on_gpu, params)

    assert resolved("mnist_dense", "jax", 25_450) == 8
    assert resolved("mnist_dropout", "jax", 669_706) == 1
    assert resolved("mnist_cnn", "jax", 61_482) == 1
    assert resolved("mnist_dense", "tensorflow", 25_450) == 1
    assert resolved("mnist_cnn", "jax", 61_482, on_gpu=True) == 8
    spec = load_spec(ROOT / "configs" / "mnist_dense.yaml", ["compile.steps_per_execution=3"])
    assert spec.steps_per_execution(False, 25_450) == 3  # a number in the spec always wins
