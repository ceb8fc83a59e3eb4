"""No per-batch work in dlrun's callbacks: only the live bar has a batch hook, and it counts."""

import io

import keras
import numpy as np
import pytest
from rich.console import Console

from dlrun.train.callbacks import RunRecorder, TensorBoard
from dlrun.train.progress import LiveProgress, PlainProgress


def is_default(method) -> bool:
    return getattr(method, "_is_default", False)


@pytest.mark.parametrize("callback", [PlainProgress, TensorBoard])
def test_epoch_callbacks_have_no_batch_hooks(callback):
    for hook in ("on_train_batch_begin", "on_train_batch_end", "on_batch_end"):
        assert is_default(getattr(callback, hook)), f"{callback.__name__}.{hook} is overridden"


def test_the_recorders_batch_hook_only_counts(tmp_path):
    """RunRecorder counts batches (an epoch that got none fails the run). Keras 3 converts each
    batch's logs whether or not a callback has a batch hook (CallbackList._on_train_batch_end),
    so the hook may cost one Python call a batch and nothing more: no file, no log read."""
    from dlrun import store

    assert is_default(RunRecorder.on_train_batch_begin) and is_default(RunRecorder.on_batch_end)
    run = store.RunFolder.create(tmp_path, "hooks")
    try:
        recorder = RunRecorder(run, "loss", "min")
        before = {p: p.stat().st_mtime_ns for p in run.path.rglob("*")}

        class Untouchable(dict):
            def __getitem__(self, key):
                raise AssertionError("the batch hook read the logs")

            get = items = values = keys = __iter__ = __getitem__

        recorder.on_epoch_begin(0)
        for batch in range(1000):
            recorder.on_train_batch_end(batch, Untouchable())
        assert recorder._batches == 1000
        assert {p: p.stat().st_mtime_ns for p in run.path.rglob("*")} == before
    finally:
        run.close()


def test_live_progress_only_counts_batches_and_redraws_on_a_timer():
    keras.utils.set_random_seed(0)
    x = np.random.rand(600, 8).astype("float32")
    y = keras.utils.to_categorical(np.random.randint(0, 3, 600), 3)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    out = io.StringIO()
    progress = LiveProgress(Console(file=out, force_terminal=True, width=100), epochs=2)
    model.fit(x, y, batch_size=4, epochs=2, callbacks=[progress], verbose=0)
    assert progress.batch_calls == 2 * 150
    # Redraws follow the clock (4 a second) plus one per epoch end, never the batches.
    assert progress.renders < progress.batch_calls / 5
    assert "epoch 2/2" in out.getvalue() and "loss" in out.getvalue()


@pytest.mark.parametrize("progress", [PlainProgress, LiveProgress])
def test_a_metric_name_with_brackets_is_printed_as_written(progress):
    """Metric names come from the spec and the user's code: never read as rich markup."""
    out = io.StringIO()
    callback = progress(Console(file=out, force_terminal=True, width=200), epochs=1)
    callback.set_params({"epochs": 1, "steps": 1})
    callback.on_train_begin()
    callback.on_epoch_begin(0)
    callback.on_epoch_end(0, {"[bold]odd[/bold]_accuracy": 0.5})
    callback.on_train_end()
    assert "[bold]odd[/bold]_accuracy 0.5000" in out.getvalue()
