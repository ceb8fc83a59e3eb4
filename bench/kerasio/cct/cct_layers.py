"""keras.io "Compact Convolutional Transformers" (vision/cct): the convolutional tokenizer, the
position embedding, stochastic depth and sequence pooling as layers; CIFAR-10-shaped data."""

import keras
import numpy as np
from keras import layers, ops


@keras.saving.register_keras_serializable(package="kerasio_cct")
class CCTTokenizer(layers.Layer):
    """Conv (no bias, ReLU) -> zero padding -> max pooling, per entry of num_output_channels;
    then the feature map's positions become the sequence."""

    def __init__(
        self,
        kernel_size=3,
        stride=1,
        padding=1,
        pooling_kernel_size=3,
        pooling_stride=2,
        num_output_channels=(64, 128),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.options = {
            "kernel_size": kernel_size,
            "stride": stride,
            "padding": padding,
            "pooling_kernel_size": pooling_kernel_size,
            "pooling_stride": pooling_stride,
            "num_output_channels": list(num_output_channels),
        }
        stages = []
        for channels in num_output_channels:
            stages += [
                layers.Conv2D(
                    channels,
                    kernel_size,
                    stride,
                    padding="valid",
                    use_bias=False,
                    activation="relu",
                    kernel_initializer="he_normal",
                ),
                layers.ZeroPadding2D(padding),
                layers.MaxPooling2D(pooling_kernel_size, pooling_stride, "same"),
            ]
        self.convolutions = keras.Sequential(stages)

    def build(self, input_shape):
        self.convolutions.build(input_shape)
        self.built = True

    def call(self, images):
        features = self.convolutions(images)
        rows, cols, depth = features.shape[1], features.shape[2], features.shape[3]
        return ops.reshape(features, (-1, rows * cols, depth))

    def get_config(self):
        return {**super().get_config(), **self.options}


@keras.saving.register_keras_serializable(package="kerasio_cct")
class PositionEmbedding(layers.Layer):
    """Adds a learned vector per position of the sequence (its length taken from the input)."""

    def build(self, input_shape):
        self.table = self.add_weight(
            shape=(input_shape[1], input_shape[2]), initializer="glorot_uniform", name="table"
        )
        self.built = True

    def call(self, tokens):
        return tokens + self.table


@keras.saving.register_keras_serializable(package="kerasio_cct")
class StochasticDepth(layers.Layer):
    """Drops the whole residual branch of a sample with probability drop_prob, in training."""

    def __init__(self, drop_prob=0.0, **kwargs):
        super().__init__(**kwargs)
        self.drop_prob = drop_prob
        self.seed_generator = keras.random.SeedGenerator(1337)

    def call(self, x, training=None):
        if not training or self.drop_prob == 0:
            return x
        keep = 1 - self.drop_prob
        shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        mask = ops.floor(keep + keras.random.uniform(shape, 0, 1, seed=self.seed_generator))
        return x / keep * mask

    def get_config(self):
        return {**super().get_config(), "drop_prob": self.drop_prob}


@keras.saving.register_keras_serializable(package="kerasio_cct")
class SequencePooling(layers.Layer):
    """Attention pooling over the sequence: softmax(Dense(1)) weights, summed sequence."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.attention = layers.Dense(1)

    def build(self, input_shape):
        self.attention.build(input_shape)
        self.built = True

    def call(self, x):
        weights = ops.softmax(self.attention(x), axis=1)
        pooled = ops.matmul(ops.transpose(weights, (0, 2, 1)), x)
        return ops.squeeze(pooled, -2)


def load(n=600, classes=10, seed=0):
    """CIFAR-10's shape (32x32x3, 0..255, 10 classes), synthetic: a random picture per class
    plus noise; 80% train, 20% test."""
    rng = np.random.default_rng(seed)
    pictures = rng.uniform(0, 255, (classes, 32, 32, 3))
    y = rng.permutation(np.arange(n) % classes)
    x = np.clip(pictures[y] + rng.normal(0, 60, (n, 32, 32, 3)), 0, 255).astype("float32")
    cut = int(n * 0.8)
    return {"x_train": x[:cut], "y_train": y[:cut], "x_test": x[cut:], "y_test": y[cut:]}
