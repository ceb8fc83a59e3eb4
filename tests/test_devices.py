"""Where a model trains: device choice, mixed precision, steps_per_execution, data_parallel over
two logical CPU devices on TensorFlow and on JAX (each in its own subprocess: devices are fixed
when the backend starts)."""

import json
import os
import subprocess
import sys

import keras
import pytest
from typer.testing import CliRunner

from conftest import TINY_SPEC, run_dirs
from dlrun import store
from dlrun.cli import app

runner = CliRunner()
BLOCKER = os.path.join(os.path.dirname(__file__), "blocker")

# Every split's size is even (4000 train -> 3200 + 800, 1000 test): JAX can shard each batch.
SPEC_5K = """\
name: dp
seed: 0
backend: {backend}
data: {{dataset: mnist_5k, flatten: true}}
model:
  layers:
    - {{type: Dense, units: 16, activation: relu}}
    - {{type: Dense, units: 10, activation: softmax}}
training: {{batch_size: 64, epochs: 2, validation_split: 0.2}}
"""

# One device, then data_parallel over two, in one process (its devices are fixed at start-up).
PARALLEL_SCRIPT = """
import json, sys
if sys.argv[2] == "tensorflow":
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from dlrun import api
found = {}
for label, overrides in (("one", []), ("two", ["training.distribute=data_parallel"])):
    out = api.train(sys.argv[1], overrides=overrides, runs_dir=label, verbose=False)
    meta = json.load(open(out.run_dir / "meta.json"))
    found[label] = {"status": out.status, "message": out.message, "devices": meta["devices"],
                    "final": out.metrics["final"], "test": out.metrics.get("test")}
if sys.argv[2] == "jax":  # digits: 1149 training samples in batches of 64 leave 61
    from dlrun.errors import BackendError
    try:
        api.train(sys.argv[3], overrides=["training.distribute=data_parallel"], runs_dir="uneven")
    except BackendError as exc:
        found["uneven"] = str(exc)
    import os
    found["uneven_folder"] = os.path.exists("uneven")
print("RESULT:" + json.dumps(found))
"""


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_data_parallel_over_two_cpus_matches_one_device(backend, tmp_path):
    spec = tmp_path / "dp.yaml"
    spec.write_text(SPEC_5K.format(backend=backend))
    (tmp_path / "tiny.yaml").write_text(TINY_SPEC.replace("seed: 0", "seed: 0\nbackend: jax"))
    env = dict(os.environ)
    if backend == "jax":
        env.update(XLA_FLAGS="--xla_force_host_platform_device_count=2")
        env.update(PYTHONPATH=BLOCKER, DLRUN_BLOCK="tensorflow")
    result = subprocess.run(
        [sys.executable, "-c", PARALLEL_SCRIPT, str(spec), backend, str(tmp_path / "tiny.yaml")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.rsplit("RESULT:", 1)[1])
    one, two = found["one"], found["two"]
    assert one["status"] == two["status"] == store.COMPLETED, two["message"]
    assert one["devices"] == ["CPU:0"]
    assert two["devices"] == ["CPU:0", "CPU:1"]
    # The same global batches, summed over two replicas: equal up to float rounding.
    assert two["test"]["accuracy"] == pytest.approx(one["test"]["accuracy"], abs=0.01)
    assert two["final"]["val_loss"] == pytest.approx(one["final"]["val_loss"], abs=0.01)
    assert two["test"]["accuracy"] > 0.5  # it learned: 2 epochs reach about 0.8
    if backend == "jax":  # Keras' JAX sharding refuses an uneven last batch: said up front
        assert found["uneven"].startswith(
            "training.distribute: data_parallel on jax needs every batch to split evenly "
            "over 2 devices, but the last batch of a split does not: train 1149 (61 left over)"
        )
        assert found["uneven_folder"] is False


def test_data_parallel_on_one_device_is_refused(tiny_spec, tmp_path):
    result = runner.invoke(
        app,
        ["train", str(tiny_spec), "--runs-dir", str(tmp_path / "runs")]
        + ["--set", "training.distribute=data_parallel"],
    )
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: training.distribute: data_parallel needs two or more devices; the tensorflow "
        "backend sees CPU:0; remove it to train on one device\n"
    )
    assert not (tmp_path / "runs").exists()


def test_device_gpu_without_a_gpu_is_one_line(tiny_spec, tmp_path):
    result = runner.invoke(
        app,
        ["train", str(tiny_spec), "--runs-dir", str(tmp_path / "runs")]
        + ["--set", "training.device=gpu"],
    )
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: training.device: gpu, but the tensorflow backend sees no GPU "
        "(devices: CPU:0); use device: auto or cpu\n"
    )
    assert not (tmp_path / "runs").exists()


def test_mixed_precision_computes_in_bfloat16_on_the_cpu_and_outputs_float32(tmp_path):
    spec = tmp_path / "mixed.yaml"
    spec.write_text(TINY_SPEC + "  mixed_precision: true\n")
    result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    (run,) = run_dirs(tmp_path / "runs")
    model = keras.models.load_model(run / store.BEST)
    hidden, output = model.layers
    assert hidden.dtype_policy.name == "mixed_bfloat16"
    assert hidden.compute_dtype == "bfloat16" and hidden.kernel.dtype == "float32"
    assert output.dtype_policy.name == "float32"
    assert model.predict(keras.ops.ones((2, 64)), verbose=0).dtype == "float32"
    assert keras.config.dtype_policy().name == "float32"  # nothing leaks into the next run
    metrics = json.loads((run / store.METRICS).read_text())
    assert metrics["test"]["accuracy"] > 0.1


def test_steps_per_execution_keeps_the_records_per_epoch(tmp_path):
    spec = tmp_path / "spe.yaml"
    spec.write_text(TINY_SPEC.replace("epochs: 2", "epochs: 3"))
    result = runner.invoke(
        app,
        ["train", str(spec), "--runs-dir", str(tmp_path / "runs")]
        + ["--set", "compile.steps_per_execution=6", "--set", "compile.jit_compile=false"],
    )
    assert result.exit_code == 0, result.output
    (run,) = run_dirs(tmp_path / "runs")
    assert [row["epoch"] for row in store.read_history(run)] == [1, 2, 3]
    assert [line.split()[1] for line in result.stdout.splitlines()[:3]] == ["1/3", "2/3", "3/3"]
    model = keras.models.load_model(run / store.LAST)
    # 1149 training samples in batches of 64: 18 steps an epoch, whatever steps_per_execution.
    assert int(model.optimizer.iterations) == 3 * 18
    assert model.get_compile_config()["steps_per_execution"] == 6
    # Epoch 2 starts where an uninterrupted spe=1 run's does: the same records.
    plain = runner.invoke(app, ["train", str(spec), "--runs-dir", str(tmp_path / "plain")])
    assert plain.exit_code == 0, plain.output
    (reference,) = run_dirs(tmp_path / "plain")
    for grouped, single in zip(store.read_history(run), store.read_history(reference), strict=True):
        assert grouped["loss"] == pytest.approx(single["loss"], rel=1e-4)


def test_steps_per_execution_that_splits_an_epoch_is_refused_on_tensorflow(tiny_spec, tmp_path):
    result = runner.invoke(
        app,
        ["train", str(tiny_spec), "--runs-dir", str(tmp_path / "runs")]
        + ["--set", "compile.steps_per_execution=8"],
    )
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: --set: compile.steps_per_execution: 8 does not divide the 18 steps of an "
        "epoch; on the tensorflow backend an epoch would then run batches of the next one: use a "
        "divisor of 18 (2, 3, 6, 9) or another backend (given on the command line)\n"
    )
    assert not (tmp_path / "runs").exists()
