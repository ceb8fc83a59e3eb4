"""dlrun against the lecture's hand-written Keras, side by side in one process tree.

For each of the lecture's four models, alternates --repeat runs of: the hand-written script
(bench/hand_written.py), `dlrun train` (the CLI, whole process) and dlrun's Python API, all on
mnist_5k with the same seed, epochs and split. Reports medians and dlrun/hand ratios, plus the
CLI speed over 200 generated runs, and writes bench/results.md.
Usage: python bench/run.py [--repeat 5] [--epochs 12] [--models dense,cnn]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import cli_speed  # noqa: E402

MODELS = {
    "dense": "mnist_dense",
    "dropout": "mnist_dropout",
    "batchnorm": "mnist_batchnorm",
    "cnn": "mnist_cnn",
}
NAN = float("nan")
BASELINE: Path | None = None  # --baseline: another checkout's dlrun, run in the same rounds
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


CPU_SECONDS: list[float] = []  # of the last run_process, read by one_round


def run_process(command: list[str], cwd: Path = ROOT) -> tuple[float, float, str]:
    """Wall time and peak RSS (MB) of one child, read from wait4's rusage (which also holds
    the CPU seconds of the child and the helpers it waited for)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, env=ENV, cwd=cwd)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            raise RuntimeError(f"{command} failed:\n{err.read()[-3000:]}")
        CPU_SECONDS[:] = [usage.ru_utime + usage.ru_stime]
        return wall, usage.ru_maxrss / 1024, out.read()


def bench_line(stdout: str) -> dict:
    return json.loads(stdout.rsplit("BENCH ", 1)[1].splitlines()[0])


def one_round(
    model: str, epochs: int, runs_dir: Path, who: tuple[str, ...] = ("hand", "cli", "api")
) -> dict[str, dict]:
    config = str(ROOT / "configs" / f"{MODELS[model]}.yaml")
    results = {}
    wall, rss, out = run_process(
        [sys.executable, str(HERE / "hand_written.py"), model, str(epochs)]
    )
    results["hand"] = {**bench_line(out), "process_seconds": wall, "peak_rss_mb": rss}
    if "cli" not in who:
        return results

    results["hand"]["cpu_seconds"] = CPU_SECONDS[0]
    for who_name, root in [("cli", ROOT), *([("cli-base", BASELINE)] if BASELINE else [])]:
        results[who_name] = dlrun_train(config, epochs, runs_dir, root)

    if "api" not in who:
        return results
    wall, rss, out = run_process(
        [sys.executable, str(HERE / "api_fit.py"), config, str(epochs), str(runs_dir)]
    )
    results["api"] = {**bench_line(out), "process_seconds": wall, "peak_rss_mb": rss}
    results["api"]["cpu_seconds"] = CPU_SECONDS[0]
    return results


def dlrun_train(config: str, epochs: int, runs_dir: Path, root: Path) -> dict:
    """`dlrun train` as a whole process, from the dlrun package found in `root`."""
    before = set(runs_dir.glob("*"))
    wall, rss, _ = run_process(
        [
            sys.executable,
            "-m",
            "dlrun",
            "train",
            config,
            "--set",
            "data.dataset=mnist_5k",
            "--set",
            f"training.epochs={epochs}",
            "--set",
            "training.early_stopping=null",
            "--runs-dir",
            str(runs_dir),
        ],
        cwd=root,
    )
    (run,) = set(runs_dir.glob("*")) - before
    metrics = json.loads((run / "metrics.json").read_text())
    return {
        "fit_seconds": metrics["train_seconds"],
        "epochs_seconds": sum(
            float(row["epoch_seconds"]) for row in csv.DictReader((run / "history.csv").open())
        ),
        "test_accuracy": metrics["test"]["accuracy"],
        "samples_per_second": metrics["samples_per_second"],
        "process_seconds": wall,
        "cpu_seconds": CPU_SECONDS[0],
        "peak_rss_mb": rss,
    }


STALL = 1.5  # seconds of fit() beyond its epochs; the stalls seen were 4 to 5 s


def median(rounds: list[dict], who: str, key: str) -> float:
    return statistics.median(r[who][key] for r in rounds)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = subprocess.run(
        [
            sys.executable,
            "-c",
            "import tensorflow as tf, keras; print(tf.__version__, keras.__version__)",
        ],
        capture_output=True,
        text=True,
        env=ENV,
    ).stdout.split()
    return (
        f"{os.cpu_count()} cores, {cpu}; Python {platform.python_version()}, "
        f"TensorFlow {versions[0]}, Keras {versions[1]}"
    )


def report(all_rounds: dict[str, list[dict]], epochs: int, repeat: int, cli_rows) -> str:
    lines = [
        "# dlrun against hand-written Keras",
        "",
        f"Machine: {machine()}.",
        f"Data: mnist_5k (4,000 training images, 10% of them for validation, 1,000 test), "
        f"{epochs} epochs, batch 128, seed 0; medians of {repeat} alternating runs each.",
        "Produced by `make bench` (python bench/run.py).",
        "",
        "| model | who | fit s | process s | outside fit s | process CPU s | samples/s "
        "| peak RSS MB | test acc |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    ratios = [
        "",
        "| model | fit (cli) | fit (api) | process | process CPU | memory "
        "| accuracy diff (points) |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, rounds in all_rounds.items():
        for who in rounds[0]:
            outside = statistics.median(
                r[who]["process_seconds"] - r[who]["fit_seconds"] for r in rounds
            )
            lines.append(
                f"| {model} | {who} | {median(rounds, who, 'fit_seconds'):.2f} | "
                f"{median(rounds, who, 'process_seconds'):.2f} | {outside:.2f} | "
                f"{median(rounds, who, 'cpu_seconds'):.2f} | "
                f"{median(rounds, who, 'samples_per_second'):,.0f} | "
                f"{median(rounds, who, 'peak_rss_mb'):.0f} | "
                f"{median(rounds, who, 'test_accuracy'):.4f} |"
            )
        hand = {k: median(rounds, "hand", k) for k in rounds[0]["hand"]}
        fit_cli = median(rounds, "cli", "fit_seconds") / hand["fit_seconds"]
        has_api = "api" in rounds[0]
        fit_api = median(rounds, "api", "fit_seconds") / hand["fit_seconds"] if has_api else NAN
        process = median(rounds, "cli", "process_seconds") / hand["process_seconds"]
        cpu = median(rounds, "cli", "cpu_seconds") / hand["cpu_seconds"]
        memory = median(rounds, "cli", "peak_rss_mb") / hand["peak_rss_mb"]
        accuracy = 100 * (median(rounds, "cli", "test_accuracy") - hand["test_accuracy"])
        ratios.append(
            f"| {model} | {fit_cli:.2f} {'ok' if fit_cli <= 0.90 else 'MISSED'} | "
            + (f"{fit_api:.2f} {'ok' if fit_api <= 0.90 else 'MISSED'} | " if has_api else "- | ")
            + f"{process:.2f} {'ok' if process <= 1.05 else 'MISSED'} | {cpu:.2f} | "
            f"{memory:.2f} {'ok' if memory <= 1.15 else 'MISSED'} | "
            f"{accuracy:+.1f} {'ok' if abs(accuracy) <= 1 else 'MISSED'} |"
        )
    lines += [
        "",
        "Ratios dlrun / hand-written (targets: fit <= 0.90, process <= 1.05, "
        "memory <= 1.15, accuracy within 1 point):",
        *ratios,
        "",
        f"Time inside fit() beyond its epochs (set-up, the records written after each epoch, "
        f"teardown); a stall is more than {STALL} s of it:",
        "",
        "| model | who | runs | median s | max s | stalls |",
        "|---|---|---|---|---|---|",
    ]
    for model, rounds in all_rounds.items():
        for who in rounds[0]:
            beyond = [r[who]["fit_seconds"] - r[who]["epochs_seconds"] for r in rounds]
            stalls = sum(b > STALL for b in beyond)
            lines.append(
                f"| {model} | {who} | {len(beyond)} | {statistics.median(beyond):.2f} | "
                f"{max(beyond):.2f} | {stalls} |"
            )
    for model, rounds in all_rounds.items():
        if "cli-base" in rounds[0]:
            hand_wall = median(rounds, "hand", "process_seconds")
            hand_cpu = median(rounds, "hand", "cpu_seconds")
            lines.append(
                f"\n{model}, the baseline checkout in the same rounds: process "
                f"{median(rounds, 'cli-base', 'process_seconds') / hand_wall:.2f}x, process CPU "
                f"{median(rounds, 'cli-base', 'cpu_seconds') / hand_cpu:.2f}x the hand-written."
            )
    if cli_rows is not None:
        lines += [
            "",
            "## Commands that read runs (whole process, median of 7)",
            "",
            cli_speed.table(cli_rows),
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--out", default=str(HERE / "results.md"))
    parser.add_argument("--who", default="hand,cli,api", help="which of hand,cli,api to run")
    parser.add_argument("--skip-cli-speed", action="store_true")
    parser.add_argument("--baseline", help="a checkout whose dlrun also runs, as cli-base")
    args = parser.parse_args()
    global BASELINE
    BASELINE = Path(args.baseline).resolve() if args.baseline else None
    all_rounds: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            all_rounds[model] = []
            for index in range(args.repeat):
                who = tuple(args.who.split(","))
                result = one_round(model, args.epochs, Path(tmp) / model, who)
                all_rounds[model].append(result)
                print(
                    f"{model} round {index + 1}: "
                    + ", ".join(
                        f"{who} fit {r['fit_seconds']:.2f}s process {r['process_seconds']:.2f}s"
                        for who, r in result.items()
                    ),
                    flush=True,
                )
    speed = None if args.skip_cli_speed else cli_speed.measure()
    text = report(all_rounds, args.epochs, args.repeat, speed)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
