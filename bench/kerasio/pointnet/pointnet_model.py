"""keras.io "Point cloud classification with PointNet" (vision/pointnet): the example's model
builder with its own OrthogonalRegularizer on the T-nets; ModelNet10-shaped point clouds."""

import keras
import numpy as np
from keras import layers, ops


@keras.saving.register_keras_serializable(package="kerasio_pointnet")
class OrthogonalRegularizer(keras.regularizers.Regularizer):
    """Pushes a T-net's k x k transform towards an orthogonal matrix: l2reg * |X X^T - I|^2."""

    def __init__(self, num_features, l2reg=0.001):
        self.num_features = num_features
        self.l2reg = l2reg

    def __call__(self, x):
        k = self.num_features
        x = ops.reshape(x, (-1, k, k))
        xxt = ops.matmul(x, ops.transpose(x, (0, 2, 1)))
        return ops.sum(self.l2reg * ops.square(xxt - ops.eye(k)))

    def get_config(self):
        return {"num_features": self.num_features, "l2reg": self.l2reg}


@keras.saving.register_keras_serializable(package="kerasio_pointnet")
class PointJitter(layers.Layer):
    """The example's tf.data augmentation as a layer, in training only: every coordinate moved
    by uniform(-amount, amount). (Its other step, shuffling the points' order, changes nothing
    a PointNet computes: every layer is per point up to the max pooling.)"""

    def __init__(self, amount, **kwargs):
        super().__init__(**kwargs)
        self.amount = amount
        self.seed_generator = keras.random.SeedGenerator(0)

    def call(self, points, training=None):
        if not training:
            return points
        noise = keras.random.uniform(
            ops.shape(points), -self.amount, self.amount, seed=self.seed_generator
        )
        return points + noise

    def get_config(self):
        return {**super().get_config(), "amount": self.amount}


def conv_bn(x, filters):
    x = layers.Conv1D(filters, kernel_size=1, padding="valid")(x)
    return layers.Activation("relu")(layers.BatchNormalization(momentum=0.0)(x))


def dense_bn(x, filters):
    x = layers.Dense(filters)(x)
    return layers.Activation("relu")(layers.BatchNormalization(momentum=0.0)(x))


def tnet(inputs, num_features):
    x = conv_bn(inputs, 32)
    x = conv_bn(x, 64)
    x = conv_bn(x, 512)
    x = layers.GlobalMaxPooling1D()(x)
    x = dense_bn(x, 256)
    x = dense_bn(x, 128)
    x = layers.Dense(
        num_features * num_features,
        kernel_initializer="zeros",
        bias_initializer=keras.initializers.Constant(np.eye(num_features).flatten()),
        activity_regularizer=OrthogonalRegularizer(num_features),
    )(x)
    transform = layers.Reshape((num_features, num_features))(x)
    return layers.Dot(axes=(2, 1))([inputs, transform])


def build(num_points=2048, num_classes=10, jitter=0.0):
    """The example's model; jitter > 0 puts its training-time jitter in front as a layer."""
    inputs = keras.Input((num_points, 3))
    x = PointJitter(jitter)(inputs) if jitter else inputs
    x = tnet(x, 3)
    x = conv_bn(x, 32)
    x = conv_bn(x, 32)
    x = tnet(x, 32)
    x = conv_bn(x, 32)
    x = conv_bn(x, 64)
    x = conv_bn(x, 512)
    x = layers.GlobalMaxPooling1D()(x)
    x = layers.Dropout(0.3)(dense_bn(x, 256))
    x = layers.Dropout(0.3)(dense_bn(x, 128))
    outputs = layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="pointnet")


def load(n=200, points=2048, classes=10, seed=0):
    """ModelNet10's shape without the download: 2,048 points of one of 10 random shapes (a
    stretched, jittered point set per class); 80/20 split."""
    rng = np.random.default_rng(seed)
    shapes = rng.normal(size=(classes, points, 3)) * rng.uniform(0.3, 1.5, (classes, 1, 3))
    y = rng.permutation(np.arange(n) % classes)
    x = (shapes[y] + rng.normal(0, 0.05, (n, points, 3))).astype("float32")
    cut = int(n * 0.8)
    return {"x_train": x[:cut], "y_train": y[:cut], "x_test": x[cut:], "y_test": y[cut:]}
