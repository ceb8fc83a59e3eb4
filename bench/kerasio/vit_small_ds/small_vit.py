"""keras.io "Train a Vision Transformer on small datasets" (vision/vit_small_ds): Shifted Patch
Tokenization, the patch encoder and Locality Self Attention, and the example's model builder
(its attention mask is a constant, so the whole model is a function); CIFAR-100-shaped data."""

import math

import keras
import numpy as np
from keras import layers, ops


@keras.saving.register_keras_serializable(package="kerasio_small_vit")
class ShiftedPatchTokenization(layers.Layer):
    """The image beside four copies shifted diagonally by half a patch, cut into patches,
    layer-normalised and projected (vanilla: the plain image, projected)."""

    def __init__(
        self,
        image_size=72,
        patch_size=6,
        num_patches=144,
        projection_dim=64,
        vanilla=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.options = {
            "image_size": image_size,
            "patch_size": patch_size,
            "num_patches": num_patches,
            "projection_dim": projection_dim,
            "vanilla": vanilla,
        }
        self.half = patch_size // 2
        self.flatten_patches = layers.Reshape((num_patches, -1))
        self.projection = layers.Dense(projection_dim)
        self.layer_norm = layers.LayerNormalization(epsilon=1e-6)

    def _shifted(self, images, crop_h, crop_w, shift_h, shift_w):
        size, half = self.options["image_size"], self.half
        crop = images[:, crop_h : crop_h + size - half, crop_w : crop_w + size - half, :]
        return ops.pad(crop, ((0, 0), (shift_h, half - shift_h), (shift_w, half - shift_w), (0, 0)))

    def call(self, images):
        half = self.half
        if not self.options["vanilla"]:
            images = ops.concatenate(
                [
                    images,
                    self._shifted(images, half, half, 0, 0),  # left-up
                    self._shifted(images, 0, half, half, 0),  # left-down
                    self._shifted(images, half, 0, 0, half),  # right-up
                    self._shifted(images, 0, 0, half, half),  # right-down
                ],
                axis=-1,
            )
        patches = ops.image.extract_patches(images, size=self.options["patch_size"])
        flat = self.flatten_patches(patches)
        if not self.options["vanilla"]:
            flat = self.layer_norm(flat)
        return self.projection(flat)

    def get_config(self):
        return {**super().get_config(), **self.options}


@keras.saving.register_keras_serializable(package="kerasio_small_vit")
class PatchEncoder(layers.Layer):
    def __init__(self, num_patches=144, projection_dim=64, **kwargs):
        super().__init__(**kwargs)
        self.num_patches = num_patches
        self.projection_dim = projection_dim
        self.position_embedding = layers.Embedding(num_patches, projection_dim)

    def call(self, tokens):
        return tokens + self.position_embedding(ops.arange(self.num_patches))

    def get_config(self):
        return {
            **super().get_config(),
            "num_patches": self.num_patches,
            "projection_dim": self.projection_dim,
        }


@keras.saving.register_keras_serializable(package="kerasio_small_vit")
class MultiHeadAttentionLSA(layers.MultiHeadAttention):
    """Multi-head attention with a learned temperature tau (initially sqrt(key_dim)) instead
    of the fixed scale."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.tau = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(math.sqrt(float(self._key_dim))),
            name="tau",
        )

    def _compute_attention(self, query, key, value, *args, **kwargs):
        # Keras scales the query by 1/sqrt(key_dim) itself: undo that, divide by tau.
        query = query * (math.sqrt(float(self._key_dim)) / self.tau)
        return super()._compute_attention(query, key, value, *args, **kwargs)


def build(
    vanilla=False,
    image_size=72,
    patch_size=6,
    projection_dim=64,
    num_heads=4,
    transformer_layers=8,
    mlp_head_units=(2048, 1024),
    num_classes=100,
):
    """The example's create_vit_classifier, with its augmentation in front."""
    num_patches = (image_size // patch_size) ** 2
    inputs = keras.Input((32, 32, 3))
    # The example's data_augmentation Sequential, its layers called one by one: the same
    # computation, and its Normalization is then a layer of the model that dlrun adapts on
    # the training images as the example does (data_augmentation.layers[0].adapt(x_train)).
    x = inputs
    for layer in (
        layers.Normalization(),
        layers.Resizing(image_size, image_size),
        layers.RandomFlip("horizontal"),
        layers.RandomRotation(factor=0.02),
        layers.RandomZoom(height_factor=0.2, width_factor=0.2),
    ):
        x = layer(x)
    tokenizer = ShiftedPatchTokenization(
        image_size, patch_size, num_patches, projection_dim, vanilla
    )
    tokens = tokenizer(x)
    encoded = PatchEncoder(num_patches, projection_dim)(tokens)
    mask = ops.cast(ops.expand_dims(1 - ops.eye(num_patches), 0), "int8")
    for _ in range(transformer_layers):
        x1 = layers.LayerNormalization(epsilon=1e-6)(encoded)
        if vanilla:
            attended = layers.MultiHeadAttention(
                num_heads=num_heads, key_dim=projection_dim, dropout=0.1
            )(x1, x1)
        else:
            attended = MultiHeadAttentionLSA(
                num_heads=num_heads, key_dim=projection_dim, dropout=0.1
            )(x1, x1, attention_mask=mask)
        x2 = layers.Add()([attended, encoded])
        x3 = layers.LayerNormalization(epsilon=1e-6)(x2)
        for units in (projection_dim * 2, projection_dim):
            x3 = layers.Dropout(0.1)(layers.Dense(units, activation="gelu")(x3))
        encoded = layers.Add()([x3, x2])
    x = layers.LayerNormalization(epsilon=1e-6)(encoded)
    x = layers.Dropout(0.5)(layers.Flatten()(x))
    for units in mlp_head_units:
        x = layers.Dropout(0.5)(layers.Dense(units, activation="gelu")(x))
    return keras.Model(inputs, layers.Dense(num_classes)(x))


def load(n=600, classes=100, seed=0):
    """CIFAR-100's shape (32x32x3, 0..255, 100 classes), synthetic: a random picture per class
    plus noise; 80% train, 20% test."""
    rng = np.random.default_rng(seed)
    pictures = rng.uniform(0, 255, (classes, 32, 32, 3))
    # blocks of one sample per class, each block shuffled: any first 100 samples hold every
    # class, so a small n still gives the training split all of them
    y = np.concatenate([rng.permutation(classes) for _ in range(-(-n // classes))])[:n]
    x = np.clip(pictures[y] + rng.normal(0, 60, (n, 32, 32, 3)), 0, 255).astype("float32")
    cut = int(n * 0.8)
    return {"x_train": x[:cut], "y_train": y[:cut], "x_test": x[cut:], "y_test": y[cut:]}
