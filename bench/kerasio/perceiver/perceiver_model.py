"""keras.io "Image classification with Perceiver" (vision/perceiver_image_classification): the
Perceiver as a keras.Model subclass with its own call (a learned latent array, cross-attention
and a latent transformer applied twice with shared weights); CIFAR-100-shaped data."""

import keras
import numpy as np
from keras import layers, ops


def feed_forward(hidden_units, dropout_rate):
    stack = [layers.Dense(units, activation="gelu") for units in hidden_units[:-1]]
    return keras.Sequential([*stack, layers.Dense(hidden_units[-1]), layers.Dropout(dropout_rate)])


@keras.saving.register_keras_serializable(package="kerasio_perceiver")
class Patches(layers.Layer):
    def __init__(self, patch_size, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = patch_size

    def call(self, images):
        cut = ops.image.extract_patches(images, size=self.patch_size)
        return ops.reshape(cut, (-1, cut.shape[1] * cut.shape[2], cut.shape[3]))

    def get_config(self):
        return {**super().get_config(), "patch_size": self.patch_size}


@keras.saving.register_keras_serializable(package="kerasio_perceiver")
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


def cross_attention(latent_dim, data_dim, projection_dim, ffn_units, dropout_rate):
    """Queries from the latent array, keys and values from the encoded image."""
    latent_in = keras.Input((latent_dim, projection_dim))
    data_in = keras.Input((data_dim, projection_dim))
    latent = layers.LayerNormalization(epsilon=1e-6)(latent_in)
    data = layers.LayerNormalization(epsilon=1e-6)(data_in)
    query = layers.Dense(projection_dim)(latent)
    key = layers.Dense(projection_dim)(data)
    value = layers.Dense(projection_dim)(data)
    attended = layers.Attention(use_scale=True, dropout=0.1)([query, key, value])
    attended = layers.LayerNormalization(epsilon=1e-6)(layers.Add()([attended, latent]))
    out = layers.Add()([feed_forward(ffn_units, dropout_rate)(attended), attended])
    return keras.Model([latent_in, data_in], out)


def latent_transformer(latent_dim, projection_dim, num_heads, blocks, ffn_units, dropout_rate):
    inputs = keras.Input((latent_dim, projection_dim))
    x0 = inputs
    for _ in range(blocks):
        x1 = layers.LayerNormalization(epsilon=1e-6)(x0)
        attended = layers.MultiHeadAttention(
            num_heads=num_heads, key_dim=projection_dim, dropout=0.1
        )(x1, x1)
        x2 = layers.Add()([attended, x0])
        x3 = feed_forward(ffn_units, dropout_rate)(layers.LayerNormalization(epsilon=1e-6)(x2))
        x0 = layers.Add()([x3, x2])
    return keras.Model(inputs, x0)


@keras.saving.register_keras_serializable(package="kerasio_perceiver")
class Perceiver(keras.Model):
    def __init__(
        self,
        patch_size=2,
        data_dim=1024,
        latent_dim=256,
        projection_dim=256,
        num_heads=4,
        num_transformer_blocks=4,
        ffn_units=(256, 256),
        dropout_rate=0.1,
        num_iterations=2,
        classifier_units=(256, 100),
        image_size=64,
        input_shape=(32, 32, 3),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.options = {
            "patch_size": patch_size,
            "data_dim": data_dim,
            "latent_dim": latent_dim,
            "projection_dim": projection_dim,
            "num_heads": num_heads,
            "num_transformer_blocks": num_transformer_blocks,
            "ffn_units": list(ffn_units),
            "dropout_rate": dropout_rate,
            "num_iterations": num_iterations,
            "classifier_units": list(classifier_units),
            "image_size": image_size,
            "input_shape": list(input_shape),
        }
        self.augmentation = keras.Sequential(  # given its input, so built here, outside call
            [
                keras.Input(tuple(input_shape)),
                layers.Resizing(image_size, image_size),
                layers.RandomFlip("horizontal"),
                layers.RandomRotation(factor=0.02),
                layers.RandomZoom(height_factor=0.2, width_factor=0.2),
            ],
            name="data_augmentation",
        )
        self.latent_array = self.add_weight(
            shape=(latent_dim, projection_dim), initializer="random_normal", name="latent_array"
        )
        self.patcher = Patches(patch_size)
        self.patch_encoder = PatchEncoder(data_dim, projection_dim)
        self.cross_attention = cross_attention(
            latent_dim, data_dim, projection_dim, ffn_units, dropout_rate
        )
        self.transformer = latent_transformer(
            latent_dim, projection_dim, num_heads, num_transformer_blocks, ffn_units, dropout_rate
        )
        self.pooling = layers.GlobalAveragePooling1D()
        self.head = feed_forward(classifier_units, dropout_rate)

    def call(self, inputs):
        encoded = self.patch_encoder(self.patcher(self.augmentation(inputs)))
        latent = ops.expand_dims(self.latent_array, 0)
        latent = ops.broadcast_to(latent, (ops.shape(encoded)[0], *latent.shape[1:]))
        for _ in range(self.options["num_iterations"]):
            latent = self.transformer(self.cross_attention([latent, encoded]))
        return self.head(self.pooling(latent))

    def get_config(self):
        return dict(self.options)


@keras.saving.register_keras_serializable(package="kerasio_perceiver")
class LAMB(keras.optimizers.Lamb):
    """The example's tfa.optimizers.LAMB is Keras 3's Lamb. Named here because dlrun's
    optimizer lookup goes through keras.optimizers.get, which does not know "lamb"."""


def build(**options):
    """The example's Preceiver with the first layer of its data_augmentation, Normalization,
    moved in front of it: the same computation, and a Normalization at the model's top level
    is adapted on the training images by dlrun as the example adapts it."""
    inputs = keras.Input(tuple(options.get("input_shape", (32, 32, 3))))
    return keras.Model(inputs, Perceiver(**options)(layers.Normalization()(inputs)))


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
