"""dlrun runs as MLflow runs: one owner for what is sent, where, and what a dead server costs.

A run is sent whole by `send` (what `dlrun sync mlflow` and the end of a tracked run call):
the config's dotted keys as params, history.csv's rows as metrics with step = epoch, the test
scores, tags and the run's files. It is idempotent: the MLflow run's id is kept in meta.json
(`mlflow`), params and metric steps already there are not sent again, files are overwritten.
While a run trains, `Tracker` also sends each epoch as it ends. A server that is down, slow or
refusing costs one warning line and a bounded wait; the run records everything locally and a
later `dlrun sync mlflow` catches up. The URI's credentials are never written or printed.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from dlrun import store
from dlrun.errors import DlrunError, SpecError, UsageError
from dlrun.spec.keys import flatten
from dlrun.spec.uris import without_credentials
from dlrun.textsafe import clean

ENV_URI = "MLFLOW_TRACKING_URI"
# MLflow's own defaults retry a dead server for minutes (7 retries, backoff 2, 120 s timeout):
# an epoch must not wait that long. Set only where the user has not set them.
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
# dlrun's statuses as MLflow's: a loser the pruner stopped was killed, not a fault.
STATUSES = {
    store.COMPLETED: "FINISHED",
    store.FAILED: "FAILED",
    store.DIVERGED: "FAILED",
    store.CRASHED: "FAILED",
    store.INTERRUPTED: "KILLED",
    store.PRUNED: "KILLED",
    store.RUNNING: "RUNNING",
}
# history.csv columns that are bookkeeping, not metrics
NOT_METRICS = ("epoch", "stage")
# The files of a run sent as artifacts; every file below the folders too.
FILES = (store.CONFIG, store.SUMMARY, store.GRAPH, store.MODEL_PNG)
FOLDERS = (store.PLOTS, store.EVALUATIONS)
MAX_PARAM_VALUE = 6000  # MLflow's limit on a param's value (since 2.x)
BATCH = 100  # params or tags in one log_batch call; metrics take up to 1000
EXTRA = 'MLflow tracking needs the mlflow extra: pip install "dlrun[mlflow]"'


@dataclass(frozen=True)
class Target:
    """An MLflow server and experiment. `uri` may hold credentials: it stays in memory."""

    uri: str
    experiment: str

    @property
    def shown(self) -> str:
        """The URI as it may be written or printed."""
        return without_credentials(self.uri)


def target(tracking: Any, name: str, uri: str | None = None) -> Target | None:
    """Where a run of this spec is sent: `uri` (sync --uri), else the spec's tracking.mlflow.uri,
    else $MLFLOW_TRACKING_URI; None when no server is named anywhere. The experiment is the
    spec's tracking.mlflow.experiment, else its name."""
    named = tracking.get("mlflow") if isinstance(tracking, dict) else None
    mlflow = named if isinstance(named, dict) else {}
    uri = uri or mlflow.get("uri") or os.environ.get(ENV_URI) or None
    if uri is None:
        if named is not None:
            raise SpecError(
                "tracking.mlflow: no server to send the run to; give tracking.mlflow.uri or "
                f"set {ENV_URI}"
            )
        return None
    experiment = mlflow.get("experiment") or name
    return Target(str(uri), str(experiment))


def of_spec(spec) -> Target | None:
    """The target of a Spec about to train (its URI as given, credentials and all)."""
    tracking = spec.tracking.model_dump() if spec.tracking is not None else None
    return target(tracking, spec.name)


def client(where: Target):
    """An MlflowClient for the target, with bounded retries and timeouts."""
    for key, value in HTTP_LIMITS.items():
        os.environ.setdefault(key, value)
    # MLflow prints each run's URL on stdout when it ends: dlrun's output is its own, and the
    # URL would carry the server's credentials.
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise UsageError(EXTRA) from None
    return MlflowClient(tracking_uri=where.uri)


def require() -> None:
    """Said before a tracked run's folder exists: the mlflow extra is installed."""
    import importlib.util

    if importlib.util.find_spec("mlflow") is None:
        raise UsageError(EXTRA)


def reason(exc: BaseException, where: Target) -> str:
    """An MLflow or network error on one line, without the URI's credentials."""
    text = str(exc).replace(where.uri, where.shown) if where.uri else str(exc)
    text = re.sub(r"//[^/\s@]+@", "//", text)  # user:password@ in any URL it quotes
    text = re.sub(r"(?i)((?:token|password|secret|key)=)[^&\s]+", r"\1***", text)
    text = " ".join(text.split())
    if len(text) > 300:
        text = text[:300] + " ..."
    return clean(f"{type(exc).__name__}: {text}" if text else type(exc).__name__, False)


# --- the MLflow run of a dlrun run -------------------------------------------------------------


def recorded_id(record: Any, where: Target) -> str | None:
    """The MLflow run id meta.json (or a sweep's state.json) holds for this server, if any."""
    if isinstance(record, dict) and record.get("uri") == where.shown:
        run_id = record.get("run_id")
        return (
            run_id if isinstance(run_id, str) and re.fullmatch(r"[0-9a-zA-Z-]+", run_id) else None
        )
    return None


def _existing(mlflow_client, run_id: str | None):
    """The MLflow run with this id, or None when the server has none (deleted, another store)."""
    if run_id is None:
        return None
    from mlflow.exceptions import MlflowException

    try:
        found = mlflow_client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise
    return None if found.info.lifecycle_stage == "deleted" else found


def experiment_id(mlflow_client, name: str) -> str:
    """The experiment's id, made if it does not exist (a deleted one is restored)."""
    from mlflow.exceptions import MlflowException

    found = mlflow_client.get_experiment_by_name(name)
    if found is None:
        try:
            return mlflow_client.create_experiment(name)
        except MlflowException as exc:  # made by another process in between
            found = mlflow_client.get_experiment_by_name(name)
            if found is None:
                raise exc from None
    if found.lifecycle_stage == "deleted":
        mlflow_client.restore_experiment(found.experiment_id)
    return found.experiment_id


def _ms(stamp: Any) -> int | None:
    """An ISO time from meta.json as MLflow's milliseconds."""
    try:
        return int(datetime.fromisoformat(str(stamp)).timestamp() * 1000)
    except ValueError:
        return None


def open_run(
    mlflow_client,
    where: Target,
    record: Any,
    name: str,
    started: Any = None,
    tags: dict[str, str] | None = None,
    keep: Callable[[dict], None] = lambda record: None,
):
    """The MLflow run `record` names on this server, else a new one whose id `keep` records
    at once (so that a failure later never makes a second run of the same dlrun run)."""
    found = _existing(mlflow_client, recorded_id(record, where))
    if found is not None:
        return found, False
    experiment = experiment_id(mlflow_client, where.experiment)
    made = mlflow_client.create_run(experiment, start_time=_ms(started), tags=tags, run_name=name)
    keep({"uri": where.shown, "experiment": where.experiment, "run_id": made.info.run_id})
    return made, True


def _param(value: Any) -> str:
    import json

    text = value if isinstance(value, str) else json.dumps(value)
    return text[:MAX_PARAM_VALUE]


def run_tags(run_path: Path, meta: dict, status: str, parent: str | None = None) -> dict:
    """The tags of a run's MLflow run: what finds it again, and where it lives on disk."""
    commit = meta.get("git_commit")
    tags = {
        "dlrun.run": run_path.name,
        "dlrun.status": str(status),
        "dlrun.backend": str(meta.get("backend", "")),
        "dlrun.seed": str(meta.get("seed", "")),
        "dlrun.git_commit": str(commit or ""),
        "dlrun.path": str(run_path.resolve()),
    }
    if isinstance(commit, str) and commit:
        tags["mlflow.source.git.commit"] = commit
    if parent is not None:
        tags["mlflow.parentRunId"] = parent
    return tags


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def epoch_metrics(row: dict, skip: dict[str, set[int]] | None = None) -> list:
    """One history.csv row as MLflow metrics at step = epoch (less the steps already sent)."""
    from mlflow.entities import Metric

    step, now = int(row["epoch"]), int(time.time() * 1000)
    return [
        Metric(key, float(value), now, step)
        for key, value in row.items()
        if key not in NOT_METRICS and _number(value) and step not in (skip or {}).get(key, ())
    ]


def _batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def send_files(mlflow_client, run_id: str, folder: Path, names: list[str]) -> None:
    """Files of a folder as the MLflow run's artifacts, read through the store's guarded reader
    (regular files of the folder, never through a symlink out of it) into a temporary copy."""
    with tempfile.TemporaryDirectory(prefix="dlrun-mlflow-") as copy:
        sent = 0
        for name in names:
            try:
                data = store.read_bytes(folder / name)
            except (FileNotFoundError, IsADirectoryError, DlrunError):
                continue
            path = Path(copy) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            sent += 1
        if sent:
            mlflow_client.log_artifacts(run_id, copy)


def _run_files(run_path: Path) -> list[str]:
    names = [name for name in FILES if os.path.lexists(run_path / name)]
    for folder in FOLDERS:
        below = run_path / folder
        if below.is_dir() and not below.is_symlink():
            names += sorted(str(p.relative_to(run_path)) for p in store.run_files(below))
    return names


def send(
    mlflow_client,
    where: Target,
    run: store.Run,
    keep: Callable[[dict], None],
    parent: str | None = None,
) -> tuple[str, bool]:
    """The whole run into its MLflow run, made or updated: (run id, whether it was made).
    `keep(record)` stores the MLflow run's id in the run's meta.json."""
    meta, status = run.meta, run.status
    tags = run_tags(run.path, meta, status, parent)
    found, made = open_run(
        mlflow_client, where, meta.get("mlflow"), run.name, meta.get("started"), tags, keep
    )
    run_id = found.info.run_id
    have = found.data.params
    params = [(key, _param(value)) for key, value in flatten(run.config).items()]
    from mlflow.entities import Param, RunTag

    for batch in _batches([Param(k, v) for k, v in params if k not in have], BATCH):
        mlflow_client.log_batch(run_id, params=batch)
    rows = store.read_history(run.path)
    keys = {key for row in rows for key in row if key not in NOT_METRICS}
    sent = {}
    if not made:  # steps already there are not sent twice
        sent = {k: {m.step for m in mlflow_client.get_metric_history(run_id, k)} for k in keys}
    metrics = [metric for row in rows for metric in epoch_metrics(row, sent)]
    test = run.metrics.get("test") if isinstance(run.metrics.get("test"), dict) else {}
    step, now = int(meta.get("epochs_done") or len(rows)), int(time.time() * 1000)
    from mlflow.entities import Metric

    for name, value in test.items():
        key = f"test_{name}"
        if _number(value) and found.data.metrics.get(key) != float(value):
            metrics.append(Metric(key, float(value), now, step))
    for batch in _batches(metrics, 1000):
        mlflow_client.log_batch(run_id, metrics=batch)
    for batch in _batches([RunTag(k, v) for k, v in tags.items()], BATCH):
        mlflow_client.log_batch(run_id, tags=batch)
    send_files(mlflow_client, run_id, run.path, _run_files(run.path))
    set_status(mlflow_client, run_id, status, meta.get("ended"))
    return run_id, made


def set_status(mlflow_client, run_id: str, status: Any, ended: Any = None) -> None:
    """The MLflow run's status as dlrun's (RUNNING again for a resumed run)."""
    state = STATUSES.get(status, "FAILED")
    if state == "RUNNING":
        mlflow_client.update_run(run_id, status=state)
    else:
        mlflow_client.set_terminated(run_id, state, end_time=_ms(ended))


# --- a run while it trains ---------------------------------------------------------------------


def warn(text: str) -> None:
    print(clean(text, False), file=sys.stderr)


class Tracker:
    """A run sent to MLflow while it trains: each epoch as it ends, everything at the end.

    The first failure (server down, slow, refusing) prints one warning and stops the sending:
    training goes on and records locally, and `dlrun sync mlflow` sends the run later.
    """

    def __init__(self, where: Target, runs_dir: Path, console=None):
        self.where = where
        self.runs_dir = runs_dir
        self.console = console
        self.client = None
        self.run_id: str | None = None
        self.off = False

    def _guarded(self, action: Callable[[], None]) -> None:
        if self.off:
            return
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - a tracking fault must never stop training
            self.off = True
            warn(
                f"Warning: MLflow at {self.where.shown}: {reason(exc, self.where)}; the run goes "
                f"on and records locally; send it later with: dlrun sync mlflow {self.runs_dir}"
            )

    def begin(self, folder: store.RunFolder) -> None:
        """The MLflow run made (or, resumed, found and set running again)."""

        def begin() -> None:
            self.client = client(self.where)
            meta = folder.meta
            tags = run_tags(folder.path, meta, store.RUNNING)
            found, made = open_run(
                self.client,
                self.where,
                meta.get("mlflow"),
                folder.path.name,
                meta.get("started"),
                tags,
                lambda record: folder.update(mlflow=record),
            )
            self.run_id = found.info.run_id
            if not made:
                set_status(self.client, self.run_id, store.RUNNING)

        self._guarded(begin)

    def epoch(self, row: dict) -> None:
        """One epoch's row of history.csv, as it is recorded."""
        if self.run_id is not None:
            self._guarded(lambda: self.client.log_batch(self.run_id, metrics=epoch_metrics(row)))

    def end(self, folder: store.RunFolder) -> None:
        """Everything the run recorded, with its final status; a stop here leaves it to sync."""
        if self.run_id is None:
            return
        run = store.Run(folder.path, dict(folder.meta), owned=True)
        try:
            run.metrics = store.read_json(folder.path / store.METRICS, folder.path)
        except DlrunError:
            pass
        keep = lambda record: folder.update(mlflow=record)  # noqa: E731
        try:
            self._guarded(lambda: send(self.client, self.where, run, keep))
            if not self.off and self.console is not None:
                self.console.print(
                    clean(
                        f"MLflow: run {self.run_id} in experiment {self.where.experiment} at "
                        f"{self.where.shown}",
                        False,
                    ),
                    markup=False,
                )
        except KeyboardInterrupt:
            warn(
                "Warning: stopped while sending the run to MLflow; send it with: "
                f"dlrun sync mlflow {self.runs_dir}"
            )


def tracker(spec, runs_dir: Path, track: bool = True, console=None) -> Tracker | None:
    """A Tracker when the spec or $MLFLOW_TRACKING_URI names a server (checked before any
    folder is made: a missing extra is an error then, not a warning later)."""
    where = of_spec(spec) if track else None
    if where is None:
        return None
    require()
    return Tracker(where, runs_dir, console)
