"""One model over 1 process x 2 devices against 2 processes x 1 device (training.distribute).

    python bench/processes.py                    # this CPU: two XLA host devices vs two processes
    python bench/processes.py --device gpu       # a machine with two GPUs (bench/gpu/bench.py)

The same spec and seed both ways, so the histories agree (tests/test_processes.py checks it to
1e-4); what differs is the cost of the collectives: inside one process (XLA's own) or between
processes (gloo over loopback TCP on CPUs, NCCL on GPUs). Each case is `dlrun train` in a fresh
process; reported: samples/s of the best epoch after the first (the first compiles), the fit's
seconds and the whole command's (imports, start-up of the processes, compilation). Writes
bench/processes_results.md (--out), with the load of the machine beside the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SPEC = """\
name: bench-processes
seed: 0
backend: jax
data: {{dataset: mnist_5k, flatten: true}}
model:
  layers:
    - {{type: Dense, units: {units}, activation: relu}}
    - {{type: Dense, units: {units}, activation: relu}}
    - {{type: Dense, units: 10, activation: softmax}}
training:
  batch_size: {batch}
  epochs: {epochs}
  validation_split: 0.2
  device: {device}
  tensorboard: null
"""


def case(label: str, spec: Path, work: Path, overrides: list[str], env: dict) -> dict:
    runs = work / f"runs-{label}"
    command = [sys.executable, "-m", "dlrun", "train", str(spec), "--runs-dir", str(runs)]
    for setting in overrides:
        command += ["--set", setting]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - started
    if result.returncode:
        return {"label": label, "error": (result.stderr.strip().splitlines() or ["?"])[-1][:300]}
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    metrics = json.loads((run / "metrics.json").read_text())
    lines = (run / "history.csv").read_text().splitlines()
    names = lines[0].split(",")
    rows = [dict(zip(names, line.split(","), strict=True)) for line in lines[1:]]
    seconds = [float(row["epoch_seconds"]) for row in rows][1:] or [float(rows[0]["epoch_seconds"])]
    samples = 3200  # mnist_5k: 4000 training images, 20% validation
    return {
        "label": label,
        "rate": samples / min(seconds),
        "fit": metrics["train_seconds"],
        "process": wall,
        "val_loss": float(rows[-1]["val_loss"]),
    }


def compare(device: str, batch: int, epochs: int, units: int, work: Path) -> list[dict]:
    """The two cases, one after the other, on the same machine."""
    work.mkdir(parents=True, exist_ok=True)
    spec = work / "spec.yaml"
    spec.write_text(SPEC.format(batch=batch, epochs=epochs, units=units, device=device))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    one = dict(env)
    if device == "cpu":
        one["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    else:
        one["CUDA_VISIBLE_DEVICES"] = one.get("CUDA_VISIBLE_DEVICES", "0,1")
    return [
        case("1 process x 2 devices", spec, work, ["training.distribute=data_parallel"], one),
        case("2 processes x 1 device", spec, work, ["training.distribute.processes=2"], env),
    ]


def table(found: list[dict]) -> list[str]:
    rows = [
        "| case | samples/s (best epoch after the first) | ratio | fit s | command s | val_loss |",
        "|---|---|---|---|---|---|",
    ]
    base = found[0].get("rate")
    for item in found:
        if "error" in item:
            rows.append(f"| {item['label']} | error: {item['error']} |  |  |  |  |")
            continue
        ratio = f"{item['rate'] / base:.2f}x" if base else ""
        rows.append(
            f"| {item['label']} | {item['rate']:,.0f} | {ratio} | {item['fit']:.1f} | "
            f"{item['process']:.1f} | {item['val_loss']:.4f} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--units", type=int, default=256)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "processes_results.md")
    parser.add_argument("--work", type=Path, default=Path("/tmp/dlrun-bench-processes"))
    args = parser.parse_args()
    before = os.getloadavg()
    found = compare(args.device, args.batch, args.epochs, args.units, args.work)
    after = os.getloadavg()
    text = "\n".join(
        [
            "# One model: 1 process x 2 devices vs 2 processes x 1 device",
            "",
            f"`python bench/processes.py --device {args.device} --batch {args.batch} "
            f"--epochs {args.epochs} --units {args.units}`: mnist_5k (3,200 training images), "
            f"dense 784-{args.units}-{args.units}-10, batch {args.batch}, {args.epochs} epochs, "
            f"JAX on {args.device}. Load average (1 min) {before[0]:.2f} before, "
            f"{after[0]:.2f} after, on {os.cpu_count()} cores.",
            "",
            *table(found),
            "",
        ]
    )
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
