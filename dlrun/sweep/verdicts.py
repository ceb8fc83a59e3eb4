"""Pruning, between the sweep's parent and a fit: the fit reports, the parent answers.

A fit of a pruned search records each epoch in its history.csv as every run does, then waits
for the parent's verdict in its folder's `.verdict.json`: `{"epoch": E, "prune": null}` lets
it train past epoch E, `{"prune": "message"}` stops it, recorded as `pruned`. Files, not
pipes: a Ray task on another node answers through the same shared sweep folder as a local
worker, and the parent never imports Keras. The parent is the only writer of a verdict and
the fit's process the only reader; Optuna's study never leaves the parent (sweep.search).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from dlrun import store
from dlrun.errors import DlrunError
from dlrun.sweep.schema import VERDICT

POLL_SECONDS = 0.005  # how often a waiting fit looks for its verdict


def write(run_dir: Path, epoch: int, prune: str | None = None) -> None:
    """The parent's answer: train past `epoch`, or stop now (`prune`: why)."""
    store.write_json(run_dir / VERDICT, {"epoch": epoch, "prune": prune})


def read(run_dir: Path) -> dict | None:
    """The verdict in a fit's folder, or None (none yet, or unreadable: asked again)."""
    try:
        verdict = store.read_json(run_dir / VERDICT, run_dir)
    except (OSError, DlrunError):
        return None
    epoch = verdict.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool):
        return None
    prune = verdict.get("prune")
    return {"epoch": epoch, "prune": prune if isinstance(prune, str) else None}


def stopped(run_dir: Path) -> str | None:
    """The message of a stop verdict already given to this fit, if any."""
    verdict = read(run_dir)
    return verdict["prune"] if verdict else None


def waiter(run_dir: Path) -> Callable[[int, dict], str | None]:
    """In the fit's process: the judge train.callbacks.Pruning asks after each epoch. It waits
    for the parent's verdict on that epoch (a stop from the parent, SIGTERM or Ctrl-C, ends
    the wait as it ends training)."""

    def judge(epoch: int, logs: dict) -> str | None:
        while True:
            verdict = read(run_dir)
            if verdict is not None:
                if verdict["prune"]:
                    return verdict["prune"]
                if verdict["epoch"] >= epoch:
                    return None
            time.sleep(POLL_SECONDS)

    return judge
