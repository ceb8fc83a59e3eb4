"""A focal loss as a Loss class (its arguments come from the spec) and a callback."""

import keras
from keras import ops


class FocalLoss(keras.losses.Loss):
    def __init__(self, gamma=2.0, name="focal_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.gamma = gamma

    def call(self, y_true, y_pred):
        y_pred = ops.clip(y_pred, 1e-7, 1 - 1e-7)
        return ops.sum(ops.power(1 - y_pred, self.gamma) * -y_true * ops.log(y_pred), axis=-1)

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma}


class StopAtAccuracy(keras.callbacks.Callback):
    def __init__(self, target=0.99):
        super().__init__()
        self.target = target

    def on_epoch_end(self, epoch, logs=None):
        if (logs or {}).get("val_accuracy", 0) >= self.target:
            self.model.stop_training = True
