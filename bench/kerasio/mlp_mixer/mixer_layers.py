"""keras.io "Image classification with modern MLP models" (vision/mlp_image_classification):
the Patches layer and the blocks of its three models (MLPMixerLayer, FNetLayer, gMLPLayer), the
position embedding FNet adds, and CIFAR-100-shaped synthetic data."""

import keras
import numpy as np
from keras import layers, ops


@keras.saving.register_keras_serializable(package="kerasio_mixer")
class Patches(layers.Layer):
    """(batch, height, width, channels) -> (batch, patches, patch_size * patch_size * channels)."""

    def __init__(self, patch_size, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = patch_size

    def call(self, images):
        cut = ops.image.extract_patches(images, size=self.patch_size)
        return ops.reshape(cut, (-1, cut.shape[1] * cut.shape[2], cut.shape[3]))

    def get_config(self):
        return {**super().get_config(), "patch_size": self.patch_size}


@keras.saving.register_keras_serializable(package="kerasio_mixer")
class MLPMixerLayer(layers.Layer):
    """One mixer block: an MLP across patches (token mixing), then one across channels, each
    after the block's one LayerNormalization and with a skip connection."""

    def __init__(self, num_patches, hidden_units, dropout_rate=0.2, **kwargs):
        super().__init__(**kwargs)
        self.num_patches = num_patches
        self.hidden_units = hidden_units
        self.dropout_rate = dropout_rate
        self.token_mlp = keras.Sequential(
            [
                layers.Dense(num_patches),
                layers.Activation("gelu"),
                layers.Dense(num_patches),
                layers.Dropout(dropout_rate),
            ]
        )
        self.channel_mlp = keras.Sequential(
            [
                layers.Dense(num_patches),
                layers.Activation("gelu"),
                layers.Dense(hidden_units),
                layers.Dropout(dropout_rate),
            ]
        )
        self.norm = layers.LayerNormalization(epsilon=1e-6)

    def build(self, input_shape):
        self.norm.build(input_shape)
        self.token_mlp.build((None, input_shape[-1], input_shape[-2]))
        self.channel_mlp.build(input_shape)
        self.built = True

    def call(self, inputs):
        across_patches = ops.transpose(self.norm(inputs), (0, 2, 1))
        x = inputs + ops.transpose(self.token_mlp(across_patches), (0, 2, 1))
        return x + self.channel_mlp(self.norm(x))

    def get_config(self):
        return {
            **super().get_config(),
            "num_patches": self.num_patches,
            "hidden_units": self.hidden_units,
            "dropout_rate": self.dropout_rate,
        }


@keras.saving.register_keras_serializable(package="kerasio_mixer")
class FNetLayer(layers.Layer):
    """The real part of a 2-D Fourier transform of the patches, added back and normalised,
    then a feed-forward network, added back and normalised."""

    def __init__(self, embedding_dim, dropout_rate=0.2, **kwargs):
        super().__init__(**kwargs)
        self.embedding_dim = embedding_dim
        self.dropout_rate = dropout_rate
        self.ffn = keras.Sequential(
            [
                layers.Dense(embedding_dim, activation="gelu"),
                layers.Dropout(dropout_rate),
                layers.Dense(embedding_dim),
            ]
        )
        self.normalize1 = layers.LayerNormalization(epsilon=1e-6)
        self.normalize2 = layers.LayerNormalization(epsilon=1e-6)

    def build(self, input_shape):
        self.ffn.build(input_shape)
        self.normalize1.build(input_shape)
        self.normalize2.build(input_shape)
        self.built = True

    def call(self, inputs):
        real = ops.fft2((inputs, ops.zeros_like(inputs)))[0]
        x = self.normalize1(real + inputs)
        return self.normalize2(x + self.ffn(x))

    def get_config(self):
        return {
            **super().get_config(),
            "embedding_dim": self.embedding_dim,
            "dropout_rate": self.dropout_rate,
        }


@keras.saving.register_keras_serializable(package="kerasio_mixer")
class gMLPLayer(layers.Layer):  # noqa: N801  the example's name
    """Channel projection to twice the width (GELU), a spatial gating unit (half the channels
    normalised, projected across patches, multiplying the other half), projection back, skip."""

    def __init__(self, num_patches, embedding_dim, dropout_rate=0.2, **kwargs):
        super().__init__(**kwargs)
        self.num_patches = num_patches
        self.embedding_dim = embedding_dim
        self.dropout_rate = dropout_rate
        self.channel_projection1 = keras.Sequential(
            [layers.Dense(embedding_dim * 2, activation="gelu"), layers.Dropout(dropout_rate)]
        )
        self.channel_projection2 = layers.Dense(embedding_dim)
        self.spatial_projection = layers.Dense(num_patches, bias_initializer="Ones")
        self.normalize1 = layers.LayerNormalization(epsilon=1e-6)
        self.normalize2 = layers.LayerNormalization(epsilon=1e-6)

    def build(self, input_shape):
        self.normalize1.build(input_shape)
        self.channel_projection1.build(input_shape)
        self.normalize2.build((None, self.num_patches, self.embedding_dim))
        self.spatial_projection.build((None, self.embedding_dim, self.num_patches))
        self.channel_projection2.build((None, self.num_patches, self.embedding_dim))
        self.built = True

    def call(self, inputs):
        x = self.channel_projection1(self.normalize1(inputs))
        u, v = ops.split(x, 2, axis=2)
        v = ops.transpose(self.normalize2(v), (0, 2, 1))
        gated = u * ops.transpose(self.spatial_projection(v), (0, 2, 1))
        return inputs + self.channel_projection2(gated)

    def get_config(self):
        return {
            **super().get_config(),
            "num_patches": self.num_patches,
            "embedding_dim": self.embedding_dim,
            "dropout_rate": self.dropout_rate,
        }


@keras.saving.register_keras_serializable(package="kerasio_mixer")
class PositionEmbedding(layers.Layer):
    """build_classifier(positional_encoding=True): an Embedding of the patch positions added."""

    def __init__(self, num_patches, embedding_dim, **kwargs):
        super().__init__(**kwargs)
        self.num_patches = num_patches
        self.embedding_dim = embedding_dim
        self.embedding = layers.Embedding(num_patches, embedding_dim)

    def call(self, x):
        return x + self.embedding(ops.arange(self.num_patches))

    def get_config(self):
        return {
            **super().get_config(),
            "num_patches": self.num_patches,
            "embedding_dim": self.embedding_dim,
        }


def load(n=600, classes=100, seed=0):
    """CIFAR-100's shape (32x32x3, 0..255, 100 classes), synthetic: a random picture per class
    plus noise; 80% train, 20% test."""
    rng = np.random.default_rng(seed)
    pictures = rng.uniform(0, 255, (classes, 32, 32, 3))
    y = rng.permutation(np.arange(n) % classes)
    x = np.clip(pictures[y] + rng.normal(0, 60, (n, 32, 32, 3)), 0, 255).astype("float32")
    cut = int(n * 0.8)
    return {"x_train": x[:cut], "y_train": y[:cut], "x_test": x[cut:], "y_test": y[cut:]}
