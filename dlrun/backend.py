"""Importing TensorFlow quietly, seeding it, and naming the devices it sees.    [TensorFlow]

TensorFlow prints start-up chatter (oneDNN notes, missing CUDA drivers) on the C++ side before
Python's logging is set up; TF_CPP_MIN_LOG_LEVEL no longer silences all of it, so the import
runs with file descriptor 2 pointed at a temporary file, replayed only if the import fails.
"""

from __future__ import annotations

import os
import sys
import tempfile
from types import ModuleType

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def _quietly(action):
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            return action()
        except BaseException:
            sink.seek(0)
            os.write(saved, sink.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def tensorflow() -> ModuleType:
    """`import tensorflow`, with its start-up chatter kept off the user's terminal."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]

    def load():
        import keras  # noqa: F401  (Keras 3 on the TensorFlow backend)
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")
        tf.config.list_logical_devices()  # the CUDA probe prints here, once
        return tf

    return _quietly(load)


def seed_everything(seed: int, deterministic: bool) -> None:
    """Fix initial weights and shuffling; with `deterministic`, make TF ops repeatable too."""
    tf = tensorflow()
    import keras

    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def devices() -> list[str]:
    tf = tensorflow()
    return [
        f"{d.device_type}:{d.name.rsplit(':', 1)[-1]}" for d in tf.config.list_logical_devices()
    ]


def versions() -> dict[str, str]:
    import platform

    import keras

    import dlrun

    tf = tensorflow()
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "dlrun": dlrun.__version__,
    }
