"""Every command documents itself with an example; the README's walkthrough really runs."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import ROOT
from dlrun.cli import app

runner = CliRunner()
COMMANDS = [
    "train",
    "validate",
    "runs",
    "show",
    "evaluate",
    "attack",
    "features",
    "predict",
    "export",
    "compare",
    "tensorboard",
    "sweep",
]


def test_every_command_is_listed_here():
    result = runner.invoke(app, ["--help"])
    listed = re.findall(r"^  (\w+)\s", result.stdout, flags=re.MULTILINE)
    assert listed == COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help_has_an_example(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert f"Example: dlrun {command}" in result.stdout
    assert f"`dlrun {command}" in (ROOT / "README.md").read_text()


def walkthrough() -> str:
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- walkthrough -->", 1)[1].split("<!-- /walkthrough -->", 1)[0]
    return block.split("```bash\n", 1)[1].split("```", 1)[0]


def test_readme_walkthrough_runs(tmp_path):
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("DLRUN_RUNS_DIR", None)
    script = "set -euo pipefail\n" + walkthrough()
    result = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Total params: 61,482" in result.stdout
    assert result.stdout.count("run folder: ") == 2
    assert "Test loss: " in result.stdout and "Test accuracy: " in result.stdout
    assert (tmp_path / "evaluation.json").stat().st_size > 0
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")
    assert "| run | status |" in result.stdout


def test_make_run_target_trains_the_quickstart():
    makefile = (ROOT / "Makefile").read_text()
    assert "dlrun train configs/quickstart.yaml" in makefile
    assert ".ci/run" and "make test" in (ROOT / ".ci" / "run").read_text()
