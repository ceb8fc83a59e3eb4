"""dlrun on JAX against the same nets written by hand in Keras on JAX, on the GPU machine.

One call (under 8 minutes) on the GPU machine, from the repository root:

    bash bench/gpu/run.sh            # installs the carried wheels, then runs this file

The lecture's four nets (configs/mnist_{dense,dropout,batchnorm,cnn}.yaml) on 60,000
MNIST-sized images (synthetic: nothing can be downloaded there; throughput does not depend on
the pixels), 10% validation, at batch 128 and 1024. Every fit runs in its own process, so the
whole-process seconds include imports and XLA compilation. Reported: samples/s of the best
epoch after the first (the first compiles), fit seconds, process seconds, and the ratios

    same settings:     dlrun with steps_per_execution 1 / hand-written (default: 1)
    dlrun's default:   dlrun as shipped (steps_per_execution auto) / hand-written default

Then one model over 2 processes x 1 GPU against 1 process x 2 GPUs (training.distribute:
{processes: 2} against data_parallel, bench/processes.py), when the machine has two GPUs; with
one GPU the results say so (one process per GPU: two processes cannot share one).

It writes bench/gpu_results.md with the device's name. `--samples 6000 --epochs 2` makes a
short dry run that also works on the CPU (JAX on CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODELS = ("dense", "dropout", "batchnorm", "cnn")
BATCHES = (128, 1024)

# The lecture's nets by hand, as a student writes them (no dlrun), timed the same way.
HAND = """
import json, sys, time
import numpy as np
import keras
name, batch, epochs, data = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
with np.load(data) as f:
    x, y = f["x_train"].astype("float32") / 255.0, f["y_train"]
y = keras.utils.to_categorical(y, 10)
L = keras.layers
if name == "cnn":
    x = x[..., None]
    layers = [L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(2),
              L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(2), L.Flatten(),
              L.Dense(64, activation="relu"), L.Dense(10, activation="softmax")]
    optimizer = "adam"
else:
    x = x.reshape(len(x), -1)
    if name == "dense":
        layers = [L.Dense(32, activation="relu"), L.Dense(10, activation="softmax")]
        optimizer = "adam"
    elif name == "dropout":
        layers = [L.Dense(512, activation="relu"), L.Dropout(0.2), L.Dense(512, activation="relu"),
                  L.Dropout(0.2), L.Dense(10, activation="softmax")]
        optimizer = "rmsprop"
    else:
        layers = [L.Dense(512, use_bias=False), L.BatchNormalization(), L.Activation("relu"),
                  L.Dense(128, use_bias=False), L.BatchNormalization(), L.Activation("relu"),
                  L.Dense(10, activation="softmax")]
        optimizer = "adam"
model = keras.Sequential([keras.Input(x.shape[1:]), *layers])
model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
seconds = []
class Clock(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.t = time.perf_counter()
    def on_epoch_end(self, epoch, logs=None):
        seconds.append(time.perf_counter() - self.t)
started = time.perf_counter()
model.fit(x, y, batch_size=batch, epochs=epochs, validation_split=0.1, verbose=0,
          callbacks=[Clock()])
fit = time.perf_counter() - started
print("RESULT:" + json.dumps({"epoch_seconds": seconds, "fit_seconds": fit,
                              "train_samples": int(len(x) * 0.9)}))
"""


def make_data(path: Path, samples: int) -> None:
    """MNIST-sized uint8 images with learnable classes: a class-dependent blob plus noise."""
    import numpy as np

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, samples + 10_000)
    yy, xx = np.mgrid[0:28, 0:28]
    centers = [(6 + 4 * (c % 4), 6 + 5 * (c // 4)) for c in range(10)]
    blobs = np.stack([np.exp(-((yy - a) ** 2 + (xx - b) ** 2) / 18.0) for a, b in centers])
    images = blobs[labels] * 200 + rng.uniform(0, 55, (len(labels), 28, 28))
    images = images.astype(np.uint8)
    np.savez(
        path,
        x_train=images[:samples],
        y_train=labels[:samples],
        x_test=images[samples:],
        y_test=labels[samples:],
    )


def run(command: list[str], env: dict) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    return result, time.perf_counter() - started


def best_rate(seconds: list[float], samples: int) -> float:
    later = seconds[1:] or seconds
    return samples / min(later)


def dlrun_fit(model: str, batch: int, args, data: Path, spe: str, env: dict):
    epochs, out = args.epochs, args.work
    runs = out / f"runs-{model}-{batch}-{spe}"
    command = [sys.executable, "-m", "dlrun", "train", f"configs/mnist_{model}.yaml"]
    for setting in (
        "backend=jax",
        "data.dataset=npz",
        f"data.path={data}",
        f"training.batch_size={batch}",
        f"training.epochs={epochs}",
        "training.early_stopping=null",
        "training.tensorboard=null",
        f"compile.steps_per_execution={spe}",
    ):
        command += ["--set", setting]
    command += ["--runs-dir", str(runs)]
    result, wall = run(command, env)
    if result.returncode:
        return {"error": result.stderr.strip().splitlines()[-1][:200]}
    (run_dir,) = [p for p in runs.iterdir() if p.is_dir()]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = (run_dir / "history.csv").read_text().splitlines()
    column = history[0].split(",").index("epoch_seconds")
    seconds = [float(line.split(",")[column]) for line in history[1:]]
    return {
        "rate": best_rate(seconds, int(args.samples * 0.9)),  # validation_split 0.1
        "fit": metrics["train_seconds"],
        "process": wall,
    }


def hand_fit(model: str, batch: int, epochs: int, data: Path, env: dict):
    result, wall = run([sys.executable, "-c", HAND, model, str(batch), str(epochs), str(data)], env)
    if result.returncode:
        return {"error": result.stderr.strip().splitlines()[-1][:200]}
    found = json.loads(result.stdout.rsplit("RESULT:", 1)[1])
    rate = best_rate(found["epoch_seconds"], found["train_samples"])
    return {"rate": rate, "fit": found["fit_seconds"], "process": wall}


def device_name(env: dict) -> str:
    probe = "import jax; d = jax.devices()[0]; print(getattr(d, 'device_kind', d.platform))"
    result, _ = run([sys.executable, "-c", probe], env)
    return result.stdout.strip() or "unknown"


def gpu_count(env: dict) -> int:
    probe = "import jax; print(len([d for d in jax.devices() if d.platform == 'gpu']))"
    result, _ = run([sys.executable, "-c", probe], env)
    return int(result.stdout.strip() or 0)


def processes_case(env: dict, work: Path) -> list[str]:
    """2 processes x 1 GPU against 1 process x 2 GPUs (bench/processes.py), or why not."""
    gpus = gpu_count(env)
    rows = ["", "## One model: 1 process x 2 GPUs vs 2 processes x 1 GPU", ""]
    if gpus < 2:
        return [*rows, f"Not run: it needs two GPUs, and this machine has {gpus}."]
    sys.path.insert(0, str(ROOT / "bench"))
    import processes

    found = processes.compare("gpu", 1024, 4, 1024, work / "processes")
    return [*rows, "dense 784-1024-1024-10 on mnist_5k, batch 1024, 4 epochs.", ""] + (
        processes.table(found)
    )


def cell(found: dict, key: str, fmt: str) -> str:
    return "error" if "error" in found else format(found[key], fmt)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=60_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--budget", type=float, default=420.0, help="seconds; then stop")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "gpu_results.md")
    parser.add_argument("--work", type=Path, default=Path("/tmp/dlrun-gpu-bench"))
    parser.add_argument(
        "--no-processes", action="store_true", help="skip 2 processes x 1 GPU (needs 2 GPUs)"
    )
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    data = args.work / "mnist_sized.npz"
    make_data(data, args.samples)
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    device = device_name(env)
    started = time.perf_counter()
    rows = [
        f"Device: {device}; {args.samples:,} images (90% trained), {args.epochs} epochs; "
        "samples/s of the best epoch after the first; seconds: fit / whole process.",
        "",
        "| model | batch | hand-written | dlrun, spe 1 | same settings | dlrun default (spe auto) "
        "| default vs hand | seconds hand | seconds dlrun default |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model in MODELS:
        for batch in BATCHES:
            if time.perf_counter() - started > args.budget:
                rows.append(f"| {model} | {batch} | (budget spent) |  |  |  |  |  |  |")
                continue
            hand = hand_fit(model, batch, args.epochs, data, env)
            same = dlrun_fit(model, batch, args, data, "1", env)
            shipped = dlrun_fit(model, batch, args, data, "auto", env)
            ok = all("error" not in f for f in (hand, same, shipped))
            same_ratio = f"{same['rate'] / hand['rate']:.2f}x" if ok else ""
            default_ratio = f"{shipped['rate'] / hand['rate']:.2f}x" if ok else ""
            rows.append(
                f"| {model} | {batch} | {cell(hand, 'rate', ',.0f')} | "
                f"{cell(same, 'rate', ',.0f')} | {same_ratio} | {cell(shipped, 'rate', ',.0f')} | "
                f"{default_ratio} | {cell(hand, 'fit', '.1f')} / {cell(hand, 'process', '.1f')} | "
                f"{cell(shipped, 'fit', '.1f')} / {cell(shipped, 'process', '.1f')} |"
            )
            print(rows[-1], flush=True)
            for found, label in ((hand, "hand"), (same, "dlrun spe 1"), (shipped, "dlrun")):
                if "error" in found:
                    print(f"{model} {batch} {label}: {found['error']}", flush=True)
    if not args.no_processes:
        rows += processes_case(env, args.work)
    rows.append("")
    rows.append(f"Whole benchmark: {time.perf_counter() - started:.0f} s.")
    text = "# dlrun on JAX vs hand-written Keras on JAX\n\n" + "\n".join(rows) + "\n"
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
