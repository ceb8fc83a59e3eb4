"""Keras callbacks that record a run and show its progress.                     [TensorFlow]

None of them does per-batch work beyond counting: files are written once an epoch, and the
live progress bar is redrawn by its own timer, not by every batch.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import keras

from dlrun import store


def better(mode: str, monitor: str):
    """min/max/auto (max for accuracy-like names, as Keras does) -> comparison function."""
    if mode == "auto":
        mode = "max" if any(k in monitor for k in ("acc", "auc", "precision", "recall")) else "min"
    return (lambda new, old: new > old) if mode == "max" else (lambda new, old: new < old)


def history_csv(rows: list[dict]) -> str:
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    lines = [",".join(columns)]
    for row in rows:
        lines.append(",".join("" if row.get(c) is None else repr(row[c]) for c in columns))
    return "\n".join(lines) + "\n"


def _finite(logs: dict) -> bool:
    return all(math.isfinite(v) for k, v in logs.items() if k.endswith("loss"))


class RunRecorder(keras.callbacks.Callback):
    """Once an epoch: history.csv, last.keras, best.keras and the resume state, all atomic.

    A non-finite loss stops training, puts back the weights of the last finite epoch and
    overwrites no checkpoint, so best.keras and last.keras always hold finite weights.
    """

    def __init__(self, run_dir: Path, monitor: str, mode: str, state: dict | None = None):
        super().__init__()
        self.run_dir = run_dir
        self.monitor = monitor
        self.is_better = better(mode, monitor)
        state = state or {}
        self.rows: list[dict] = list(state.get("rows", []))
        self.best_value: float | None = state.get("best_value")
        self.best_epoch: int | None = state.get("best_epoch")
        self.diverged_at: int | None = None
        self.epochs_done = len(self.rows)
        self._good_weights = None
        self._started = 0.0

    def on_train_begin(self, logs=None):
        self._good_weights = self.model.get_weights()

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = {key: float(value) for key, value in (logs or {}).items()}
        learning_rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        row = {"epoch": epoch + 1, **logs, "learning_rate": learning_rate}
        row["epoch_seconds"] = round(time.perf_counter() - self._started, 4)
        self.rows.append(row)
        store.write_text(self.run_dir / store.HISTORY, history_csv(self.rows))
        if not _finite(logs):
            self.diverged_at = epoch + 1
            self.model.set_weights(self._good_weights)
            self.model.stop_training = True
            return
        self._good_weights = self.model.get_weights()
        self.epochs_done = epoch + 1
        with store.atomic_path(self.run_dir / store.LAST) as tmp:
            self.model.save(tmp)
        value = logs.get(self.monitor)
        if value is not None and (
            self.best_value is None or self.is_better(value, self.best_value)
        ):
            self.best_value, self.best_epoch = value, epoch + 1
            with store.atomic_path(self.run_dir / store.BEST) as tmp:
                self.model.save(tmp)
        store.write_json(
            self.run_dir / store.STATE,
            {
                "epoch": epoch + 1,
                "monitor": self.monitor,
                "best_value": self.best_value,
                "best_epoch": self.best_epoch,
                "rows": self.rows,
            },
        )


def _format_logs(logs: dict) -> str:
    return "  ".join(f"{key} {value:.4f}" for key, value in logs.items())


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
            f"epoch {epoch + 1}/{self.epochs}  {_format_logs(logs or {})}  {seconds:.1f}s",
            highlight=False,
            soft_wrap=True,
        )


class LiveProgress(keras.callbacks.Callback):
    """A rich progress bar per epoch with live loss and metrics.

    The batch hook only stores a counter and the latest logs; a timer thread redraws a few
    times a second. async_safe lets Keras call the hook off the training thread.
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
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def on_train_begin(self, logs=None):
        self.progress.start()
        self._stop.clear()
        self._thread = threading.Thread(target=self._redraw_loop, daemon=True)
        self._thread.start()

    def on_epoch_begin(self, epoch, logs=None):
        self._seen, self._logs = 0, {}
        self._task = self.progress.add_task(
            f"epoch {epoch + 1}/{self.epochs}", total=self.params.get("steps"), metrics=""
        )

    def on_train_batch_end(self, batch, logs=None):
        self.batch_calls += 1
        self._seen = batch + 1
        self._logs = logs

    def _redraw(self, logs: dict | None = None) -> None:
        if self._task is None:
            return
        shown = logs if logs is not None else self._logs or {}
        metrics = _format_logs({k: float(v) for k, v in shown.items()})
        self.progress.update(self._task, completed=self._seen, metrics=metrics)
        self.progress.refresh()
        self.renders += 1

    def _redraw_loop(self) -> None:
        while not self._stop.wait(self.REFRESH_SECONDS):
            self._redraw()

    def on_epoch_end(self, epoch, logs=None):
        self._seen = self.params.get("steps") or self._seen
        self._redraw(logs or {})

    def on_train_end(self, logs=None):
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.progress.stop()


class TensorBoard(keras.callbacks.TensorBoard):
    """Keras' own TensorBoard writer, epoch scalars only, marked safe for async batch hooks.

    With update_freq='epoch' its batch hook only writes the graph once; declaring it async-safe
    keeps Keras from turning every batch's logs into Python numbers on the training thread.
    """

    async_safe = True


def write_hparams(run_dir: Path, config: dict, metrics: dict) -> None:
    """The HParams summary: the run's config values against its final and test metrics.

    TensorBoard's HParams tab then lines up every run under a logdir with no extra step.
    """
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    from dlrun.compare import flatten

    values = {
        key: value
        for key, value in flatten(config).items()
        if isinstance(value, (bool, int, float, str))
    }
    scores = {f"final_{k}": v for k, v in (metrics.get("final") or {}).items()}
    scores.update({f"test_{k}": v for k, v in (metrics.get("test") or {}).items()})
    writer = tf.summary.create_file_writer(str(run_dir / store.TENSORBOARD))
    with writer.as_default():
        hp.hparams(values, trial_id=run_dir.name)
        for name, value in scores.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                tf.summary.scalar(name, value, step=0)
    writer.close()
