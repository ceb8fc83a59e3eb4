"""Arrays -> what fit() and evaluate() take: tf.data pipelines on TensorFlow, NumPy elsewhere.

`pipeline` turns a pair into a batched, prefetched tf.data.Dataset; shuffled_epochs gives one
stream of epochs, each shuffled by (seed, epoch), so a resumed run sees the same order.
"""

from __future__ import annotations

import numpy as np

from dlrun.data.splits import Data, count, each
from dlrun.spec.schema import Spec


def steps(count: int, batch_size: int) -> int:
    return -(-count // batch_size)


def shard_rows(size: int, batch_size: int, part: int, parts: int) -> np.ndarray:
    """The rows of a split of `size` rows that process `part` of `parts` feeds: its contiguous
    share of each batch, the rows one process' DataParallel gives those devices."""
    starts = np.arange(0, size, batch_size)
    lengths = np.minimum(batch_size, size - starts) // parts  # each batch divides (devices)
    firsts = starts + part * lengths
    return np.concatenate(
        [np.arange(first, first + length) for first, length in zip(firsts, lengths, strict=True)]
    ).astype(np.int64)


def pipeline(x: np.ndarray, y: np.ndarray, batch_size: int, source=None):
    """A tf.data pipeline over in-memory arrays, in order: batch, prefetch.

    With a source (an image folder), x holds file paths that it decodes as they stream.
    """
    import tensorflow as tf

    if source is not None:
        return _untuned(source.pipeline(x, y, batch_size))

    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    return _untuned(dataset.prefetch(tf.data.AUTOTUNE))


def shuffled_epochs(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    seed: int,
    first_epoch: int,
    epochs: int,
    source=None,
):
    """The batches of epochs first_epoch..epochs-1 as one stream, each epoch shuffled anew.

    Epoch e's order depends only on (seed, e), so a resumed run sees exactly the batches an
    uninterrupted one would have. Fit it with steps_per_epoch=steps(len(x), batch_size).
    """
    import tensorflow as tf

    if source is not None:
        return _untuned(source.shuffled_epochs(x, y, batch_size, seed, first_epoch, epochs))

    # Several inputs or outputs: dicts of them.
    features, labels = tf.nest.map_structure(tf.constant, (x, y))
    samples = count(x)

    def one_epoch(epoch):
        key = tf.stack([tf.constant(seed, tf.int64), epoch])
        order = tf.argsort(tf.random.stateless_uniform([samples], seed=key))

        def gather(rows):  # one batch's rows of every input, in the epoch's order
            return tf.nest.map_structure(lambda tensor: tf.gather(tensor, rows), (features, labels))

        # The order is batched, not the data: each batch is gathered as it is needed, instead
        # of a gathered copy of the whole training set every epoch (the same batches).
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size).map(gather)

    dataset = tf.data.Dataset.range(first_epoch, epochs).flat_map(one_epoch)
    return _untuned(dataset.prefetch(tf.data.AUTOTUNE))


def _untuned(dataset):
    """The dataset without tf.data's autotuning thread.

    Every iterator over an autotuned dataset starts a thread that re-optimises the pipeline now
    and then, and destroying the iterator waits for that thread. In a third to a half of the
    lecture CNN's fits that wait cost 4 to 5 s after the last epoch (py-spy: the main thread in
    RootDataset::Iterator::~Iterator, waiting on the thread's notification; bench/run.py). The
    knobs here size themselves without it: prefetch's AUTOTUNE buffer grows on its own, and an
    AUTOTUNE map (image folders) runs on as many threads as there are cores.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


# --- NumPy input for the JAX and torch backends (no TensorFlow) ------------------------------


def epoch_order(seed: int, epoch: int, count: int) -> np.ndarray:
    """The sample order of one epoch: a function of (seed, epoch) only, so resume is exact."""
    return np.random.default_rng([seed, epoch]).permutation(count)


class EpochFeed:
    """Training arrays that a callback reorders in place at the start of every epoch.

    fit() gets `x` and `y` as plain NumPy arrays with shuffle=False: Keras' own array path,
    which on JAX measured up to 3x faster than a Python-level PyDataset (shared/GPU.md). Keras
    slices the arrays it was given once per epoch, after on_epoch_begin, so rewriting them
    there gives each epoch the order epoch_order(seed, epoch) without a copy of Keras' own.
    """

    def __init__(self, x, y, seed: int, shuffle: bool, rows: np.ndarray | None = None):
        # x, y: arrays, or {name: array} for several inputs or outputs; rows: the positions
        # of each epoch's order this process feeds (one of several, shard_rows), else all
        self.arrays, self.rows, self.size = (x, y), rows, count(x)
        if rows is not None:
            self.x, self.y = (each(a, lambda b: np.take(b, rows, axis=0)) for a in (x, y))
        else:
            self.x, self.y = (each(x, np.copy), each(y, np.copy)) if shuffle else (x, y)
        self.seed, self.shuffle = seed, shuffle

    def arrange(self, epoch: int) -> None:
        if self.shuffle:
            order = epoch_order(self.seed, epoch, self.size)
            if self.rows is not None:
                order = order[self.rows]
            for originals, copies in zip(self.arrays, (self.x, self.y), strict=True):
                if not isinstance(copies, dict):
                    originals, copies = {"": originals}, {"": copies}
                for name, copy in copies.items():
                    # mode="clip": `order` is a permutation, so no index is clipped. The
                    # default mode="raise" writes into a temporary array as large as the
                    # data and copies that into `out`: 3x slower, and freshly mapped memory
                    # each epoch until malloc adapts (20 ms of page faults an epoch at first).
                    np.take(originals[name], order, axis=0, out=copy, mode="clip")


def uses_tf_data() -> bool:
    """tf.data pipelines on the TensorFlow backend; NumPy arrays on the others."""
    from dlrun.backend import current

    return current() == "tensorflow"


def evaluation_input(x: np.ndarray, y: np.ndarray, batch_size: int, source=None) -> dict:
    """Keyword arguments for evaluate(): a tf.data pipeline on TensorFlow, arrays elsewhere."""
    if uses_tf_data():
        return {"x": pipeline(x, y, batch_size, source)}
    return {"x": x, "y": y, "batch_size": batch_size}


def check_feed(spec: Spec, data: Data) -> None:
    """What the backend's input path cannot do, refused before anything is trained."""
    if data.source is not None and not uses_tf_data():
        raise spec.error(
            ("backend",),
            f"image folders are decoded by tf.data, on the tensorflow backend only; "
            f"set backend: tensorflow (got {spec.backend})",
        )
    check_steps_per_execution(spec, count(data.x_train))


def check_steps_per_execution(spec: Spec, count: int) -> None:
    """On TensorFlow the shuffled epochs are one stream, and Keras takes steps_per_execution
    batches at a time from it: a last group of an epoch would take the next epoch's batches."""
    per_execution = spec.steps_per_execution()  # auto is 1 on tensorflow, the only case here
    per_epoch = steps(count, spec.training.batch_size)
    if spec.compile.steps_per_execution != "auto" and per_execution > per_epoch:
        raise spec.error(
            ("compile", "steps_per_execution"),
            f"{per_execution} is more than the {per_epoch} steps of an epoch; an epoch would "
            f"end with no metrics: use at most {per_epoch}",
        )
    if uses_tf_data() and spec.training.shuffle and per_epoch % per_execution:
        divisors = [d for d in range(2, per_epoch + 1) if per_epoch % d == 0][:4]
        raise spec.error(
            ("compile", "steps_per_execution"),
            f"{per_execution} does not divide the {per_epoch} steps of an epoch; on the "
            "tensorflow backend an epoch would then run batches of the next one: use a "
            f"divisor of {per_epoch} ({', '.join(map(str, divisors)) or 'only 1'}) "
            "or another backend",
        )
