"""Where does a CNN fit's time go? Phases of dlrun's own fit, repeated.

Each run trains configs/mnist_cnn.yaml on mnist_5k through dlrun's runner and times, on the
training thread: fit() called -> first epoch begins (set-up, tracing), the epochs themselves,
the gaps between epochs, and last epoch ends -> fit() returns (teardown). A "stall" is a
teardown or set-up far above the others.

--pipeline picks the training input: `stream` (dlrun's: one tf.data stream over all epochs)
or `numpy` (the arrays handed to Keras, which builds its own tf.data pipeline, as a
hand-written script does). --py-spy PATH dumps the native stacks 1 s into a teardown that
lasts that long (how the stall's cause was found; bench/stall_results.md).
Usage: python bench/stall.py [--runs 10] [--epochs 3] [--pipeline stream] [--py-spy PATH]
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
    parser.add_argument("--pipeline", choices=["stream", "numpy"], default="stream")
    parser.add_argument(
        "--tensorboard", action="store_true", help="keep the config's TensorBoard logging"
    )
    parser.add_argument(
        "--py-spy", default=None, help="py-spy executable: dump native stacks during a teardown"
    )
    args = parser.parse_args()
    dumper = _Dumper(args.py_spy) if args.py_spy else None

    from dlrun.backend import tensorflow

    tensorflow()
    import keras
    from rich.console import Console

    from dlrun.spec.loading import load_spec
    from dlrun.train import runner

    marks: list[tuple[str, float]] = []
    faults: list[int] = []  # the process's major page faults at on_train_end and fit's return
    collections = _watch_gc()  # (start, seconds, generation) of every garbage collection

    class Phases(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            marks.append(("train_begin", time.perf_counter()))

        def on_epoch_begin(self, epoch, logs=None):
            marks.append(("epoch_begin", time.perf_counter()))

        def on_epoch_end(self, epoch, logs=None):
            marks.append(("epoch_end", time.perf_counter()))

        def on_train_end(self, logs=None):
            marks.append(("train_end", time.perf_counter()))
            faults.append(_major_faults())
            if dumper:
                dumper.start()

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
            faults.append(_major_faults())
            if dumper:
                dumper.stop()

    keras.Model.fit = timed_fit
    _choose_pipeline(args.pipeline)
    overrides = ["data.dataset=mnist_5k", f"training.epochs={args.epochs}"]
    if not args.tensorboard:
        overrides += ["training.tensorboard=null"]
    rows = []
    with tempfile.TemporaryDirectory() as runs:
        for index in range(args.runs):
            marks.clear()
            faults.clear()
            collections.clear()
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
                "teardown_major_faults": faults[1] - faults[0],
                "gc_seconds": sum(c[1] for c in collections),
                "teardown_gc_seconds": sum(
                    c[1] for c in collections if at["train_end"][0] <= c[0] <= at["fit_returned"][0]
                ),
            }
            rows.append(row)
            print(json.dumps({k: round(v, 3) for k, v in row.items()}), flush=True)
    for key in (
        "fit",
        "setup",
        "epochs",
        "between",
        "to_train_end",
        "teardown",
        "teardown_major_faults",
        "gc_seconds",
        "teardown_gc_seconds",
    ):
        values = [row[key] for row in rows]
        print(
            f"{key:>13}: median {statistics.median(values):6.3f} s  max {max(values):6.3f} s",
            file=sys.stderr,
        )


def _watch_gc() -> list[tuple[float, float, int]]:
    """Time every collection of Python's cyclic garbage collector."""
    import gc

    seen: list[tuple[float, float, int]] = []
    began = [0.0]

    def callback(phase, info):
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            seen.append((began[0], time.perf_counter() - began[0], info["generation"]))

    gc.callbacks.append(callback)
    return seen


def _major_faults() -> int:
    """Page faults that had to read from disk so far (e.g. library code evicted from the cache)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_majflt


class _Dumper:
    """py-spy's native stacks of this process, 1 s after on_train_end if fit has not returned."""

    def __init__(self, py_spy: str):
        self.py_spy = py_spy

    def start(self):
        import threading

        self.timer = threading.Timer(1.0, self._dump)
        self.timer.start()

    def _dump(self):
        import subprocess

        command = [self.py_spy, "dump", "--native", "--pid", str(os.getpid())]
        dump = subprocess.run(command, capture_output=True, text=True)
        print("  py-spy 1 s into the teardown:\n" + dump.stdout, file=sys.stderr)

    def stop(self):
        self.timer.cancel()
        self.timer.join()


def _choose_pipeline(name: str) -> None:
    """Swap the training input the runner builds (the bench's own patch, never dlrun's code)."""
    from dlrun.data import feed as data

    if name == "numpy":
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
