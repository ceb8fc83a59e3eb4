"""Reading runs back: a run folder's meta.json, metrics.json and status, checked for type."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dlrun.errors import RunError, SpecError
from dlrun.store.files import complete_lines, read_json, read_text
from dlrun.store.layout import CONFIG, CRASHED, HISTORY, META, METRICS, RUNNING, Status
from dlrun.store.lock import lock_held

_NUMBER = (int, float)
_META_TYPES: dict[str, tuple] = {
    "name": (str,),
    "status": (str,),
    "started": (str, type(None)),
    "ended": (str, type(None)),
    "message": (str, type(None)),
    "epochs_done": (int,),
    "epochs_planned": (int,),
}
_METRICS_TYPES: dict[str, tuple] = {
    "params": (int, type(None)),
    "epochs_done": (int,),
    "monitor": (str,),
    "best_epoch": (int, type(None)),
    "best_value": (*_NUMBER, type(None)),
    "final": (dict,),
    "test": (dict,),
    "train_seconds": (*_NUMBER, type(None)),
}


def _check_types(data: dict, types: dict[str, tuple], path: Path) -> None:
    for key, allowed in types.items():
        value = data.get(key)
        if key not in data:
            continue
        wrong = not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed)
        if not wrong and isinstance(value, dict):  # final/test: metric name -> number
            wrong = not all(
                isinstance(k, str) and isinstance(v, _NUMBER) and not isinstance(v, bool)
                for k, v in value.items()
            )
        if wrong:
            names = "/".join("null" if t is type(None) else t.__name__ for t in allowed)
            raise RunError(
                f"{path.parent}: {path.name} is damaged ({key}: expected {names}, "
                f"got {type(value).__name__})"
            )


@dataclass
class Run:
    """A run folder as read from disk; config.yaml is read only when asked for."""

    path: Path
    meta: dict
    metrics: dict = field(default_factory=dict)
    _config: dict | None = None
    owned: bool = False  # this process holds the run's lock (it is resuming it)

    @property
    def name(self) -> str:
        return self.path.name

    def epochs_done(self) -> int:
        """Epochs finished: from meta.json once the run ended, from history.csv while it runs."""
        if self.meta.get("ended"):
            return int(self.meta.get("epochs_done") or 0)
        try:
            return max(len(complete_lines(read_text(self.path / HISTORY)).splitlines()) - 1, 0)
        except (FileNotFoundError, RunError):
            return int(self.meta.get("epochs_done") or 0)

    @property
    def status(self) -> Status | str:
        """As recorded, except that a running run whose lock nobody holds has crashed.

        Liveness is the lock, never a pid: in containers pids start again at 1, so a live pid
        may well be someone else's process.
        """
        status = self.meta.get("status", "unknown")
        if status == RUNNING:
            return CRASHED if self.owned or not lock_held(self.path) else RUNNING
        try:
            return Status(status)
        except ValueError:
            return status

    @property
    def relative_to(self) -> str:
        """What a relative path in config.yaml is relative to: the working folder the run was
        started in (runs record absolute paths since issue 34; older ones did not)."""
        cwd = self.meta.get("cwd")
        return cwd if isinstance(cwd, str) and cwd else os.getcwd()

    def data_record(self) -> dict:
        """What the run recorded of its data (csv categories, class names, the input shape), so
        that other data is encoded as its training data was; anything malformed is left out."""
        encoding = self.meta.get("data_encoding")
        found = dict(encoding) if isinstance(encoding, dict) else {}
        names = self.meta.get("class_names")
        if _names(names):
            found["class_names"] = names
        elif (
            isinstance(names, dict)
            and names
            and all(  # several outputs: {output: names}
                isinstance(output, str) and (listed is None or _names(listed))
                for output, listed in names.items()
            )
        ):
            found["class_names"] = names
        shape = self.metrics.get("input_shape")  # other data must be shaped like it
        if isinstance(shape, list) and all(isinstance(n, int) for n in shape):
            found["input_shape"] = shape
        return found

    @property
    def config(self) -> dict:
        if self._config is None:
            from dlrun.spec import safeyaml

            try:
                text = read_text(self.path / CONFIG)
                config = safeyaml.load(text, str(self.path / CONFIG))
            except FileNotFoundError:
                raise RunError(f"{self.path}: {CONFIG} is missing") from None
            except (yaml.YAMLError, SpecError, RecursionError):
                raise RunError(f"{self.path}: {CONFIG} is damaged (not valid YAML)") from None
            if config is not None and not isinstance(config, dict):
                raise RunError(f"{self.path}: {CONFIG} is damaged (expected a mapping)")
            self._config = config or {}
        return self._config


def _names(names) -> bool:
    """A recorded list of class names."""
    return isinstance(names, list) and bool(names) and all(isinstance(n, str) for n in names)


def open_run(path: str | Path) -> Run:
    """Read a run's meta and (when present) metrics; RunError if it is no run or damaged."""
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"{path}: no such run folder")
    if not os.path.lexists(path / META):
        raise RunError(f"{path}: not a run folder ({META} is missing)")
    meta = read_json(path / META, path)
    _check_types(meta, _META_TYPES, path / META)
    metrics = read_json(path / METRICS, path) if os.path.lexists(path / METRICS) else {}
    _check_types(metrics, _METRICS_TYPES, path / METRICS)
    return Run(path, meta, metrics)


def find_runs(root: Path) -> Iterator[Path]:
    """Folders holding a meta.json below root (a sweep nests its trials one level deeper).

    Symlinked folders below root are not followed: a link back up would list runs many
    times over, or never finish.
    """
    if os.path.lexists(root / META):
        yield root
        return
    if not root.is_dir():
        return
    try:
        children = sorted(os.scandir(root), key=lambda entry: entry.name)
    except OSError:
        return
    for child in children:
        if child.name.startswith("."):
            continue
        with contextlib.suppress(OSError):
            if child.is_dir(follow_symlinks=False):
                yield from find_runs(Path(child.path))


def run_files(run_dir: Path) -> list[Path]:
    """The files of a run, walking no symlinked folder (a received run may link anywhere)."""
    found = []
    for folder, folders, files in os.walk(run_dir):  # os.walk follows no links by default
        folders[:] = [name for name in folders if not name.startswith(".")]
        found += [Path(folder) / name for name in files if not name.startswith(".")]
    return found


def list_runs(paths: list[Path]) -> tuple[list[Run], list[str]]:
    """Every readable run under the given run folders or runs folders, newest first.

    A damaged run is skipped and reported in the warnings rather than stopping the listing.
    """
    runs, warnings = [], []
    for root in paths:
        if not root.exists():
            warnings.append(f"{root}: no such folder")
            continue
        for path in find_runs(root):
            try:
                runs.append(open_run(path))
            except RunError as exc:
                warnings.append(f"skipped {exc}")
    runs.sort(key=lambda run: str(run.meta.get("started", "")), reverse=True)
    return runs, warnings
