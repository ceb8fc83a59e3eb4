"""Choosing Keras' backend and devices, importing quietly, seeding, naming the devices used.

Keras reads its backend once, when it is first imported, so `use(spec)` must run before any
`import keras`: it sets KERAS_BACKEND (and hides GPUs for `device: cpu`), and refuses a backend
whose package is missing with the pip extra that installs it. On JAX and torch TensorFlow is
never imported.

TensorFlow prints start-up chatter (oneDNN notes, missing CUDA drivers) on the C++ side before
Python's logging is set up; TF_CPP_MIN_LOG_LEVEL no longer silences all of it, so the import
runs with file descriptor 2 pointed at a temporary file, replayed only if the import fails.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from dlrun.errors import BackendError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

# backend -> (the package it needs, what installs it)
PACKAGES = {
    "tensorflow": ("tensorflow", 'pip install "dlrun"'),
    "jax": ("jax", 'pip install "dlrun[jax]"'),
    "torch": ("torch", 'pip install "dlrun[torch]"'),
}


def quietly(action):
    """action() with file descriptor 2 captured; replayed only if it raises (C++ chatter)."""
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


def current() -> str:
    """The backend Keras runs on (or will, once imported)."""
    keras = sys.modules.get("keras")
    if keras is not None and hasattr(keras, "backend"):
        return keras.backend.backend()
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def require(name: str) -> None:
    """BackendError, naming the pip extra, when the backend's package is not installed."""
    package, install = PACKAGES[name]
    try:
        missing = importlib.util.find_spec(package) is None
    except (ImportError, ValueError):  # a broken install, or an import hook refusing it
        missing = True
    if missing:
        raise BackendError(f"backend: {name} is not installed; install it with: {install}")


def use(name: str, device: str = "auto") -> None:
    """Fix Keras' backend (and hide GPUs for device cpu) before Keras is imported."""
    require(name)
    if "keras" in sys.modules:
        if current() != name:
            raise BackendError(
                f"backend: this process already runs Keras on {current()}; Keras cannot switch "
                f"to {name} once imported: run {name} in a new process"
            )
        return
    os.environ["KERAS_BACKEND"] = name
    if name == "jax":
        compile_cache()
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
        if name == "jax":
            os.environ["JAX_PLATFORMS"] = "cpu"


# What XLA compiles on JAX (a fit's steps, and each small op of building and scoring a
# model) is kept between processes: the second run of a net, a sweep's next fit, evaluate or
# predict of a JAX run compile nothing they compiled before. Half a tiny run's CPU time.
CACHE_BYTES = 1 << 30  # JAX evicts the least recently used entries past this


def cache_home() -> Path:
    """dlrun's cache folder: $DLRUN_CACHE_DIR, else $XDG_CACHE_HOME/dlrun, else ~/.cache/dlrun."""
    if os.environ.get("DLRUN_CACHE_DIR"):
        return Path(os.environ["DLRUN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dlrun"


def compile_cache() -> None:
    """JAX's persistent compilation cache in cache_home()/jax, before JAX is imported: every
    compilation kept, the folder kept under CACHE_BYTES. A cache folder the user named
    (JAX_COMPILATION_CACHE_DIR), or turned off (JAX_ENABLE_COMPILATION_CACHE=false), is
    theirs; without a writable folder, or without filelock (which JAX's eviction needs),
    nothing is cached. The cache is never part of a run folder: a run someone sent brings no
    compiled code."""
    if "JAX_COMPILATION_CACHE_DIR" in os.environ or "jax" in sys.modules:
        return
    if importlib.util.find_spec("filelock") is None:
        return
    folder = cache_home() / "jax"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return
    if not (folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)):
        return
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(folder)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(CACHE_BYTES))


def load() -> ModuleType:
    """`import keras` on the chosen backend, quietly; TensorFlow too when it is the backend."""
    if current() == "tensorflow":
        tensorflow()
    if "keras" in sys.modules:
        return sys.modules["keras"]
    if current() == "jax":
        compile_cache()

    def load_keras():
        import keras
        from keras.src.utils import module_utils

        # Keras asks `tf.available` when it serializes a model, which imports TensorFlow
        # wherever it is installed; on the other backends it is not wanted.
        module_utils.tensorflow._available = False
        return keras

    return quietly(load_keras)


def tensorflow() -> ModuleType:
    """`import tensorflow`, with its start-up chatter kept off the user's terminal."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]

    def load():
        with _without("jax"):
            import keras  # noqa: F401  (Keras 3 on the TensorFlow backend)
            import tensorflow as tf

        tf.get_logger().setLevel("ERROR")
        tf.config.list_logical_devices()  # the CUDA probe prints here, once
        return tf

    return quietly(load)


@contextlib.contextmanager
def _without(package: str):
    """Make `import package` fail for a moment, unless it is already imported. TensorFlow Lite
    imports JAX wherever it is installed, for a converter dlrun never uses: 0.45 s at every
    start on the tensorflow backend. A later `import jax` works as usual."""
    if package in sys.modules:
        yield
        return
    sys.modules[package] = None  # type: ignore[assignment]  (import raises ImportError)
    try:
        yield
    finally:
        if sys.modules.get(package, 0) is None:
            del sys.modules[package]


def seed_everything(seed: int, deterministic: bool) -> None:
    """Fix initial weights and shuffling; with `deterministic`, make TF ops repeatable too."""
    keras = load()
    if current() != "tensorflow":
        # keras.utils.set_random_seed also seeds TensorFlow whenever it is installed, which
        # would import it; these are the seeds it sets for the other backends.
        import random

        import numpy as np
        from keras.src.backend.common import global_state
        from keras.src.random import seed_generator
        from keras.src.utils import rng_utils

        global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
        global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
        random.seed(seed)
        np.random.seed(seed)
        if current() == "torch":
            import torch

            torch.manual_seed(seed)
            if deterministic:
                torch.use_deterministic_algorithms(True, warn_only=True)
        return
    tf = tensorflow()
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def all_devices() -> list[str]:
    """Every device the backend sees, as TYPE:index (CPU:0, GPU:0...)."""
    name = current()
    if name == "jax":
        import jax

        return [f"{'CPU' if d.platform == 'cpu' else 'GPU'}:{d.id}" for d in jax.devices()]
    if name == "torch":
        import torch

        gpus = [f"GPU:{i}" for i in range(torch.cuda.device_count())]
        return ["CPU:0", *gpus]
    tf = tensorflow()
    return [
        f"{d.device_type}:{d.name.rsplit(':', 1)[-1]}" for d in tf.config.list_logical_devices()
    ]


def used_devices(spec) -> list[str]:
    """The devices this spec trains on; BackendError for `gpu` where none is visible."""
    seen = all_devices()
    gpus = [d for d in seen if d.startswith("GPU")]
    device = spec.training.device
    if device == "gpu" and not gpus:
        raise BackendError(
            f"training.device: gpu, but the {current()} backend sees no GPU "
            f"(devices: {', '.join(seen) or 'none'}); use device: auto or cpu"
        )
    pool = gpus if gpus and device != "cpu" else [d for d in seen if d.startswith("CPU")]
    if spec.training.distribute == "data_parallel" or _joined():
        return pool  # every local device (of a run over processes: this process' share)
    return pool[:1]


def _joined() -> bool:
    """Whether this process is one of several training one model (train.cluster.join)."""
    if current() != "jax":
        return False
    import jax

    return jax.process_count() > 1


def versions() -> dict[str, str]:
    import platform

    import dlrun

    keras = load()
    name = current()
    module = tensorflow() if name == "tensorflow" else importlib.import_module(name)
    return {
        "python": platform.python_version(),
        name: module.__version__,
        "keras": keras.__version__,
        "dlrun": dlrun.__version__,
    }
