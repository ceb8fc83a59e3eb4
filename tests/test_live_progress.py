"""The live progress bar in a real pseudo-terminal, read back through a terminal emulator.

`dlrun train` runs as a child whose stdout is a pty of 160x45 (as in the tmux session where
finished epochs were left reading `0/29 0:00:00` with no metrics); pyte replays the bytes into a
screen, and the screen is what a user saw.
"""

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios

import pyte

from conftest import TINY_SPEC, run_dirs

COLUMNS, LINES = 160, 45
# A redraw every millisecond and thread switches every microsecond: if the timer can repaint a
# finished epoch, it will.
DRIVER = """
import sys
sys.setswitchinterval(1e-6)
from dlrun.backend import tensorflow
tensorflow()  # quietly, as `dlrun train` does, before the callbacks module imports Keras
from dlrun.train.progress import LiveProgress
LiveProgress.REFRESH_SECONDS = 0.001
from dlrun.cli import main
sys.argv = ["dlrun", *sys.argv[1:]]
main()
"""


def run_in_terminal(args: list[str], cwd) -> tuple[int, pyte.Screen, str]:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", LINES, COLUMNS, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "TF_CPP_MIN_LOG_LEVEL": "2"}
    for name in ("COLUMNS", "LINES", "DLRUN_RUNS_DIR", "NO_COLOR"):
        env.pop(name, None)
    process = subprocess.Popen(
        [sys.executable, "-c", DRIVER, *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=cwd,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    code = process.wait(timeout=300)
    raw = b"".join(chunks)
    screen = pyte.Screen(COLUMNS, LINES)
    pyte.ByteStream(screen).feed(raw)
    return code, screen, raw.decode("utf-8", "replace")


def test_every_finished_epoch_shows_its_metrics_and_early_stopping_is_announced(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY_SPEC)
    # min_delta larger than any loss: only the first epoch counts as an improvement.
    stopping = "{monitor: val_loss, patience: 2, min_delta: 100}"
    code, screen, raw = run_in_terminal(
        [
            "train",
            "tiny.yaml",
            "--set",
            "training.epochs=12",
            "--set",
            f"training.early_stopping={stopping}",
            "--runs-dir",
            "runs",
        ],
        tmp_path,
    )
    lines = [line.rstrip() for line in screen.display]
    assert code == 0, "\n".join(lines)
    (run,) = run_dirs(tmp_path / "runs")
    epochs = json.loads((run / "meta.json").read_text())["epochs_done"]
    assert epochs == 3  # epoch 1 improves, 2 and 3 do not: patience 2 stops it at 3
    rows = [line for line in lines if re.match(r"epoch \d+/12", line)]
    assert [row.split()[1] for row in rows] == [f"{k}/12" for k in range(1, epochs + 1)]
    for row in rows:
        for metric in ("accuracy", "loss", "val_accuracy", "val_loss"):
            assert f" {metric} " in row, row
        assert not re.search(r"\d+/\d+\s+0:00:00", row), row
    assert not any(re.search(r"\b0/\d+\b", line) for line in lines), "\n".join(lines)
    assert "stopped early at epoch 3: val_loss did not improve for 2 epochs" in lines
    # The final table follows the epochs, not glued to a bar.
    assert lines.index("stopped early at epoch 3: val_loss did not improve for 2 epochs") > (
        lines.index(rows[-1])
    )
    assert "\x1b[?25h" in raw  # the cursor is shown again
    assert not any("absl" in line or "cuda" in line.lower() for line in lines)
