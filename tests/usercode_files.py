"""Code files the user-code tests write beside their specs (tests/test_usercode*.py)."""

from pathlib import Path

# keras.io's "Image classification with Vision Transformer": its Patches and PatchEncoder
# layers as published (keras.ops only), with get_config so that a checkpoint reloads them; the
# documentation's example ships them (docs/code.md).
VIT = (Path(__file__).resolve().parent.parent / "configs" / "code" / "vit.py").read_text()

# A plain-function focal loss, a metric function, a callback and a data function. It prints
# at import: dlrun's stdout must stay its own.
EXTRAS = """\
import os

import keras
import numpy as np
from keras import ops

print("extras imported")


def focal(y_true, y_pred):
    y_pred = ops.clip(y_pred, 1e-7, 1 - 1e-7)
    return ops.sum(ops.power(1 - y_pred, 2.0) * -y_true * ops.log(y_pred), axis=-1)


def hit_rate(y_true, y_pred):
    return ops.cast(ops.equal(ops.argmax(y_true, -1), ops.argmax(y_pred, -1)), "float32")


class CountEpochs(keras.callbacks.Callback):
    def __init__(self, every=1):
        super().__init__()
        self.every = every
        self.seen = 0

    def on_epoch_end(self, epoch, logs=None):
        self.seen += 1
        if self.seen % self.every == 0:
            with open(os.environ["COUNT_EPOCHS_FILE"], "a") as out:
                out.write(f"{epoch}\\n")


def load(n=600, side=8):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images[:n].reshape(-1, side, side, 1).astype("float32")
    return {"x_train": x, "y_train": digits.target[:n]}


def not_a_mapping():
    return [1, 2, 3]
"""

# keras.io-style subclassed model with its own train_step and test_step and metrics.
OWN_MODEL = """\
import keras
from keras import layers, ops


class Classifier(keras.Model):
    def __init__(self, units=16, classes=10, **kwargs):
        super().__init__(**kwargs)
        self.units, self.classes = units, classes
        self.hidden = layers.Dense(units, activation="relu")
        self.out = layers.Dense(classes, activation="softmax")
        self.ce_tracker = keras.metrics.Mean(name="ce")
        self.accuracy_metric = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

    def call(self, x, training=False):
        return self.out(self.hidden(x))

    @property
    def metrics(self):
        return [self.ce_tracker, self.accuracy_metric]

    def _update(self, y, pred):
        loss = ops.mean(keras.losses.sparse_categorical_crossentropy(y, pred))
        self.ce_tracker.update_state(loss)
        self.accuracy_metric.update_state(y, pred)
        return loss

    def train_step(self, data):
        import tensorflow as tf

        x, y = data
        with tf.GradientTape() as tape:
            loss = self._update(y, self(x, training=True))
        grads = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        x, y = data
        self._update(y, self(x, training=False))
        return {m.name: m.result() for m in self.metrics}

    def get_config(self):
        return {**super().get_config(), "units": self.units, "classes": self.classes}


def build(units=16):
    return Classifier(units=units)
"""
