"""Adversarial examples: FGSM and PGD, one perturbation of a batch at a time.  [TensorFlow]

An attack moves each input by at most eps (L-infinity) in the direction that raises the
model's own loss on the true label (or lowers it on a target class), and keeps it inside the
valid input range, [min, max] of the scaled training data. eps is given as a fraction of that
range, so eps 0.1 means 0.1 on data scaled to [0, 1] whatever the spec's `scale`.

PGD (Madry et al. 2018) starts at a random point of the eps ball and takes `steps` signed
gradient steps, projecting back after each; FGSM (Goodfellow et al. 2015) is its one-step case
from the clean input with step eps. The input gradient is the only backend-specific piece:
dlrun.adversarial.gradients picks tf.GradientTape, jax.grad or torch autograd by Keras' backend
and compiles the attack with it (tf.function, jax.jit).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from dlrun.adversarial.gradients import compiled_attack
from dlrun.errors import AttackError


@dataclass(frozen=True)
class Threat:
    """How to perturb: the method, eps and step on the model's input scale, and the valid range."""

    method: str
    eps: float  # absolute, on the model's input scale
    steps: int
    step: float  # absolute PGD step
    low: float
    high: float


def perturb(
    model,
    loss,
    x: np.ndarray,
    y: np.ndarray,
    threat: Threat,
    rng: np.random.Generator,
    targeted: bool = False,
) -> np.ndarray:
    """Adversarial versions of x: |x_adv - x| <= eps everywhere, low <= x_adv <= high.

    Untargeted: raise loss(y, .) (y the true labels); targeted: lower it (y the target).
    """
    if threat.eps == 0:
        return x.copy()
    noise = rng.uniform(-threat.eps, threat.eps, size=x.shape).astype(x.dtype)

    def attack(gradient_of, inputs, start):
        return attack_tensors(gradient_of, inputs, start, threat, targeted)

    run = compiled_attack(model, loss, attack, (threat, targeted))
    return run(x, y, noise).astype(x.dtype)


def attack_tensors(gradient_of: Callable, x, noise, threat: Threat, targeted: bool = False):
    """The attack on backend tensors (or arrays), written once in keras.ops for the attack
    command and the compiled training step: gradient_of(x_adv) -> (input gradient, per-sample
    losses); noise, uniform in [-eps, eps], is PGD's random start."""
    import keras

    ops = keras.ops
    lower = ops.maximum(x - threat.eps, threat.low)
    upper = ops.minimum(x + threat.eps, threat.high)
    if threat.method == "fgsm":
        adversarial, steps, step = x, 1, threat.eps
    else:
        adversarial, steps, step = ops.clip(x + noise, lower, upper), threat.steps, threat.step
    # Minimise sign * loss; PGD keeps each sample's best iterate, not merely its last one.
    sign = -1.0 if targeted else 1.0
    best, best_score = adversarial, None
    for _ in range(steps):
        gradient, values = gradient_of(adversarial)
        if threat.method == "pgd":
            best, best_score = _keep_better(best, best_score, adversarial, sign * values)
        moved = adversarial + sign * step * ops.sign(ops.cast(gradient, adversarial.dtype))
        adversarial = ops.clip(moved, lower, upper)
    if threat.method == "fgsm":
        return adversarial
    _, values = gradient_of(adversarial)
    best, _ = _keep_better(best, best_score, adversarial, sign * values)
    return best


def _keep_better(best, best_score, candidate, score):
    """Per sample, the candidate where its score beats the best so far."""
    import keras

    ops = keras.ops
    if best_score is None:
        return candidate, score
    better = score > best_score
    rows = ops.reshape(better, (-1,) + (1,) * (len(candidate.shape) - 1))
    return ops.where(rows, candidate, best), ops.where(better, score, best_score)


def predict(model, x: np.ndarray) -> np.ndarray:
    import keras

    return keras.ops.convert_to_numpy(model(x, training=False))


def input_range(x_train: np.ndarray) -> tuple[float, float]:
    """The valid input range: [min, max] of the scaled training data."""
    low, high = float(np.min(x_train)), float(np.max(x_train))
    if not high > low:
        raise AttackError(
            f"the training inputs are constant ({low}); there is no input range to attack in"
        )
    return low, high


def data_range(data, spec) -> tuple[float, float]:
    """The valid input range of the spec's data, on the model's input scale."""
    if data.source is not None:  # an image folder, decoded as it streams: pixels over scale
        return 0.0, 255.0 / spec.data.scale
    # The training data's range, widened to the test inputs so that every x lies inside it.
    low, high = input_range(data.x_train)
    return min(low, float(np.min(data.x_test))), max(high, float(np.max(data.x_test)))


def batches(data, x: np.ndarray, y: np.ndarray, batch: int) -> Callable[[], Iterator]:
    """A fresh iterator of (x, y) NumPy batches each call: slices, or decoded image files."""
    if data.source is None:
        return lambda: ((x[i : i + batch], y[i : i + batch]) for i in range(0, len(x), batch))
    from dlrun.data.feed import pipeline

    def decoded():
        for xb, yb in pipeline(x, y, batch, data.source):
            yield np.asarray(xb), np.asarray(yb)

    return decoded
