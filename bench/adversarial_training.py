"""Adversarial training on TensorFlow: dlrun against a compiled hand-written loop, side by side.

Both train the same dense net (784-128-10, adam, batch 64) on the same mnist_5k split (dlrun's
own load_data: 3,200 training and 800 validation images) with PGD (eps 0.1 of the input range,
3 steps, step 2.5 * eps / steps, random start, each sample's most damaging iterate) on a random
half of every batch, and measure after each epoch the clean validation accuracy and the
accuracy on PGD examples of the validation images. The hand-written loop is one tf.function
per training step (attack and update) and one per validation batch: the speed a user gets by
writing it out. dlrun runs `dlrun train` in this process. Seconds per epoch are the median over
epochs 2.. (epoch 1 traces and compiles); the two sides alternate `--rounds` times.

Usage: python bench/adversarial_training.py [--epochs 4] [--rounds 2]
Prints one JSON line per side and round, then the ratio dlrun / hand-written.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["KERAS_BACKEND"] = "tensorflow"
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SPEC = """\
name: advbench
seed: 0
data: {{dataset: mnist_5k, scale: 255, flatten: true}}
model:
  layers:
    - {{type: Dense, units: 128, activation: relu}}
    - {{type: Dense, units: 10, activation: softmax}}
training:
  batch_size: 64
  epochs: {epochs}
  validation_split: 0.2
  adversarial: {{method: pgd, eps: 0.1, ratio: 0.5, steps: 3}}
"""
EPS, STEPS, RATIO, BATCH = 0.1, 3, 0.5, 64


def dlrun_side(epochs: int) -> dict:
    import pandas as pd

    from dlrun import api

    with tempfile.TemporaryDirectory() as folder:
        spec = Path(folder) / "spec.yaml"
        spec.write_text(SPEC.format(epochs=epochs))
        result = api.train(spec, runs_dir=Path(folder) / "runs", verbose=False)
        rows = pd.read_csv(result.run_dir / "history.csv")
    return {
        "side": "dlrun",
        "status": str(result.status),
        "epoch_seconds": [round(v, 3) for v in rows["epoch_seconds"]],
        "val_accuracy": round(float(rows["val_accuracy"].iloc[-1]), 4),
        "val_adversarial_accuracy": round(float(rows["val_adversarial_accuracy"].iloc[-1]), 4),
    }


def hand_side(epochs: int) -> dict:
    import keras
    import tensorflow as tf

    from dlrun.data.arrays import load_data
    from dlrun.spec.loading import load_spec

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "spec.yaml"
        path.write_text(SPEC.format(epochs=epochs))
        data = load_data(load_spec(path))
    keras.utils.set_random_seed(0)
    low = float(min(data.x_train.min(), data.x_test.min()))
    high = float(max(data.x_train.max(), data.x_test.max()))
    eps, step = EPS * (high - low), 2.5 * EPS / STEPS * (high - low)
    model = keras.Sequential(
        [
            keras.Input(data.x_train.shape[1:]),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    optimizer = keras.optimizers.Adam()
    per_sample = keras.losses.CategoricalCrossentropy(reduction=None)

    @tf.autograph.experimental.do_not_convert  # a plain Python loop, unrolled when traced
    def pgd(x, y):
        lower, upper = tf.maximum(x - eps, low), tf.minimum(x + eps, high)
        adv = tf.clip_by_value(x + tf.random.uniform(tf.shape(x), -eps, eps), lower, upper)
        best, best_loss = None, None
        for _ in range(STEPS):
            with tf.GradientTape() as tape:
                tape.watch(adv)
                loss = per_sample(y, model(adv, training=False))
                total = tf.reduce_sum(loss)
            best, best_loss = keep_worse(best, best_loss, adv, loss)
            gradient = tape.gradient(total, adv)
            adv = tf.clip_by_value(adv + step * tf.sign(gradient), lower, upper)
        return keep_worse(best, best_loss, adv, per_sample(y, model(adv, training=False)))[0]

    def keep_worse(best, best_loss, adv, loss):
        if best is None:
            return adv, loss
        worse = loss > best_loss
        return tf.where(worse[:, None], adv, best), tf.where(worse, loss, best_loss)

    @tf.function
    def train_step(x, y):
        n = tf.shape(x)[0]
        count = tf.cast(tf.round(RATIO * tf.cast(n, tf.float32)), tf.int32)
        chosen = tf.random.shuffle(tf.range(n))[:count]
        attacked = pgd(tf.gather(x, chosen), tf.gather(y, chosen))
        x = tf.tensor_scatter_nd_update(x, chosen[:, None], attacked)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(per_sample(y, model(x, training=True)))
        weights = model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights, strict=True))
        return loss

    @tf.function
    def validate(x, y):
        truth = tf.argmax(y, -1)
        clean = tf.reduce_sum(tf.cast(tf.argmax(model(x), -1) == truth, tf.int32))
        attacked = tf.argmax(model(pgd(x, y)), -1) == truth
        return clean, tf.reduce_sum(tf.cast(attacked, tf.int32))

    train = tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train))
    val = tf.data.Dataset.from_tensor_slices((data.x_val, data.y_val)).batch(BATCH)
    seconds, clean, attacked = [], 0, 0
    for epoch in range(epochs):
        started = time.perf_counter()
        for x, y in train.shuffle(len(data.x_train), seed=epoch).batch(BATCH):
            train_step(x, y)
        clean = attacked = 0
        for x, y in val:
            c, a = validate(x, y)
            clean, attacked = clean + int(c), attacked + int(a)
        seconds.append(round(time.perf_counter() - started, 3))
    count = len(data.x_val)
    return {
        "side": "hand-written",
        "epoch_seconds": seconds,
        "val_accuracy": round(clean / count, 4),
        "val_adversarial_accuracy": round(attacked / count, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    medians = {"dlrun": [], "hand-written": []}
    for _ in range(args.rounds):
        for side in (hand_side, dlrun_side):
            found = side(args.epochs)
            found["median_epoch_seconds"] = statistics.median(found["epoch_seconds"][1:])
            medians[found["side"]].append(found["median_epoch_seconds"])
            print(json.dumps(found), flush=True)
    dlrun, hand = statistics.median(medians["dlrun"]), statistics.median(medians["hand-written"])
    print(json.dumps({"dlrun_s": dlrun, "hand_written_s": hand, "ratio": round(dlrun / hand, 2)}))


if __name__ == "__main__":
    main()
