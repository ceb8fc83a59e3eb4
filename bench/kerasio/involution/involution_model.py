"""keras.io "Involutional neural networks" (vision/involution): the Involution layer (it returns
its output and its generated kernel, as in the example) and the example's involution model,
built by a function since a graph entry cannot unpack a pair; CIFAR-10-shaped data."""

import keras
import numpy as np
from keras import layers, ops


@keras.saving.register_keras_serializable(package="kerasio_involution")
class Involution(layers.Layer):
    """A kernel generated per position from the input itself (1x1 conv, BN, ReLU, 1x1 conv),
    multiplied with the input's kernel_size x kernel_size neighbourhood and summed."""

    def __init__(self, channel, group_number, kernel_size, stride, reduction_ratio, **kwargs):
        super().__init__(**kwargs)
        self.channel = channel
        self.group_number = group_number
        self.kernel_size = kernel_size
        self.stride = stride
        self.reduction_ratio = reduction_ratio

    def build(self, input_shape):
        _, height, width, channels = input_shape
        height, width = height // self.stride, width // self.stride
        k2, groups = self.kernel_size * self.kernel_size, self.group_number
        self.stride_layer = (
            layers.AveragePooling2D(self.stride, self.stride, padding="same")
            if self.stride > 1
            else None
        )
        self.kernel_gen = keras.Sequential(
            [
                layers.Conv2D(self.channel // self.reduction_ratio, kernel_size=1),
                layers.BatchNormalization(),
                layers.ReLU(),
                layers.Conv2D(k2 * groups, kernel_size=1),
            ]
        )
        self.kernel_gen.build((None, height, width, channels))
        self.kernel_shape = (-1, height, width, k2, 1, groups)
        self.patches_shape = (-1, height, width, k2, channels // groups, groups)
        self.output_shape_ = (-1, height, width, channels)
        self.built = True

    def call(self, x):
        kernel_input = self.stride_layer(x) if self.stride_layer is not None else x
        kernel = ops.reshape(self.kernel_gen(kernel_input), self.kernel_shape)
        patches = ops.image.extract_patches(
            x, size=self.kernel_size, strides=self.stride, padding="same"
        )
        patches = ops.reshape(patches, self.patches_shape)
        out = ops.sum(kernel * patches, axis=3)
        return ops.reshape(out, self.output_shape_), kernel

    def get_config(self):
        return {
            **super().get_config(),
            "channel": self.channel,
            "group_number": self.group_number,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "reduction_ratio": self.reduction_ratio,
        }


def build():
    """The example's inv_model: three involutions (3 channels, kernel 3, reduction 2) with ReLU
    and pooling, then Dense 64 and 10 logits."""
    inputs = keras.Input((32, 32, 3))
    x = inputs
    for index in (1, 2, 3):
        x, _ = Involution(3, 1, 3, 1, 2, name=f"inv_{index}")(x)
        x = layers.ReLU()(x)
        if index < 3:
            x = layers.MaxPooling2D((2, 2))(x)
    x = layers.Dense(64, activation="relu")(layers.Flatten()(x))
    return keras.Model(inputs, layers.Dense(10)(x), name="inv_model")


def load(n=600, classes=10, seed=0):
    """CIFAR-10's shape (32x32x3, scaled to 0..1 as the example does, 10 classes), synthetic:
    a random picture per class plus noise; 80% train, 20% test (the example validates on it)."""
    rng = np.random.default_rng(seed)
    pictures = rng.uniform(0, 1, (classes, 32, 32, 3))
    y = rng.permutation(np.arange(n) % classes)
    x = np.clip(pictures[y] + rng.normal(0, 0.25, (n, 32, 32, 3)), 0, 1).astype("float32")
    cut = int(n * 0.8)
    return {
        "x_train": x[:cut],
        "y_train": y[:cut],
        "x_val": x[cut:],
        "y_val": y[cut:],
        "x_test": x[cut:],
        "y_test": y[cut:],
    }
