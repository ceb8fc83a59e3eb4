"""Full disks, read-only run folders and closed terminals, as real faults.

A small ext4 file system (mkfs.ext4 on a file, mounted through a loop device) fills up for
real, and is remounted read-only for a colleague's runs; `ulimit -f` caps file sizes in a
dlrun subprocess; SIGHUP is a real signal. tmpfs alone is not enough: it overwrites in place
without new blocks, which hid the in-place fallback's faults. Issue 23, items 9 to 11.
"""

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_hostile import assert_one_clean_error, no_hang  # noqa: F401  (autouse)
from typer.testing import CliRunner

from conftest import DLRUN_ENV, TINY_SPEC, run_dirs, wait_until
from dlrun import store
from dlrun.cli import app

runner = CliRunner()


class Disk:
    """An ext4 file system of `size` in a file, mounted at `mount` while the test runs."""

    def __init__(self, root: Path, size: str = "4M"):
        self.image, self.mount = root / "disk.img", root / "mnt"
        self.mount.mkdir()
        subprocess.run(["truncate", "-s", size, str(self.image)], check=True)
        # 1 KiB blocks, none reserved for root: "full" is full for the test too.
        made = subprocess.run(
            ["mkfs.ext4", "-q", "-F", "-b", "1024", "-m", "0", str(self.image)],
            capture_output=True,
        )
        mounted = made.returncode == 0 and self._mount("loop")
        if not mounted:
            pytest.skip("cannot make and mount an ext4 file system here (needs root and loop)")

    def _mount(self, options: str) -> bool:
        done = subprocess.run(
            ["mount", "-o", options, str(self.image), str(self.mount)], capture_output=True
        )
        return done.returncode == 0

    def leave_free(self, kib: int) -> None:
        """Fill the disk with a file until only `kib` KiB are free."""
        info = os.statvfs(self.mount)
        left = info.f_bavail * info.f_frsize - kib * 1024
        with open(self.mount / "filler", "wb", buffering=0) as filler:
            while left > 0:
                try:  # the file's own index blocks take room too: full may come first
                    left -= filler.write(bytes(min(left, 1 << 16)))
                except OSError:
                    break
            # ext4 allocates late: what statvfs counted may leave a few blocks; 0 is 0.
            while kib == 0:
                try:
                    filler.write(bytes(1024))
                    os.fsync(filler.fileno())
                except OSError:
                    break

    def free_up(self) -> None:
        (self.mount / "filler").unlink()

    def read_only(self) -> None:
        assert self._mount("remount,ro"), "cannot remount read-only"

    def close(self) -> None:
        # Lazily if a file on it is still open (a run's lock in this process): never left over.
        if subprocess.run(["umount", str(self.mount)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(self.mount)], capture_output=True)


@pytest.fixture
def disk(tmp_path):
    made = Disk(tmp_path)
    yield made
    made.close()


@pytest.fixture
def spec(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_SPEC)
    return path


def meta_of(run: Path) -> dict:
    return json.loads((run / store.META).read_text())  # valid JSON, or the test fails here


# --- item 9: the outcome is recorded whatever fails -------------------------------------------


@pytest.mark.parametrize("free_kib", [6, 60])
def test_a_disk_that_fills_during_training(disk, spec, free_kib):
    """6 KiB: full in epoch 1; 60 KiB: full while writing the results. Either the failure is
    recorded in a meta.json written whole (never in place), or stderr says it could not be and
    the previous meta.json stays: valid JSON in both cases, and the run is listed."""
    runs = disk.mount / "runs"
    disk.leave_free(free_kib)
    result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(runs)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.exception.__class__ is SystemExit
    (run,) = run_dirs(runs)
    meta = meta_of(run)
    if meta["status"] == "running":
        assert "could not be recorded in meta.json (No space left on device)" in result.stderr
    else:
        assert meta["status"] == "failed" and "No space left on device" in meta["message"]
    listing = runner.invoke(app, ["runs", str(runs)])
    assert listing.exit_code == 0 and run.name in listing.stdout


def test_an_outcome_that_cannot_be_recorded_keeps_the_last_meta_json(disk, spec):
    """12 KiB free: TensorBoard's files fill the disk in epoch 1, and no meta.json fits at the
    end. The in-place fallback raised a traceback here and could leave half a file; now the
    previous meta.json stays, stderr says the outcome could not be recorded, and once there is
    space again the run (crashed: its lock is free) resumes to completion."""
    runs = disk.mount / "runs"
    disk.leave_free(12)
    result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(runs)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.exception.__class__ is SystemExit
    (run,) = run_dirs(runs)
    lines = [line for line in result.stderr.splitlines() if "could not be recorded" in line]
    assert len(lines) == 1 and lines[0].startswith(f"Error: {run}: the outcome (failed: ")
    assert "in meta.json (No space left on device)" in lines[0]
    meta = meta_of(run)
    assert meta["status"] == "running" and meta["ended"] is None
    assert store.open_run(run).status == "crashed"
    disk.free_up()
    resumed = runner.invoke(app, ["train", "--resume", str(run)])
    assert resumed.exit_code == 0, resumed.output
    assert meta_of(run)["status"] == "completed" and meta_of(run)["epochs_done"] == 2


def dlrun_limited(limit_bytes: int, *args) -> subprocess.CompletedProcess:
    """`python -m dlrun ARGS` with every file it writes capped at limit_bytes (ulimit -f)."""

    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, resource.RLIM_INFINITY))

    return subprocess.run(
        [sys.executable, "-m", "dlrun", *map(str, args)],
        preexec_fn=cap,
        capture_output=True,
        text=True,
        env=DLRUN_ENV,
        timeout=120,
    )


# Run in one real process by dlrun_limited_each: each command as `python -m dlrun` runs it (the
# CLI app, dlrun.cli.main), its own file size cap set just before it; an exception that would
# have escaped as a traceback is added to its stderr, as Python would have printed it.
_LIMITED_EACH = """\
import json, resource, sys, traceback
from typer.testing import CliRunner
from dlrun.cli import app

runner, unlimited = CliRunner(), (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
for name, limit, args in json.load(sys.stdin):
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    result = runner.invoke(app, args)
    resource.setrlimit(resource.RLIMIT_FSIZE, unlimited)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(*result.exc_info))
    done = {"returncode": result.exit_code, "stdout": result.stdout, "stderr": stderr}
    print("RESULT", json.dumps([name, done]), flush=True)
"""


def dlrun_limited_each(jobs: dict[str, tuple[int, list]]) -> dict[str, SimpleNamespace]:
    """Several dlrun commands, {name: (limit_bytes, ARGS)}, in one real process, each with every
    file it writes capped at its limit_bytes (ulimit -f, set in that process for that command):
    the fault is as real as dlrun_limited's, and the process (its TensorFlow import) is paid
    once. {name: its returncode, stdout and stderr}."""
    plan = [[name, limit, [*map(str, args)]] for name, (limit, args) in jobs.items()]
    done = subprocess.run(
        [sys.executable, "-c", _LIMITED_EACH],
        input=json.dumps(plan),
        capture_output=True,
        text=True,
        env=DLRUN_ENV,
        timeout=120 * len(plan),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = dict(
        json.loads(line[len("RESULT ") :])
        for line in done.stdout.splitlines()
        if line.startswith("RESULT ")
    )
    assert sorted(results) == sorted(jobs), done.stderr[-3000:]
    return {name: SimpleNamespace(**result) for name, result in results.items()}


def test_a_file_size_limit_records_the_failure_in_a_valid_meta_json(spec, tmp_path):
    """ulimit -f (1400 bytes): the final meta.json with its traceback does not fit; the fallback
    wrote it cut short, invalid, and the run vanished from `runs`. Now a compact meta.json is
    written whole, the run is listed as failed and can be resumed."""
    runs = tmp_path / "runs"
    done = dlrun_limited(1400, "train", spec, "--runs-dir", runs)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    (run,) = run_dirs(runs)
    meta = meta_of(run)
    assert meta["status"] == "failed" and "File too large" in meta["message"]
    assert "traceback" not in meta  # dropped to fit: the compact record
    listing = runner.invoke(app, ["runs", str(runs)])
    assert listing.exit_code == 0 and run.name in listing.stdout and "failed" in listing.stdout
    resumed = runner.invoke(app, ["train", "--resume", str(run)])
    assert resumed.exit_code == 0, resumed.output
    assert meta_of(run)["status"] == "completed"


def test_a_run_that_cannot_start_leaves_no_folder(disk, spec):
    """1 KiB free: the run folder is made, its config.yaml does not fit. One Error line, and
    the folder this process made is removed (it was a traceback and a half-made run)."""
    runs = disk.mount / "runs"
    runs.mkdir()
    disk.leave_free(1)
    result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(runs)])
    assert_one_clean_error(result, "cannot start the run (No space left on device)", code=1)
    assert run_dirs(runs) == []


# --- item 10: read-only run folders print their results first ---------------------------------


@pytest.fixture
def read_only_run(disk, trained) -> Path:
    """A copy of the trained run on a file system remounted read-only."""
    run = disk.mount / "runs" / trained.name
    shutil.copytree(trained, run)
    disk.read_only()
    return run


def results_then_one_error(result, printed: str, fragment: str) -> None:
    assert result.exit_code == 1, result.output
    assert printed in result.stdout, result.stdout
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]  # no progress bar
    assert line.startswith("Error: not saved: ") and fragment in line, line
    assert "Traceback" not in result.output


def test_evaluate_on_a_read_only_run_prints_its_scores_first(read_only_run):
    result = runner.invoke(app, ["evaluate", str(read_only_run)])
    results_then_one_error(result, "Test accuracy: ", "Read-only file system")
    assert "pass --no-save" in result.stderr
    quiet = runner.invoke(app, ["evaluate", str(read_only_run), "--no-save"])
    assert quiet.exit_code == 0, quiet.output
    assert "Test accuracy: " in quiet.stdout and quiet.stderr == ""
    as_json = runner.invoke(app, ["evaluate", str(read_only_run), "--json"])
    assert as_json.exit_code == 1
    assert "Read-only file system" in json.loads(as_json.stdout)["not_saved"]


def test_attack_on_a_read_only_run_prints_its_table_first(read_only_run):
    args = ["attack", str(read_only_run), "--method", "fgsm", "--eps", "0,0.1", "--samples", "40"]
    result = runner.invoke(app, args)
    results_then_one_error(result, "adversarial accuracy", "Read-only file system")
    assert runner.invoke(app, [*args, "--no-save"]).exit_code == 0


def test_features_to_a_read_only_folder_fails_before_extracting(read_only_run):
    out = read_only_run.parent / "features.npz"
    result = runner.invoke(app, ["features", str(read_only_run), "--layer", "0", "--out", out])
    assert_one_clean_error(result, f"--out {out}: cannot be written (Read-only file system)")


def test_compare_plot_to_a_read_only_folder_prints_the_table_first(read_only_run):
    plot = read_only_run.parent / "curves.png"
    result = runner.invoke(app, ["compare", str(read_only_run.parent), "--plot", str(plot)])
    assert result.exit_code == 1
    assert read_only_run.name in result.stdout  # the table, whole
    (line,) = result.stderr.splitlines()
    assert line == f"Error: --plot {plot}: not written (Read-only file system)"


@pytest.mark.parametrize("command", ["runs", "show", "compare"])
def test_reading_a_read_only_run_needs_no_write(read_only_run, command):
    target = read_only_run.parent if command != "show" else read_only_run
    result = runner.invoke(app, [command, str(target)])
    assert result.exit_code == 0, result.output
    assert read_only_run.name in result.stdout or "completed" in result.stdout


def test_resume_of_a_read_only_run_is_one_error(read_only_run):
    meta = read_only_run / store.META
    result = runner.invoke(app, ["train", "--resume", str(read_only_run), "--epochs", "3"])
    assert result.exit_code in (1, 2)
    (line,) = result.stderr.splitlines()
    assert line.startswith("Error: ") and "Read-only file system" in line
    assert meta_of(read_only_run)["status"] == "completed" and meta.is_file()


def test_evaluate_on_a_full_disk_leaves_no_empty_file(disk, trained):
    """The claim of a new evaluations/ name made a 0-byte file first; a kill or a full disk
    then left it. Now the file is linked into place whole, or not at all."""
    run = disk.mount / "runs" / trained.name
    shutil.copytree(trained, run)
    (run / store.EVALUATIONS).mkdir()
    disk.leave_free(0)
    result = runner.invoke(app, ["evaluate", str(run)])
    results_then_one_error(result, "Test accuracy: ", "No space left on device")
    assert [p for p in (run / store.EVALUATIONS).iterdir() if p.stat().st_size == 0] == []


# --- item 11: SIGHUP is a stop like SIGTERM ---------------------------------------------------


def test_sighup_interrupts_training_as_sigterm_does(tmp_path):
    spec = tmp_path / "long.yaml"
    spec.write_text(TINY_SPEC.replace("epochs: 2", "epochs: 60").replace("64", "16"))
    runs = tmp_path / "runs"
    process = subprocess.Popen(
        [sys.executable, "-m", "dlrun", "train", str(spec), "--runs-dir", str(runs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=DLRUN_ENV,
    )
    run = wait_until(
        lambda: next((r for r in run_dirs(runs) if (r / store.HISTORY).exists()), None), process
    )
    process.send_signal(signal.SIGHUP)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 129, err
    meta = meta_of(run)
    assert meta["status"] == "interrupted", meta
    assert meta["message"] == "stopped by SIGHUP (its terminal or ssh session closed)"
    assert "Traceback" not in err
    assert 1 <= meta["epochs_done"] < 60
