"""A sweep as one MLflow run with a child per fit and one for the refit, and the walk of
`dlrun sync mlflow` over a runs folder (runs and sweeps alike).

The sweep's parent process sends the sweep when it ends, whatever its outcome (its fits train
with tracking off, so nothing is sent twice); `dlrun sync mlflow` sends it again idempotently.
The parent MLflow run's id is kept in the sweep's state.json, each fit's in its meta.json.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from dlrun import store
from dlrun.errors import DlrunError, RunError, RunInUse
from dlrun.spec import safeyaml
from dlrun.sweep.schema import BASE_FILE, BEST_SPEC, REFIT, RESULTS, SEARCH_PLOT, SWEEP_FILE, TRIALS
from dlrun.textsafe import clean
from dlrun.tracking import mlflow_runs as tracking

# A sweep's own files, sent as its parent run's artifacts.
SWEEP_FILES = (RESULTS, BEST_SPEC, SWEEP_FILE, BASE_FILE, SEARCH_PLOT)


def _client(clients: dict, where: tracking.Target):
    if where.uri not in clients:
        clients[where.uri] = tracking.client(where)
    return clients[where.uri]


NO_SERVER = f"not sent: no server (give --uri or set {tracking.ENV_URI})"


def send_run(
    path: Path, uri: str | None, clients: dict, parent: str | None = None, where=None
) -> tuple[bool, str]:
    """One run folder into its MLflow run (locked while its meta.json is written): whether it
    was sent, and the line that says what happened."""
    try:
        folder = store.RunFolder.acquire(path)
    except RunInUse:
        return False, f"{path.name}: running; not sent (sync again once it has ended)"
    try:
        with folder:
            run = folder.read()
            if where is None:
                config = run.config
                name = str(config.get("name", "run"))
                where = tracking.target(config.get("tracking"), name, uri)
            if where is None:
                return False, f"{path.name}: {NO_SERVER}"
            keep = lambda record: folder.update(mlflow=record)  # noqa: E731
            run_id, made = tracking.send(_client(clients, where), where, run, keep, parent)
    except DlrunError as exc:
        return False, f"{path.name}: not sent: {exc}"
    except Exception as exc:  # noqa: BLE001 - the server's answer, reported per run
        return False, f"{path.name}: not sent: {tracking.reason(exc, where or _anywhere(uri))}"
    made_text = "created" if made else "updated"
    return True, f"{path.name}: {made_text} MLflow run {run_id} ({run.status})"


def _anywhere(uri: str | None) -> tracking.Target:
    return tracking.Target(uri or os.environ.get(tracking.ENV_URI, ""), "")


def _base(sweep_dir: Path) -> dict:
    text = store.read_text(sweep_dir / BASE_FILE)
    base = safeyaml.load(text, str(sweep_dir / BASE_FILE))
    if not isinstance(base, dict):
        raise RunError(f"{sweep_dir}: {BASE_FILE} is damaged (expected a mapping)")
    return base


def sweep_target(base: dict, uri: str | None = None) -> tracking.Target | None:
    """Where a sweep is sent: as a run of its base spec would be."""
    return tracking.target(base.get("tracking"), str(base.get("name", "sweep")), uri)


def _fits(sweep_dir: Path) -> list[Path]:
    trials = sweep_dir / TRIALS
    found = []
    if trials.is_dir() and not trials.is_symlink():
        found = [p for p in store.find_runs(trials) if p != trials]
    refit = sweep_dir / REFIT
    if os.path.lexists(refit / store.META) and not refit.is_symlink():
        found.append(refit)
    return found


def send_sweep(
    sweep_dir: Path,
    uri: str | None,
    clients: dict,
    held: bool = False,
    where: tracking.Target | None = None,
) -> tuple[bool, list[str]]:
    """A sweep folder: its parent MLflow run, then a child per fit and the refit; whether all
    was sent, and the lines that say what happened. `held`: this process holds the sweep's
    lock (the sweep itself). A failure at the server raises."""
    lock = None
    if not held:
        try:
            lock = store.take_lock(sweep_dir, "sweep")
        except RunInUse:
            running = f"{sweep_dir.name}: sweep running; not sent (sync again once it has ended)"
            return False, [running]
    try:
        where = where or sweep_target(_base(sweep_dir), uri)
        if where is None:
            return False, [f"{sweep_dir.name}: {NO_SERVER}"]
        mlflow_client = _client(clients, where)
        state = store.read_json(sweep_dir / store.SWEEP_STATE, sweep_dir)
        status = state.get("status")
        if status == store.RUNNING:  # its lock is free: the sweep's process is gone
            status = store.CRASHED
        base = _base(sweep_dir)
        tags = {
            **tracking.run_tags(sweep_dir, {**base, **state}, status),
            "dlrun.sweep": "true",
        }

        def keep(record: dict) -> None:
            state["mlflow"] = record
            store.write_json(sweep_dir / store.SWEEP_STATE, state)

        parent, made = tracking.open_run(
            mlflow_client, where, state.get("mlflow"), sweep_dir.name, None, tags, keep
        )
        parent_id = parent.info.run_id
        made_text = "created" if made else "updated"
        lines, sent = [f"{sweep_dir.name}: {made_text} MLflow run {parent_id} ({status})"], True
        for fit in _fits(sweep_dir):
            ok, line = send_run(fit, uri, clients, parent_id, where)
            sent, lines = sent and ok, [*lines, f"  {line}"]
        from mlflow.entities import RunTag

        mlflow_client.log_batch(parent_id, tags=[RunTag(k, v) for k, v in tags.items()])
        tracking.send_files(mlflow_client, parent_id, sweep_dir, list(SWEEP_FILES))
        tracking.set_status(mlflow_client, parent_id, status)
        return sent, lines
    finally:
        if lock is not None:
            os.close(lock)


def _walk(root: Path) -> Iterator[tuple[str, Path]]:
    """("run", path) and ("sweep", path) below root; no symlinked folder is followed."""
    if os.path.lexists(root / store.META):
        yield "run", root
        return
    if os.path.lexists(root / store.SWEEP_STATE):
        yield "sweep", root
        return
    if not root.is_dir():
        return
    try:
        children = sorted(os.scandir(root), key=lambda entry: entry.name)
    except OSError:
        return
    for child in children:
        if not child.name.startswith(".") and child.is_dir(follow_symlinks=False):
            yield from _walk(Path(child.path))


def sync(root: Path, uri: str | None) -> Iterator[tuple[bool, str]]:
    """Every run and sweep below root sent to MLflow: (sent, line) for each, as it goes."""
    clients: dict = {}
    for kind, path in _walk(root):
        if kind == "run":
            yield send_run(path, uri, clients)
            continue
        try:
            sent, lines = send_sweep(path, uri, clients)
            yield sent, "\n".join(lines)
        except DlrunError as exc:
            yield False, f"{path.name}: not sent: {exc}"
        except Exception as exc:  # noqa: BLE001 - the server's answer, reported per sweep
            yield False, f"{path.name}: not sent: {tracking.reason(exc, _anywhere(uri))}"


def send_live(found, sweep_dir: Path, console) -> None:
    """At the end of `dlrun sweep`: the sweep sent to the server its base spec names; a server
    that fails costs one warning (`dlrun sync mlflow` sends it later)."""
    where = sweep_target(found.base)
    if where is None:
        return
    try:
        sent, lines = send_sweep(sweep_dir, None, {}, held=True, where=where)
        parent = state_record(sweep_dir).get("run_id")
        console.print(
            clean(
                f"MLflow: run {parent} with {len(lines) - 1} child runs in experiment "
                f"{where.experiment} at {where.shown}",
                False,
            ),
            markup=False,
        )
        if not sent:
            for line in lines[1:]:
                if "not sent" in line:
                    tracking.warn(f"Warning: MLflow: {line.strip()}")
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - the sweep's results stand
        tracking.warn(
            f"Warning: MLflow at {where.shown}: {tracking.reason(exc, where)}; the sweep is "
            f"recorded locally; send it later with: dlrun sync mlflow {sweep_dir}"
        )


def state_record(sweep_dir: Path) -> dict:
    """The sweep's MLflow record in its state.json ({} when it has none)."""
    record = store.read_json(sweep_dir / store.SWEEP_STATE, sweep_dir).get("mlflow")
    return record if isinstance(record, dict) else {}


def check(found) -> None:
    """Before a sweep starts: a server named without the mlflow extra is an error now."""
    if sweep_target(found.base) is not None:
        tracking.require()
