"""plots/history.png drawn by a helper process that imports matplotlib while training starts.

matplotlib takes about 0.6 s of CPU to import, a tenth of a small run's whole process. The
helper is started before TensorFlow is imported, imports matplotlib on the other core while
the main process imports TensorFlow and loads the data, then waits for the history rows on
its stdin. If anything goes wrong with it, the plot is drawn in the main process as before.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

# Without the working folder on sys.path: a `dlrun/` folder there must not shadow this one.
_SERVE = "import sys; sys.path.remove(''); from dlrun.plot_worker import serve; serve()"


class HistoryPlotter:
    """A helper process ready to draw one history plot."""

    def __init__(self, helper: bool = True) -> None:
        self.process: subprocess.Popen | None = None
        if not helper:
            return
        # The helper imports this very dlrun, whatever folder it is started in.
        package_root = str(Path(__file__).resolve().parent.parent)
        path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
        with contextlib.suppress(OSError):
            self.process = subprocess.Popen(
                [sys.executable, "-c", _SERVE],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": path},
                start_new_session=True,  # Ctrl-C in the terminal is for the trainer alone
            )

    @classmethod
    def here(cls) -> HistoryPlotter:
        """One that draws in this process (a resumed run starts no helper)."""
        return cls(helper=False)

    def draw(self, rows: list[dict], path: Path) -> bool:
        """Draw the plot through the helper, or here if the helper cannot; True: the helper did."""
        drawn = False
        if self.process is not None:
            try:
                self.process.communicate(
                    json.dumps({"rows": rows, "path": str(path)}).encode(), timeout=120
                )
                drawn = self.process.returncode == 0
            except (OSError, ValueError, subprocess.TimeoutExpired):
                self.cancel()
            self.process = None
        if not drawn:
            from dlrun.plots import history_plot

            history_plot(rows, path)
        return drawn

    def cancel(self) -> None:
        """No plot after all: the helper sees its stdin close and exits."""
        if self.process is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


def serve() -> None:
    """In the helper: import matplotlib, then draw what arrives on stdin (nothing: exit)."""
    # Ctrl-C is for the training process; it tells this one through stdin.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from dlrun.plots import history_plot, pyplot

    pyplot()
    request = sys.stdin.buffer.read()
    if not request:
        return
    task = json.loads(request)
    history_plot(task["rows"], Path(task["path"]))
