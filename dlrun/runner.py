"""Training: the one place that joins data, builder, callbacks and the run store.

Everything that can be wrong with the spec or the data is found before the run folder is
made, so a bad spec never leaves a half-made run behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from dlrun import store
from dlrun.spec import Spec

EXIT_CODES = {store.COMPLETED: 0, store.FAILED: 1, store.DIVERGED: 3, store.INTERRUPTED: 130}
SIGTERM_EXIT = 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: stop, keep what is saved, record `interrupted`."""


@dataclass
class Prepared:
    spec: Spec
    data: object  # data.Data
    model: object  # keras.Model


@dataclass
class Outcome:
    run_dir: Path
    status: str
    exit_code: int
    metrics: dict
    message: str | None = None


def prepare(spec: Spec) -> Prepared:
    """Seed, load the data, build and compile the model: every spec problem surfaces here."""
    from dlrun.backend import seed_everything
    from dlrun.builder import build_model, compile_model
    from dlrun.data import load_data

    seed_everything(spec.seed, spec.training.deterministic)
    data = load_data(spec)
    model = build_model(spec, data.input_shape)
    compile_model(model, spec, data.num_classes)
    return Prepared(spec, data, model)


def _git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


class _Meta:
    """meta.json, rewritten atomically on every change."""

    def __init__(self, run_dir: Path, data: dict):
        self.path, self.data = run_dir / store.META, data
        self.save()

    def update(self, **changes) -> None:
        self.data.update(changes)
        self.save()

    def save(self) -> None:
        store.write_json(self.path, self.data)


def _callbacks(prepared: Prepared, run_dir: Path, console, recorder) -> list:
    import keras

    from dlrun.callbacks import LiveProgress, PlainProgress, TensorBoard

    training = prepared.spec.training
    callbacks = [recorder]
    if training.early_stopping:
        stopping = training.early_stopping
        callbacks.append(keras.callbacks.EarlyStopping(**stopping.model_dump()))
    if training.tensorboard:
        callbacks.append(
            TensorBoard(
                run_dir / store.TENSORBOARD,
                histogram_freq=training.tensorboard.histogram_freq,
                write_graph=training.tensorboard.write_graph,
            )
        )
    progress = LiveProgress if console.is_terminal else PlainProgress
    callbacks.append(progress(console, training.epochs))
    return callbacks


def train(spec: Spec, runs_root: Path, console, command: list[str] | None = None) -> Outcome:
    """Train a spec into a new run folder under runs_root; never raises for a training fault."""
    from dlrun.backend import devices, tensorflow, versions

    tensorflow()  # first, so that its start-up chatter is silenced
    from dlrun.builder import summary_text
    from dlrun.builder import compile_model
    from dlrun.callbacks import CheckpointWriter, RunRecorder
    from dlrun.data import pipeline

    prepared = prepare(spec)
    data, model = prepared.data, prepared.model
    run_dir = store.create_run_dir(runs_root, spec.name)
    store.write_text(run_dir / store.CONFIG, spec.dump())
    meta = _Meta(
        run_dir,
        {
            "name": spec.name,
            "status": store.RUNNING,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": _now(),
            "ended": None,
            "command": command if command is not None else sys.argv,
            "cwd": os.getcwd(),
            "seed": spec.seed,
            "epochs_planned": spec.training.epochs,
            "epochs_done": 0,
            "versions": versions(),
            "devices": devices(),
            "git_commit": _git_commit(),
            "message": None,
        },
    )
    summary = summary_text(model)
    store.write_text(run_dir / store.SUMMARY, summary)

    batch = spec.training.batch_size
    train_ds = pipeline(data.x_train, data.y_train, batch, spec.training.shuffle, spec.seed)
    val_ds = pipeline(data.x_val, data.y_val, batch) if data.x_val is not None else None
    checkpoint = spec.training.checkpoint
    writer = CheckpointWriter(model, lambda twin: compile_model(twin, spec, data.num_classes))
    recorder = RunRecorder(run_dir, checkpoint.monitor, checkpoint.mode, writer)
    callbacks = _callbacks(prepared, run_dir, console, recorder)

    status, exit_code, message = store.COMPLETED, 0, None
    started = time.perf_counter()
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=spec.training.epochs,
            callbacks=callbacks,
            shuffle=False,  # the pipeline shuffles
            verbose=0,
        )
        if recorder.diverged_at:
            status = store.DIVERGED
            message = (
                f"loss became NaN or infinite in epoch {recorder.diverged_at}; kept the weights "
                f"of epoch {recorder.epochs_done}"
            )
    except KeyboardInterrupt as exc:
        status, message = (
            store.INTERRUPTED,
            "stopped by SIGTERM" if isinstance(exc, Terminated) else "stopped by Ctrl-C (SIGINT)",
        )
        exit_code = SIGTERM_EXIT if isinstance(exc, Terminated) else 130
    except Exception as exc:  # a training fault: recorded in the run, reported in one line
        status, message = store.FAILED, f"{type(exc).__name__}: {str(exc).strip()[:500]}"
        meta.update(traceback=traceback.format_exc())
    finally:
        signal.signal(signal.SIGTERM, previous)
        writer.wait()  # the last checkpoint is complete before the run is reported
    train_seconds = time.perf_counter() - started
    exit_code = exit_code or EXIT_CODES[status]

    metrics = _metrics(prepared, recorder, train_seconds, summary)
    if status in (store.COMPLETED, store.DIVERGED) and recorder.epochs_done:
        metrics["test"] = _test_metrics(prepared, run_dir, batch)
    store.write_json(run_dir / store.METRICS, metrics)
    if spec.training.tensorboard:
        from dlrun.callbacks import write_hparams

        write_hparams(run_dir, spec.model_dump(mode="json"), metrics)
    if recorder.rows:
        from dlrun.plots import history_plot

        history_plot(recorder.rows, run_dir / store.HISTORY_PLOT)
    meta.update(status=status, ended=_now(), epochs_done=recorder.epochs_done, message=message)
    return Outcome(run_dir, status, exit_code, metrics, message)


def _raise_terminated(signum, frame):
    raise Terminated()


def _metrics(prepared: Prepared, recorder, train_seconds: float, summary: str) -> dict:
    rows = recorder.rows[: recorder.epochs_done]
    samples = len(prepared.data.x_train) * recorder.epochs_done
    return {
        "params": int(prepared.model.count_params()),
        "epochs_done": recorder.epochs_done,
        "monitor": recorder.monitor,
        "best_epoch": recorder.best_epoch,
        "best_value": recorder.best_value,
        "final": {k: v for k, v in rows[-1].items() if k != "epoch"} if rows else {},
        "train_seconds": round(train_seconds, 3),
        "samples_per_second": round(samples / train_seconds, 1) if train_seconds else None,
    }


def _test_metrics(prepared: Prepared, run_dir: Path, batch_size: int) -> dict:
    """Scores of the best checkpoint on the test split."""
    import keras

    from dlrun.data import pipeline

    model = prepared.model
    best = run_dir / store.BEST
    if best.exists():
        model = keras.models.load_model(best, safe_mode=True)
    test_ds = pipeline(prepared.data.x_test, prepared.data.y_test, batch_size)
    scores = model.evaluate(test_ds, verbose=0, return_dict=True)
    return {key: float(value) for key, value in scores.items()}
