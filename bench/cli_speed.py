"""How fast the commands that read runs are: `dlrun --help`, `runs`, `compare` over 200 runs.

Each command runs as a whole process (what a user waits for), 7 times, median reported.
Usage: python bench/cli_speed.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from fake_runs import make_runs  # noqa: E402

DLRUN = [sys.executable, "-m", "dlrun"]


def seconds(command: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(
            command, check=True, capture_output=True, env={**os.environ, "COLUMNS": "200"}
        )
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(repeat: int = 7) -> list[tuple[str, float, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        runs = make_runs(Path(tmp) / "runs", 200)
        cases = [
            ("dlrun --help", [*DLRUN, "--help"], 0.5),
            ("dlrun runs (200 runs)", [*DLRUN, "runs", str(runs)], 1.0),
            ("dlrun compare (200 runs)", [*DLRUN, "compare", str(runs)], 1.0),
            ("python -c pass (floor)", [sys.executable, "-c", "pass"], float("nan")),
        ]
        return [(name, seconds(command, repeat), target) for name, command, target in cases]


def table(results) -> str:
    lines = ["| command | median seconds | target |", "|---|---|---|"]
    for name, value, target in results:
        verdict = "" if target != target else (" (met)" if value < target else " (MISSED)")
        shown = "" if target != target else f"< {target}"
        lines.append(f"| {name} | {value:.3f} | {shown}{verdict} |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    print(table(measure(parser.parse_args().repeat)))
