"""Per-epoch and per-command costs on the ResNet config, this checkout against a baseline one.

Each round runs one child process per checkout, in turn (PYTHONPATH decides which dlrun it
imports), each doing the same on configs/mnist_resnet.yaml (mnist_5k):

- input: the TensorFlow training stream (data.feed.shuffled_epochs) for 3 epochs, its time an
  epoch and how much the peak resident memory grew while it ran (VmHWM after clear_refs);
- history: history.csv recorded after each of 12 and of 300 epochs (RunFolder.record_epoch,
  rows as a real run writes them): seconds in all and for the last epoch;
- train: `api.train` for 12 epochs (the spec's other settings), with a clock callback: fit()'s
  wall seconds, its epochs' own seconds (history.csv's epoch_seconds), the difference (time
  outside fit()'s epochs: set-up, records, teardown) and the training thread's CPU seconds
  outside its epochs, which the load of other processes affects less than wall time;
- evaluate: `dlrun evaluate`'s function on the trained run (no files written), wall and CPU.

Prints each figure for both and the ratio this/baseline, and writes bench/epoch_costs_results.md
with the load average before and after.

Usage: python bench/epoch_costs.py [--baseline /work/main] [--rounds 1] [--epochs 12]
"""

from __future__ import annotations

import argparse
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
CONFIG = ROOT / "configs" / "mnist_resnet.yaml"


def _peak_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def child(epochs: int, runs_dir: str) -> None:
    from dlrun import api, store
    from dlrun.backend import load, use
    from dlrun.spec.loading import load_spec

    spec = load_spec(str(CONFIG), ["data.dataset=mnist_5k", f"training.epochs={epochs}"])
    use(spec.backend, spec.training.device)
    keras = load()
    out: dict = {"backend": spec.backend}

    # input: the TensorFlow stream of shuffled epochs
    from dlrun.data.arrays import load_data
    from dlrun.data.feed import shuffled_epochs

    data = load_data(spec)
    x, y = data.x_train, data.y_train
    _reset_peak()
    before = _peak_kb()
    started = time.perf_counter()
    for _ in shuffled_epochs(x, y, spec.training.batch_size, spec.seed, 0, 3):
        pass
    out["input_epoch_s"] = (time.perf_counter() - started) / 3
    out["input_peak_growth_mb"] = (_peak_kb() - before) / 1024
    out["train_set_mb"] = x.nbytes / 2**20

    # history: record_epoch after every epoch
    row = {"epoch": 1, "accuracy": 0.9, "loss": 0.3, "val_accuracy": 0.9, "val_loss": 0.3}
    row |= {"learning_rate": 0.001, "epoch_seconds": 1.0}
    for many in (12, 300):
        with tempfile.TemporaryDirectory() as folder:
            run = store.RunFolder(Path(folder), -1)
            rows: list[dict] = []
            started = time.perf_counter()
            for epoch in range(1, many + 1):
                rows.append({**row, "epoch": epoch})
                last = time.perf_counter()
                run.record_epoch(rows)
            out[f"history_{many}_s"] = time.perf_counter() - started
            out[f"history_{many}_last_ms"] = (time.perf_counter() - last) * 1000
            run._lock_fd = None

    # train: time outside fit()'s epochs
    class Clock(keras.callbacks.Callback):
        began = ended = cpu_began = cpu_ended = 0.0
        epoch_cpu: list[float] = []

        def on_train_begin(self, logs=None):
            Clock.began, Clock.cpu_began = time.perf_counter(), time.thread_time()

        def on_train_end(self, logs=None):
            Clock.ended, Clock.cpu_ended = time.perf_counter(), time.thread_time()

    class EpochCpu(keras.callbacks.Callback):  # the training thread's CPU in the batches
        def on_epoch_begin(self, epoch, logs=None):
            self.cpu = self.last = time.thread_time()

        def on_train_batch_end(self, batch, logs=None):
            self.last = time.thread_time()

        def on_test_end(self, logs=None):  # validation belongs to the epoch
            self.last = time.thread_time()

        def on_epoch_end(self, epoch, logs=None):
            Clock.epoch_cpu.append(self.last - self.cpu)

    cpu = time.process_time()
    outcome = api.train(spec, runs_dir=runs_dir, verbose=False, callbacks=(EpochCpu(), Clock()))
    out["train_process_cpu_s"] = time.process_time() - cpu
    inside = [float(r["epoch_seconds"]) for r in store.read_history(outcome.run_dir)]
    out["fit_s"] = Clock.ended - Clock.began
    out["epochs_s"] = sum(inside)
    out["outside_epochs_s"] = out["fit_s"] - out["epochs_s"]
    out["outside_epochs_cpu_s"] = (Clock.cpu_ended - Clock.cpu_began) - sum(Clock.epoch_cpu)
    out["test_accuracy"] = outcome.metrics["test"]["accuracy"]

    # evaluate
    from dlrun.report.evaluate import evaluate

    wall, cpu = time.perf_counter(), time.process_time()
    result = evaluate(outcome.run_dir, save=False)
    out["evaluate_s"] = time.perf_counter() - wall
    out["evaluate_cpu_s"] = time.process_time() - cpu
    out["evaluate_loss"] = result["scores"]["loss"]
    print("BENCH " + json.dumps(out))


FIGURES = [
    ("input_epoch_s", "TF input: one shuffled epoch streamed (s)"),
    ("input_peak_growth_mb", "TF input: peak memory growth over 3 epochs (MB)"),
    ("history_12_s", "history.csv: 12 epochs recorded, in all (s)"),
    ("history_300_last_ms", "history.csv: the 300th epoch's record (ms)"),
    ("history_300_s", "history.csv: 300 epochs recorded, in all (s)"),
    ("fit_s", "train: fit() wall (s)"),
    ("epochs_s", "train: the epochs' own wall (s)"),
    ("outside_epochs_s", "train: time outside fit()'s epochs, wall (s)"),
    ("outside_epochs_cpu_s", "train: training thread's CPU outside the epochs (s)"),
    ("train_process_cpu_s", "train: process CPU for api.train (s)"),
    ("evaluate_s", "evaluate: wall (s)"),
    ("evaluate_cpu_s", "evaluate: CPU (s)"),
    ("evaluate_loss", "evaluate: test loss"),
    ("test_accuracy", "train: test accuracy"),
]


def run_child(pythonpath: str, epochs: int, runs_dir: str) -> dict:
    env = {**os.environ, "PYTHONPATH": pythonpath, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return child_result([sys.executable, __file__, "--child", str(epochs), runs_dir], env, ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="/work/main", help="the checkout to compare with")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--out", default=str(HERE / "epoch_costs_results.md"))
    args = parser.parse_args()
    sides = {"baseline": args.baseline, "this": str(ROOT)}
    results: dict[str, list[dict]] = {side: [] for side in sides}
    before = load_average()
    with tempfile.TemporaryDirectory() as runs_dir:
        for _ in range(args.rounds):
            for side, path in sides.items():
                results[side].append(run_child(path, args.epochs, runs_dir))
                print(side, json.dumps(results[side][-1]), flush=True)
    after = load_average()
    rows = ["| figure | baseline | this | this / baseline |", "|---|---|---|---|"]
    for key, label in FIGURES:
        old = statistics.median(r[key] for r in results["baseline"])
        new = statistics.median(r[key] for r in results["this"])
        ratio = f"{new / old:.2f}" if old else ""
        rows.append(f"| {label} | {old:.4g} | {new:.4g} | {ratio} |")
    command = "python bench/epoch_costs.py " + " ".join(sys.argv[1:])
    text = "\n".join(
        [
            "# Per-epoch and per-command costs on the ResNet config (bench/epoch_costs.py)",
            "",
            f"`{command.strip()}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
            f"{os.cpu_count()} cores, load average (1, 5, 15 min) {before} before and {after} "
            f"after (other developers' test suites share the cores: wall times are noisy, the "
            f"CPU and per-component figures less so). configs/mnist_resnet.yaml on mnist_5k, "
            f"{args.epochs} epochs, backend {results['this'][0]['backend']}; baseline: "
            f"{args.baseline}; {args.rounds} round(s), each side one process a round, medians.",
            "",
            *rows,
            "",
        ]
    )
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(int(sys.argv[2]), sys.argv[3])
    else:
        main()
