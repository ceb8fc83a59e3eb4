"""Issue 30: real faults on every command that writes, beyond test_hostile_writes.

The ext4 image of test_hostile_disk fills up for real and is remounted read-only; `ulimit -f`
(RLIMIT_FSIZE) caps the files of a dlrun subprocess (EFBIG); SIGTERM and SIGHUP reach a real
process while its result is being written. Every case: one `Error:` line, the command's
documented exit code, no traceback, nothing half-written (no temporary file), and nothing
that was already there lost.
"""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_hostile import assert_one_clean_error, no_hang  # noqa: F401  (autouse)
from test_hostile_disk import Disk, dlrun_limited, meta_of
from test_hostile_output import leftovers, with_input
from typer.testing import CliRunner

from conftest import DLRUN_ENV, default_sigint, wait_until
from dlrun import store
from dlrun.cli import app

runner = CliRunner()
# The export formats test_hostile_writes does not run (keras and script are there).
FORMATS = ["savedmodel", "onnx", "litert"]


@pytest.fixture(scope="module")
def placed(trained) -> Path:
    return with_input(trained)


@pytest.fixture
def disk(tmp_path):
    made = Disk(tmp_path)
    yield made
    made.close()


def invoke(*args):
    return runner.invoke(app, [*map(str, args)])


def nothing_left(out: Path) -> None:
    assert not os.path.lexists(out)
    assert leftovers(out.parent) == []


def one_error_line(stderr: str, fragment: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and fragment in lines[0], stderr[-3000:]
    return lines[0]


# --- export in every format -----------------------------------------------------------------


@pytest.mark.parametrize("free_kib", [0, 3])
@pytest.mark.parametrize("fmt", [*FORMATS, "keras"])
def test_export_on_a_full_disk_is_one_line_and_leaves_nothing(placed, disk, fmt, free_kib):
    """0 KiB: the temporary folder cannot be made; 3 KiB: it is, and the model's files fill
    the disk while they are written."""
    out = disk.mount / "out" / fmt
    out.parent.mkdir()
    disk.leave_free(free_kib)
    result = invoke("export", placed, "--format", fmt, "--out", out)
    line = assert_one_clean_error(result, "No space left on device", code=1)
    assert str(out) in line
    nothing_left(out)


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_to_a_read_only_folder_is_one_line(placed, disk, fmt):
    out = disk.mount / "out" / fmt
    out.parent.mkdir()
    disk.read_only()
    result = invoke("export", placed, "--format", fmt, "--out", out)
    line = assert_one_clean_error(result, "Read-only file system", code=1)
    assert str(out) in line
    nothing_left(out)


@pytest.mark.parametrize("fmt", [*FORMATS, "script"])
def test_export_under_a_file_size_limit_is_one_line(placed, tmp_path, fmt):
    out = tmp_path / "out" / (fmt + (".py" if fmt == "script" else ""))
    out.parent.mkdir()
    done = dlrun_limited(300, "export", placed, "--format", fmt, "--out", out)
    assert done.returncode == 1, done.stderr[-3000:]
    line = one_error_line(done.stderr, "File too large")
    assert str(out) in line
    nothing_left(out)


def test_evaluate_out_under_a_file_size_limit_is_one_line(placed, tmp_path):
    out = tmp_path / "out" / "metrics.json"
    out.parent.mkdir()
    done = dlrun_limited(100, "evaluate", placed, "--out", out, "--no-save")
    assert done.returncode == 1, done.stderr[-3000:]
    one_error_line(done.stderr, "File too large")
    nothing_left(out)


def test_a_full_disk_keeps_an_earlier_export_whole(placed, disk):
    """--force over an earlier export on a full disk: the new one does not fit, the old one
    is still there, every file of it."""
    out = disk.mount / "model"
    first = invoke("export", placed, "--format", "keras", "--out", out)
    assert first.exit_code == 0, first.output
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    disk.leave_free(0)
    result = invoke("export", placed, "--format", "keras", "--out", out, "--force")
    assert_one_clean_error(result, "No space left on device", code=1)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert leftovers(out.parent) == []
