"""keras.io "Image classification with Swin Transformers" (vision/swin_transformers): patch
extraction and embedding, the (shifted) window attention block and patch merging as layers;
CIFAR-100-shaped data."""

import keras
import numpy as np
from keras import layers, ops


def _windows(x, size):
    """(batch, H, W, C) -> (batch * windows, size, size, C)."""
    _, height, width, channels = x.shape
    x = ops.reshape(x, (-1, height // size, size, width // size, size, channels))
    return ops.reshape(ops.transpose(x, (0, 1, 3, 2, 4, 5)), (-1, size, size, channels))


def _unwindow(windows, size, height, width, channels):
    x = ops.reshape(windows, (-1, height // size, width // size, size, size, channels))
    return ops.reshape(ops.transpose(x, (0, 1, 3, 2, 4, 5)), (-1, height, width, channels))


@keras.saving.register_keras_serializable(package="kerasio_swin")
class DropPath(layers.Layer):
    """Drops a sample's residual branch with probability drop_prob. As in the example, whose
    DropPath takes no `training` argument, it does so in inference too, unless
    training_only is set."""

    def __init__(self, drop_prob=0.0, training_only=False, **kwargs):
        super().__init__(**kwargs)
        self.drop_prob = drop_prob
        self.training_only = training_only
        self.seed_generator = keras.random.SeedGenerator(0)

    def call(self, x, training=None):
        if not self.drop_prob or (self.training_only and not training):
            return x
        shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        keep = 1 - self.drop_prob
        mask = ops.floor(keep + keras.random.uniform(shape, seed=self.seed_generator))
        return x / keep * mask

    def get_config(self):
        return {
            **super().get_config(),
            "drop_prob": self.drop_prob,
            "training_only": self.training_only,
        }


@keras.saving.register_keras_serializable(package="kerasio_swin")
class WindowAttention(layers.Layer):
    """Multi-head self-attention inside each window, plus a learned bias per relative position."""

    def __init__(self, dim, window_size, num_heads, qkv_bias=True, drop_rate=0.0, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
        self.qkv_bias, self.drop_rate = qkv_bias, drop_rate
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = layers.Dense(dim * 3, use_bias=qkv_bias)
        self.dropout = layers.Dropout(drop_rate)
        self.proj = layers.Dense(dim)
        size = window_size
        self.bias_table = self.add_weight(
            shape=((2 * size - 1) ** 2, num_heads), initializer="zeros", name="bias_table"
        )
        coords = np.stack(np.meshgrid(np.arange(size), np.arange(size), indexing="ij"))
        flat = coords.reshape(2, -1)
        relative = (flat[:, :, None] - flat[:, None, :]).transpose(1, 2, 0) + (size - 1)
        self.relative_index = (relative[:, :, 0] * (2 * size - 1) + relative[:, :, 1]).reshape(-1)

    def build(self, input_shape):
        self.qkv.build(input_shape)
        self.proj.build(input_shape)
        self.built = True

    def call(self, x, window_mask=None, training=None):
        _, tokens, channels = x.shape
        head = channels // self.num_heads
        qkv = ops.reshape(self.qkv(x), (-1, tokens, 3, self.num_heads, head))
        qkv = ops.transpose(qkv, (2, 0, 3, 1, 4))
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attention = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2)))
        bias = ops.take(self.bias_table, self.relative_index, axis=0)
        bias = ops.transpose(ops.reshape(bias, (tokens, tokens, -1)), (2, 0, 1))
        attention = attention + ops.expand_dims(bias, 0)
        if window_mask is not None:
            windows = window_mask.shape[0]
            attention = ops.reshape(attention, (-1, windows, self.num_heads, tokens, tokens))
            attention = attention + ops.expand_dims(ops.expand_dims(window_mask, 1), 0)
            attention = ops.reshape(attention, (-1, self.num_heads, tokens, tokens))
        attention = self.dropout(ops.softmax(attention, axis=-1), training=training)
        out = ops.reshape(
            ops.transpose(ops.matmul(attention, v), (0, 2, 1, 3)), (-1, tokens, channels)
        )
        return self.dropout(self.proj(out), training=training)


@keras.saving.register_keras_serializable(package="kerasio_swin")
class SwinTransformer(layers.Layer):
    """LN, (shifted) window attention, drop path, add; LN, GELU MLP, drop path, add."""

    def __init__(
        self,
        dim,
        num_patch,
        num_heads,
        window_size=7,
        shift_size=0,
        num_mlp=1024,
        qkv_bias=True,
        drop_rate=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.options = {
            "dim": dim,
            "num_patch": list(num_patch),
            "num_heads": num_heads,
            "window_size": window_size,
            "shift_size": shift_size,
            "num_mlp": num_mlp,
            "qkv_bias": qkv_bias,
            "drop_rate": drop_rate,
        }
        if min(num_patch) < window_size:
            shift_size, window_size = 0, min(num_patch)
        self.window, self.shift = window_size, shift_size
        self.norm1 = layers.LayerNormalization(epsilon=1e-5)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias, drop_rate)
        self.drop_path = DropPath(drop_rate)
        self.norm2 = layers.LayerNormalization(epsilon=1e-5)
        self.mlp = keras.Sequential(
            [
                layers.Dense(num_mlp),
                layers.Activation("gelu"),
                layers.Dropout(drop_rate),
                layers.Dense(dim),
                layers.Dropout(drop_rate),
            ]
        )
        self.mask = None
        if shift_size > 0:  # which shifted region each position came from; -100 across them
            height, width = num_patch
            regions = np.zeros((1, height, width, 1), "float32")
            cuts = (
                slice(0, -window_size),
                slice(-window_size, -shift_size),
                slice(-shift_size, None),
            )
            for count, (h, w) in enumerate((h, w) for h in cuts for w in cuts):
                regions[:, h, w, :] = count
            tiles = regions.reshape(
                1, height // window_size, window_size, width // window_size, window_size, 1
            ).transpose(0, 1, 3, 2, 4, 5)
            tiles = tiles.reshape(-1, window_size * window_size)
            difference = tiles[:, None, :] - tiles[:, :, None]
            self.mask = np.where(difference != 0, -100.0, 0.0).astype("float32")

    def build(self, input_shape):
        self.norm1.build(input_shape)
        self.attn.build((None, self.window * self.window, input_shape[-1]))
        self.norm2.build(input_shape)
        self.mlp.build(input_shape)
        self.built = True

    def call(self, x, training=None):
        height, width = self.options["num_patch"]
        channels = x.shape[-1]
        skip = x
        x = ops.reshape(self.norm1(x), (-1, height, width, channels))
        if self.shift:
            x = ops.roll(x, shift=(-self.shift, -self.shift), axis=(1, 2))
        windows = ops.reshape(_windows(x, self.window), (-1, self.window * self.window, channels))
        attended = self.attn(windows, window_mask=self.mask, training=training)
        attended = ops.reshape(attended, (-1, self.window, self.window, channels))
        x = _unwindow(attended, self.window, height, width, channels)
        if self.shift:
            x = ops.roll(x, shift=(self.shift, self.shift), axis=(1, 2))
        x = skip + self.drop_path(ops.reshape(x, (-1, height * width, channels)), training=training)
        return x + self.drop_path(self.mlp(self.norm2(x), training=training), training=training)

    def get_config(self):
        return {**super().get_config(), **self.options}


@keras.saving.register_keras_serializable(package="kerasio_swin")
class PatchExtract(layers.Layer):
    def __init__(self, patch_size, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = list(patch_size)

    def call(self, images):
        cut = ops.image.extract_patches(images, size=tuple(self.patch_size))
        return ops.reshape(cut, (-1, cut.shape[1] * cut.shape[2], cut.shape[3]))

    def get_config(self):
        return {**super().get_config(), "patch_size": self.patch_size}


@keras.saving.register_keras_serializable(package="kerasio_swin")
class PatchEmbedding(layers.Layer):
    def __init__(self, num_patch, embed_dim, **kwargs):
        super().__init__(**kwargs)
        self.num_patch, self.embed_dim = num_patch, embed_dim
        self.proj = layers.Dense(embed_dim)
        self.pos_embed = layers.Embedding(num_patch, embed_dim)

    def call(self, patches):
        return self.proj(patches) + self.pos_embed(ops.arange(self.num_patch))

    def get_config(self):
        return {**super().get_config(), "num_patch": self.num_patch, "embed_dim": self.embed_dim}


@keras.saving.register_keras_serializable(package="kerasio_swin")
class PatchMerging(layers.Layer):
    """Each 2x2 group of patches concatenated (4C) and projected to 2C, without bias."""

    def __init__(self, num_patch, embed_dim, **kwargs):
        super().__init__(**kwargs)
        self.num_patch, self.embed_dim = list(num_patch), embed_dim
        self.linear_trans = layers.Dense(2 * embed_dim, use_bias=False)

    def call(self, x):
        height, width = self.num_patch
        channels = x.shape[-1]
        x = ops.reshape(x, (-1, height, width, channels))
        parts = [x[:, 0::2, 0::2, :], x[:, 1::2, 0::2, :], x[:, 0::2, 1::2, :], x[:, 1::2, 1::2, :]]
        x = ops.reshape(
            ops.concatenate(parts, axis=-1), (-1, (height // 2) * (width // 2), 4 * channels)
        )
        return self.linear_trans(x)

    def get_config(self):
        return {**super().get_config(), "num_patch": self.num_patch, "embed_dim": self.embed_dim}


def load(n=600, classes=100, seed=0):
    """CIFAR-100's shape (32x32x3, 0..255, 100 classes), synthetic: a random picture per class
    plus noise; 80% train, 20% test."""
    rng = np.random.default_rng(seed)
    pictures = rng.uniform(0, 255, (classes, 32, 32, 3))
    y = rng.permutation(np.arange(n) % classes)
    x = np.clip(pictures[y] + rng.normal(0, 60, (n, 32, 32, 3)), 0, 255).astype("float32")
    cut = int(n * 0.8)
    return {"x_train": x[:cut], "y_train": y[:cut], "x_test": x[cut:], "y_test": y[cut:]}
