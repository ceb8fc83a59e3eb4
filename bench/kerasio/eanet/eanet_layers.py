"""keras.io "Image classification with EANet (External Attention Transformer)" (vision/eanet):
patch extraction, patch embedding and external attention as layers; CIFAR-100-shaped data."""

import keras
import numpy as np
from keras import layers, ops


@keras.saving.register_keras_serializable(package="kerasio_eanet")
class PatchExtract(layers.Layer):
    def __init__(self, patch_size, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = patch_size

    def call(self, images):
        cut = ops.image.extract_patches(images, size=self.patch_size)
        return ops.reshape(cut, (-1, cut.shape[1] * cut.shape[2], cut.shape[3]))

    def get_config(self):
        return {**super().get_config(), "patch_size": self.patch_size}


@keras.saving.register_keras_serializable(package="kerasio_eanet")
class PatchEmbedding(layers.Layer):
    def __init__(self, num_patch, embed_dim, **kwargs):
        super().__init__(**kwargs)
        self.num_patch = num_patch
        self.embed_dim = embed_dim
        self.proj = layers.Dense(embed_dim)
        self.pos_embed = layers.Embedding(num_patch, embed_dim)

    def call(self, patches):
        return self.proj(patches) + self.pos_embed(ops.arange(self.num_patch))

    def get_config(self):
        return {**super().get_config(), "num_patch": self.num_patch, "embed_dim": self.embed_dim}


@keras.saving.register_keras_serializable(package="kerasio_eanet")
class ExternalAttention(layers.Layer):
    """The example's external_attention(): two small shared memories (M_k, M_v) as Dense layers
    over num_heads * dim_coefficient heads, softmax over patches then double normalisation."""

    def __init__(
        self,
        dim,
        num_heads,
        dim_coefficient=4,
        attention_dropout=0.0,
        projection_dropout=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.options = {
            "dim": dim,
            "num_heads": num_heads,
            "dim_coefficient": dim_coefficient,
            "attention_dropout": attention_dropout,
            "projection_dropout": projection_dropout,
        }
        self.heads = num_heads * dim_coefficient
        self.width = dim * dim_coefficient
        self.expand = layers.Dense(self.width)
        self.memory_k = layers.Dense(dim // dim_coefficient)
        self.memory_v = layers.Dense(self.width // self.heads)
        self.project = layers.Dense(dim)
        self.attention_drop = layers.Dropout(attention_dropout)
        self.projection_drop = layers.Dropout(projection_dropout)

    def call(self, x, training=None):
        patches = x.shape[1]
        x = self.expand(x)
        x = ops.reshape(x, (-1, patches, self.heads, self.width // self.heads))
        x = ops.transpose(x, (0, 2, 1, 3))
        attention = ops.softmax(self.memory_k(x), axis=2)
        attention = attention / (1e-9 + ops.sum(attention, axis=-1, keepdims=True))
        attention = self.attention_drop(attention, training=training)
        x = ops.transpose(self.memory_v(attention), (0, 2, 1, 3))
        x = ops.reshape(x, (-1, patches, self.width))
        return self.projection_drop(self.project(x), training=training)

    def get_config(self):
        return {**super().get_config(), **self.options}


def load(n=600, classes=100, seed=0):
    """CIFAR-100's shape (32x32x3, 0..255, 100 classes), synthetic: a random picture per class
    plus noise; 80% train, 20% test."""
    rng = np.random.default_rng(seed)
    pictures = rng.uniform(0, 255, (classes, 32, 32, 3))
    y = rng.permutation(np.arange(n) % classes)
    x = np.clip(pictures[y] + rng.normal(0, 60, (n, 32, 32, 3)), 0, 255).astype("float32")
    cut = int(n * 0.8)
    return {"x_train": x[:cut], "y_train": y[:cut], "x_test": x[cut:], "y_test": y[cut:]}
