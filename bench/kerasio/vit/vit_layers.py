"""keras.io "Image classification with Vision Transformer" (vision/image_classification_with_
vision_transformer): the example's two layers, and CIFAR-100-shaped synthetic data."""

import keras
import numpy as np
from keras import layers, ops


@keras.saving.register_keras_serializable(package="kerasio_vit")
class Patches(layers.Layer):
    """Cuts each image into patch_size x patch_size patches: (batch, patches, pixels)."""

    def __init__(self, patch_size, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = patch_size

    def call(self, images):
        cut = ops.image.extract_patches(images, size=self.patch_size)
        rows, cols, depth = cut.shape[1], cut.shape[2], cut.shape[3]
        return ops.reshape(cut, (-1, rows * cols, depth))

    def get_config(self):
        return {**super().get_config(), "patch_size": self.patch_size}


@keras.saving.register_keras_serializable(package="kerasio_vit")
class PatchEncoder(layers.Layer):
    """A linear projection of each patch plus a learned embedding of its position."""

    def __init__(self, num_patches, projection_dim, **kwargs):
        super().__init__(**kwargs)
        self.num_patches = num_patches
        self.projection_dim = projection_dim
        self.projection = layers.Dense(projection_dim)
        self.position_embedding = layers.Embedding(num_patches, projection_dim)

    def call(self, patches):
        where = ops.expand_dims(ops.arange(self.num_patches), axis=0)
        return self.projection(patches) + self.position_embedding(where)

    def get_config(self):
        return {
            **super().get_config(),
            "num_patches": self.num_patches,
            "projection_dim": self.projection_dim,
        }


def load(n=600, classes=100, seed=0):
    """CIFAR-100's shape (32x32x3 pixels in 0..255, 100 classes) without the download: each
    class is a random picture, each sample that picture plus noise; 80% train, 20% test."""
    rng = np.random.default_rng(seed)
    pictures = rng.uniform(0, 255, (classes, 32, 32, 3))
    # blocks of one sample per class, each block shuffled: any first 100 samples hold every
    # class, so a small n still gives the training split all of them
    y = np.concatenate([rng.permutation(classes) for _ in range(-(-n // classes))])[:n]
    x = np.clip(pictures[y] + rng.normal(0, 60, (n, 32, 32, 3)), 0, 255).astype("float32")
    cut = int(n * 0.8)
    return {"x_train": x[:cut], "y_train": y[:cut], "x_test": x[cut:], "y_test": y[cut:]}
