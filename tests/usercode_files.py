"""Code files the user-code tests write beside their specs (tests/test_usercode*.py)."""

# keras.io's "Image classification with Vision Transformer": its Patches and PatchEncoder
# layers as published (keras.ops only), with get_config so that a checkpoint reloads them.
VIT = """\
import keras
from keras import layers, ops


class Patches(layers.Layer):
    def __init__(self, patch_size, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = patch_size

    def call(self, images):
        input_shape = ops.shape(images)
        batch_size = input_shape[0]
        height = input_shape[1]
        width = input_shape[2]
        channels = input_shape[3]
        num_patches_h = height // self.patch_size
        num_patches_w = width // self.patch_size
        patches = keras.ops.image.extract_patches(images, size=self.patch_size)
        patches = ops.reshape(
            patches,
            (
                batch_size,
                num_patches_h * num_patches_w,
                self.patch_size * self.patch_size * channels,
            ),
        )
        return patches

    def get_config(self):
        config = super().get_config()
        config.update({"patch_size": self.patch_size})
        return config


class PatchEncoder(layers.Layer):
    def __init__(self, num_patches, projection_dim, **kwargs):
        super().__init__(**kwargs)
        self.num_patches = num_patches
        self.projection_dim = projection_dim
        self.projection = layers.Dense(units=projection_dim)
        self.position_embedding = layers.Embedding(
            input_dim=num_patches, output_dim=projection_dim
        )

    def build(self, input_shape):
        self.projection.build(input_shape)
        self.position_embedding.build((None,))

    def call(self, patch):
        positions = ops.expand_dims(
            ops.arange(start=0, stop=self.num_patches, step=1), axis=0
        )
        projected_patches = self.projection(patch)
        encoded = projected_patches + self.position_embedding(positions)
        return encoded

    def get_config(self):
        config = super().get_config()
        config.update(
            {"num_patches": self.num_patches, "projection_dim": self.projection_dim}
        )
        return config
"""

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
