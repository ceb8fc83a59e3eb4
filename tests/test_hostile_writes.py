"""Issue 30, pattern 4: OS errors on every command that writes a result, as real faults.

The ext4 image of test_hostile_disk fills up for real and is remounted read-only; `ulimit -f`
(RLIMIT_FSIZE) caps the files of dlrun commands in a subprocess; names longer than the file
system takes are refused before any work. Every case: one `Error:` line naming the path,
nothing left behind (no temporary file), the command's documented exit code.
"""

import os
from pathlib import Path

import pytest
from test_hostile import assert_one_clean_error, no_hang  # noqa: F401  (autouse)
from test_hostile_disk import Disk, dlrun_limited_each
from test_hostile_output import SUFFIX, commands, leftovers, with_input
from typer.testing import CliRunner

from dlrun.cli import app

runner = CliRunner()
COMMANDS = sorted(SUFFIX)


@pytest.fixture(scope="module")
def placed(trained) -> Path:
    return with_input(trained)


@pytest.fixture
def disk(tmp_path):
    made = Disk(tmp_path)
    yield made
    made.close()


def target(disk: Disk, command: str) -> Path:
    folder = disk.mount / "out"
    folder.mkdir(exist_ok=True)
    return folder / f"result{SUFFIX[command]}"


def one_line_not_written(result, out: Path, reason: str, code: int = 1) -> None:
    line = assert_one_clean_error(result, reason, code=code)
    assert str(out) in line, line
    assert not os.path.lexists(out)
    assert leftovers(out.parent) == []


@pytest.mark.parametrize("command", COMMANDS)
def test_a_full_disk_is_one_line_and_leaves_nothing(placed, disk, command):
    out = target(disk, command)
    disk.leave_free(0)
    result = runner.invoke(app, [*map(str, commands(placed, out)[command])])
    one_line_not_written(result, out, "No space left on device")


@pytest.mark.parametrize("command", COMMANDS)
def test_a_read_only_file_system_is_one_line(placed, disk, command):
    out = target(disk, command)
    disk.read_only()
    result = runner.invoke(app, [*map(str, commands(placed, out)[command])])
    # features takes its destination before extracting: refused as a usage error, exit 2
    one_line_not_written(result, out, "Read-only file system", 2 if command == "features" else 1)


LIMITED = ["predict", "features", "compare", "export keras"]


@pytest.fixture(scope="module")
def limited(placed, tmp_path_factory) -> dict:
    """Each of LIMITED run with its files capped at 300 bytes (ulimit -f), all in one real
    process: {command: (its out, its returncode, stdout and stderr)}."""
    root = tmp_path_factory.mktemp("limited")
    outs, jobs = {}, {}
    for command in LIMITED:
        out = root / command.replace(" ", "-") / "out" / f"result{SUFFIX[command]}"
        out.parent.mkdir(parents=True)
        outs[command], jobs[command] = out, (300, commands(placed, out)[command])
    done = dlrun_limited_each(jobs)
    return {command: (outs[command], done[command]) for command in LIMITED}


@pytest.mark.parametrize("command", LIMITED)
def test_a_file_size_limit_is_one_line(limited, command):
    out, done = limited[command]
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "File too large" in lines[0], done.stderr[-3000:]
    assert not os.path.lexists(out) and leftovers(out.parent) == []


@pytest.mark.parametrize("command", COMMANDS)
def test_a_name_longer_than_the_file_system_takes_is_refused_first(placed, tmp_path, command):
    out = tmp_path / ("n" * 300 + SUFFIX[command])
    result = runner.invoke(app, [*map(str, commands(placed, out)[command])])
    assert_one_clean_error(result, "this file system takes at most 255")
    assert os.listdir(tmp_path) == []


def test_the_sweeps_study_on_a_full_disk_is_one_line(disk):
    pytest.importorskip("optuna")
    from dlrun.sweep.study import Study, StudyError

    disk.leave_free(0)
    with pytest.raises(StudyError) as caught:
        Study("tpe", {"a": {"uniform": [0, 1]}}, 0, path=disk.mount / "study.db",
              sweep_identity="this")  # fmt: skip
    assert "\n" not in str(caught.value) and "study.db" in str(caught.value)


def test_the_sweeps_study_on_a_read_only_disk_is_one_line(disk):
    pytest.importorskip("optuna")
    from dlrun.sweep.study import Study, StudyError

    disk.read_only()
    with pytest.raises(StudyError, match="Read-only file system"):
        Study("tpe", {"a": {"uniform": [0, 1]}}, 0, path=disk.mount / "study.db",
              sweep_identity="this")  # fmt: skip
