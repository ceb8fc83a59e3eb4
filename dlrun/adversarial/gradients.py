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


# --- a whole attack, compiled once per model, loss and threat ----------------------------------
# `attack(gradient_of, x, noise)` is adversarial.attacks' algorithm in keras.ops; here it is
# traced with the backend's gradient: one compiled call per batch instead of one per step.

_ATTACKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _tensorflow_attack(model, loss, attack: Callable) -> Callable:
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def run(x, y, noise):
        return attack(
            lambda adversarial: tensorflow_gradient(model, loss, adversarial, y), x, noise
        )

    return lambda x, y, noise: run(tf.constant(x), tf.constant(y), tf.constant(noise)).numpy()


def _jax_attack(model, loss, attack: Callable) -> Callable:
    import jax

    gradient = jax_gradient_function(model, loss)

    @jax.jit
    def run(x, y, noise, trainable, non_trainable):
        return attack(lambda a: gradient(a, trainable, non_trainable, y), x, noise)

    def call(x, y, noise):
        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        return np.asarray(run(x, y, noise, trainable, non_trainable))

    return call


def _torch_attack(model, loss, attack: Callable) -> Callable:
    import keras

    def call(x, y, noise):
        convert = keras.ops.convert_to_tensor
        labels = convert(y)
        found = attack(lambda a: torch_gradient(model, loss, a, labels), convert(x), convert(noise))
        return keras.ops.convert_to_numpy(found)

    return call


ATTACKS = {"tensorflow": _tensorflow_attack, "jax": _jax_attack, "torch": _torch_attack}


def compiled_attack(model, loss, attack: Callable, key) -> Callable:
    """`attack` compiled for this model and loss on Keras' backend, as
    (x, y, noise) -> adversarial x, NumPy in and out; `key` names the attack (its threat)."""
    made = _ATTACKS.setdefault(model, {})
    if (loss, key) not in made:
        made[(loss, key)] = ATTACKS[check_backend()](model, loss, attack)
    return made[(loss, key)]


# --- the train step of adversarial training, per backend ----------------------------------------
# `mixed(data, gradient_of, uniform)` (adversarial.training) replaces part of a batch with
# attacks: gradient_of(x, y) -> (input gradient, per-sample losses) at the step's weights,
# uniform(shape, stream, low, high) -> noise drawn from (seed, optimizer step, stream).


def _jax_step(model, loss, seed: int, mixed: Callable, plain: Callable) -> Callable:
    import jax

    gradient_function = jax_gradient_function(model, loss)

    def train_step(state, data):
        # The weights of this very step come in the state: nothing is read from the model,
        # whose buffers a multi-step call (steps_per_execution > 1) has donated.
        trainable, non_trainable, optimizer_variables = state[0], state[1], state[2]
        key = jax.random.fold_in(jax.random.key(seed), optimizer_variables[_step_index(model)])

        def uniform(shape, stream, low, high):
            drawn = jax.random.fold_in(key, stream)
            return jax.random.uniform(drawn, tuple(shape), minval=low, maxval=high)

        def gradient_of(adversarial, labels):
            return gradient_function(adversarial, trainable, non_trainable, labels)

        return plain(state, mixed(data, gradient_of, uniform))

    return train_step


def _tensorflow_step(model, loss, seed: int, mixed: Callable, plain: Callable) -> Callable:
    import tensorflow as tf

    def train_step(data):
        steps = tf.cast(model.optimizer.iterations, tf.int64)

        def uniform(shape, stream, low, high):
            pair = tf.stack([tf.constant(seed, tf.int64), steps * 2 + stream])
            return tf.random.stateless_uniform(shape, pair, minval=low, maxval=high)

        def gradient_of(adversarial, labels):
            return tensorflow_gradient(model, loss, adversarial, labels)

        return plain(mixed(data, gradient_of, uniform))

    return train_step


def _torch_step(model, loss, seed: int, mixed: Callable, plain: Callable) -> Callable:
    import keras
    import torch

    def train_step(data):  # torch runs the step eagerly
        steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))

        def uniform(shape, stream, low, high):
            generator = torch.Generator().manual_seed(seed * 1_000_003 + steps * 2 + stream)
            drawn = torch.rand(tuple(shape), generator=generator) * (high - low) + low
            return keras.ops.convert_to_tensor(drawn.numpy())

        def gradient_of(adversarial, labels):
            return torch_gradient(model, loss, adversarial, labels)

        return plain(mixed(data, gradient_of, uniform))

    return train_step


TRAIN_STEPS = {"tensorflow": _tensorflow_step, "jax": _jax_step, "torch": _torch_step}


def train_step_with(model, loss, seed: int, mixed: Callable) -> Callable:
    """Keras' train step of the model's class, on batches passed through `mixed` first."""
    plain = type(model).train_step.__get__(model)  # the class's own, not an earlier one of ours
    return TRAIN_STEPS[check_backend()](model, loss, seed, mixed, plain)


def _step_index(model) -> int:
    """Where the optimizer's step counter sits among the optimizer variables of JAX's state."""
    counter = model.optimizer.iterations
    for index, variable in enumerate(model.optimizer.variables):
        if variable is counter:
            return index
    raise RuntimeError("the optimizer's step counter is not among its variables")
