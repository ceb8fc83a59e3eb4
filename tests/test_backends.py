"""Keras backends: JAX trains, resumes, evaluates and sweeps without TensorFlow; checkpoints
cross backends; a missing backend is one line. JAX runs in subprocesses with TensorFlow made
unimportable (tests/blocker), since this test process runs Keras on TensorFlow.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import ROOT, TINY_SPEC, run_dirs
from dlrun import store
from dlrun.cli import app

runner = CliRunner()
BLOCKER = Path(__file__).resolve().parent / "blocker"
JAX_SPEC = TINY_SPEC.replace("seed: 0\n", "seed: 0\nbackend: jax\n")

# Trains on JAX three ways and reports what it saw: uninterrupted (A), stopped after epoch 1 and
# resumed (B), and by hand with Keras on the epoch orders dlrun promises (C); then scores B's
# checkpoint and a TensorFlow-trained one (argv[3]) on JAX.
JAX_SCRIPT = """
import json, sys
import numpy as np
from pathlib import Path
from dlrun import api
from dlrun.train import runner
from dlrun.data.feed import epoch_order
from dlrun.spec.loading import load_spec

root = Path(sys.argv[2])
a = api.train(sys.argv[1], runs_dir=root / "a", verbose=False)
import keras  # only now: dlrun chose the backend before Keras was first imported

class StopAfterFirst(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt

b = api.train(sys.argv[1], runs_dir=root / "b", verbose=False, callbacks=(StopAfterFirst(),))
stopped = b.status
b = api.resume(b.run_dir, verbose=False)

spec = load_spec(sys.argv[1])
prepared = runner.prepare(spec)
data, model = prepared.data, prepared.model
for epoch in range(spec.training.epochs):
    order = epoch_order(spec.seed, epoch, len(data.x_train))
    model.fit(data.x_train[order], data.y_train[order], batch_size=spec.training.batch_size,
              epochs=1, shuffle=False, verbose=0)

def weights(run_dir):
    return keras.models.load_model(run_dir / "checkpoints/last.keras").get_weights()

same = lambda u, v: all(np.array_equal(x, y) for x, y in zip(u, v, strict=True))
from dlrun.report.evaluate import evaluate
scores = [evaluate(run, overrides=["backend=jax"])["scores"] for run in (b.run_dir, sys.argv[3])]
print("RESULT:" + json.dumps({
    "scores_on_jax": scores,
    "a": [str(a.run_dir), a.status], "b": [str(b.run_dir), stopped, b.status],
    "resume_exact": same(weights(a.run_dir), weights(b.run_dir)),
    "by_hand_exact": same(weights(a.run_dir), model.get_weights()),
    "tensorflow_imported": "tensorflow" in sys.modules,
    "backend": keras.backend.backend(),
}))
"""


def no_tensorflow(**extra: str) -> dict:
    """A subprocess environment in which `import tensorflow` fails (this tree's dlrun)."""
    path = os.pathsep.join([str(BLOCKER), str(ROOT)])
    return {**os.environ, "PYTHONPATH": path, "DLRUN_BLOCK": "tensorflow", **extra}


def dlrun(*args, env: dict, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dlrun", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def jax_runs(tmp_path_factory) -> dict:
    """JAX_SCRIPT's findings; "tf_run": TINY_SPEC trained here, on TensorFlow, beforehand."""
    root = tmp_path_factory.mktemp("jax")
    spec = root / "tiny.yaml"
    spec.write_text(JAX_SPEC)
    elsewhere = tmp_path_factory.mktemp("tensorflow")  # not among the JAX runs compared
    (elsewhere / "tiny.yaml").write_text(TINY_SPEC)
    trained = runner.invoke(
        app, ["train", str(elsewhere / "tiny.yaml"), "--runs-dir", str(elsewhere / "runs")]
    )
    assert trained.exit_code == 0, trained.output
    (tf_run,) = run_dirs(elsewhere / "runs")
    result = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT, str(spec), str(root), str(tf_run)],
        capture_output=True,
        text=True,
        env=no_tensorflow(),
        cwd=root,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.rsplit("RESULT:", 1)[1])
    found["root"], found["spec"], found["tf_run"] = root, spec, tf_run
    return found


def test_jax_trains_and_resumes_exactly_without_tensorflow(jax_runs):
    assert jax_runs["backend"] == "jax"
    assert jax_runs["tensorflow_imported"] is False
    assert jax_runs["a"][1] == store.COMPLETED
    assert jax_runs["b"][1:] == [store.INTERRUPTED, store.COMPLETED]
    assert jax_runs["resume_exact"] is True
    # The NumPy feed gives each epoch the promised order: Keras by hand on it ends identical.
    assert jax_runs["by_hand_exact"] is True


def test_a_jax_run_records_the_same_files_as_a_tensorflow_run(jax_runs):
    run = Path(jax_runs["a"][0])
    meta = json.loads((run / store.META).read_text())
    assert meta["backend"] == "jax"
    assert meta["devices"] == ["CPU:0"]
    assert set(meta["versions"]) == {"python", "jax", "keras", "dlrun"}
    assert "backend: jax\n" in (run / store.CONFIG).read_text()
    for name in (store.BEST, store.LAST, store.HISTORY_PLOT, store.SUMMARY):
        assert (run / name).is_file(), name
    assert len(store.read_history(run)) == 2
    import keras

    # steps_per_execution auto on JAX is 8 for a net under 100,000 parameters on a CPU (this
    # one: 1,210) and on a GPU; 1 for a larger net on a CPU (docs/performance.md).
    saved = keras.models.load_model(run / store.LAST)
    assert saved.get_compile_config()["steps_per_execution"] == 8
    assert meta["steps_per_execution"] == 8
    assert int(saved.optimizer.iterations) == 2 * 18  # 1149 samples in batches of 64
    metrics = json.loads((run / store.METRICS).read_text())
    assert set(metrics["test"]) == {"loss", "accuracy"}

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train = EventAccumulator(str(run / store.TENSORBOARD / "train"), size_guidance={"tensors": 0})
    train.Reload()
    assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"} <= set(train.Tags()["tensors"])
    assert [e.step for e in train.Tensors("epoch_loss")] == [0, 1]


def test_checkpoints_evaluate_the_same_on_jax_and_tensorflow(jax_runs):
    tf_run = jax_runs["tf_run"]
    jax_run = jax_runs["b"][0]
    # Both checkpoints, the JAX-trained and the TensorFlow-trained one, scored on JAX (in the
    # JAX_SCRIPT process, with TensorFlow unimportable)...
    on_jax = jax_runs["scores_on_jax"]
    assert jax_runs["tensorflow_imported"] is False
    # ...and here on TensorFlow, through the command line.
    for run, jax_scores in zip([jax_run, tf_run], on_jax, strict=True):
        here = runner.invoke(app, ["evaluate", str(run), "--json", "--set", "backend=tensorflow"])
        assert here.exit_code == 0, here.output
        tf_scores = json.loads(here.stdout)["scores"]
        assert set(jax_scores) == set(tf_scores) == {"loss", "accuracy"}
        assert jax_scores["accuracy"] == pytest.approx(tf_scores["accuracy"], abs=1e-6)
        assert jax_scores["loss"] == pytest.approx(tf_scores["loss"], abs=1e-4)


def test_runs_and_compare_show_the_backend(jax_runs, tiny_spec, tmp_path):
    listing = dlrun("runs", jax_runs["root"] / "a", env=no_tensorflow(), cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    header, row = listing.stdout.splitlines()[1], listing.stdout.splitlines()[3]
    assert "backend" in header and " jax " in row
    table = dlrun(
        "compare", jax_runs["root"], "--all", "--format", "csv", env=no_tensorflow(), cwd=tmp_path
    )
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    column = lines[0].split(",").index("backend")
    assert [line.split(",")[column] for line in lines[1:]] == ["jax", "jax"]


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_a_missing_backend_is_one_line_naming_the_extra(backend, tiny_spec, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(BLOCKER), "DLRUN_BLOCK": backend}
    result = dlrun(
        "train",
        tiny_spec,
        "--set",
        f"backend={backend}",
        "--runs-dir",
        tmp_path / "runs",
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    expected = (
        f'backend: {backend} is not installed; install it with: pip install "dlrun[{backend}]"'
    )
    assert result.stderr == f"Error: {expected}\n"
    assert not (tmp_path / "runs").exists()


def test_an_unknown_backend_is_refused_with_a_suggestion(tiny_spec):
    result = runner.invoke(app, ["validate", str(tiny_spec), "--set", "backend=jaxx"])
    assert result.exit_code == 2
    assert (
        "backend: expected one of 'auto', 'tensorflow', 'jax' or 'torch', got 'jaxx'"
        in result.stderr
    )
    assert "did you mean 'jax'?" in result.stderr


SWEEP = """\
base: tiny.yaml
name: jaxsweep
grid:
  model.layers.0.units: [8, 16]
cv: 0
refit: false
"""


def test_a_sweep_runs_on_jax_without_tensorflow(tmp_path):
    (tmp_path / "tiny.yaml").write_text(JAX_SPEC.replace("epochs: 2", "epochs: 1"))
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    result = dlrun(
        "sweep", "sweep.yaml", "--runs-dir", tmp_path / "runs", env=no_tensorflow(), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = run_dirs(tmp_path / "runs")
    import pandas as pd

    frame = pd.read_csv(sweep_dir / "cv_results.csv")
    assert list(frame["param_model.layers.0.units"]) == [8, 16]
    assert np.isfinite(frame["mean_test_score"]).all()
    trials = sorted((sweep_dir / "trials").iterdir())
    assert len(trials) == 2
    assert {json.loads((t / store.META).read_text())["backend"] for t in trials} == {"jax"}


def test_a_sweep_cannot_vary_the_backend(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY_SPEC)
    (tmp_path / "sweep.yaml").write_text(
        "base: tiny.yaml\ngrid:\n  backend: [tensorflow, jax]\ncv: 0\n"
    )
    result = runner.invoke(
        app, ["sweep", str(tmp_path / "sweep.yaml"), "--runs-dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "grid.backend: cannot vary within a sweep" in result.stderr
