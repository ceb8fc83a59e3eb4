"""keras.io "Traffic forecasting using graph neural networks and LSTM" (timeseries/timeseries_
traffic_forecasting): the GraphConv and LSTMGC layers, and PeMSD7-shaped speeds of 26 roads."""

import keras
import numpy as np
from keras import layers, ops

ROUTES = 26


def _road_graph(routes=ROUTES, sigma2=0.1, epsilon=0.5, seed=0):
    """The example's adjacency rule (a Gaussian kernel on squared distances, thresholded) on
    synthetic road distances: roads on a line, 0 to 2,500 m apart between neighbours."""
    rng = np.random.default_rng(seed)
    where = np.cumsum(rng.uniform(0, 2500, routes))
    distances = np.abs(where[:, None] - where[None, :]) / 10000.0
    adjacency = (np.exp(-(distances**2) / sigma2) >= epsilon) * (1 - np.eye(routes))
    return np.where(adjacency == 1)


NODES, NEIGHBOURS = _road_graph()


@keras.saving.register_keras_serializable(package="kerasio_traffic")
class GraphConv(layers.Layer):
    """Each node's features times W, beside (concat) or plus (add) the mean of its neighbours'
    features times the same W."""

    def __init__(
        self,
        in_feat,
        out_feat,
        aggregation_type="mean",
        combination_type="concat",
        activation=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.options = {
            "in_feat": in_feat,
            "out_feat": out_feat,
            "aggregation_type": aggregation_type,
            "combination_type": combination_type,
            "activation": activation,
        }
        self.weight = self.add_weight(
            shape=(in_feat, out_feat), initializer="glorot_uniform", name="weight"
        )
        self.activation = layers.Activation(activation)

    def call(self, features):  # (nodes, batch, steps, in_feat)
        own = ops.matmul(features, self.weight)
        gathered = ops.take(features, NEIGHBOURS, axis=0)
        summed = ops.segment_sum(gathered, NODES, num_segments=ROUTES)
        if self.options["aggregation_type"] == "mean":
            counts = np.maximum(np.bincount(NODES, minlength=ROUTES), 1).astype("float32")
            summed = summed / counts.reshape(-1, 1, 1, 1)
        messages = ops.matmul(summed, self.weight)
        if self.options["combination_type"] == "concat":
            return self.activation(ops.concatenate([own, messages], axis=-1))
        return self.activation(own + messages)

    def get_config(self):
        return {**super().get_config(), **self.options}


@keras.saving.register_keras_serializable(package="kerasio_traffic")
class LSTMGC(layers.Layer):
    """GraphConv over the roads, then one LSTM per road over time and a Dense to the horizon:
    (batch, steps, roads, in_feat) -> (batch, output_seq_len, roads)."""

    def __init__(self, in_feat, out_feat, lstm_units, input_seq_len, output_seq_len, **kwargs):
        super().__init__(**kwargs)
        self.options = {
            "in_feat": in_feat,
            "out_feat": out_feat,
            "lstm_units": lstm_units,
            "input_seq_len": input_seq_len,
            "output_seq_len": output_seq_len,
        }
        self.graph_conv = GraphConv(in_feat, out_feat)
        self.lstm = layers.LSTM(lstm_units, activation="relu")
        self.dense = layers.Dense(output_seq_len)

    def build(self, input_shape):
        steps = input_shape[1]
        self.lstm.build((None, steps, 2 * self.options["out_feat"]))
        self.dense.build((None, self.options["lstm_units"]))
        self.built = True

    def call(self, inputs):
        by_node = ops.transpose(inputs, (2, 0, 1, 3))
        convolved = self.graph_conv(by_node)  # (nodes, batch, steps, 2 * out_feat)
        steps, width = convolved.shape[2], convolved.shape[3]
        out = self.dense(self.lstm(ops.reshape(convolved, (-1, steps, width))))
        out = ops.reshape(out, (ROUTES, -1, self.options["output_seq_len"]))
        return ops.transpose(out, (1, 2, 0))

    def get_config(self):
        return {**super().get_config(), **self.options}


def load(n=400, steps=12, horizon=3, seed=0):
    """Road speeds shaped as PeMSD7's 26 chosen roads: daily waves plus noise, normalised with
    the training part's mean and std; windows of 12 steps, targets the next 3 (multi-horizon),
    split in time order 60/20/20 into train, validation and test."""
    rng = np.random.default_rng(seed)
    total = n + steps + horizon
    t = np.arange(total)[:, None]
    phase = rng.uniform(0, 2 * np.pi, ROUTES)
    speeds = 60 + 10 * np.sin(2 * np.pi * t / 288 * 8 + phase) + rng.normal(0, 2, (total, ROUTES))
    train_end = int(total * 0.6)
    mean, std = speeds[:train_end].mean(0), speeds[:train_end].std(0)
    speeds = ((speeds - mean) / std).astype("float32")
    x = np.stack([speeds[i : i + steps] for i in range(n)])[..., None]
    y = np.stack([speeds[i + steps : i + steps + horizon] for i in range(n)])
    a, b = int(n * 0.6), int(n * 0.8)
    return {
        "x_train": x[:a],
        "y_train": y[:a],
        "x_val": x[a:b],
        "y_val": y[a:b],
        "x_test": x[b:],
        "y_test": y[b:],
    }
