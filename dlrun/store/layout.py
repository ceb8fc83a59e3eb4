"""A run folder's layout: its file names in one place, the statuses, the runs root and run names.

No TensorFlow, no pandas, no pydantic: `dlrun runs` reads a thousand runs with this.
"""

from __future__ import annotations

import enum
import os
import re
from pathlib import Path

from dlrun.errors import SpecError

# The files of a run, in one place.
CONFIG = "config.yaml"
META = "meta.json"
SUMMARY = "summary.txt"
GRAPH = "graph.txt"  # a graph model, one layer a line with what it reads
MODEL_PNG = "model.png"  # a graph model drawn by graphviz, where it is installed
HISTORY = "history.csv"
METRICS = "metrics.json"
CHECKPOINTS = "checkpoints"
BEST = "checkpoints/best.keras"
LAST = "checkpoints/last.keras"
TENSORBOARD = "tensorboard"
PLOTS = "plots"
HISTORY_PLOT = "plots/history.png"
CONFUSION_PLOT = "plots/confusion_matrix.png"
PREDICTED_PLOT = "plots/predicted_vs_true.png"
EVALUATIONS = "evaluations"
ATTACKS = "attacks"
CODE = "code"  # copies of the spec's code files, as trained (config.yaml names them)
# `dlrun export --format onnx` keeps a copy of the verified file and its record here, which
# `dlrun predict` may score with instead of Keras (report.engines): exports/best.onnx(.json).
EXPORTS = "exports"


def onnx_export(checkpoint: str) -> str:
    """The ONNX copy of a checkpoint (best or last) that export kept in the run."""
    return f"{EXPORTS}/{checkpoint}.onnx"


def onnx_record(checkpoint: str) -> str:
    """What export verified about that copy: its sha256, the checkpoint's, the samples."""
    return f"{EXPORTS}/{checkpoint}.onnx.json"


def adversarial_plot(attack_json: str, eps: float, target: int | None) -> str:
    """An attack's plot, named like its json (attacks/STEM.json), with the eps shown and the
    target: plots/adversarial-STEM-eps0.2[-target3].png."""
    aimed = "" if target is None else f"-target{target}"
    return f"{PLOTS}/adversarial-{attack_json}-eps{eps:g}{aimed}.png"


LOCK = ".lock"  # held (flock) by the process that trains, for as long as it trains
# A sweep folder's own record: its status, message and the fits it plans (`dlrun runs` reads it;
# while the sweep's process holds the folder's lock, the sweep is running whatever it says).
SWEEP_STATE = "state.json"
# Folders a run writes into: each must be a real folder of the run, never a symlink out of it.
WRITTEN_FOLDERS = (CHECKPOINTS, TENSORBOARD, PLOTS, EVALUATIONS, ATTACKS, CODE, EXPORTS)
# Files read back from a run folder are small; anything bigger is not ours.
MAX_READ_BYTES = 16 * 1024 * 1024


class Status(str, enum.Enum):
    """A run's status, as meta.json records it, and the exit code that goes with it."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    DIVERGED = "diverged"
    CRASHED = "crashed"  # never written: meta says running and nobody holds the lock
    PRUNED = "pruned"  # a sweep's pruner stopped it early: a loser, not a fault

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def exit_code(self) -> int:
        return _EXIT_CODES[self]


_EXIT_CODES = {
    Status.COMPLETED: 0,
    Status.FAILED: 1,
    Status.DIVERGED: 3,
    Status.INTERRUPTED: 130,
    Status.CRASHED: 1,
    Status.RUNNING: 1,
    Status.PRUNED: 0,  # asked for, like early stopping: the run did what its sweep wanted
}
SIGTERM_EXIT = 143  # interrupted by SIGTERM rather than Ctrl-C
RUNNING, COMPLETED, FAILED = Status.RUNNING, Status.COMPLETED, Status.FAILED
INTERRUPTED, DIVERGED, CRASHED = Status.INTERRUPTED, Status.DIVERGED, Status.CRASHED
PRUNED = Status.PRUNED
TIMESTAMP = "%Y%m%d-%H%M%S"
UMASK = os.umask(0)
os.umask(UMASK)


def runs_root(path: str | Path | None = None) -> Path:
    """--runs-dir, else $DLRUN_RUNS_DIR, else ./runs."""
    return Path(path or os.environ.get("DLRUN_RUNS_DIR") or "runs")


def check_runs_root(root: Path) -> Path:
    """A runs folder that exists as a writable folder, or can be made: checked, not made."""
    existing = root
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    for folder in (existing, *existing.absolute().parents):
        if os.path.lexists(folder / META):  # a run inside a run is never listed
            raise SpecError(
                f"--runs-dir {root}: is inside the run {folder}; give a folder outside any run"
            )
    if not existing.is_dir():
        where = "" if existing == root else f" ({existing} is not a folder)"
        raise SpecError(f"--runs-dir {root}: not a folder{where}; give a folder for the runs")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SpecError(
            f"--runs-dir {root}: {existing} is not writable (read-only file system or "
            "permissions); give a folder you can write to"
        )
    return root


def check_name(name: str) -> str:
    """A run name is one folder name: no separators, no '..', no control characters."""
    from dlrun.spec.names import NAME_MAX, NAME_PATTERN  # no pydantic: reading stays light

    if len(name) > NAME_MAX:
        raise SpecError(
            f"run name {name[:40]}... is {len(name)} characters; at most {NAME_MAX} "
            "(a folder name adds a timestamp and must fit in 255 bytes)"
        )
    if not re.fullmatch(NAME_PATTERN, name) or ".." in name:
        raise SpecError(
            f"run name {name!r} is not allowed; use letters, digits, '.', '_' and '-' "
            "(no path separators, no '..')"
        )
    return name
