"""The input gradient of a model's loss, per Keras backend: the only backend-specific piece of
an attack. tf.GradientTape on TensorFlow, a compiled jax.grad on JAX, torch autograd on torch.
[TensorFlow]"""

from __future__ import annotations

import weakref

import numpy as np

from dlrun.errors import AttackError


def _tensorflow_gradient(model, loss, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    inputs = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        values = loss(tf.convert_to_tensor(y), model(inputs, training=False))
        total = tf.reduce_sum(values)
    return tape.gradient(total, inputs).numpy(), values.numpy()


def _jax_gradient(model, loss, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    import jax.numpy as jnp

    trainable, non_trainable = _jax_weights(model)
    step = _jax_compiled(model, loss)
    gradient, values = step(jnp.asarray(x), list(trainable), list(non_trainable), jnp.asarray(y))
    return np.asarray(gradient), np.asarray(values)


# One compiled input gradient per (model, loss); the weights are arguments, not constants, so
# it serves every step of training. Op-by-op it took 60% of an adversarial fit on JAX.
_JAX_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _jax_compiled(model, loss):
    import jax
    import jax.numpy as jnp

    by_loss = _JAX_COMPILED.setdefault(model, {})
    if loss not in by_loss:

        def total(inputs, trainable, non_trainable, labels):
            outputs, _ = model.stateless_call(trainable, non_trainable, inputs, training=False)
            values = loss(labels, outputs)
            return jnp.sum(values), values

        by_loss[loss] = jax.jit(jax.grad(total, has_aux=True))
    return by_loss[loss]


def _jax_weights(model) -> tuple[list, list]:
    """The current weights. Inside JAX's fit they live in the trainer's state, not in the
    model's variables (emptied to save memory, filled again at the end of each epoch)."""
    state = getattr(model, "_jax_state", None)
    if state and not getattr(model, "_jax_state_synced", True):
        return state["trainable_variables"], state["non_trainable_variables"]
    if any(v._value is None for v in model.trainable_variables):  # the epoch's first batch
        return model._weights_at_epoch_begin
    return _variable_values(model)


def _variable_values(model) -> tuple[list, list]:
    trainable = [v.value for v in model.trainable_variables]
    return trainable, [v.value for v in model.non_trainable_variables]


def _torch_gradient(model, loss, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    import keras
    import torch

    inputs = keras.ops.convert_to_tensor(x).detach().requires_grad_(True)
    values = loss(keras.ops.convert_to_tensor(y), model(inputs, training=False))
    (gradient,) = torch.autograd.grad(torch.sum(values), inputs)
    return gradient.detach().cpu().numpy(), values.detach().cpu().numpy()


GRADIENTS = {"tensorflow": _tensorflow_gradient, "jax": _jax_gradient, "torch": _torch_gradient}


def input_gradient(model, loss, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """d sum(loss(y, model(x))) / dx on Keras' current backend, and the per-sample losses."""
    import keras

    backend = keras.backend.backend()
    if backend not in GRADIENTS:
        raise AttackError(
            f"attacks need input gradients, which dlrun computes on tensorflow, jax or torch; "
            f"Keras runs on {backend}"
        )
    return GRADIENTS[backend](model, loss, x, y)


def model_loss(model):
    """The loss the model was compiled with (what it was trained to lower), as a function."""
    import keras

    compiled = getattr(model, "loss", None)
    if compiled is None:
        return keras.losses.categorical_crossentropy
    function = keras.losses.get(compiled)
    return function if callable(function) else keras.losses.categorical_crossentropy
