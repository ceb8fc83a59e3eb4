"""No per-batch work in dlrun's callbacks: only the live bar has a batch hook, and it counts."""

import io

import keras
import numpy as np
import pytest
from rich.console import Console

from dlrun.train.callbacks import LiveProgress, PlainProgress, RunRecorder, TensorBoard


def is_default(method) -> bool:
    return getattr(method, "_is_default", False)


@pytest.mark.parametrize("callback", [RunRecorder, PlainProgress, TensorBoard])
def test_epoch_callbacks_have_no_batch_hooks(callback):
    for hook in ("on_train_batch_begin", "on_train_batch_end", "on_batch_end"):
        assert is_default(getattr(callback, hook)), f"{callback.__name__}.{hook} is overridden"


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
