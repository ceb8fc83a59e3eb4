"""How fast the commands that read runs are, over 1,000 generated run folders.

Each command runs as a whole process (what a user waits for); wall and CPU seconds are both
reported, since on a shared machine the wall clock also counts other people's work. The
commands take turns, round
after round, so a slow moment of this shared machine falls on all of them alike; medians are
reported beside two floors measured in the same rounds: `python -c pass` and
`python -c "import pandas"` (the import the listing no longer pays).
Usage: python bench/cli_speed.py [--repeat 7] [--runs 1000] [--baseline CHECKOUT]
With --baseline, every dlrun command also runs from that checkout (its own dlrun package) in
the same rounds, as "(baseline)": a ratio taken side by side, not across days.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import timed_process  # noqa: E402
from fake_runs import make_runs  # noqa: E402

DLRUN = [sys.executable, "-m", "dlrun"]
NAN = float("nan")


def once(command: list[str], cwd: Path | None = None) -> tuple[float, float]:
    """Wall and CPU seconds of one whole process. `cwd`: a checkout whose dlrun package
    `python -m dlrun` then runs (the baseline)."""
    return timed_process(command, {**os.environ, "COLUMNS": "200"}, cwd)


def measure(
    repeat: int = 7, count: int = 1000, baseline: Path | None = None
) -> list[tuple[str, float, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        runs = str(make_runs(Path(tmp) / "runs", count))
        cases = [
            ("python -c pass (floor)", [sys.executable, "-c", "pass"], NAN),
            ('python -c "import pandas" (floor)', [sys.executable, "-c", "import pandas"], NAN),
            ("dlrun --help", [*DLRUN, "--help"], 0.5),
            (f"dlrun runs ({count:,} runs, 20 shown)", [*DLRUN, "runs", runs], 0.5),
            (f"dlrun runs --all ({count:,} runs)", [*DLRUN, "runs", runs, "--all"], NAN),
            (
                f"dlrun compare --format csv ({count:,} runs)",
                [*DLRUN, "compare", runs, "--format", "csv"],
                1.5,
            ),
            (f"dlrun compare ({count:,} runs, table)", [*DLRUN, "compare", runs], NAN),
            (
                f"dlrun compare --where ({count:,} runs, csv)",
                [*DLRUN, "compare", runs, "--where", "training.epochs >= 5", "--format", "csv"],
                NAN,
            ),
        ]
        cases = [(name, command, target, None) for name, command, target in cases]
        if baseline is not None:
            cases += [
                (f"{name} (baseline)", command, NAN, baseline)
                for name, command, _, _ in cases
                if command[:3] == DLRUN
            ]
        for _, command, _, cwd in cases:  # warm the file cache and .pyc files
            once(command, cwd)
        times: dict[str, list[tuple[float, float]]] = {name: [] for name, *_ in cases}
        for _ in range(repeat):
            for name, command, _, cwd in cases:
                times[name].append(once(command, cwd))
        return [
            (
                name,
                statistics.median(wall for wall, _ in times[name]),
                target,
                statistics.median(cpu for _, cpu in times[name]),
            )
            for name, _, target, _ in cases
        ]


def table(results) -> str:
    lines = [
        "| command | median wall s | median CPU s | target (wall) |",
        "|---|---|---|---|",
    ]
    for name, value, target, cpu in results:
        verdict = "" if target != target else (" (met)" if value < target else " (MISSED)")
        shown = "" if target != target else f"< {target}"
        lines.append(f"| {name} | {value:.3f} | {cpu:.3f} | {shown}{verdict} |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--baseline", help="a checkout whose dlrun also runs, in the same rounds")
    args = parser.parse_args()
    baseline = Path(args.baseline).resolve() if args.baseline else None
    print(table(measure(args.repeat, args.runs, baseline)))
