"""dlrun's records at an epoch's end, this checkout against a baseline one, side by side.

Each round runs one child process per checkout and net, in turn (PYTHONPATH decides which dlrun
it imports). The child trains configs/mnist_<net>.yaml on mnist_5k through `api.train` and
times RunRecorder.on_epoch_end, where dlrun records an epoch (history.csv, TensorBoard,
meta.json, the checkpoint's copy and its writer): the training thread's CPU and the wall time
in it, medians of epochs 3 to the last. The training thread's CPU is what the load of other
processes moves least. bench/speed.py measures the whole epoch.

Usage: python bench/records.py [--baseline /work/main] [--nets dense,dropout] [--epochs 30]
       [--backend jax] [--rounds 2]
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

ROOT = Path(__file__).resolve().parent.parent


def child(net: str, epochs: int, backend: str) -> None:
    from dlrun import api
    from dlrun.backend import load, use
    from dlrun.spec.loading import load_spec

    overrides = ["data.dataset=mnist_5k", f"training.epochs={epochs}", f"backend={backend}"]
    overrides.append("training.early_stopping=null")  # every net trains all its epochs
    spec = load_spec(str(ROOT / "configs" / f"mnist_{net}.yaml"), overrides)
    use(spec.backend, spec.training.device)
    load()
    from dlrun.train.callbacks import RunRecorder

    cpu, wall = [], []
    record = RunRecorder.on_epoch_end

    def timed(self, epoch, logs=None):
        began_cpu, began = time.thread_time(), time.perf_counter()
        try:
            return record(self, epoch, logs)
        finally:
            cpu.append(time.thread_time() - began_cpu)
            wall.append(time.perf_counter() - began)

    RunRecorder.on_epoch_end = timed
    with tempfile.TemporaryDirectory() as runs_dir:
        api.train(spec, runs_dir=runs_dir, verbose=False)
    line = {"cpu": statistics.median(cpu[2:]), "wall": statistics.median(wall[2:])}
    print("BENCH " + json.dumps(line))


def run(tree: str, net: str, epochs: int, backend: str) -> dict:
    env = {**os.environ, "PYTHONPATH": tree, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return child_result([sys.executable, __file__, "--child", net, str(epochs), backend], env, tree)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="/work/main")
    parser.add_argument("--nets", default="dense,dropout")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--backend", default="jax")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    trees = {"baseline": args.baseline, "this": str(ROOT)}
    before = load_average()
    found: dict[tuple[str, str], list[dict]] = {}
    for _ in range(args.rounds):
        for net in args.nets.split(","):
            for name, tree in trees.items():
                line = run(tree, net, args.epochs, args.backend)
                found.setdefault((net, name), []).append(line)
                cpu, wall = line["cpu"] * 1e3, line["wall"] * 1e3
                print(f"{net:8} {name:8} cpu {cpu:.2f} ms wall {wall:.2f} ms")
    print(
        f"\n`python bench/records.py {' '.join(sys.argv[1:])}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {before} before "
        f"and {load_average()} after; medians of {args.rounds} round(s)\n"
    )
    print("| net | figure (ms an epoch) | baseline | this | this / baseline |")
    print("|---|---|---|---|---|")
    for net in args.nets.split(","):
        for figure in ("cpu", "wall"):
            a, b = (
                statistics.median(r[figure] for r in found[(net, name)]) * 1e3 for name in trees
            )
            label = "training thread's CPU" if figure == "cpu" else "wall"
            print(f"| {net} | {label} | {a:.2f} | {b:.2f} | {b / a:.2f} |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        main()
