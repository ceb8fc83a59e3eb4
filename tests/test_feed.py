"""The NumPy feed of the JAX and torch backends (data.EpochFeed, train.callbacks.EpochShuffle):
each epoch's order, arranged in a thread while the last epoch is recorded."""

import numpy as np
import pytest

from dlrun.data.feed import EpochFeed, epoch_order
from dlrun.train.callbacks import EpochShuffle


def arrays(count: int = 50):
    x = np.arange(count * 3, dtype="float32").reshape(count, 3)
    return x, np.arange(count) % 7


def test_each_epoch_reads_its_own_order_whether_arranged_before_or_in_the_thread():
    x, y = arrays()
    feed = EpochFeed(x, y, seed=5, shuffle=True)
    shuffle = EpochShuffle(feed)
    shuffle.set_params({"epochs": 3})
    for epoch in range(3):
        shuffle.on_epoch_begin(epoch)  # epoch 0: arranged here; 1 and 2: in the thread
        order = epoch_order(5, epoch, len(x))
        np.testing.assert_array_equal(feed.x, x[order])
        np.testing.assert_array_equal(feed.y, y[order])
        shuffle.on_epoch_end(epoch)
    shuffle.on_train_end()
    assert not np.array_equal(epoch_order(5, 1, len(x)), epoch_order(5, 2, len(x)))


def test_a_reorder_that_fails_stops_the_next_epoch_instead_of_training_on_a_stale_order():
    """An error in the thread (here: a feed array that cannot be written) comes back at the
    next epoch's start, where fit() stops with it; before, the thread's error was printed and
    the epoch trained on the previous epoch's order as if it were its own."""
    x, y = arrays()
    feed = EpochFeed(x, y, seed=5, shuffle=True)
    shuffle = EpochShuffle(feed)
    shuffle.set_params({"epochs": 3})
    shuffle.on_epoch_begin(0)
    feed.x.setflags(write=False)
    shuffle.on_epoch_end(0)
    with pytest.raises(ValueError, match="read-only"):
        shuffle.on_epoch_begin(1)
    feed.x.setflags(write=True)
    shuffle.on_epoch_begin(1)  # a later fit() arranges the epoch itself
    np.testing.assert_array_equal(feed.x, x[epoch_order(5, 1, len(x))])
