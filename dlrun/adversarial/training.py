"""Adversarial training (`training.adversarial`): a share of each training batch replaced by
attacks on the current weights, and val_adversarial_accuracy measured after every epoch.
[TensorFlow]"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np

from dlrun.adversarial.attacks import Threat, data_range, perturb, predict
from dlrun.adversarial.gradients import _variable_values, model_loss
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


def mixed_batches(
    model, batches: Iterable, threat: Threat, ratio: float, seed: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Training batches with a `ratio` share of each replaced by adversarial examples.

    The examples are made when the batch is drawn, against the model's weights of that moment
    (a prefetched batch is a step or two behind). Any iterable of (x, y) batches works: a
    tf.data stream on TensorFlow, NumPy batches elsewhere.
    """
    loss = model_loss(model)
    rng = np.random.default_rng(seed)
    for x, y in batches:
        x, y = np.array(x), np.asarray(y)
        count = int(round(ratio * len(x)))
        if count:
            chosen = np.sort(rng.choice(len(x), count, replace=False))
            x[chosen] = perturb(model, loss, x[chosen], y[chosen], threat, rng)
        yield x, y


def weights_keeper():
    """On JAX, a callback keeping the weights of each epoch's start for its first batch: fit
    empties the variables before it, and its state holds them only after the first step."""
    import keras

    class KeepWeights(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.model._weights_at_epoch_begin = _variable_values(self.model)

    return KeepWeights()


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
