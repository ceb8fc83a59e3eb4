"""What a run and a sweep record about themselves when stopped and resumed: the signal that
stopped a sweep's fits, times over every attempt, TensorBoard's epochs, `dlrun runs` on a
sweep, and history.csv's columns."""

import csv
import json
import os
import shutil
import signal
import time

import pytest
from typer.testing import CliRunner

from conftest import TINY_SPEC, run_dirs, start_dlrun, wait_until
from dlrun import store
from dlrun.cli import app
from dlrun.report import listing

runner = CliRunner()


def test_history_csv_keeps_its_columns_when_a_metric_name_holds_a_comma(tmp_path):
    rows = [
        {"epoch": 1, "loss": 0.5, 'f1,"macro"': 0.25, "val_loss": 0.75},
        {"epoch": 2, "loss": 0.4, 'f1,"macro"': 0.5, "val_loss": 0.7},
    ]
    (tmp_path / store.HISTORY).write_text(store.history_text(rows))
    with open(tmp_path / store.HISTORY, newline="") as file:
        read = list(csv.DictReader(file))
    assert [float(r["val_loss"]) for r in read] == [0.75, 0.7]
    assert [float(r['f1,"macro"']) for r in read] == [0.25, 0.5]
    assert store.read_history(tmp_path) == rows


def test_train_seconds_and_throughput_count_every_attempt(tmp_path, trained):
    run = tmp_path / trained.name
    shutil.copytree(trained, run)  # two epochs of TINY_SPEC, then two more
    first = json.loads((run / store.METRICS).read_text())
    result = runner.invoke(app, ["train", "--resume", str(run), "--epochs", "4"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / store.METRICS).read_text())
    attempts = json.loads((run / store.META).read_text())["attempts"]
    assert [a["epochs_trained"] for a in attempts] == [2, 2]
    assert attempts[0]["train_seconds"] == first["train_seconds"]
    assert metrics["train_seconds"] == pytest.approx(sum(a["train_seconds"] for a in attempts))
    # 1149 training samples (digits' training split less its validation split), 4 epochs.
    samples = 1149 * 4
    assert metrics["samples_per_second"] == pytest.approx(samples / metrics["train_seconds"], 1e-3)


def test_tensorboard_keeps_the_epoch_a_stop_lands_in_while_it_is_recorded(tmp_path, monkeypatch):
    """SIGTERM while epoch 2's records are written: held until they are, so history.csv has
    epoch 2 and so must TensorBoard; resumed, both have every epoch once."""
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_SPEC.replace("epochs: 2", "epochs: 3"))
    record_epoch = store.RunFolder.record_epoch

    def stopped_while_recording(self, rows):
        if len(rows) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # a real signal, inside the held section
            time.sleep(0.05)
        record_epoch(self, rows)

    monkeypatch.setattr(store.RunFolder, "record_epoch", stopped_while_recording)
    result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 143, result.output
    (run,) = run_dirs(tmp_path / "runs")
    assert len(store.read_history(run)) == 2
    assert _board_epochs(run) == [0, 1]
    monkeypatch.undo()
    result = runner.invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    assert len(store.read_history(run)) == 3
    assert _board_epochs(run) == [0, 1, 2]


def _board_epochs(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps = []
    for part in ("train", "validation"):
        events = EventAccumulator(str(run / store.TENSORBOARD / part), size_guidance={"tensors": 0})
        events.Reload()
        steps.append(sorted(e.step for e in events.Tensors("epoch_loss")))
    assert steps[0] == steps[1]
    return steps[0]


SWEEP = """\
base: tiny.yaml
name: stopped
grid:
  model.layers.0.units: [8, 16]
cv: 0
workers: 1
refit: false
"""


def _sweep_row(runs):
    found, _, warnings = listing.find([runs])
    shown, _ = listing.rows(found)
    assert not warnings
    (row,) = shown
    return row


def test_a_sweep_stopped_by_ctrl_c_records_sigint_and_runs_shows_its_state(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY_SPEC.replace("epochs: 2", "epochs: 300"))
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    runs = tmp_path / "runs"
    process = start_dlrun("sweep", tmp_path / "sweep.yaml", "--runs-dir", runs)
    try:
        # Between the start and its first fit (workers importing Keras), the sweep is running.
        sweep_dir = wait_until(lambda: run_dirs(runs) and run_dirs(runs)[0], process)
        wait_until(lambda: store.lock_held(sweep_dir), process)
        row = wait_until(lambda: _sweep_row(runs)["epochs"] != "0/0 fits" and _sweep_row(runs))
        assert (row["status"], row["epochs"]) == ("sweep running", "0/2 fits")
        assert not (sweep_dir / "trials" / "fit000" / store.META).exists()
        trial = sweep_dir / "trials" / "fit000"
        wait_until(lambda: len(store.read_history(trial)) >= 1, process, timeout=300)
        process.send_signal(signal.SIGINT)  # Ctrl-C, to the sweep's process alone
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr[-3000:]
    meta = json.loads((trial / store.META).read_text())
    assert meta["status"] == "interrupted"
    assert meta["message"] == "stopped by Ctrl-C (SIGINT)"
    row = _sweep_row(runs)
    assert (row["status"], row["epochs"]) == ("sweep interrupted", "0/2 fits")
    # A resume that fails (its trials/ a symlink out of the sweep) is a failed sweep.
    os.rename(sweep_dir / "trials", tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", sweep_dir / "trials")
    result = runner.invoke(app, ["sweep", "--resume", str(sweep_dir)])
    assert result.exit_code != 0 and "Error:" in result.output, result.output
    row = _sweep_row(runs)
    assert row["status"] == "sweep failed"
