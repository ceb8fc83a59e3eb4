"""What the bench scripts share: the machine's load beside every figure, and one whole
process timed (wall, and CPU from wait4)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as /proc/loadavg gives them."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def timed_process(command: list[str], env: dict, cwd: Path | None = None) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system, from wait4) of one whole process, its
    output discarded; RuntimeError if it fails."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=cwd
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed")
    return wall, usage.ru_utime + usage.ru_stime


def child_result(command: list[str], env: dict, cwd: Path | str) -> dict:
    """Run a bench child process; the JSON of the line it printed after "BENCH "."""
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd)
    if result.returncode != 0:
        raise RuntimeError(f"{command} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.rsplit("BENCH ", 1)[1].splitlines()[0])
