"""Training: the one place that joins data, builder, callbacks and the run store.

Everything that can be wrong with the spec or the data is found before the run folder is
made, so a bad spec never leaves a half-made run behind.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from dlrun import store
from dlrun.errors import RunError
from dlrun.spec.loading import load_spec
from dlrun.spec.schema import Spec

EXIT_CODES = {status: status.exit_code for status in store.Status}
SIGTERM_EXIT = store.SIGTERM_EXIT


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: stop, keep what is saved, record `interrupted`."""


@dataclass
class Prepared:
    spec: Spec
    data: object  # data.Data
    model: object  # keras.Model
    devices: list[str] = field(default_factory=list)  # what it trains on (devices.used)
    stage: int = 1  # 2 once training.finetune has unfrozen the base


@dataclass
class Outcome:
    run_dir: Path
    status: str
    exit_code: int
    metrics: dict
    message: str | None = None


def prepare(spec: Spec) -> Prepared:
    """Seed, load the data, build and compile the model: every spec problem surfaces here."""
    from dlrun.backend import seed_everything, use
    from dlrun.data.arrays import load_data
    from dlrun.data.feed import check_feed
    from dlrun.model.builder import build_model
    from dlrun.model.compiling import compile_model
    from dlrun.train.devices import check_batches, placement

    use(spec.backend, spec.training.device)
    seed_everything(spec.seed, spec.training.deterministic)
    data = load_data(spec)
    check_feed(spec, data)
    with placement(spec) as devices:
        sizes = {"train": len(data.x_train), "test": len(data.x_test)}
        if data.x_val is not None:
            sizes["validation"] = len(data.x_val)
        check_batches(spec, sizes, devices)
        model = build_model(spec, data.input_shape)
        compile_model(model, spec, data.num_classes)
    if spec.training.finetune:
        from dlrun.model.transfer import check_finetune

        check_finetune(model, spec)
    return Prepared(spec, data, model, devices)


def _adapt(prepared: Prepared) -> list[str]:
    """Preprocessing layers adapted on the training split (a resumed run reloads them)."""
    from dlrun.data.adapt import adapt_layers

    data, batch = prepared.data, prepared.spec.training.batch_size
    if data.source is not None:  # image files streamed from disk: not adapted here
        return []
    return adapt_layers(prepared.model, data.x_train, batch)


def _epochs(spec: Spec) -> int:
    """Epochs of both stages together (history.csv numbers them on)."""
    finetune = spec.training.finetune
    return spec.training.epochs + (finetune.epochs if finetune else 0)


def _start_finetune(prepared: Prepared) -> None:
    """Stage 2: unfreeze the base and recompile with the finetuning learning rate."""
    from dlrun.model.compiling import compile_model
    from dlrun.model.transfer import unfreeze

    spec, model = prepared.spec, prepared.model
    unfreeze(model, spec)
    compile_model(model, spec, prepared.data.num_classes)
    model.optimizer.learning_rate = spec.training.finetune.learning_rate
    prepared.stage = 2


def _git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def _callbacks(
    prepared: Prepared, folder: store.RunFolder, console, recorder, rows: list[dict]
) -> list:
    from dlrun.train.callbacks import EarlyStopping, LiveProgress, PlainProgress, TensorBoard

    training = prepared.spec.training
    callbacks = [recorder]
    if training.early_stopping:
        stopping = EarlyStopping(**training.early_stopping.model_dump())
        same = (training.early_stopping.monitor, training.early_stopping.mode) == (
            training.checkpoint.monitor,
            training.checkpoint.mode,
        )
        stopping.replay(rows, folder.path / store.BEST if same else None)
        callbacks.append(stopping)
    if training.tensorboard:
        callbacks.append(
            TensorBoard(
                store.safe_folder(folder.path, store.TENSORBOARD),
                histogram_freq=training.tensorboard.histogram_freq,
                write_graph=training.tensorboard.write_graph,
            )
        )
    progress = LiveProgress if console.is_terminal else PlainProgress
    callbacks.append(progress(console, _epochs(prepared.spec)))
    return callbacks


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
) -> Outcome:
    """Train a spec into a new run folder under runs_root; never raises for a training fault.

    `folder` names the run folder exactly (a sweep's trials); by default it is
    `<name>-<timestamp>`. A sweep's trials pass score_test=False: model selection must not
    look at the test split (and skipping it saves a model load per trial).
    """
    from dlrun.backend import load, use, versions

    use(spec.backend, spec.training.device)
    load()  # first, so that TensorFlow's start-up chatter is silenced
    prepared = prepare(spec)
    run = store.RunFolder.create(runs_root, spec.name, folder)
    run_dir = run.path
    run.write_text(store.CONFIG, spec.dump())
    run.start(
        {
            "name": spec.name,
            "status": store.RUNNING,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": _now(),
            "ended": None,
            "command": command if command is not None else sys.argv,
            "cwd": os.getcwd(),
            "seed": spec.seed,
            "backend": spec.backend,
            "epochs_planned": _epochs(spec),
            "epochs_done": 0,
            "versions": versions(),
            "devices": prepared.devices,
            "git_commit": _git_commit(),
            "config_sha256": _config_digest(run_dir),
            "message": None,
            "attempts": [{"started": _now(), "pid": os.getpid(), "from_epoch": 0}],
            "class_names": prepared.data.class_names,
        }
    )
    with run:
        return _fit(prepared, run, console, [], extra_callbacks, score_test)


RESUMABLE = (store.INTERRUPTED, store.CRASHED, store.FAILED)
# With --epochs, a run that ended can train on: a completed or early-stopped run continues.
EXTENDABLE = (*RESUMABLE, store.COMPLETED)


def resume(
    run_path: Path,
    console,
    command: list[str] | None = None,
    force: bool = False,
    unsafe_load: bool = False,
    extra_callbacks: tuple = (),
    epochs: int | None = None,
) -> Outcome:
    """Continue an interrupted, crashed or failed run from its last completed epoch; with
    `epochs`, also a completed run, up to that many epochs in all (a new attempt)."""
    # The lock first, then the status: of two resumes at once, the second stops here.
    folder = store.RunFolder.acquire(run_path)
    with folder:
        return _resume(folder, console, command, force, unsafe_load, extra_callbacks, epochs)


def _resume(
    folder: store.RunFolder,
    console,
    command: list[str] | None,
    force: bool,
    unsafe_load: bool,
    extra_callbacks: tuple,
    epochs: int | None,
) -> Outcome:
    from dlrun.backend import load, use

    run = folder.read()
    allowed = RESUMABLE if epochs is None else EXTENDABLE
    if run.status not in allowed:
        hint = "; pass --epochs N to train a completed run further" if epochs is None else ""
        raise RunError(
            f"{run.path}: status is {run.status}; only {', '.join(allowed)} runs can be resumed"
            + (hint if run.status == store.COMPLETED else "")
        )
    if _config_digest(run.path) != run.meta.get("config_sha256") and not force:
        raise RunError(
            f"{run.path}: {store.CONFIG} was edited after the run started; "
            "pass --force to resume with the edited config"
        )
    spec = load_spec(store.config_of(run.path))
    done = completed_epoch(run)
    if epochs is not None:
        if epochs <= max(done, run.epochs_done()):
            raise RunError(
                f"{run.path}: --epochs {epochs} is not more than the {run.epochs_done()} epochs "
                f"done; give the total wanted, e.g. --epochs {run.epochs_done() + 5}"
            )
        if spec.training.finetune:
            raise RunError(f"{run.path}: --epochs does not apply to a run with two stages")
        spec.training.epochs = epochs
        folder.write_text(store.CONFIG, spec.dump())  # the run describes itself
    use(spec.backend, spec.training.device)
    load()
    prepared = prepare(spec)
    store.remove_partial_files(run.path)
    epoch = 0
    if store.within(run.path, store.LAST).exists():
        from dlrun.model.checkpoints import load_model

        saved = load_model(run.path / store.LAST, unsafe_load, prepared.model.count_params())
        first = 0
        # A finetuning checkpoint trains more weights than the first stage's model does.
        if spec.training.finetune and len(saved.trainable_weights) > len(
            prepared.model.trainable_weights
        ):
            _start_finetune(prepared)
            first = int(run.meta.get("finetune_from", spec.training.epochs))
        _take_state(prepared.model, saved)
        if done:
            epoch = _checkpoint_epoch(run, saved)
        else:
            epoch = first + _epoch_from_steps(saved, prepared)
    rows = store.read_history(run.path)[:epoch]
    attempts = [
        *_list(folder.meta.get("attempts")),
        {"started": _now(), "pid": os.getpid(), "from_epoch": epoch},
    ]
    folder.update(
        status=store.RUNNING,
        pid=os.getpid(),
        host=socket.gethostname(),
        ended=None,
        message=None,
        epochs_planned=_epochs(spec),
        config_sha256=_config_digest(run.path),
        attempts=attempts,
        resumed_by=command if command is not None else sys.argv,
    )
    return _fit(prepared, folder, console, rows, extra_callbacks)


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

    per_epoch = steps(len(prepared.data.x_train), prepared.spec.training.batch_size)
    return int(keras.ops.convert_to_numpy(saved.optimizer.iterations)) // per_epoch


def _take_state(model, saved) -> None:
    """Weights and optimizer state (step counter, moments) of `saved` into `model`."""
    model.set_weights(saved.get_weights())
    model.optimizer.build(model.trainable_variables)
    for variable, value in zip(model.optimizer.variables, saved.optimizer.variables, strict=True):
        variable.assign(value)


def _fit(
    prepared: Prepared,
    run: store.RunFolder,
    console,
    rows: list[dict],
    extra_callbacks: tuple,
    score_test: bool = True,
) -> Outcome:
    """The training loop shared by new and resumed runs; records the outcome in the run."""
    from dlrun.model.builder import summary_text
    from dlrun.train.callbacks import EarlyStopping, RunRecorder

    spec, model = prepared.spec, prepared.model
    run_dir = run.path
    adapted = _adapt(prepared) if not rows else []
    summary = summary_text(model) + "".join(f"{line}\n" for line in adapted)
    if spec.model.base is not None:
        from dlrun.model.transfer import stage_counts

        summary += stage_counts(model, spec)
    run.write_text(store.SUMMARY, summary)
    if rows:  # a resumed run: history.csv back to the epoch its checkpoint ends
        run.record_epoch(rows)

    batch = spec.training.batch_size
    checkpoint = spec.training.checkpoint
    recorder = RunRecorder(run, checkpoint.monitor, checkpoint.mode, rows)
    callbacks = [*_callbacks(prepared, run, console, recorder, rows), *extra_callbacks]
    if spec.training.adversarial:
        callbacks = [*_adversarial_validation(prepared), *callbacks]
    stages = run.meta.setdefault("stages", [])  # test scores after each finished stage

    status, exit_code, message = store.COMPLETED, 0, None
    started = time.perf_counter()
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    previous_int = signal.getsignal(signal.SIGINT)
    if previous_int is signal.default_int_handler:  # not where SIGINT is ignored (a worker)
        signal.signal(signal.SIGINT, _raise_interrupted)
    try:
        for stage in (1, 2) if spec.training.finetune else (1,):
            if stage < prepared.stage:
                continue
            if stage == 2:
                if prepared.stage == 1:  # starts where the first stage stopped
                    _start_finetune(prepared)
                    run.update(finetune_from=recorder.epochs_done)
                end = run.meta["finetune_from"] + spec.training.finetune.epochs
            else:
                end = spec.training.epochs
            begin = recorder.epochs_done
            recorder.stage = stage if spec.training.finetune else None
            for callback in callbacks:  # patience counts within a stage
                if isinstance(callback, EarlyStopping):
                    callback.replay([r for r in recorder.rows if r.get("stage", 1) == stage])
            inputs, feeding = _inputs(prepared, begin, end)
            if spec.training.adversarial:
                inputs, feeding = _adversarial_inputs(prepared, inputs, feeding, begin, end)
            model.fit(
                **inputs,
                initial_epoch=begin,
                epochs=end,
                callbacks=[*feeding, *callbacks],
                shuffle=False,  # the pipeline shuffles
                verbose=0,
            )
            if recorder.diverged_at or not recorder.epochs_done:
                break
            if spec.training.finetune and len(stages) < stage and score_test:
                stages.append(
                    {
                        "stage": stage,
                        "name": ("head", "finetune")[stage - 1],
                        "epochs_done": recorder.epochs_done,
                        "test": _test_metrics(prepared, run_dir, batch),
                    }
                )
                run.update(stages=stages)
        if recorder.diverged_at:
            status = store.DIVERGED
            message = (
                f"loss or weights became NaN or infinite in epoch {recorder.diverged_at}; "
                f"kept the weights "
                f"of epoch {recorder.epochs_done}"
            )
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        status = store.INTERRUPTED
        message = "stopped by SIGTERM" if terminated else "stopped by Ctrl-C (SIGINT)"
        exit_code = SIGTERM_EXIT if terminated else 130
    except Exception as exc:  # a training fault: recorded in the run, reported in one line
        status, message = store.FAILED, f"{type(exc).__name__}: {str(exc).strip()[:500]}"
        run.meta["traceback"] = traceback.format_exc()
    finally:
        _close_callbacks(callbacks)
    train_seconds = time.perf_counter() - started
    exit_code = exit_code or EXIT_CODES[status]

    metrics = _metrics(prepared, recorder, train_seconds, len(rows))
    stopped = _stopped_early(callbacks)
    if stopped and status == store.COMPLETED:
        metrics["stopped_early"] = stopped
    # Once stopped, a repeated SIGTERM must not cut the writing of the outcome short.
    stopping = status == store.INTERRUPTED
    signal.signal(signal.SIGTERM, signal.SIG_IGN if stopping else _raise_terminated)
    try:  # a full disk (or a stop) here must still leave a finished meta.json
        if score_test and status in (store.COMPLETED, store.DIVERGED) and recorder.epochs_done:
            done = stages and stages[-1]["epochs_done"] == recorder.epochs_done
            metrics["test"] = (
                stages[-1]["test"]
                if done
                else _test_metrics(prepared, run_dir, batch, recorder.best_weights)
            )
        if stages:
            metrics["stages"] = stages
        run.write_json(store.METRICS, metrics)
        if spec.training.tensorboard:
            from dlrun.train.callbacks import write_hparams

            write_hparams(run_dir, spec.model_dump(mode="json"), metrics)
        if recorder.rows:
            from dlrun.report.plots import history_plot

            history_plot(recorder.rows, run.file(store.HISTORY_PLOT))
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        status = store.INTERRUPTED
        message = "stopped by SIGTERM" if terminated else "stopped by Ctrl-C (SIGINT)"
        exit_code = SIGTERM_EXIT if terminated else 130
    except Exception as exc:
        status, exit_code = store.FAILED, EXIT_CODES[store.FAILED]
        message = f"writing the run's results failed: {type(exc).__name__}: {exc}"[:600]
        run.meta["traceback"] = traceback.format_exc()
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # nor Ctrl-C, for these few lines
    try:
        attempts = [a for a in _list(run.meta.get("attempts")) if isinstance(a, dict)] or [{}]
        attempts[-1].update(ended=_now(), status=str(status))
        run.finish(
            status,
            message,
            ended=_now(),
            epochs_done=recorder.epochs_done,
            attempts=attempts,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    return Outcome(run_dir, status, exit_code, metrics, message)


def _inputs(prepared: Prepared, begin: int, end: int) -> tuple[dict, list]:
    """fit()'s data arguments for epochs begin..end-1, and the callbacks that feed them.

    TensorFlow: tf.data pipelines (one stream of epochs, each shuffled by (seed, epoch)).
    JAX and torch: NumPy arrays reordered in place before each epoch, in the same manner.
    """
    from dlrun.data.feed import EpochFeed, pipeline, shuffled_epochs, steps, uses_tf_data

    spec, data = prepared.spec, prepared.data
    batch, seed, source = spec.training.batch_size, spec.seed, data.source
    has_val = data.x_val is not None
    if uses_tf_data():
        if spec.training.shuffle:
            x = shuffled_epochs(data.x_train, data.y_train, batch, seed, begin, end, source)
        else:
            x = pipeline(data.x_train, data.y_train, batch, source)
        val = pipeline(data.x_val, data.y_val, batch, source) if has_val else None
        per_epoch = steps(len(data.x_train), batch)
        return {"x": x, "validation_data": val, "steps_per_epoch": per_epoch}, []
    from dlrun.train.callbacks import EpochShuffle

    feed = EpochFeed(data.x_train, data.y_train, seed, spec.training.shuffle)
    val = (data.x_val, data.y_val) if has_val else None
    arguments = {"x": feed.x, "y": feed.y, "batch_size": batch, "validation_data": val}
    return arguments, [EpochShuffle(feed)]


def _adversarial_inputs(
    prepared: Prepared, inputs: dict, feeding: list, begin: int, end: int
) -> tuple[dict, list]:
    """fit()'s data with a share of each batch replaced by attacks on the current weights.

    TensorFlow: the tf.data stream of _inputs, mixed batch by batch. JAX and torch: the same
    epochs in the same order (epoch_order), batched from the arrays, then mixed.
    """
    from dlrun import backend
    from dlrun.adversarial import training as attack
    from dlrun.data.feed import epoch_order, steps, uses_tf_data

    spec, data, model = prepared.spec, prepared.data, prepared.model
    threat = attack.training_threat(spec, data)
    seed = spec.seed + begin  # a resumed run does not repeat the first attempt's noise
    ratio = spec.training.adversarial.ratio
    if uses_tf_data():
        mixed = attack.mixed_batches(model, inputs["x"], threat, ratio, seed)
        return {**inputs, "x": mixed}, feeding
    x, y, batch = data.x_train, data.y_train, spec.training.batch_size

    def epochs():
        for epoch in range(begin, end):
            order = epoch_order(spec.seed, epoch, len(x)) if spec.training.shuffle else None
            for start in range(0, len(x), batch):
                rows = slice(start, start + batch) if order is None else order[start:][:batch]
                yield x[rows], y[rows]

    mixed = attack.mixed_batches(model, epochs(), threat, ratio, seed)
    val = inputs.get("validation_data")
    arguments = {"x": mixed, "validation_data": val, "steps_per_epoch": steps(len(x), batch)}
    return arguments, [attack.weights_keeper()] if backend.current() == "jax" else []


def _adversarial_validation(prepared: Prepared) -> list:
    """The callback that adds val_adversarial_accuracy; it goes first, so that history.csv
    and TensorBoard see its metric."""
    from dlrun.adversarial import training as attack
    from dlrun.adversarial.attacks import batches as batches_of

    spec, data = prepared.spec, prepared.data
    if data.x_val is None:
        return []
    threat = attack.training_threat(spec, data)
    batches = batches_of(data, data.x_val, data.y_val, spec.training.batch_size)
    return [attack.validation_callback(batches, threat, spec.seed)]


def _stopped_early(callbacks: list) -> dict | None:
    """Where early stopping ended the fit, and why (None when it ran every epoch)."""
    from dlrun.train.callbacks import EarlyStopping

    for callback in callbacks:
        if isinstance(callback, EarlyStopping) and callback.stopped_epoch > 0:
            return {
                "epoch": int(callback.stopped_epoch) + 1,
                "monitor": callback.monitor,
                "patience": int(callback.patience),
            }
    return None


def _close_callbacks(callbacks: list) -> None:
    """Keras calls on_train_end only when fit returns: on an exception, close what the
    callbacks hold open (the live progress bar, the TensorBoard files) here."""
    for callback in callbacks:
        close = getattr(callback, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # closing must not hide why fit stopped
                pass


def _raise_terminated(signum, frame):
    # One stop is enough: a second signal while Keras unwinds would escape the handler that
    # records the stop and leave meta.json saying running.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


def _raise_interrupted(signum, frame):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt()


def _metrics(prepared: Prepared, recorder, train_seconds: float, resumed_from: int) -> dict:
    rows = recorder.rows[: recorder.epochs_done]
    epochs_this_attempt = max(recorder.epochs_done - resumed_from, 0)
    samples = len(prepared.data.x_train) * epochs_this_attempt
    return {
        "params": int(prepared.model.count_params()),
        "epochs_done": recorder.epochs_done,
        "monitor": recorder.monitor,
        "best_epoch": recorder.best_epoch,
        "best_value": recorder.best_value,
        "final": {k: v for k, v in rows[-1].items() if k != "epoch"} if rows else {},
        "train_seconds": round(train_seconds, 3),
        "samples_per_second": round(samples / train_seconds, 1) if train_seconds else None,
        # What reading the run later needs without Keras: which way each metric is better,
        # what the labels were.
        "directions": recorder.directions,
        "input_shape": list(prepared.data.input_shape),
        "task": prepared.data.task,
    }


def _test_metrics(
    prepared: Prepared, run_dir: Path, batch_size: int, best_weights: list | None = None
) -> dict:
    """Scores of the best checkpoint on the test split.

    The best epoch's weights are still in memory unless it came before a resume; putting them
    back costs nothing, loading best.keras costs a model deserialisation.
    """
    import keras

    from dlrun.data.feed import evaluation_input

    model = prepared.model
    best = run_dir / store.BEST
    if best_weights is not None:
        model.set_weights(best_weights)
    elif best.exists():
        model = keras.models.load_model(best, safe_mode=True)
    data = prepared.data
    test = evaluation_input(data.x_test, data.y_test, batch_size, data.source)
    scores = model.evaluate(**test, verbose=0, return_dict=True)
    return {key: float(value) for key, value in scores.items()}
