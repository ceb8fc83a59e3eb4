"""Training a run: a new one from a spec into a new folder, or a resumed one in its own folder.

Everything that can be wrong with the spec or the data is found (train.prepared) before the
run folder is made, so a bad spec never leaves a half-made run behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from dlrun import store, usercode
from dlrun.data.splits import count, validation_share
from dlrun.errors import RunError
from dlrun.spec.loading import load_spec
from dlrun.spec.schema import Spec
from dlrun.tracking import mlflow_runs as tracking
from dlrun.train import cluster
from dlrun.train.fit import fit
from dlrun.train.life import now
from dlrun.train.prepared import Outcome, Prepared, prepare, start_finetune, total_epochs


def _git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def _config_digest(run_dir: Path) -> str:
    return hashlib.sha256(store.read_bytes(run_dir / store.CONFIG)).hexdigest()


def train(
    spec: Spec,
    runs_root: Path,
    console,
    command: list[str] | None = None,
    extra_callbacks: tuple = (),
    folder: str | None = None,
    score_test: bool = True,
    plot: bool = True,
    track: bool = True,
) -> Outcome:
    """Train a spec into a new run folder under runs_root; never raises for a training fault.

    `folder` names the run folder exactly (a sweep's trials); by default it is
    `<name>-<timestamp>`. A sweep's trials pass score_test=False: model selection must not
    look at the test split (and skipping it saves a model load per trial); and plot=False:
    drawing history.png costs a small fit more than its epochs. `track`: send the run to the
    tracking server the spec or $MLFLOW_TRACKING_URI names (a sweep's fits: False, the sweep
    sends them as its MLflow run's children).
    """
    from dlrun.backend import load, use

    # MLflow asked for without its extra, or without a server: said before the folder exists
    tracker = tracking.tracker(spec, runs_root, track, console)
    use(spec.backend, spec.training.device)
    load()  # first, so that TensorFlow's start-up chatter is silenced
    usercode.add_base_code(spec)  # a base run's code, if trusted
    code = usercode.use_spec(spec)  # the user's own files, before anything is built
    role = cluster.join(spec.processes)  # several processes: all meet before the model is built
    prepared = prepare(spec)
    _tell(console, prepared.data)
    if spec.training.validation_split is None:  # the run describes itself: resolved
        own = prepared.data.validation == "own"
        spec.training.validation_split = validation_share(spec, own)
    base = _pin_base(spec)
    if role is not None and not role.leader:  # process 0 writes the run; this one a copy
        runs_root = cluster.scratch_root()
    run = store.RunFolder.create(runs_root, spec.name, folder)
    run_dir = run.path
    try:
        _start(run, spec, prepared, command, base, code)
    except OSError as exc:  # a full disk or a file size limit before the run began
        run.close()
        shutil.rmtree(run_dir, ignore_errors=True)  # the folder this process just made
        raise RunError(
            f"{run_dir}: cannot start the run ({exc.strerror or exc}); nothing was trained "
            "and the half-made folder was removed"
        ) from None
    with run:
        outcome = fit(prepared, run, console, [], extra_callbacks, score_test, plot, tracker)
    if role is not None and not role.leader:
        cluster.remove_scratch(run_dir)
    return outcome


def _tell(console, data) -> None:
    """What loading decided for the user: rows dropped, an input shape taken from the data."""
    from dlrun.textsafe import clean

    for note in getattr(data, "notes", []):
        console.print(clean(note, newlines=False), markup=False)


def _pin_base(spec: Spec) -> dict | None:
    """A transfer run's base as an absolute path, so that the run resumes and reproduces from
    any folder, and what it was: the base run's own config digest."""
    base = spec.model.base
    if base is None or (base.run is None and base.file is None):
        return None
    if base.file is not None:
        base.file = str(Path(base.file).resolve())
        return {"file": base.file}
    base.run = str(Path(base.run).resolve())
    digest = store.open_run(base.run).meta.get("config_sha256")
    return {"run": base.run, "config_sha256": digest if isinstance(digest, str) else None}


def _start(
    run: store.RunFolder,
    spec: Spec,
    prepared: Prepared,
    command: list[str] | None,
    base: dict | None = None,
    code: list | None = None,
) -> None:
    """config.yaml (naming the run's copies of the code files) and the first meta.json
    (status running) of a new run."""
    from dlrun.backend import versions

    copies = usercode.copy_into_run(run.path, code) if code else None
    if code:
        usercode.remember([file.sha256 for file in code])  # code this user trained with
    run.write_text(store.CONFIG, spec.dump(copies))
    run.start(
        {
            "name": spec.name,
            "status": store.RUNNING,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": now(),
            "ended": None,
            "command": command if command is not None else sys.argv,
            "cwd": os.getcwd(),
            "seed": spec.seed,
            "backend": spec.backend,
            # backend: auto (the default): why this one (spec.backends); null when named
            "backend_auto": spec._backend_auto,
            "epochs_planned": total_epochs(spec),
            # compile.steps_per_execution as fit ran it (auto resolved: Spec.steps_per_execution)
            "steps_per_execution": int(prepared.model.steps_per_execution),
            "epochs_done": 0,
            "versions": versions(),
            "devices": prepared.devices,
            **_processes(),
            "git_commit": _git_commit(),
            "config_sha256": _config_digest(run.path),
            "message": None,
            "attempts": [{"started": now(), "pid": os.getpid(), "from_epoch": 0}],
            "class_names": prepared.data.class_names,
            "base": base,  # a transfer run's base: absolute, with the base run's config digest
            "validation": prepared.data.validation,  # split, own, cv or none
            # What loading decided and told the user (hidden folders skipped, rows dropped):
            # a reader of the run knows it too.
            **({"data_notes": notes} if (notes := getattr(prepared.data, "notes", [])) else {}),
            # What `dlrun predict` needs beyond config.yaml: the csv columns, by name and order.
            "feature_columns": prepared.data.feature_columns,
            # The code files as trained: {code/NAME.py: sha256} (config.yaml names the copies)
            **({"code": usercode.digests(code)} if code else {}),
            **_recorded(prepared),
        }
    )


def _begin_attempt(folder: store.RunFolder, config: str | None, **changes) -> None:
    """A resume's config.yaml (with --epochs) and meta.json, both or neither: a full disk or
    a file size limit here is one line, and the run stays as it was, resumable once there is
    room (its config.yaml never disagrees with the digest in its meta.json)."""
    before = dict(folder.meta)
    old = store.read_bytes(folder.path / store.CONFIG) if config is not None else None
    try:
        if config is not None:
            folder.write_text(store.CONFIG, config)  # the run describes itself
        folder.update(config_sha256=_config_digest(folder.path), **changes)
    except OSError as exc:
        folder.meta = before
        if old is not None:  # the old config.yaml's room was freed by the swap: it fits
            with contextlib.suppress(OSError):
                folder.write_text(store.CONFIG, old.decode())
        raise RunError(
            f"{folder.path}: cannot resume the run ({exc.strerror or exc}); nothing was "
            "trained and the run is as it was"
        ) from None


def _processes() -> dict:
    """meta.json's processes of a run over several: each one's number, host, pid, devices."""
    members = cluster.members()
    return {"processes": members} if members else {}


def _recorded(prepared) -> dict:
    """What else reading the run needs: class weights by class name, csv categories."""
    found = {}
    weights, data = prepared.class_weight, prepared.data
    if weights is not None:
        names = data.class_names or [str(n) for n in range(data.num_classes)]
        found["class_weight"] = {names[index]: weight for index, weight in weights.items()}
    if data.recorded:
        found["data_encoding"] = data.recorded
    return found


RESUMABLE = (store.INTERRUPTED, store.CRASHED, store.FAILED)
# With --epochs, a run that ended can train on: a completed, early-stopped or pruned run.
EXTENDABLE = (*RESUMABLE, store.COMPLETED, store.PRUNED)


def resume(
    run_path: Path,
    console,
    command: list[str] | None = None,
    force: bool = False,
    unsafe_load: bool = False,
    extra_callbacks: tuple = (),
    epochs: int | None = None,
    score_test: bool = True,
    plot: bool = True,
    track: bool = True,
) -> Outcome:
    """Continue an interrupted, crashed or failed run from its last completed epoch; with
    `epochs`, also a completed run, up to that many epochs in all (a new attempt).
    `score_test`, `plot` and `track` as for train (a sweep's trials: all False); a tracked run
    goes on in the same MLflow run."""
    # The lock first, then the status: of two resumes at once, the second stops here.
    folder = store.RunFolder.acquire(run_path)
    with folder:
        return _resume(
            folder,
            console,
            command,
            force,
            unsafe_load,
            extra_callbacks,
            epochs,
            score_test,
            plot,
            track,
        )


def _resume(
    folder: store.RunFolder,
    console,
    command: list[str] | None,
    force: bool,
    unsafe_load: bool,
    extra_callbacks: tuple,
    epochs: int | None,
    score_test: bool = True,
    plot: bool = True,
    track: bool = True,
) -> Outcome:
    from dlrun.backend import load, use

    run = folder.read()
    allowed = RESUMABLE if epochs is None else EXTENDABLE
    if run.status not in allowed:
        hint = "; pass --epochs N to train a completed run further" if epochs is None else ""
        raise RunError(
            f"{run.path}: status is {run.status}; only {', '.join(allowed)} runs can be resumed"
            + (hint if run.status in (store.COMPLETED, store.PRUNED) else "")
        )
    if _config_digest(run.path) != run.meta.get("config_sha256") and not force:
        raise RunError(
            f"{run.path}: {store.CONFIG} was edited after the run started; "
            "pass --force to resume with the edited config"
        )
    spec = load_spec(store.config_of(run.path), relative_to=run.relative_to)
    tracker = tracking.tracker(spec, run.path.parent, track, console)
    done = completed_epoch(run)
    if epochs is not None:
        if epochs <= max(done, run.epochs_done()):
            raise RunError(
                f"{run.path}: --epochs {epochs} is not more than the {run.epochs_done()} epochs "
                f"done; give the total wanted, e.g. --epochs {run.epochs_done() + 5}"
            )
        if spec.training.finetune:
            raise RunError(f"{run.path}: --epochs does not apply to a run with two stages")
        spec.training.epochs = epochs  # config.yaml says so once the attempt begins
    use(spec.backend, spec.training.device)
    load()
    usercode.use_run(spec, run.path)  # the run's copies, if trusted; before anything is built
    # Before anything changes in the run: the other processes copy it until all have joined.
    role = cluster.join(spec.processes)
    prepared = prepare(spec)
    from dlrun.model.checkpoints import check_run_checkpoints, load_model

    params = prepared.model.count_params()
    check_run_checkpoints(run.path, params)  # before the run says running again
    store.remove_partial_files(run.path)
    epoch = 0
    if store.within(run.path, store.LAST).exists():
        saved = load_model(run.path / store.LAST, unsafe_load, params)
        first = 0
        # A finetuning checkpoint trains more weights than the first stage's model does.
        if spec.training.finetune and len(saved.trainable_weights) > len(
            prepared.model.trainable_weights
        ):
            start_finetune(prepared)
            first = int(run.meta.get("finetune_from", spec.training.epochs))
        _take_state(prepared.model, saved)
        if done:
            epoch = _checkpoint_epoch(run, saved)
        else:
            epoch = first + _epoch_from_steps(saved, prepared)
        from dlrun.train.callbacks import restore_seeds

        restore_seeds(prepared.model, run.meta, epoch)  # Dropout, augmentation draw on
    rows = store.read_history(run.path)[:epoch]
    attempts = [
        *_list(folder.meta.get("attempts")),
        {"started": now(), "pid": os.getpid(), "from_epoch": epoch},
    ]
    _begin_attempt(
        folder,
        spec.dump() if epochs is not None else None,
        status=store.RUNNING,
        pid=os.getpid(),
        host=socket.gethostname(),
        ended=None,
        message=None,
        epochs_planned=total_epochs(spec),
        attempts=attempts,
        resumed_by=command if command is not None else sys.argv,
        **_processes(),
    )
    outcome = fit(prepared, folder, console, rows, extra_callbacks, score_test, plot, tracker)
    if role is not None and not role.leader:
        cluster.remove_scratch(run.path)
    return outcome


def finish_pruned(run_path: Path, message: str) -> str:
    """A stopped fit (interrupted, crashed, failed) that its sweep's pruner has since given up
    on: recorded as `pruned` where it stands, without training (a sweep's --resume)."""
    folder = store.RunFolder.acquire(run_path)
    with folder:
        run = folder.read()
        if run.status not in RESUMABLE:
            return str(run.status)
        folder.finish(store.PRUNED, message, ended=now(), epochs_done=completed_epoch(run))
        return str(store.PRUNED)


def _list(value) -> list:
    return value if isinstance(value, list) else []


def completed_epoch(run: store.Run) -> int:
    """The epoch last.keras ends: meta.json counts it once the epoch's checkpoints are saved."""
    done = run.meta.get("epochs_done")
    return done if isinstance(done, int) and not isinstance(done, bool) and done > 0 else 0


def _checkpoint_epoch(run: store.Run, saved) -> int:
    """The epoch last.keras ends. meta.json counts an epoch just after its checkpoint is saved,
    so a kill in between leaves the checkpoint one epoch ahead: its optimizer has taken one
    more epoch of steps than meta.json recorded."""
    import keras

    done = completed_epoch(run)
    recorded, per_epoch = run.meta.get("steps_done"), run.meta.get("steps_per_epoch")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (recorded, per_epoch)):
        return done
    ahead = int(keras.ops.convert_to_numpy(saved.optimizer.iterations)) - recorded
    if per_epoch > 0 and ahead > 0 and ahead % per_epoch == 0:
        return done + ahead // per_epoch
    return done


def _epoch_from_steps(saved, prepared: Prepared) -> int:
    # Runs recorded before meta.json counted each epoch: right only if batch size and splits
    # are unchanged.
    import keras

    from dlrun.data.feed import steps

    per_epoch = steps(count(prepared.data.x_train), prepared.spec.training.batch_size)
    return int(keras.ops.convert_to_numpy(saved.optimizer.iterations)) // per_epoch


def _take_state(model, saved) -> None:
    """Weights and optimizer state (step counter, moments) of `saved` into `model`."""
    model.set_weights(saved.get_weights())
    model.optimizer.build(model.trainable_variables)
    for variable, value in zip(model.optimizer.variables, saved.optimizer.variables, strict=True):
        variable.assign(value)
