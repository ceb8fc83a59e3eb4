"""Epoch speed of the lecture's four nets: plain Keras by hand against dlrun, side by side.

For each net (configs/mnist_{dense,dropout,batchnorm,cnn}.yaml, on mnist_5k), one process
each, in turn: the hand-written script (bench/hand_written.py: Sequential, fit on NumPy arrays
with validation_split and the progress bar) on TensorFlow and on JAX, then dlrun with the
spec's defaults and dlrun with each backend named. An epoch's time is from its start to the
next epoch's start (the last: to the end of training), so what runs between epochs (dlrun's
records and checkpoints, Keras' progress bar) counts; the table shows the median of epochs 2
to the last, the samples/s that gives, the first epoch (compilation) and the test accuracy.
Writes bench/speed_results.md with the load average before and after.

Usage: python bench/speed.py [--epochs 10] [--nets dense,dropout,batchnorm,cnn] [--rounds 1]
       [--who "hand jax,dlrun jax,dlrun jax before"] [--baseline /work/main]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import child_result, load_average

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NETS = ("dense", "dropout", "batchnorm", "cnn")
WHO = ("hand tensorflow", "hand jax", "dlrun default", "dlrun tensorflow", "dlrun jax")
# dlrun's overrides beyond the bench's own (--who may name these too)
OVERRIDES = {
    "dlrun default": [],
    "dlrun tensorflow": ["backend=tensorflow"],
    "dlrun jax": ["backend=jax"],
    "dlrun jax spe1": ["backend=jax", "compile.steps_per_execution=1"],
    "dlrun jax spe8": ["backend=jax", "compile.steps_per_execution=8"],
    "dlrun jax spe16": ["backend=jax", "compile.steps_per_execution=16"],
    "dlrun jax spe29": ["backend=jax", "compile.steps_per_execution=29"],
}
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
BEFORE = " before"  # a --who name ending so: dlrun of the --baseline checkout
BASELINE = ["/work/main"]


def child_dlrun(config: str, epochs: int, runs_dir: str, more: list[str]) -> None:
    """One dlrun fit through the Python API, with a clock callback; prints a BENCH line."""
    from dlrun import api
    from dlrun.backend import load, use
    from dlrun.spec.loading import load_spec

    overrides = ["data.dataset=mnist_5k", f"training.epochs={epochs}"]
    overrides.append("training.early_stopping=null")  # every net trains all its epochs
    spec = load_spec(config, [*overrides, *more])
    use(spec.backend, spec.training.device)
    keras = load()

    class Clock(keras.callbacks.Callback):
        starts: list[float] = []
        ended = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            Clock.starts.append(time.perf_counter())

        def on_train_end(self, logs=None):
            Clock.ended = time.perf_counter()

    started = time.perf_counter()
    outcome = api.train(spec, runs_dir=runs_dir, verbose=False, callbacks=(Clock(),))
    metrics = outcome.metrics
    samples = metrics["samples_per_second"] * metrics["train_seconds"] / metrics["epochs_done"]
    meta = json.loads((outcome.run_dir / "meta.json").read_text())
    with (outcome.run_dir / "history.csv").open() as history:
        # from the epoch's start to its records (RunRecorder): the rest is the records
        inside = [float(row["epoch_seconds"]) for row in csv.DictReader(history)]
    line = {
        "epoch_inside": inside,
        "epoch_starts": Clock.starts,
        "train_ended": Clock.ended,
        "train_samples": round(samples),
        "test_accuracy": metrics["test"]["accuracy"],
        "backend": meta["backend"],
        "steps_per_execution": outcome_spe(outcome),
        "after_fit_seconds": time.perf_counter() - Clock.ended,
        "before_fit_seconds": Clock.starts[0] - started,
    }
    print("BENCH " + json.dumps(line))


def outcome_spe(outcome) -> int | str:
    meta = json.loads((outcome.run_dir / "meta.json").read_text())
    return meta.get("steps_per_execution", "?")


def one(net: str, who: str, epochs: int, runs_dir: str) -> dict:
    if who.startswith("hand"):
        env = {**ENV, "KERAS_BACKEND": who.split()[1]}
        command = [sys.executable, str(HERE / "hand_written.py"), net, str(epochs)]
    else:
        # dlrun's default: no KERAS_BACKEND in the environment, which `backend: auto` honours
        env = {k: v for k, v in ENV.items() if k != "KERAS_BACKEND"}
        if who.endswith(BEFORE):  # the same fit by the dlrun of --baseline's checkout
            env["PYTHONPATH"] = BASELINE[0]
        config = str(ROOT / "configs" / f"mnist_{net}.yaml")
        more = OVERRIDES[who.removesuffix(BEFORE)]
        command = [sys.executable, __file__, "--child", config, str(epochs), runs_dir, *more]
    line = child_result(command, env, ROOT)
    starts, ended = line["epoch_starts"], line["train_ended"]
    each = [b - a for a, b in zip(starts, [*starts[1:], ended], strict=True)]
    line["epoch_seconds"] = each
    line["median_epoch"] = statistics.median(each[1:])
    line["first_epoch"] = each[0]
    line["samples_per_second"] = line["train_samples"] / line["median_epoch"]
    if "epoch_inside" in line:  # dlrun: what its records between epochs cost
        gaps = [a - b for a, b in zip(each, line["epoch_inside"], strict=True)]
        line["records"] = statistics.median(gaps[1:])
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--nets", default=",".join(NETS))
    parser.add_argument("--who", default=",".join(WHO))
    parser.add_argument("--rounds", type=int, default=1, help="each round runs every one once")
    parser.add_argument("--out", default=str(HERE / "speed_results.md"))
    parser.add_argument(
        "--baseline",
        default=BASELINE[0],
        help=f"the checkout whose dlrun a --who name ending in '{BEFORE}' runs",
    )
    args = parser.parse_args()
    BASELINE[0] = args.baseline
    nets, who = args.nets.split(","), args.who.split(",")
    before = load_average()
    results: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as runs_dir:
        for _ in range(args.rounds):
            for net in nets:
                for name in who:
                    line = one(net, name, args.epochs, runs_dir)
                    results.setdefault((net, name), []).append(line)
                    print(
                        f"{net:9} {name:17} {line['median_epoch']:.4f} s "
                        f"{line['samples_per_second']:>9,.0f}/s acc {line['test_accuracy']:.4f}",
                        flush=True,
                    )
    after = load_average()
    rows = [
        f"| net | who | backend | median epoch s (2-{args.epochs}) | samples/s "
        "| first epoch s | records s | test acc | vs hand TF | vs hand JAX |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for net in nets:
        hand = {
            b: statistics.median(r["median_epoch"] for r in results[(net, f"hand {b}")])
            for b in ("tensorflow", "jax")
            if (net, f"hand {b}") in results
        }
        for name in who:
            lines = results[(net, name)]
            epoch = statistics.median(r["median_epoch"] for r in lines)
            rate = statistics.median(r["samples_per_second"] for r in lines)
            first = statistics.median(r["first_epoch"] for r in lines)
            accuracy = statistics.median(r["test_accuracy"] for r in lines)
            records = (
                f"{statistics.median(r['records'] for r in lines):.4f}"
                if "records" in lines[0]
                else ""
            )
            ratios = [f"{hand[b] / epoch:.2f}x" if b in hand else "" for b in ("tensorflow", "jax")]
            backend = lines[0]["backend"]
            if "steps_per_execution" in lines[0]:
                backend += f", spe {lines[0]['steps_per_execution']}"
            rows.append(
                f"| {net} | {name} | {backend} | {epoch:.4f} | {rate:,.0f} | {first:.2f} "
                f"| {records} | {accuracy:.4f} | {' | '.join(ratios)} |"
            )
    command = "python bench/speed.py " + " ".join(sys.argv[1:])
    text = "\n".join(
        [
            "# Epoch speed: plain Keras by hand against dlrun (bench/speed.py)",
            "",
            f"`{command.strip()}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
            f"{os.cpu_count()} cores, load average (1, 5, 15 min) {before} before and "
            f"{after} after. mnist_5k (3,600 training images after the 10% validation split), "
            f"batch 128, {args.epochs} epochs, {args.rounds} round(s), one process per fit, "
            "the fits of a net one after the other. vs hand: the hand-written epoch time over "
            "this one (above 1: faster than plain Keras). records: dlrun's time between an "
            "epoch's last batch (validation included) and the next epoch's first (history.csv, "
            "last.keras, best.keras, TensorBoard, meta.json, the epoch's reorder).",
            "",
            *rows,
            "",
        ]
    )
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        config, epochs, runs_dir, *more = sys.argv[2:]
        child_dlrun(config, int(epochs), runs_dir, more)
    else:
        main()
