"""`dlrun runs`: the listing of run folders, newest first.        No pandas, no TensorFlow.

Listing 1,000 runs must stay well under half a second, so this reads one small meta.json per
run to sort them, and metrics.json only for the rows it shows. A sweep is one row (its best
mean score and its refit's test score); its trials are listed only when asked for.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from dlrun import store
from dlrun.errors import RunError, SpecError, UsageError
from dlrun.textsafe import clean

# A sweep folder's own files (dlrun.sweep names them; importing it would load pydantic models).
SWEEP_FILE, SWEEP_RESULTS, SWEEP_TRIALS, SWEEP_REFIT = (
    "sweep.yaml",
    "cv_results.csv",
    "trials",
    "refit",
)
DEFAULT_LIMIT = 20


@dataclass
class Found:
    """A run or sweep folder met while walking, with just enough read to sort it."""

    path: Path
    shown_as: str  # the name in the listing: relative to the folder that was listed
    started: str
    meta: dict | None  # None for a sweep
    trial: bool = False


def check_roots(paths: list[Path]) -> None:
    """A folder that is not there is a mistake in the command, not an empty listing."""
    for path in paths:
        if not path.exists():
            raise UsageError(f"{path}: no such folder; give a runs folder or a run folder")
        if not path.is_dir():
            raise UsageError(f"{path}: not a folder; give a runs folder or a run folder")


def _started_of_file(path: Path) -> str:
    try:
        stamp = path.stat().st_mtime
    except OSError:
        return ""
    return datetime.fromtimestamp(stamp).astimezone().isoformat(timespec="seconds")


def _read_meta(path: Path, warnings: list[str]) -> dict | None:
    try:
        return store.read_json(path / store.META, path)
    except RunError as exc:
        warnings.append(f"skipped {exc}")
    except OSError as exc:
        warnings.append(f"skipped {path}: {exc.strerror}")
    return None


def _walk(folder: Path, root: Path, in_sweep: bool, warnings: list[str]) -> Iterator[Found]:
    """Runs and sweeps below folder; symbolic links are not followed."""
    if os.path.lexists(folder / store.META):  # a FIFO or a link is damage, reported as such
        meta = _read_meta(folder, warnings)
        if meta is not None:
            shown = folder.name if folder == root else folder.relative_to(root).as_posix()
            yield Found(folder, shown, str(meta.get("started") or ""), meta, in_sweep)
        return
    if os.path.lexists(folder / SWEEP_FILE) and not in_sweep:
        shown = folder.name if folder == root else folder.relative_to(root).as_posix()
        yield Found(folder, shown, _started_of_file(folder / SWEEP_FILE), None)
        in_sweep = True
    try:
        children = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as exc:
        warnings.append(f"skipped {folder}: {exc.strerror}")
        return
    for child in children:
        if child.name.startswith(".") or not child.is_dir(follow_symlinks=False):
            continue
        yield from _walk(Path(child.path), root, in_sweep, warnings)


def find(paths: list[Path], trials: bool = False) -> tuple[list[Found], int, list[str]]:
    """Every run and sweep under the given folders, newest first, and how many trials were hidden.

    Without `trials`, a sweep's trial and refit runs are left out (the sweep's row sums them up),
    unless the folder listed is that sweep itself.
    """
    check_roots(paths)
    found: list[Found] = []
    hidden = 0
    warnings: list[str] = []
    for root in paths:
        show_trials = trials or os.path.lexists(root / SWEEP_FILE)
        for item in _walk(root, root, False, warnings):
            if item.trial and not show_trials:
                hidden += 1
                continue
            found.append(item)
    found.sort(key=lambda item: item.started, reverse=True)
    return found, hidden, warnings


# --- one row per run or sweep ------------------------------------------------------------------


def headline(test: dict) -> tuple[str, float | None]:
    """The test metric a user looks at first: accuracy if there is one, else the first."""
    for name in ("accuracy", *test):
        if name in test and name != "loss":
            return name, test[name]
    return "loss", test.get("loss")


def duration(started: str | None, ended: str | None) -> str:
    try:
        seconds = int(
            (datetime.fromisoformat(ended) - datetime.fromisoformat(started)).total_seconds()
        )
    except (TypeError, ValueError):
        return ""
    minutes, seconds = divmod(max(seconds, 0), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _test_text(metrics: dict) -> str:
    test = metrics.get("test") if isinstance(metrics.get("test"), dict) else {}
    name, value = headline(test)
    value = _number(value)
    return f"{name} {value:.4f}" if value is not None else ""


def _best_text(metrics: dict) -> str:
    value = _number(metrics.get("best_value"))
    if value is None:
        return ""
    return f"{metrics.get('monitor')} {value:.4f} @{metrics.get('best_epoch')}"


def run_row(item: Found) -> dict[str, str]:
    """One run's row; RunError when its meta.json or metrics.json holds the wrong types."""
    run = store.open_run(item.path)
    meta, metrics = run.meta, run.metrics
    params = metrics.get("params")
    return {
        "run": item.shown_as,
        "status": str(run.status),
        "backend": str(meta.get("backend") or "tensorflow"),  # runs before backends: TF
        "started": str(meta.get("started") or "")[:19].replace("T", " "),
        "duration": duration(meta.get("started"), meta.get("ended")),
        "epochs": f"{run.epochs_done()}/{meta.get('epochs_planned', '?')}",
        "params": f"{params:,}" if isinstance(params, int) else "",
        "best": _best_text(metrics),
        "test": _test_text(metrics),
    }


def _sweep_scoring(path: Path) -> str:
    import yaml

    from dlrun.spec import safeyaml

    try:
        raw = safeyaml.load(store.read_text(path / SWEEP_FILE), str(path / SWEEP_FILE))
    except (OSError, yaml.YAMLError, RunError, SpecError, RecursionError):
        return "score"
    scoring = raw.get("scoring") if isinstance(raw, dict) else None
    return scoring if isinstance(scoring, str) else "score"


def _best_mean_score(path: Path) -> float | None:
    """The rank-1 row's mean_test_score of cv_results.csv."""
    try:
        text = store.read_text(path / SWEEP_RESULTS)
        for row in csv.DictReader(io.StringIO(text)):
            if row.get("rank_test_score") == "1":
                return float(row["mean_test_score"])
    except (OSError, KeyError, ValueError, csv.Error, RunError):
        return None
    return None


def _refit_status(refit: Path) -> str | None:
    """The status of a sweep's refit run, None when it has not started."""
    if refit.is_symlink() or not os.path.lexists(refit / store.META):
        return None
    return str(store.Run(refit, _read_meta(refit, []) or {}).status)


def _sweep_state(path: Path) -> dict:
    """A sweep folder's state.json ({} when it has none or it cannot be read)."""
    try:
        state = store.read_json(path / store.SWEEP_STATE, path)
    except (OSError, RunError):
        return {}
    return state if isinstance(state, dict) else {}


def sweep_row(item: Found) -> dict[str, str]:
    """One row for a whole sweep: how many fits, their state, the best mean score, the refit."""
    trials = item.path / SWEEP_TRIALS
    statuses = []
    if trials.is_dir():
        for child in os.scandir(trials):
            if child.is_dir(follow_symlinks=False) and os.path.lexists(
                Path(child.path) / store.META
            ):
                meta = _read_meta(Path(child.path), [])
                statuses.append(store.Run(Path(child.path), meta or {}).status)
    finished = (item.path / SWEEP_RESULTS).is_file()
    refit_status = _refit_status(item.path / SWEEP_REFIT)
    state = _sweep_state(item.path)
    if store.lock_held(item.path):  # its process holds the sweep's lock: between fits too
        status = store.RUNNING
    elif finished and refit_status not in (None, store.COMPLETED):
        status = f"{refit_status} (refit)"  # stopped after the fits: not completed
    elif finished:
        status = store.COMPLETED
    elif state.get("status") == store.FAILED:
        status = store.FAILED
    elif state.get("status") == store.RUNNING:  # says running, and nobody holds its lock
        status = store.CRASHED
    else:
        status = store.INTERRUPTED
    done = sum(s in (store.COMPLETED, store.PRUNED) for s in statuses)
    pruned = sum(s == store.PRUNED for s in statuses)
    planned = state.get("fits_planned")
    if not isinstance(planned, int) or isinstance(planned, bool) or planned < len(statuses):
        planned = len(statuses)  # a sweep from before state.json, or a damaged one
    best = _best_mean_score(item.path)
    refit = {}
    if (item.path / SWEEP_REFIT / store.METRICS).is_file():
        try:
            refit = store.read_json(item.path / SWEEP_REFIT / store.METRICS)
        except RunError:
            refit = {}
    ended = _started_of_file(item.path / SWEEP_RESULTS) if finished else None
    return {
        "run": item.shown_as,
        "status": f"sweep {status}",
        "backend": "",
        "started": item.started[:19].replace("T", " "),
        "duration": duration(item.started, ended),
        "epochs": f"{done}/{planned} fits" + (f", {pruned} pruned" if pruned else ""),
        "params": "",
        "best": f"mean {_sweep_scoring(item.path)} {best:.4f}" if best is not None else "",
        "test": _test_text(refit),
    }


def rows(found: list[Found]) -> tuple[list[dict[str, str]], list[str]]:
    """The rows to show, every cell cleaned of control characters; damaged runs as warnings."""
    shown, warnings = [], []
    for item in found:
        try:
            row = run_row(item) if item.meta is not None else sweep_row(item)
        except RunError as exc:
            warnings.append(f"skipped {exc}")
            continue
        shown.append({key: clean(value, newlines=False) for key, value in row.items()})
    return shown, warnings


def limited(found: list[Found], limit: int | None) -> tuple[list[Found], int]:
    """The newest `limit` (all when None) and how many were left out."""
    if limit is None or limit >= len(found):
        return found, 0
    return found[:limit], len(found) - limit
