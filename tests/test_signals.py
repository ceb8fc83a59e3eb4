"""Ctrl-C during training: status interrupted, last.keras kept, exit 130. Real processes."""

import json
import os
import signal
import subprocess
import sys
import time

from conftest import TINY_SPEC, default_sigint, run_dirs


def start_training(tmp_path, epochs=200):
    spec = tmp_path / "long.yaml"
    spec.write_text(TINY_SPEC.replace("epochs: 2", f"epochs: {epochs}"))
    runs = tmp_path / "runs"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen(
        [sys.executable, "-m", "dlrun", "train", str(spec), "--runs-dir", str(runs)],
        preexec_fn=default_sigint,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    return process, runs


def wait_for_epochs(runs, count, process, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        for run in run_dirs(runs):
            history = run / "history.csv"
            if history.exists() and len(history.read_text().splitlines()) > count:
                return run
        time.sleep(0.05)
    raise AssertionError("training did not reach the epoch in time")


def test_ctrl_c_marks_interrupted_and_keeps_last_checkpoint(tmp_path):
    process, runs = start_training(tmp_path)
    run = wait_for_epochs(runs, 2, process)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "interrupted"
    assert "Ctrl-C" in meta["message"]
    assert (run / "checkpoints" / "last.keras").exists()
    assert "Traceback" not in err
    *_, error, hint = err.strip().splitlines()
    assert error == "Error: run interrupted: stopped by Ctrl-C (SIGINT)"
    assert hint == f"resume with: dlrun train --resume {run}"
