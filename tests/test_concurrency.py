"""Two processes, a dying parent, a full disk: real processes and real signals.

The run folder's lock (flock on .lock) is what says a run is running: two resumes of one run
cannot both train, and a run whose meta says running with the lock free has crashed.
"""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import TINY_SPEC, default_sigint, run_dirs
from dlrun import store
from dlrun.cli import app

runner = CliRunner()
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def dlrun(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dlrun", *map(str, args)],
        preexec_fn=default_sigint,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        **kwargs,
    )


def wait_until(predicate, process=None, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        if process is not None:
            assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError("timed out")


def epochs_in(run: Path) -> int:
    try:
        return len((run / "history.csv").read_text().splitlines()) - 1
    except FileNotFoundError:
        return 0


@pytest.fixture
def killed_run(tmp_path):
    """A real run SIGKILLed after its first epoch: meta.json says running, nobody holds it."""
    spec = tmp_path / "long.yaml"
    spec.write_text(TINY_SPEC.replace("epochs: 2", "epochs: 400").replace("64", "16"))
    runs = tmp_path / "runs"
    process = dlrun("train", spec, "--runs-dir", runs)
    run = wait_until(lambda: next((r for r in run_dirs(runs) if epochs_in(r) >= 1), None), process)
    wait_until(lambda: (run / store.LAST).exists(), process)
    process.kill()
    process.communicate()
    assert json.loads((run / "meta.json").read_text())["status"] == "running"
    return run


def test_two_resumes_at_once_one_trains_the_other_exits_2(killed_run):
    listing = runner.invoke(app, ["runs", str(killed_run.parent)])
    assert "crashed" in listing.output  # running in meta.json, lock free

    first, second = dlrun("train", "--resume", killed_run), dlrun("train", "--resume", killed_run)
    # Whichever loses the lock exits at once, with one line.
    loser = wait_until(lambda: next((p for p in (first, second) if p.poll() is not None), None))
    winner = second if loser is first else first
    out, err = loser.communicate()
    assert loser.returncode == 2, err
    assert err.splitlines() == [
        f"Error: {killed_run}: another dlrun process is using this run right now; "
        "wait for it to finish or stop it first"
    ]
    before = epochs_in(killed_run)
    wait_until(lambda: epochs_in(killed_run) > before + 1, winner)
    assert "running" in runner.invoke(app, ["runs", str(killed_run.parent)]).output
    winner.send_signal(signal.SIGINT)
    assert winner.wait(timeout=60) == 130
    meta = json.loads((killed_run / "meta.json").read_text())
    assert meta["status"] == "interrupted"
    assert len(meta["attempts"]) == 2  # the loser recorded nothing
    rows = epochs_in(killed_run)  # the stop may fall between an epoch's row and its checkpoint
    assert meta["epochs_done"] in (rows, rows - 1) and meta["epochs_done"] > before


def test_a_lock_held_elsewhere_is_running_whatever_the_pid(killed_run):
    meta = json.loads((killed_run / "meta.json").read_text())
    meta["pid"] = 1  # alive, and not ours: a pid says nothing
    (killed_run / "meta.json").write_text(json.dumps(meta))
    assert store.open_run(killed_run).status == "crashed"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl,sys,time; f=open(sys.argv[1],'a');"
            "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
            str(killed_run / ".lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert store.open_run(killed_run).status == "running"
        result = runner.invoke(app, ["train", "--resume", str(killed_run)])
        assert result.exit_code == 2
        assert "another dlrun process is using this run" in result.output
    finally:
        holder.kill()
        holder.wait()
    assert store.open_run(killed_run).status == "crashed"


@pytest.mark.parametrize("failing", ["plot", "metrics"])
def test_full_disk_at_the_end_still_finalises_meta(tmp_path, monkeypatch, failing):
    """ENOSPC injected into the final plot or metrics.json: failed, with the true epochs."""
    from dlrun import plots

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if failing == "plot":
        monkeypatch.setattr(plots, "history_plot", no_space)
    else:
        write_json = store.write_json

        def full_for_metrics(path, data):
            if Path(path).name == store.METRICS:
                no_space()
            write_json(path, data)

        monkeypatch.setattr(store, "write_json", full_for_metrics)
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_SPEC)
    result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 1
    (run,) = run_dirs(tmp_path / "runs")
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "failed"
    assert "No space left on device" in meta["message"]
    assert meta["epochs_done"] == 2 and meta["ended"]
    assert (run / store.LAST).exists()
    assert store.open_run(run).status == "failed"
    assert "Traceback" not in result.output
