"""A run and a sweep with the user's own code: killed and resumed to the uninterrupted history,
a grid over a custom layer's, the model function's and the data function's arguments with
k-fold on 2 workers and on Ray, every fit importing the sweep folder's copy of the code."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner
from usercode_files import EXTRAS, OWN_MODEL, VIT

from conftest import DLRUN_ENV, ROOT, epochs_in, run_dirs, start_dlrun, wait_until
from dlrun.cli import app

runner = CliRunner()

SPEC = """\
name: vitkill
code: [vit.py, extras.py]
data: {function: load, args: {n: 400}, scale: 16}
model:
  layers:
    - {type: Patches, patch_size: 2}
    - {type: PatchEncoder, num_patches: 16, projection_dim: 8}
    - Flatten
    - {type: Dropout, rate: 0.2}
    - {type: Dense, units: 10, activation: softmax}
compile:
  loss: focal
  metrics: [{type: hit_rate, direction: max}]
training:
  epochs: 12
  batch_size: 32
  tensorboard: null
  checkpoint: {monitor: val_hit_rate}
"""


@pytest.fixture(autouse=True)
def user_data(tmp_path, monkeypatch):
    """The trusted-code file in this test's own folder (never the real user's)."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setitem(DLRUN_ENV, "XDG_DATA_HOME", str(tmp_path / "xdg"))


def project(folder: Path, spec: str = SPEC) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("vit.py", VIT), ("extras.py", EXTRAS), ("own.py", OWN_MODEL)):
        (folder / name).write_text(text)
    (folder / "spec.yaml").write_text(spec)
    return folder / "spec.yaml"


def test_killed_after_two_epochs_and_resumed_to_the_uninterrupted_history(tmp_path):
    spec = project(tmp_path / "project")
    whole = runner.invoke(app, ["train", str(spec), "--runs-dir", str(tmp_path / "whole")])
    assert whole.exit_code == 0, whole.output
    (reference,) = run_dirs(tmp_path / "whole")
    broken = tmp_path / "broken"
    process = start_dlrun("train", spec, "--runs-dir", broken)

    def two_epochs_done() -> bool:  # counted in meta.json once their checkpoints are saved
        found = run_dirs(broken)
        if not found or epochs_in(found[0]) < 2 or not (found[0] / "meta.json").exists():
            return False
        return json.loads((found[0] / "meta.json").read_text()).get("epochs_done", 0) >= 2

    wait_until(two_epochs_done, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    (run,) = run_dirs(broken)
    killed_at = json.loads((run / "meta.json").read_text())["epochs_done"]
    assert 2 <= killed_at < 12, "the kill must land inside the fit"
    # The user edits the code after the run: the resume imports the run's copy, as trained.
    (tmp_path / "project" / "extras.py").write_text("raise RuntimeError('edited')\n")
    result = runner.invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    resumed, whole_rows = pd.read_csv(run / "history.csv"), pd.read_csv(reference / "history.csv")
    assert len(resumed) == 12
    for column in ("loss", "hit_rate", "val_loss", "val_hit_rate"):
        np.testing.assert_allclose(resumed[column], whole_rows[column], atol=1e-5)


SWEEP = """\
base: spec.yaml
name: codesweep
grid:
  model.layers.1.projection_dim: [4, 8]
  data.args.n: [300]
cv: 2
workers: 2
refit: true
scoring: hit_rate
"""


def sweep(folder: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(env or DLRUN_ENV)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(ROOT)]))
    return subprocess.run(
        [sys.executable, "-P", "-m", "dlrun", "sweep", "sweep.yaml", *args],
        capture_output=True,
        text=True,
        cwd=folder,
        env=env,
        timeout=900,
    )


def check_sweep(sweep_dir: Path) -> pd.DataFrame:
    frame = pd.read_csv(sweep_dir / "cv_results.csv")
    assert len(frame) == 2 and set(frame["status"]) == {"completed"}
    base = yaml.safe_load((sweep_dir / "base.yaml").read_text())
    assert base["code"] == ["code/vit.py", "code/extras.py"]
    assert (sweep_dir / "code" / "vit.py").read_text() == VIT
    trials = sorted((sweep_dir / "trials").iterdir())
    assert len(trials) == 4  # two settings, two folds
    for trial in trials:
        config = yaml.safe_load((trial / "config.yaml").read_text())
        assert config["code"] == ["code/vit.py", "code/extras.py"]
        assert (trial / "code" / "extras.py").read_text() == EXTRAS
    return frame


def test_a_grid_sweep_with_k_fold_on_two_workers_imports_the_sweeps_copy(tmp_path):
    spec = project(tmp_path, SPEC.replace("epochs: 12", "epochs: 1"))
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    result = sweep(tmp_path, "--runs-dir", "runs")
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = run_dirs(tmp_path / "runs")
    frame = check_sweep(sweep_dir)
    assert sorted(frame["param_model.layers.1.projection_dim"]) == [4, 8]
    assert spec.exists()
    assert (sweep_dir / "refit" / "code" / "vit.py").read_text() == VIT


OWN_SPEC = """\
name: ownsweep
code: [own.py]
data: {dataset: digits, scale: 16, flatten: true, one_hot: false}
model: {function: build, args: {units: 8}}
compile: {loss: null, metrics: []}
training: {epochs: 1, batch_size: 64, tensorboard: null, checkpoint: {monitor: val_accuracy}}
"""

RAY_SWEEP = """\
base: spec.yaml
name: ownray
grid:
  model.args.units: [4, 8]
cv: 2
refit: false
scoring: accuracy
resources: {cpu: 1}
"""


def test_a_model_function_sweep_runs_on_ray_from_the_sweeps_copy(tmp_path, ray_head):
    """On a running Ray cluster (--address): its workers import the sweep folder's copy."""
    project(tmp_path, OWN_SPEC)
    (tmp_path / "sweep.yaml").write_text(RAY_SWEEP)
    env = {**DLRUN_ENV, "RAY_AUTH_MODE": "disabled"}  # as the head's
    result = sweep(
        tmp_path, "--executor", "ray", "--address", ray_head, "--runs-dir", "runs", env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = run_dirs(tmp_path / "runs")
    frame = pd.read_csv(sweep_dir / "cv_results.csv")
    assert len(frame) == 2 and set(frame["status"]) == {"completed"}
    assert sorted(frame["param_model.args.units"]) == [4, 8]
    for trial in (sweep_dir / "trials").iterdir():
        assert (trial / "code" / "own.py").read_text() == OWN_MODEL
        assert {"accuracy", "val_accuracy"} <= set(pd.read_csv(trial / "history.csv").columns)
