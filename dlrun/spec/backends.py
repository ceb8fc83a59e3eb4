"""`backend: auto`, the default: the Keras backend a spec trains on when it names none.

Chosen from the spec alone (and what this machine has), before Keras is imported, and written
into the run's config.yaml as the backend it names, so that resume, evaluate, predict and a
sweep's fits all use it; meta.json's `backend_auto` says why it was chosen.

Measured on the project's 2-core CPU (bench/speed_results.md, docs/performance.md): JAX runs
the lecture's dense, dropout and batch-norm nets several times faster than TensorFlow (less
overhead per step), while XLA's CPU convolutions run the CNN 3 to 5 times slower. So: JAX for
a network of the layers in FAST_ON_JAX on in-memory data, on the CPU; TensorFlow for
everything else, and for what only TensorFlow does here (image folders through tf.data, op
determinism) or was never measured on JAX (transfer bases, augmentation, adversarial
training, mixed precision, several devices, GPUs).

Two things come before the rule: KERAS_BACKEND set in the environment (Keras' own switch), and
a process whose Keras is already imported (the Python API in a notebook): Keras cannot switch
there, so auto takes the backend it runs on.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import dlrun

# Layers whose steps JAX runs faster than TensorFlow on the CPU, or that cost nothing.
FAST_ON_JAX = frozenset(
    {
        *("Dense", "Dropout", "BatchNormalization", "LayerNormalization", "Activation"),
        *("Flatten", "Reshape", "ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax"),
        *("GaussianNoise", "GaussianDropout", "AlphaDropout", "Identity"),
        *("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate"),
    }
)


def choose(spec) -> tuple[str, str]:
    """(backend, why) for a spec whose backend is auto."""
    given = dlrun.KERAS_BACKEND_GIVEN
    if given in ("tensorflow", "jax", "torch"):
        return given, f"KERAS_BACKEND={given} in the environment"
    keras = sys.modules.get("keras")
    if keras is not None and hasattr(keras, "backend"):
        running = keras.backend.backend()
        if running in ("tensorflow", "jax", "torch"):
            return running, f"Keras already runs on {running} in this process"
    why = _needs_tensorflow(spec)
    if why:
        return "tensorflow", why
    return "jax", "layers that JAX runs faster on the CPU"


def _needs_tensorflow(spec) -> str | None:
    """Why the spec trains on TensorFlow, or None where JAX is the faster choice."""
    training, model = spec.training, spec.model
    if importlib.util.find_spec("jax") is None:
        return "JAX is not installed"
    if spec.data.dataset == "directory":
        return "image folders stream through tf.data"
    if model.base is not None or model.augment:
        return "a transfer base or augmentation (measured on TensorFlow only)"
    if training.adversarial or training.distribute or training.mixed_precision:
        return "adversarial training, distribute or mixed precision (measured on TensorFlow)"
    if training.deterministic:
        return "training.deterministic is TensorFlow's op determinism"
    if spec.compile.jit_compile is False:
        return "compile.jit_compile: false (JAX runs compiled)"
    if training.device == "gpu" or (training.device == "auto" and _gpu_visible()):
        return "a GPU (auto picks JAX on the CPU, where it was measured)"
    slower = slower_on_jax(spec)
    if slower:
        return f"{', '.join(slower[:3])} (JAX's CPU convolutions and the rest: TensorFlow)"
    return None


def slower_on_jax(spec) -> list[str]:
    """The spec's layer types outside FAST_ON_JAX (convolutions, pooling, recurrent...)."""
    model = spec.model
    entries = [*model.layers, *(e for block in model.blocks.values() for e in block.layers)]
    return sorted({e.type for e in entries if e.type is not None} - FAST_ON_JAX)


def _gpu_visible() -> bool:
    """An NVIDIA GPU that CUDA_VISIBLE_DEVICES does not hide (no library imported)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return any(Path("/dev").glob("nvidia[0-9]*"))
