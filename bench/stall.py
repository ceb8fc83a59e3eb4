"""Where does a CNN fit's time go? Phases of dlrun's own fit, repeated.

Each run trains configs/mnist_cnn.yaml on mnist_5k through dlrun's runner and times, on the
training thread: fit() called -> first epoch begins (set-up, tracing), the epochs themselves,
the gaps between epochs, and last epoch ends -> fit() returns (teardown). A "stall" is a
teardown or set-up far above the others.

--pipeline picks the training input: `stream` (dlrun's: one tf.data stream over all epochs,
AUTOTUNE prefetch), `noprefetch` (the same stream without prefetch) or `numpy` (the arrays
handed to Keras, which builds its own tf.data pipeline, as a hand-written script does).
Usage: python bench/stall.py [--runs 10] [--epochs 3] [--pipeline stream]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--config", default=str(ROOT / "configs" / "mnist_cnn.yaml"))
    parser.add_argument("--pipeline", choices=["stream", "noprefetch", "numpy"], default="stream")
    args = parser.parse_args()

    from dlrun.backend import tensorflow

    tensorflow()
    import keras
    from rich.console import Console

    from dlrun import runner
    from dlrun.spec import load_spec

    marks: list[tuple[str, float]] = []

    class Phases(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            marks.append(("train_begin", time.perf_counter()))

        def on_epoch_begin(self, epoch, logs=None):
            marks.append(("epoch_begin", time.perf_counter()))

        def on_epoch_end(self, epoch, logs=None):
            marks.append(("epoch_end", time.perf_counter()))

        def on_train_end(self, logs=None):
            marks.append(("train_end", time.perf_counter()))

    fit = keras.Model.fit

    def timed_fit(self, *a, **k):  # the bench's own wrapper: fit() call and return times
        if isinstance(k.get("x"), _NumpyInput):  # Keras batches (and shuffles) the arrays
            arrays = k["x"]
            k.update(x=arrays.x, y=arrays.y, batch_size=arrays.batch_size, shuffle=True)
            k.pop("steps_per_epoch", None)
        marks.append(("fit_called", time.perf_counter()))
        try:
            return fit(self, *a, **k)
        finally:
            marks.append(("fit_returned", time.perf_counter()))

    keras.Model.fit = timed_fit
    _choose_pipeline(args.pipeline)
    overrides = ["data.dataset=mnist_5k", f"training.epochs={args.epochs}"]
    overrides += ["training.tensorboard=null"]
    rows = []
    with tempfile.TemporaryDirectory() as runs:
        for index in range(args.runs):
            marks.clear()
            spec = load_spec(args.config, overrides)
            runner.train(spec, Path(runs), Console(quiet=True), ["bench"], (Phases(),))
            at = {}
            for name, stamp in marks:
                at.setdefault(name, []).append(stamp)
            begins, ends = at["epoch_begin"], at["epoch_end"]
            row = {
                "run": index,
                "fit": at["fit_returned"][0] - at["fit_called"][0],
                "setup": begins[0] - at["fit_called"][0],
                "epochs": sum(e - b for b, e in zip(begins, ends, strict=True)),
                "between": sum(b - e for e, b in zip(ends, begins[1:], strict=False)),
                "to_train_end": at["train_end"][0] - ends[-1],
                "teardown": at["fit_returned"][0] - at["train_end"][0],
            }
            rows.append(row)
            print(json.dumps({k: round(v, 3) for k, v in row.items()}), flush=True)
    for key in ("fit", "setup", "epochs", "between", "to_train_end", "teardown"):
        values = [row[key] for row in rows]
        print(
            f"{key:>13}: median {statistics.median(values):6.3f} s  max {max(values):6.3f} s",
            file=sys.stderr,
        )


def _choose_pipeline(name: str) -> None:
    """Swap the training input the runner builds (the bench's own patch, never dlrun's code)."""
    from dlrun import data

    stream = data.shuffled_epochs
    if name == "noprefetch":

        def without_prefetch(*args, **kwargs):
            return stream(*args, **kwargs)._input_dataset  # the stream before .prefetch()

        data.shuffled_epochs = without_prefetch
    elif name == "numpy":
        import numpy as np

        def arrays(x, y, batch_size, seed, first_epoch, epochs, source=None):
            order = np.random.default_rng(seed).permutation(len(x))
            return _NumpyInput(x[order], y[order], batch_size)

        data.shuffled_epochs = arrays


class _NumpyInput:
    """Marks NumPy input for the patched fit below."""

    def __init__(self, x, y, batch_size):
        self.x, self.y, self.batch_size = x, y, batch_size


if __name__ == "__main__":
    main()
