"""keras.io "Video Vision Transformer" (vision/vivit): tubelet embedding and positional
encoding layers, and OrganMNIST3D-shaped volumes (28x28x28x1, 11 classes)."""

import keras
import numpy as np
from keras import layers, ops


@keras.saving.register_keras_serializable(package="kerasio_vivit")
class TubeletEmbedding(layers.Layer):
    """Non-overlapping 3-D patches projected by one Conv3D, flattened to a token sequence."""

    def __init__(self, embed_dim, patch_size, **kwargs):
        super().__init__(**kwargs)
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.projection = layers.Conv3D(
            embed_dim, kernel_size=patch_size, strides=patch_size, padding="valid"
        )
        self.flatten = layers.Reshape((-1, embed_dim))

    def call(self, videos):
        return self.flatten(self.projection(videos))

    def get_config(self):
        return {**super().get_config(), "embed_dim": self.embed_dim, "patch_size": self.patch_size}


@keras.saving.register_keras_serializable(package="kerasio_vivit")
class PositionalEncoder(layers.Layer):
    """Adds a learned embedding per token position (the count read from the input)."""

    def __init__(self, embed_dim, **kwargs):
        super().__init__(**kwargs)
        self.embed_dim = embed_dim

    def build(self, input_shape):
        self.tokens = input_shape[1]
        self.position_embedding = layers.Embedding(self.tokens, self.embed_dim)
        self.position_embedding.build((self.tokens,))
        self.built = True

    def call(self, tokens):
        return tokens + self.position_embedding(ops.arange(self.tokens))

    def get_config(self):
        return {**super().get_config(), "embed_dim": self.embed_dim}


def load(n=300, classes=11, seed=0):
    """OrganMNIST3D's shape without the download: 28x28x28 volumes in 0..1 with a channel,
    a random volume per class plus noise; train, validation and test splits (70/10/20)."""
    rng = np.random.default_rng(seed)
    volumes = rng.uniform(0, 1, (classes, 28, 28, 28, 1))
    y = rng.permutation(np.arange(n) % classes)
    x = np.clip(volumes[y] + rng.normal(0, 0.3, (n, 28, 28, 28, 1)), 0, 1).astype("float32")
    a, b = int(n * 0.7), int(n * 0.8)
    return {
        "x_train": x[:a],
        "y_train": y[:a],
        "x_val": x[a:b],
        "y_val": y[a:b],
        "x_test": x[b:],
        "y_test": y[b:],
    }
