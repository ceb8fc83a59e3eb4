"""What dlrun does outside fit, made cheap: the history plot's helper process."""

import os
import subprocess
import sys
import time

from dlrun.plot_worker import HistoryPlotter

ROWS = [
    {"epoch": 1, "loss": 1.0, "accuracy": 0.5, "val_loss": 1.2, "val_accuracy": 0.4},
    {"epoch": 2, "loss": 0.5, "accuracy": 0.8, "val_loss": 0.7, "val_accuracy": 0.7},
]


def test_the_helper_draws_the_plot_even_beside_a_shadowing_dlrun_folder(tmp_path, monkeypatch):
    (tmp_path / "dlrun").mkdir()
    (tmp_path / "dlrun" / "__init__.py").write_text("raise ImportError('the wrong dlrun')\n")
    monkeypatch.chdir(tmp_path)
    plotter = HistoryPlotter()
    helper = plotter.process
    assert helper is not None
    # Ctrl-C in the terminal goes to the foreground process group: not the helper's.
    assert os.getpgid(helper.pid) != os.getpgid(0)
    assert plotter.draw(ROWS, tmp_path / "plots" / "history.png") is True
    assert helper.returncode == 0
    assert (tmp_path / "plots" / "history.png").read_bytes().startswith(b"\x89PNG")


def test_a_cancelled_helper_exits_and_a_dead_one_falls_back(tmp_path):
    plotter = HistoryPlotter()
    helper = plotter.process
    plotter.cancel()
    assert helper.returncode == 0 and plotter.process is None
    dead = HistoryPlotter()
    dead.process.kill()
    dead.process.wait()
    assert dead.draw(ROWS, tmp_path / "history.png") is False  # drawn here instead
    assert (tmp_path / "history.png").read_bytes().startswith(b"\x89PNG")


def test_the_helper_goes_when_its_parent_is_killed(tmp_path):
    code = (
        "import sys, time\n"
        "from dlrun.plot_worker import HistoryPlotter\n"
        "p = HistoryPlotter()\n"
        "print(p.process.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    helper = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    for _ in range(100):
        try:
            os.kill(helper, 0)
        except ProcessLookupError:
            break
        with open(f"/proc/{helper}/stat") as stat:
            if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                break  # exited; its new parent (init) reaps it
        time.sleep(0.1)
    else:
        raise AssertionError("the plot helper outlived its killed parent")
