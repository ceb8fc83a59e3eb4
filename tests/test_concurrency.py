"""Two processes, a dying parent, a full disk: real processes and real signals.

The run folder's lock (flock on .lock) is what says a run is running: two resumes of one run
cannot both train, and a run whose meta says running with the lock free has crashed.
"""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import DLRUN_ENV as ENV
from conftest import TINY_SPEC, default_sigint, epochs_in, gone, run_dirs, wait_until
from conftest import start_dlrun as dlrun
from dlrun import store
from dlrun.cli import app

runner = CliRunner()
# The processes here are about locks, signals and process trees, not the backend: they train on
# JAX (a cheaper start than TensorFlow's; the suite shares one compile cache), in batches of 16
# (72 steps an epoch). tests/test_signals.py stops a run on TensorFlow in a real process.
JAX_TINY = TINY_SPEC.replace("seed: 0\n", "seed: 0\nbackend: jax\n").replace("64", "16")
LONG_SPEC = JAX_TINY.replace("epochs: 2", "epochs: 400")


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """A real run SIGKILLed after its first epoch: meta.json says running, nobody holds it.
    Made once by a real process; never handed to a test itself (see `killed_run`)."""
    root = tmp_path_factory.mktemp("killed")
    spec = root / "long.yaml"
    spec.write_text(LONG_SPEC)
    runs = root / "runs"
    process = dlrun("train", spec, "--runs-dir", runs)
    run = wait_until(lambda: next((r for r in run_dirs(runs) if epochs_in(r) >= 1), None), process)
    wait_until(lambda: (run / store.LAST).exists(), process)
    process.kill()
    process.communicate()
    assert json.loads((run / "meta.json").read_text())["status"] == "running"
    return run


@pytest.fixture
def killed_run(killed, tmp_path):
    """The test's own copy of the killed run (with its free .lock), in a runs folder of its own."""
    run = tmp_path / "runs" / killed.name
    shutil.copytree(killed, run, symlinks=True)
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


def test_full_disk_for_the_final_meta_json_writes_a_compact_one(tmp_path, monkeypatch):
    """The full record cannot be written: a compact one (no traceback) is, atomically too; it
    is never written in place (tests/test_hostile_disk.py fills a real ext4 disk)."""
    from dlrun.store import files

    write_json = files.write_json

    def full_at_the_end(path, data):
        if Path(path).name == store.META and data.get("ended"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        write_json(path, data)

    monkeypatch.setattr(files, "write_json", full_at_the_end)
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_SPEC)
    result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    (run,) = run_dirs(tmp_path / "runs")
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "completed" and meta["ended"] and meta["epochs_done"] == 2


@pytest.mark.parametrize("failing", ["plot", "metrics"])
def test_full_disk_at_the_end_still_finalises_meta(tmp_path, monkeypatch, failing):
    """ENOSPC injected into the final plot or metrics.json: failed, with the true epochs."""
    from dlrun.report import plots

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if failing == "plot":
        monkeypatch.setattr(plots, "history_plot", no_space)
    else:
        from dlrun.store import files

        write_json = files.write_json

        def full_for_metrics(path, data):
            if Path(path).name == store.METRICS:
                no_space()
            write_json(path, data)

        monkeypatch.setattr(files, "write_json", full_for_metrics)
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


# --- sweeps: stopped, orphaned, losing a worker ----------------------------------------------

LONG_SWEEP = """\
base: tiny.yaml
name: long
grid:
  model.layers.0.units: [8, 16, 24]
  training.epochs: [{epochs}]
cv: 0
workers: 1
refit: false
"""


def children(pid: int, marker: bytes = b"spawn_main") -> list[int]:
    """Child processes whose command line holds `marker` (by default the sweep's workers,
    not multiprocessing's resource tracker)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and marker in command:
            found.append(int(stat.parent.name))
    return found


def start_sweep(tmp_path, epochs=300, **kwargs):
    (tmp_path / "tiny.yaml").write_text(JAX_TINY)
    (tmp_path / "sweep.yaml").write_text(LONG_SWEEP.format(epochs=epochs))
    runs = tmp_path / "runs"
    process = dlrun("sweep", tmp_path / "sweep.yaml", "--runs-dir", runs, **kwargs)
    trial = wait_until(
        lambda: next((t for t in runs.glob("*/trials/*") if epochs_in(t) >= 1), None),
        process,
        timeout=180,
    )
    return process, trial


@pytest.mark.parametrize(
    "how, exit_code, message",
    [
        ("ctrl-c", 130, "stopped by Ctrl-C (SIGINT)"),
        ("sigterm", 143, "stopped by SIGTERM"),
        ("sighup", 129, "stopped by SIGHUP (its terminal or ssh session closed)"),
    ],
)
def test_a_stopped_sweep_starts_no_more_fits_and_says_how_to_resume(
    tmp_path, how, exit_code, message
):
    process, trial = start_sweep(tmp_path, start_new_session=True)
    workers = children(process.pid)
    assert workers
    sweep_dir = trial.parent.parent
    second = runner.invoke(app, ["sweep", "--resume", str(sweep_dir)])  # while it runs
    assert second.exit_code == 2
    assert second.stderr.splitlines() == [
        f"Error: {sweep_dir}: another dlrun process is using this sweep right now; "
        "wait for it to finish or stop it first"
    ]
    if how == "ctrl-c":  # the terminal sends SIGINT to the whole foreground group
        os.killpg(process.pid, signal.SIGINT)
    elif how == "sighup":  # a closed terminal or ssh session hangs up the whole group
        os.killpg(process.pid, signal.SIGHUP)
    else:
        process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == exit_code, err
    assert err.splitlines()[-1] == f"resume with: dlrun sweep --resume {sweep_dir}"
    assert "Traceback" not in err
    assert [t.name for t in (sweep_dir / "trials").iterdir()] == [trial.name]  # none queued ran
    meta = json.loads((trial / "meta.json").read_text())
    assert meta["status"] == "interrupted" and meta["message"] == message
    assert f"Error: sweep {message}; the fits running were recorded as interrupted" in err
    wait_until(lambda: all(gone(pid) for pid in workers), timeout=30)


def test_workers_stop_when_the_sweep_parent_is_killed(tmp_path):
    process, trial = start_sweep(tmp_path)
    workers = children(process.pid)
    assert workers
    process.kill()  # SIGKILL: the parent can do nothing more
    out, err = process.communicate()  # returns once the workers, which share its pipes, exit
    assert all(gone(pid) for pid in workers)
    meta = json.loads((trial / "meta.json").read_text())
    assert meta["status"] == "interrupted", (meta, err[-2000:])
    assert store.open_run(trial).status == "interrupted"


def test_a_worker_that_dies_is_a_crashed_trial_and_the_sweep_goes_on(tmp_path):
    # 20 epochs: the worker is killed once the first trial has one, so 19 more (over a thousand
    # batches, a second or more on JAX) must pass before the trial could finish first; the
    # other two train all twenty.
    process, trial = start_sweep(tmp_path, epochs=20)
    (worker,) = children(process.pid)
    os.kill(worker, signal.SIGKILL)  # as the OOM killer would
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert "Traceback" not in err and "BrokenProcessPool" not in err
    assert f"{trial.name}: crashed (its worker process died (exit code -9))" in out
    sweep_dir = trial.parent.parent
    statuses = (sweep_dir / "cv_results.csv").read_text().splitlines()
    assert [line.rsplit(",", 1)[1] for line in statuses[1:]].count("crashed") == 1
    assert [line.rsplit(",", 1)[1] for line in statuses[1:]].count("completed") == 2
    assert store.open_run(trial).status == "crashed"


# --- what a stop leaves on the terminal and the ports -----------------------------------------


def test_ctrl_c_in_a_terminal_closes_the_live_bar(tmp_path):
    """Keras calls on_train_end only when fit returns: the bar must be closed all the same."""
    import pty
    import threading

    spec = tmp_path / "long.yaml"
    spec.write_text(LONG_SPEC)
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "dlrun", "train", str(spec), "--runs-dir", str(tmp_path / "runs")],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        preexec_fn=default_sigint,
        env={**ENV, "TERM": "xterm", "COLUMNS": "150"},
    )
    os.close(follower)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other side closed
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    wait_until(lambda: b"epoch 3/400" in b"".join(chunks), process, timeout=180)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 130
    reader.join(timeout=10)
    os.close(leader)
    text = b"".join(chunks).decode(errors="replace")
    hide, show = "\x1b[?25l", "\x1b[?25h"
    assert text.rfind(show) > text.rfind(hide) >= 0, "the cursor is left hidden"
    assert text.rindex("/400") < text.index(": interrupted"), "the table is above the bar"
    assert "\nError: run interrupted" in text.replace("\r\n", "\n"), "the error is glued on"


def test_tensorboard_goes_with_dlrun_on_sigterm(tmp_path):
    import socket

    runs = tmp_path / "runs"
    runs.mkdir()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # TensorFlow made unimportable (tests/blocker): TensorBoard then reads files without it,
    # and its start costs a second, not TensorFlow's import; the processes are the same.
    blocker = str(Path(__file__).resolve().parent / "blocker")
    path = os.pathsep.join(filter(None, [blocker, ENV.get("PYTHONPATH")]))
    environment = {**ENV, "PYTHONPATH": path, "DLRUN_BLOCK": "tensorflow"}
    process = dlrun("tensorboard", runs, "--port", port, env=environment)

    def listening() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    wait_until(listening, process, timeout=120)
    (board,) = children(process.pid, b"tensorboard.main")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 143
    wait_until(lambda: gone(board), timeout=30)
    assert not listening()
