"""dlrun sweep --executor ray: four fits as tasks on a local Ray instance (2 CPUs here), the
same cv_results.csv as the local executor; without Ray, one line that says how to install it."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import TINY_SPEC, run_dirs

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
    return subprocess.run(
        [sys.executable, "-m", "dlrun", "sweep", "sweep.yaml", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env or dict(os.environ),
        timeout=600,
    )


@pytest.fixture
def sweep_file(tmp_path: Path) -> Path:
    (tmp_path / "tiny.yaml").write_text(TINY_SPEC.replace("epochs: 2", "epochs: 1"))
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    return tmp_path / "sweep.yaml"


def test_a_ray_sweep_gives_the_local_executors_results(sweep_file, tmp_path):
    pytest.importorskip("ray")
    on_ray = sweep(tmp_path, "--executor", "ray", "--runs-dir", "ray")
    assert on_ray.returncode == 0, on_ray.stderr[-3000:]
    local = sweep(tmp_path, "--runs-dir", "local")
    assert local.returncode == 0, local.stderr[-3000:]
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
