"""A training run's progress on the console: a line per epoch, or a live bar.  [TensorFlow]

Metric names come from the spec (and the user's code): every line is printed as plain text,
never as rich markup.
"""

from __future__ import annotations

import threading
import time

import keras


def _format_logs(logs: dict) -> str:
    return "  ".join(f"{key} {value:.4f}" for key, value in logs.items())


def epoch_line(epoch: int, epochs: int, logs: dict | None, seconds: float) -> str:
    """A finished epoch's line: `epoch 3/10  loss 0.1234  accuracy 0.9800  0.4s`."""
    return f"epoch {epoch + 1}/{epochs}  {_format_logs(logs or {})}  {seconds:.1f}s"


class PlainProgress(keras.callbacks.Callback):
    """One plain line per epoch, for logs and CI where output is not a terminal."""

    def __init__(self, console, epochs: int):
        super().__init__()
        self.console, self.epochs = console, epochs
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._started
        self.console.print(
            epoch_line(epoch, self.epochs, logs, seconds),
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


class LiveProgress(keras.callbacks.Callback):
    """A rich progress bar for the epoch in progress; each finished epoch becomes a plain line.

    The batch hook only stores a counter and the latest logs; a timer thread redraws a few
    times a second. async_safe lets Keras call the hook off the training thread. A finished
    epoch is printed once, above the bar, with its final metrics and then never redrawn: the
    timer used to repaint a finished row with the next epoch's reset counter (`0/29 0:00:00`,
    no metrics), and a live area taller than the terminal is cropped.
    """

    async_safe = True
    REFRESH_SECONDS = 0.25

    def __init__(self, console, epochs: int):
        super().__init__()
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.epochs = epochs
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[metrics]}"),
            console=console,
            auto_refresh=False,
        )
        self.batch_calls = 0  # counted, so a test can prove the hook does nothing else
        self.renders = 0
        self._seen = 0
        self._logs: dict = {}
        self._task = None
        self._started = 0.0
        self._lock = threading.Lock()  # the timer never draws a task the epoch end retired
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def on_train_begin(self, logs=None):
        self.progress.start()
        self._stop.clear()
        self._thread = threading.Thread(target=self._redraw_loop, daemon=True)
        self._thread.start()

    def on_epoch_begin(self, epoch, logs=None):
        with self._lock:
            self._seen, self._logs = 0, {}
            self._started = time.perf_counter()
            self._task = self.progress.add_task(
                f"epoch {epoch + 1}/{self.epochs}", total=self.params.get("steps"), metrics=""
            )

    def on_train_batch_end(self, batch, logs=None):
        self.batch_calls += 1
        self._seen = batch + 1
        self._logs = logs

    def _redraw(self) -> None:
        with self._lock:
            if self._task is None:
                return
            metrics = _format_logs({k: float(v) for k, v in (self._logs or {}).items()})
            self.progress.update(self._task, completed=self._seen, metrics=metrics)
            self.progress.refresh()
            self.renders += 1

    def _redraw_loop(self) -> None:
        while not self._stop.wait(self.REFRESH_SECONDS):
            self._redraw()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._started
        with self._lock:
            if self._task is not None:
                self.progress.remove_task(self._task)
                self._task = None
            # Printed through the live display: it lands above the bar and stays.
            self.progress.console.print(
                epoch_line(epoch, self.epochs, logs, seconds),
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
            self.progress.refresh()
            self.renders += 1

    def on_train_end(self, logs=None):
        self.close()

    def close(self) -> None:
        """Stop the redraw thread and the live display (shows the cursor again); idempotent."""
        self._stop.set()
        if self._thread:
            self._thread.join()
            self._thread = None
        self.progress.stop()
