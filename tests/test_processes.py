"""training.distribute: {processes: N}: one model over two processes on this CPU (JAX, gloo
collectives), started by `dlrun train` itself or by Ray: the same history as one process with
two devices, a killed process recorded and resumed to the uninterrupted history, Ctrl-C, and
the specs refused in one line."""

import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import ROOT, default_sigint, gone, run_dirs, wait_until
from dlrun.cli import app

runner = CliRunner()

# Every split's size is even (4000 train -> 3200 + 800, 1000 test): each batch divides evenly
# over two devices. Batches of 16 make an epoch long enough to be killed in.
SPEC = """\
name: mp
seed: 0
backend: jax
data: {dataset: mnist_5k, flatten: true}
model:
  layers:
    - {type: Dense, units: 16, activation: relu}
    - {type: Dense, units: 10, activation: softmax}
training:
  batch_size: 16
  epochs: 3
  validation_split: 0.2
  distribute: {processes: 2}
"""


def dlrun(folder: Path, *args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    """`dlrun ARGS` from `folder`, this checkout's dlrun; scratch folders go to folder/tmp."""
    (folder / "tmp").mkdir(exist_ok=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TMPDIR": str(folder / "tmp"), **(env or {})}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-P", "-m", "dlrun", *args],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
        **kwargs,
    )


def finished(process: subprocess.Popen, timeout: float = 400) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def history(run: Path) -> list[dict]:
    with open(run / "history.csv") as file:
        return list(csv.DictReader(file))


def meta(run: Path) -> dict:
    try:
        return json.loads((run / "meta.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def assert_same_history(found: list[dict], expected: list[dict]) -> None:
    assert len(found) == len(expected)
    for row, want in zip(found, expected, strict=True):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert float(row[key]) == pytest.approx(float(want[key]), abs=1e-4), (key, row)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("processes")
    (path / "mp.yaml").write_text(SPEC)
    return path


@pytest.fixture(scope="module")
def together(folder: Path) -> Path:
    """The spec trained uninterrupted on two processes that `dlrun train` started."""
    code, out, err = finished(dlrun(folder, "train", "mp.yaml", "--runs-dir", "together"))
    assert code == 0, err[-3000:]
    [run] = run_dirs(folder / "together")
    return run


def test_two_processes_train_as_one_process_with_two_devices(folder, together):
    one = dlrun(
        folder,
        "train",
        "mp.yaml",
        "--runs-dir",
        "one",
        "--set",
        "training.distribute=data_parallel",
        env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
    )
    code, _, err = finished(one)
    assert code == 0, err[-3000:]
    [alone] = run_dirs(folder / "one")
    assert_same_history(history(together), history(alone))
    recorded = meta(together)
    assert recorded["status"] == "completed"
    assert [p["process"] for p in recorded["processes"]] == [0, 1]
    assert all(p["host"] and len(p["devices"]) == 1 for p in recorded["processes"])
    assert len(set(p["pid"] for p in recorded["processes"])) == 2
    assert len(recorded["devices"]) == 2
    # Process 1 wrote nothing in the run, and its scratch copy is gone.
    assert [p.name for p in (folder / "together").iterdir()] == [together.name]
    assert list((folder / "tmp").iterdir()) == []
    assert json.loads((together / "metrics.json").read_text())["test"]["accuracy"] > 0.5


def test_evaluate_reads_the_run_on_one_process(folder, together):
    code, out, err = finished(dlrun(folder, "evaluate", str(together)))
    assert code == 0, err[-3000:]
    test = json.loads((together / "metrics.json").read_text())["test"]
    assert f"{test['accuracy']:.4f}" in out


def test_killed_process_is_named_and_the_run_resumes_to_the_same_history(folder, together):
    launcher = dlrun(folder, "train", "mp.yaml", "--runs-dir", "killed")
    run = wait_until(lambda: next(iter(run_dirs(folder / "killed")), None), launcher, 300)
    wait_until(lambda: meta(run).get("epochs_done", 0) >= 1, launcher, 300)
    os.kill(meta(run)["processes"][1]["pid"], signal.SIGKILL)  # in the middle of epoch 2
    code, out, err = finished(launcher, 120)
    recorded = meta(run)
    assert code == 1, err[-3000:]
    assert recorded["status"] == "failed"
    assert recorded["message"] == (
        "ProcessLost: process 1 of 2 was lost (killed, or its host went away) and the others "
        f"stopped; resume it on 2 processes with dlrun train --resume {run}"
    )
    assert f"Error: run failed: {recorded['message']}\n" in err
    done = recorded["epochs_done"]
    assert 1 <= done < 3
    code, out, err = finished(dlrun(folder, "train", "--resume", str(run)))
    assert code == 0, err[-3000:]
    assert meta(run)["status"] == "completed"
    assert [a["from_epoch"] for a in meta(run)["attempts"]] == [0, done]
    assert_same_history(history(run), history(together))
    assert list((folder / "tmp").iterdir()) == []  # the killed process' scratch copy too


def test_ctrl_c_stops_every_process_and_a_second_launch_is_refused(folder):
    # Epochs enough to be still training once the second launch has been refused.
    launcher = dlrun(
        folder, "train", "mp.yaml", "--runs-dir", "stopped", "--set", "training.epochs=100"
    )
    run = wait_until(lambda: next(iter(run_dirs(folder / "stopped")), None), launcher, 300)
    wait_until(lambda: meta(run).get("epochs_done", 0) >= 1, launcher, 300)
    pids = [p["pid"] for p in meta(run)["processes"]]
    # The lock is process 0's: resuming the running run is refused, and the launcher that
    # tried stops its other process.
    code, _, err = finished(dlrun(folder, "train", "--resume", str(run)), 300)
    assert code == 2
    assert err.endswith(
        f"Error: {run}: another dlrun process is using this run right now; wait for it to "
        "finish or stop it first\n"
    )
    launcher.send_signal(signal.SIGINT)
    code, _, err = finished(launcher, 120)
    assert code == 130, err[-3000:]
    assert meta(run)["status"] == "interrupted"
    assert meta(run)["message"] == "stopped by Ctrl-C (SIGINT)"
    assert all(gone(pid) for pid in pids)


@pytest.mark.parametrize(
    ("setting", "line"),
    [
        (
            "training.distribute.processes=0",
            "--set: training.distribute.processes: expected a number >= 1, got 0 (given on the "
            "command line)",
        ),
        (
            "backend=tensorflow",
            "mp.yaml: training.distribute: {processes: 2} needs backend: jax (TensorFlow's "
            "MultiWorkerMirroredStrategy does not work under Keras 3); set backend: jax, or use "
            "distribute: data_parallel on one process",
        ),
        (
            "training.batch_size=15",
            "mp.yaml: training.batch_size: 15 does not split evenly over 2 processes; use a "
            "multiple of 2",
        ),
    ],
)
def test_a_spec_the_processes_cannot_train_is_one_line(folder, setting, line):
    result = runner.invoke(
        app, ["train", str(folder / "mp.yaml"), "--runs-dir", str(folder / "bad"), "--set", setting]
    )
    assert result.exit_code == 2
    assert result.stderr == f"Error: {line}\n".replace("mp.yaml", str(folder / "mp.yaml"))
    assert not (folder / "bad").exists()


def test_ray_places_the_two_processes(folder, together):
    pytest.importorskip("ray")
    # Ray's sockets live under TMPDIR, in paths of at most 107 bytes.
    env = {"RAY_AUTH_MODE": "disabled", "TMPDIR": tempfile.gettempdir()}
    code, out, err = finished(
        dlrun(folder, "train", "mp.yaml", "--runs-dir", "ray", "--executor", "ray", env=env)
    )
    assert code == 0, err[-3000:]
    [run] = run_dirs(folder / "ray")
    assert meta(run)["status"] == "completed"
    assert len(meta(run)["processes"]) == 2
    assert_same_history(history(run), history(together))


def test_a_sweep_over_a_spec_of_several_processes_is_one_line(folder):
    (folder / "sweep.yaml").write_text("base: mp.yaml\ngrid:\n  model.layers.0.units: [8, 16]\n")
    result = runner.invoke(
        app, ["sweep", str(folder / "sweep.yaml"), "--runs-dir", str(folder / "sweeps")]
    )
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: {folder / 'sweep.yaml'}:1: base: mp.yaml: training.distribute: {{processes: 2}}: "
        "a sweep trains each fit on one process; use data_parallel, or train the spec with "
        "dlrun train\n"
    )
    assert not (folder / "sweeps").exists()
