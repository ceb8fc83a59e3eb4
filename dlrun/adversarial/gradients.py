"""The input gradient of a model's loss, per Keras backend: the only backend-specific piece of
an attack. tf.GradientTape on TensorFlow, a compiled jax.grad on JAX, torch autograd on torch.
Each works on the backend's tensors (inside a compiled train step, see training) and, through
input_gradient, on NumPy arrays.  [TensorFlow]"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import numpy as np

from dlrun.errors import AttackError


def tensorflow_gradient(model, loss, x, y) -> tuple:
    """d sum(loss) / dx and the per-sample losses, as TensorFlow tensors (graph or eager)."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(x)
        values = loss(y, model(x, training=False))
        total = tf.reduce_sum(values)
    return tape.gradient(total, x), values


def torch_gradient(model, loss, x, y) -> tuple:
    import torch

    inputs = x.detach().requires_grad_(True)
    values = loss(y, model(inputs, training=False))
    (gradient,) = torch.autograd.grad(torch.sum(values), inputs)
    return gradient.detach(), values.detach()


def jax_gradient_function(model, loss) -> Callable:
    """jax.grad of the summed loss in the input, the weights as arguments:
    (inputs, trainable, non_trainable, labels) -> (gradient, per-sample losses)."""
    import jax
    import jax.numpy as jnp

    def total(inputs, trainable, non_trainable, labels):
        outputs, _ = model.stateless_call(trainable, non_trainable, inputs, training=False)
        values = loss(labels, outputs)
        return jnp.sum(values), values

    return jax.grad(total, has_aux=True)


def _tensorflow_numpy(model, loss, x: np.ndarray, y: np.ndarray) -> tuple:
    import tensorflow as tf

    gradient, values = tensorflow_gradient(model, loss, tf.convert_to_tensor(x), tf.constant(y))
    return gradient.numpy(), values.numpy()


def _torch_numpy(model, loss, x: np.ndarray, y: np.ndarray) -> tuple:
    import keras

    convert = keras.ops.convert_to_tensor
    gradient, values = torch_gradient(model, loss, convert(x), convert(y))
    return gradient.cpu().numpy(), values.cpu().numpy()


# One compiled input gradient per (model, loss); the weights are arguments, not constants, so
# a changed weight does not recompile it.
_JAX_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _jax_numpy(model, loss, x: np.ndarray, y: np.ndarray) -> tuple:
    import jax
    import jax.numpy as jnp

    by_loss = _JAX_COMPILED.setdefault(model, {})
    if loss not in by_loss:
        by_loss[loss] = jax.jit(jax_gradient_function(model, loss))
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    gradient, values = by_loss[loss](jnp.asarray(x), trainable, non_trainable, jnp.asarray(y))
    return np.asarray(gradient), np.asarray(values)


GRADIENTS = {"tensorflow": _tensorflow_numpy, "jax": _jax_numpy, "torch": _torch_numpy}


def check_backend() -> str:
    """Keras' backend, if dlrun can take input gradients on it."""
    import keras

    backend = keras.backend.backend()
    if backend not in GRADIENTS:
        raise AttackError(
            f"attacks need input gradients, which dlrun computes on tensorflow, jax or torch; "
            f"Keras runs on {backend}"
        )
    return backend


def input_gradient(model, loss, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """d sum(loss(y, model(x))) / dx on Keras' current backend, and the per-sample losses."""
    return GRADIENTS[check_backend()](model, loss, x, y)


# The per-sample loss of each model, made once: JAX compiles one gradient per loss function.
_PER_SAMPLE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def model_loss(model) -> Callable:
    """The loss the model was compiled with (what it was trained to lower), one value per
    sample however it was written: a name, a function or a Loss object (which reduces over
    the batch when called, so its unreduced `call` is used)."""
    import keras

    compiled = getattr(model, "loss", None) or "categorical_crossentropy"
    cached = _PER_SAMPLE.get(model)
    if cached is not None and cached[0] is compiled:
        return cached[1]
    found = keras.losses.get(compiled)
    unreduced = found.call if isinstance(found, keras.losses.Loss) else found

    def per_sample(y, outputs):
        # As Keras' own loss wrapper does: integer labels against one sigmoid unit, (n,)
        # against (n, 1), and labels cast to the outputs' type.
        y = keras.ops.cast(y, outputs.dtype)
        if len(y.shape) == len(outputs.shape) - 1 and outputs.shape[-1] == 1:
            y = keras.ops.expand_dims(y, -1)
        elif len(y.shape) == len(outputs.shape) + 1 and y.shape[-1] == 1:
            y = keras.ops.squeeze(y, -1)
        values = unreduced(y, outputs)
        if len(values.shape) > 1:  # a loss per pixel or per step: one number per sample
            values = keras.ops.mean(values, axis=tuple(range(1, len(values.shape))))
        return values

    _PER_SAMPLE[model] = (compiled, per_sample)
    return per_sample
