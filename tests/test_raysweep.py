"""dlrun sweep --executor ray: four fits as tasks on a local Ray instance (2 CPUs here), the
same cv_results.csv as the local executor; without Ray, one line that says how to install it.
Ctrl-C has dlrun start and stop its own Ray; the other sweeps go to a running one
(conftest.ray_head, --address), one for the module."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import ROOT, TINY_SPEC, epochs_in, gone, run_dirs, start_dlrun, wait_until
from dlrun.cli import app

runner = CliRunner()

BLOCKER = Path(__file__).resolve().parent / "blocker"

SWEEP = """\
base: tiny.yaml
name: raysweep
grid:
  model.layers.0.units: [8, 16]
cv: 2
refit: false
resources: {cpu: 1}
"""


def sweep(tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`dlrun sweep` run from tmp_path, with this checkout's dlrun as if installed (-P: the
    folder it runs from is not on its path; PYTHONPATH names the checkout)."""
    env = dict(env or os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(ROOT)]))
    return subprocess.run(
        [sys.executable, "-P", "-m", "dlrun", "sweep", "sweep.yaml", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=600,
    )


@pytest.fixture
def sweep_file(tmp_path: Path) -> Path:
    (tmp_path / "tiny.yaml").write_text(TINY_SPEC.replace("epochs: 2", "epochs: 1"))
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    return tmp_path / "sweep.yaml"


def test_a_ray_sweep_gives_the_local_executors_results(sweep_file, tmp_path, ray_head):
    """Run from a folder holding a `dlrun/` that is not the dlrun installed (a checkout of
    another version): Ray puts that folder first on its workers' sys.path (the driver's, on
    a running cluster too), and they must still import the sweep's own dlrun."""
    (tmp_path / "dlrun").mkdir()
    (tmp_path / "dlrun" / "__init__.py").write_text("raise ImportError('not the dlrun installed')")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}  # as the head's
    on_ray = sweep(
        tmp_path, "--executor", "ray", "--address", ray_head, "--runs-dir", "ray", env=env
    )
    assert on_ray.returncode == 0, on_ray.stderr[-3000:]
    (tmp_path / "dlrun" / "__init__.py").unlink()
    (tmp_path / "dlrun").rmdir()
    # The local executor's sweep needs no process of its own: in this one, as a reference.
    local = runner.invoke(app, ["sweep", str(sweep_file), "--runs-dir", str(tmp_path / "local")])
    assert local.exit_code == 0, local.output
    (ray_dir,) = run_dirs(tmp_path / "ray")
    (local_dir,) = run_dirs(tmp_path / "local")
    ray_frame = pd.read_csv(ray_dir / "cv_results.csv")
    local_frame = pd.read_csv(local_dir / "cv_results.csv")
    assert list(ray_frame.columns) == list(local_frame.columns)
    assert len(ray_frame) == 2 and set(ray_frame["status"]) == {"completed"}
    # The same fits with the same seeds: the same scores, whichever process trained them.
    for column in ("split0_test_score", "split1_test_score", "mean_test_score"):
        assert ray_frame[column].tolist() == pytest.approx(local_frame[column].tolist(), abs=1e-6)
    assert sorted(p.name for p in (ray_dir / "trials").iterdir()) == [
        "fit000-fold0",
        "fit000-fold1",
        "fit001-fold0",
        "fit001-fold1",
    ]


def test_without_ray_the_executor_is_one_line_saying_how_to_install_it(sweep_file, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(BLOCKER), "DLRUN_BLOCK": "ray"}
    result = sweep(tmp_path, "--executor", "ray", "--runs-dir", "runs", env=env)
    assert result.returncode == 2
    assert result.stderr == (
        'Error: --executor ray needs Ray, which is not installed: pip install "dlrun[ray]"\n'
    )
    assert not (tmp_path / "runs").exists()


def _descendants(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def test_ctrl_c_stops_a_ray_sweep_and_resume_continues_it_on_ray(tmp_path):
    """Ctrl-C (SIGINT to the terminal's whole group) mid-fit: exit 130, the running fits
    recorded interrupted, no Ray process left; `--resume ... --executor ray` continues the
    interrupted fit from its last epoch, and SIGTERM stops that one with 143."""
    pytest.importorskip("ray")
    long = TINY_SPEC.replace("epochs: 2", "epochs: 5000").replace("units: 16", "units: 4")
    (tmp_path / "tiny.yaml").write_text(long)
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    runs = tmp_path / "runs"
    first = start_dlrun(
        "sweep",
        "sweep.yaml",
        "--executor",
        "ray",
        "--runs-dir",
        runs,
        cwd=tmp_path,
        start_new_session=True,
    )
    trial = wait_until(
        lambda: next((t for t in runs.glob("*/trials/*") if epochs_in(t) >= 2), None),
        first,
        timeout=240,  # Ray starts first
    )
    sweep_dir = trial.parent.parent
    ray_processes = _descendants(first.pid)
    assert ray_processes  # Ray's own processes, started by this sweep
    os.killpg(first.pid, signal.SIGINT)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    assert err.splitlines()[-1] == f"resume with: dlrun sweep --resume {sweep_dir} --executor ray"
    assert not (sweep_dir / "cv_results.csv").exists()
    trials = sorted((sweep_dir / "trials").iterdir())
    assert trial in trials and len(trials) < 4  # the fits not yet started never start
    reported = [line for line in out.splitlines() if line.startswith("fit")]
    assert sorted(reported) == [
        f"{t.name}: interrupted (stopped by Ctrl-C (SIGINT))" for t in trials
    ]
    for folder in trials:
        meta = json.loads((folder / "meta.json").read_text())
        assert meta["status"] == "interrupted", (folder.name, meta)
        assert meta["epochs_done"] == epochs_in(folder)
    wait_until(lambda: all(map(gone, ray_processes)), timeout=60)

    done_before = epochs_in(trial)
    rows_before = (trial / "history.csv").read_text().splitlines()
    second = start_dlrun(
        "sweep", "--resume", sweep_dir, "--executor", "ray", cwd=tmp_path, start_new_session=True
    )
    wait_until(lambda: epochs_in(trial) >= done_before + 2, second, timeout=240)
    second.send_signal(signal.SIGTERM)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 143, err[-3000:]
    assert "Traceback" not in err
    rows = (trial / "history.csv").read_text().splitlines()
    assert rows[: len(rows_before)] == rows_before  # continued, not started again
    meta = json.loads((trial / "meta.json").read_text())
    assert meta["status"] == "interrupted" and len(meta["attempts"]) == 2, meta


HEAD = """\
import sys, time
import ray
ray.init(num_cpus=2, include_dashboard=False)
print(ray.get_runtime_context().gcs_address, flush=True)
time.sleep(600)
"""


def test_a_sweep_folder_the_ray_nodes_do_not_share_is_a_clear_error(sweep_file, tmp_path):
    """A Ray node that does not mount the sweep folder: here a node in its own mount
    namespace, with an empty file system of its own over runs/. The fit trains there, and the
    sweep stops with one line saying where the sweep folder must be."""
    pytest.importorskip("ray")
    runs = tmp_path / "runs"
    runs.mkdir()
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no mount namespaces here: {probe.stderr.decode().strip()}")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}  # one token fewer to pass between them
    head = subprocess.Popen(
        [
            "unshare",
            "-m",
            "sh",
            "-c",
            'mount -t tmpfs tmpfs "$1" && exec "$2" -c "$3"',
            "-",
            str(runs),
            sys.executable,
            HEAD,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        address = head.stdout.readline().strip()
        assert address, "the Ray head did not start"
        result = sweep(
            tmp_path, "--executor", "ray", "--address", address, "--runs-dir", "runs", env=env
        )
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)
    assert result.returncode == 1, result.stderr[-3000:]
    (sweep_dir,) = run_dirs(runs)
    error = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(error) == 1, result.stderr[-3000:]
    assert error[0].startswith(f"Error: {Path('runs') / sweep_dir.name / 'trials'}/fit00")
    assert error[0].endswith(
        ": a Ray worker trained this fit but its files are not here; put the sweep folder "
        "(--runs-dir) on storage every node mounts at the same path, such as NFS"
    )
    assert "Traceback" not in result.stderr
    assert not (sweep_dir / "trials" / "fit000-fold0").exists()


TPE_SWEEP = """\
base: tiny.yaml
name: raytpe
tpe:
  n_iter: 3
  seed: 3
  space:
    compile.optimizer.learning_rate: {loguniform: [1.0e-5, 0.1]}
prune: {method: asha, min_epochs: 1, reduction_factor: 3}
cv: 0
refit: false
resources: {cpu: 1}
"""


def test_a_pruned_tpe_sweep_on_ray_asks_and_tells_from_the_sweep_process(tmp_path, ray_head):
    """Optuna's study stays in the sweep's process (study.db, one per sweep folder); the Ray
    tasks, on a running cluster (--address), train and wait for their verdicts through the
    shared sweep folder.

    The sweep's process has no KERAS_BACKEND, the cluster's has conftest's (tensorflow unless
    the developer's environment names another): `backend: auto` is decided once, in the
    sweep's process (JAX for this dense net), and every Ray worker trains on that, whatever
    its own environment says."""
    optuna = pytest.importorskip("optuna")
    (tmp_path / "tiny.yaml").write_text(TINY_SPEC.replace("epochs: 2", "epochs: 3"))
    (tmp_path / "sweep.yaml").write_text(TPE_SWEEP)
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["RAY_AUTH_MODE"] = "disabled"  # as the head's
    result = sweep(
        tmp_path, "--executor", "ray", "--address", ray_head, "--runs-dir", "runs", env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = run_dirs(tmp_path / "runs")
    frame = pd.read_csv(sweep_dir / "cv_results.csv")
    assert len(frame) == 3 and set(frame["status"]) <= {"completed", "pruned"}
    assert "completed" in set(frame["status"])
    study = optuna.load_study(study_name="dlrun", storage=f"sqlite:///{sweep_dir / 'study.db'}")
    states = {t.number: t.state.name for t in study.trials}
    assert states == {
        n: "PRUNED" if s == "pruned" else "COMPLETE" for n, s in enumerate(frame["status"])
    }
    for number, row in frame.iterrows():
        trial = sweep_dir / "trials" / f"fit{number:03d}"
        meta = json.loads((trial / "meta.json").read_text())
        assert meta["status"] == row["status"] and meta["epochs_done"] == row["epochs_trained"]
        assert meta["backend"] == "jax", meta.get("backend_auto")
        assert "backend: jax" in (trial / "config.yaml").read_text()
        verdict = json.loads((trial / ".verdict.json").read_text())
        assert (verdict["prune"] is not None) == (row["status"] == "pruned")


def test_a_setting_keras_cannot_build_fails_alone_on_ray_as_it_does_locally(tmp_path, ray_head):
    """A fit that fails before it has a folder (Keras refuses units: -1) is one failed row of
    the sweep on Ray, as with the local executor: not a sweep stopped with an error about
    shared storage, which the fit never reached."""
    (tmp_path / "tiny.yaml").write_text(TINY_SPEC.replace("epochs: 2", "epochs: 1"))
    (tmp_path / "sweep.yaml").write_text(
        SWEEP.replace("[8, 16]", "[16, -1]").replace("cv: 2", "cv: 0")
    )
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}  # as the head's
    result = sweep(
        tmp_path, "--executor", "ray", "--address", ray_head, "--runs-dir", "runs", env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Error:" not in result.stderr
    (sweep_dir,) = run_dirs(tmp_path / "runs")
    frame = pd.read_csv(sweep_dir / "cv_results.csv")
    assert frame["status"].tolist() == ["completed", "failed"]
    assert frame["param_model.layers.0.units"].tolist() == [16, -1]
    assert "Received: units=-1" in result.stdout
    assert sorted(p.name for p in (sweep_dir / "trials").iterdir()) == ["fit000"]
