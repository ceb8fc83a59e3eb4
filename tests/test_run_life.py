"""One `with` block from meta.json's `running` to the recorded outcome (train/life.py): a fault
anywhere after the folder exists is a `failed` run with one line, never a run left `running`."""

import json
import signal
import threading

from typer.testing import CliRunner

from conftest import TINY_SPEC, run_dirs
from dlrun import api, store
from dlrun.cli import app

runner = CliRunner()

# Discretization adapts on the training split after the run folder is made; with no bins its
# adapt() divides by zero.
NO_BINS = TINY_SPEC.replace(
    "    - {type: Dense, units: 16, activation: relu}\n",
    "    - {type: Discretization, num_bins: 0}\n    - {type: Dense, units: 16, activation: relu}\n",
)


def test_a_fault_before_the_first_epoch_is_a_failed_run_in_one_line(tmp_path):
    spec = tmp_path / "no_bins.yaml"
    spec.write_text(NO_BINS)
    result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "Error: run failed: ZeroDivisionError" in result.output
    (run,) = run_dirs(tmp_path / "runs")
    meta = json.loads((run / store.META).read_text())
    assert meta["status"] == "failed" and meta["ended"] and meta["epochs_done"] == 0
    assert "ZeroDivisionError" in meta["message"] and "Traceback" in meta["traceback"]
    assert meta["attempts"][-1]["status"] == "failed"
    assert store.open_run(run).status == "failed"  # the lock is free, and meta.json agrees


def test_a_run_trained_in_a_thread_records_its_outcome(tmp_path):
    # signal.signal raises ValueError outside the main thread: a run trained from a thread
    # (a notebook's background job, a web app) must neither use it nor crash on it.
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_SPEC)
    handlers = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    outcomes, errors = [], []

    def work():
        try:
            outcomes.append(api.train(spec, runs_dir=tmp_path / "runs", verbose=False))
        except BaseException as exc:  # reported below, with the test's own message
            errors.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=300)
    assert not errors, errors
    (outcome,) = outcomes
    assert outcome.status == "completed" and outcome.exit_code == 0
    meta = json.loads((outcome.run_dir / store.META).read_text())
    assert meta["status"] == "completed" and meta["epochs_done"] == 2
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers


def test_a_stop_that_c_code_turns_into_another_exception_is_still_a_stop(trained):
    """Ctrl-C landing inside a TensorFlow step can come out of it as SystemError (seen in a
    sweep's fit on Ray): the run was stopped, not failed, and stays resumable. The signal and
    dlrun's handler are real; what the C code made of the KeyboardInterrupt is raised here."""
    from dlrun.train.life import RunLife

    folder = store.RunFolder.acquire(trained)
    # Ctrl-C's own handler, as in a terminal: a suite started in the background inherits
    # SIGINT ignored, and RunLife then rightly leaves it so.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with folder, RunLife(folder) as life:
            with life.phase():
                try:
                    signal.raise_signal(signal.SIGINT)
                except KeyboardInterrupt:
                    raise SystemError(
                        "Objects/listobject.c:338: bad argument to internal function"
                    ) from None
    finally:
        signal.signal(signal.SIGINT, previous)
    assert (life.status, life.exit_code) == ("interrupted", 130)
    meta = json.loads((trained / store.META).read_text())
    assert meta["status"] == "interrupted" and meta["message"] == "stopped by Ctrl-C (SIGINT)"
    assert "SystemError" in meta["traceback"]  # what happened is kept for a bug report
