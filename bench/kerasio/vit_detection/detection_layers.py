"""keras.io "Object detection with Vision Transformers" (vision/object_detection_using_vision_
transformer): the Patches and PatchEncoder layers, and 224x224 images with one box each."""

import keras
import numpy as np
from keras import layers, ops


@keras.saving.register_keras_serializable(package="kerasio_detection")
class Patches(layers.Layer):
    def __init__(self, patch_size, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = patch_size

    def call(self, images):
        cut = ops.image.extract_patches(images, size=self.patch_size)
        return ops.reshape(cut, (-1, cut.shape[1] * cut.shape[2], cut.shape[3]))

    def get_config(self):
        return {**super().get_config(), "patch_size": self.patch_size}


@keras.saving.register_keras_serializable(package="kerasio_detection")
class PatchEncoder(layers.Layer):
    def __init__(self, num_patches, projection_dim, **kwargs):
        super().__init__(**kwargs)
        self.num_patches = num_patches
        self.projection_dim = projection_dim
        self.projection = layers.Dense(projection_dim)
        self.position_embedding = layers.Embedding(num_patches, projection_dim)

    def call(self, patches):
        return self.projection(patches) + self.position_embedding(ops.arange(self.num_patches))

    def get_config(self):
        return {
            **super().get_config(),
            "num_patches": self.num_patches,
            "projection_dim": self.projection_dim,
        }


def load(n=120, size=224, seed=0):
    """Caltech-101 airplanes' shape without the download: a bright rectangle on noise, the
    target its box (top-left x, y, bottom-right x, y) relative to the image; 80/20 split."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 120, (n, size, size, 3)).astype("float32")
    y = np.zeros((n, 4), "float32")
    for i in range(n):
        x0, y0 = rng.integers(0, size // 2, 2)
        w, h = rng.integers(size // 8, size // 2, 2)
        x[i, y0 : y0 + h, x0 : x0 + w] = 230
        y[i] = (x0 / size, y0 / size, (x0 + w) / size, (y0 + h) / size)
    cut = int(n * 0.8)
    return {"x_train": x[:cut], "y_train": y[:cut], "x_test": x[cut:], "y_test": y[cut:]}
