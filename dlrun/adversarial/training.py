"""Adversarial training (`training.adversarial`): a share of each training batch replaced by
attacks on the current weights, and val_adversarial_accuracy measured after every epoch.
[TensorFlow]"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from dlrun.adversarial.attacks import Threat, attack_tensors, data_range, perturb, predict
from dlrun.adversarial.gradients import model_loss, train_step_with
from dlrun.model.outputs import predicted_classes, true_classes


def training_threat(spec, data) -> Threat:
    """The threat of `training.adversarial`, on the model's input scale."""
    settings = spec.training.adversarial
    low, high = data_range(data, spec)
    width = high - low
    return Threat(
        settings.method,
        settings.eps * width,
        settings.steps,
        2.5 * settings.eps / settings.steps * width,
        low,
        high,
    )


def train_on_attacks(model, threat: Threat, ratio: float, seed: int) -> None:
    """Make model.fit train on batches with a `ratio` share replaced by attacks.

    The attack runs inside Keras' own train step, so it is compiled with it (tf.function on
    TensorFlow, jit on JAX) and sees the weights of that very step, whatever the data pipeline
    or steps_per_execution. The rows attacked and PGD's random start are drawn from (seed,
    the optimizer's step count): a resumed run draws what an unbroken one would have.
    train_step is the method Keras documents for overriding; it is set on this model only.
    """
    import keras

    loss = model_loss(model)

    def mixed(data, gradient_of, uniform):
        if not isinstance(data, (tuple, list)) or len(data) < 2:
            return data
        x, y, *rest = data
        ops = keras.ops
        size = x.shape[0]
        if size is None:  # TensorFlow's graph: the batch size is known when it runs
            size = ops.shape(x)[0]
            count = ops.cast(ops.round(ratio * ops.cast(size, "float32")), "int32")
        else:
            count = int(round(ratio * size))
        # A random share of the rows: the first `count` of a random order.
        chosen = ops.argsort(uniform((size,), 0, 0.0, 1.0))[:count]
        rows = ops.take(x, chosen, axis=0)
        noise = uniform(ops.shape(rows), 1, -threat.eps, threat.eps)

        def gradient(adversarial):
            return gradient_of(adversarial, ops.take(y, chosen, axis=0))

        attacked = attack_tensors(gradient, rows, ops.cast(noise, x.dtype), threat)
        x = ops.scatter_update(x, ops.expand_dims(chosen, -1), ops.cast(attacked, x.dtype))
        return (x, y, *rest)

    model.train_step = train_step_with(model, loss, seed, mixed)
    model.train_function = None  # made again, with this step, by the next fit


def adversarial_accuracy(
    model, batches: Callable[[], Iterator], threat: Threat, seed: int
) -> float:
    """Accuracy on adversarial versions of the batches."""
    loss = model_loss(model)
    rng = np.random.default_rng(seed)
    correct = total = 0
    for x, y in batches():
        truth = true_classes(y)
        adversarial = perturb(model, loss, x, y, threat, rng)
        correct += int(np.sum(predicted_classes(predict(model, adversarial)) == truth))
        total += len(x)
    return correct / total


def validation_callback(batches: Callable[[], Iterator], threat: Threat, seed: int):
    """A callback adding val_adversarial_accuracy to each epoch's logs, before they are recorded."""
    import keras

    class AdversarialValidation(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                logs[ADVERSARIAL_METRIC] = adversarial_accuracy(self.model, batches, threat, seed)

    return AdversarialValidation()


ADVERSARIAL_METRIC = "val_adversarial_accuracy"
