"""Every command documents itself with an example; the documentation's walkthrough really runs,
the README stays a front door, and the site builds with no broken link."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import ROOT, docs_text
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
    "sync",
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
    assert f"`dlrun {command}" in docs_text()


def walkthrough(marker: str = "walkthrough") -> str:
    text = docs_text()
    block = text.split(f"<!-- {marker} -->", 1)[1].split(f"<!-- /{marker} -->", 1)[0]
    return block.split("```bash\n", 1)[1].split("```", 1)[0]


def test_the_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / link).is_file(), link


def test_the_readme_lines_are_the_walkthroughs_own():
    """The README's ten lines are a subset of the site's walkthrough, which runs below."""
    site = walkthrough().splitlines()
    readme = [line for line in walkthrough("readme-walkthrough").splitlines() if line.strip()]
    assert len(readme) >= 5
    assert [line for line in readme if line not in site] == []


def test_the_site_builds_strictly(tmp_path):
    """mkdocs with the Material theme, --strict: a broken link or a page left out of the nav
    fails."""
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "graphs" / "index.html").is_file()


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
