"""The fit of one attempt at a run, new or resumed, and everything it records.

Stages (the head, then finetuning), callbacks, the data fit() is given on each backend, and the
test scores and files written at the end; the attempt's outcome is recorded by train.life.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from dlrun import store
from dlrun.model import metrics as directions_of
from dlrun.train import cluster, knobs
from dlrun.train.life import RunLife
from dlrun.train.prepared import Outcome, Prepared, adapt, start_finetune, total_epochs


def fit(
    prepared: Prepared,
    run: store.RunFolder,
    console,
    rows: list[dict],
    extra_callbacks: tuple,
    score_test: bool = True,
    plot: bool = True,
    tracker=None,
) -> Outcome:
    """The training loop shared by new and resumed runs; records the outcome in the run.

    A sweep's trials pass score_test=False and plot=False: the sweep plots them together, and
    `dlrun compare TRIAL --plot` draws one's curves from its history.csv. `tracker` (a
    tracking.Tracker) sends the run to a tracking server as it trains, and whole at the end.
    """
    from dlrun.model.builder import summary_text
    from dlrun.train.callbacks import KnownModes, RunRecorder

    spec, model = prepared.spec, prepared.model
    run_dir = run.path
    recorder, callbacks, metrics = None, [], {}
    stages = run.meta.setdefault("stages", [])  # test scores after each finished stage
    started = time.perf_counter()
    with RunLife(run) as life:
        life.epochs_done = len(rows)
        with life.phase():
            if tracker is not None:
                tracker.begin(run)
            adapted = adapt(prepared) if not rows else []
            summary = summary_text(model) + "".join(f"{line}\n" for line in adapted)
            if spec.model.base is not None:
                from dlrun.model.transfer import stage_counts

                summary += stage_counts(model, spec)
            run.write_text(store.SUMMARY, summary)
            if spec.model.is_graph:
                from dlrun.model.builder import draw_graph, graph_text

                run.write_text(store.GRAPH, graph_text(model))
                draw_graph(model, run.file(store.MODEL_PNG))
            if rows:  # a resumed run: history.csv back to the epoch its checkpoint ends
                run.record_epoch(rows)
            checkpoint = spec.training.checkpoint
            given = directions_of.given(spec.compile.metrics)
            recorder = RunRecorder(run, checkpoint.monitor, checkpoint.mode, rows, given)
            # The spec's own callbacks run before dlrun records the epoch, so what they
            # change (a learning rate) is in its checkpoint, and their state in meta.json.
            own = list(prepared.callbacks)
            if own:
                recorder.state = lambda: {knobs.STATE: knobs.state_of(prepared.callbacks)}
                state = _callback_state(run.meta, len(rows)) if rows else None
                if state is not None:
                    own.append(knobs.restorer(prepared.callbacks, state))
            callbacks = [*own, *_callbacks(prepared, run, console, recorder, rows)]
            if tracker is not None:
                from dlrun.train.callbacks import TrackEpochs

                callbacks.append(TrackEpochs(tracker, recorder))
            first, later = _fitted_scores(prepared, extra_callbacks)
            callbacks = [*first, *callbacks, *later]
            if spec.training.adversarial:
                callbacks = [*_adversarial_validation(prepared), *callbacks]
            callbacks = [KnownModes(list(callbacks)), *callbacks]
            try:
                _stages(prepared, run, recorder, callbacks, stages, score_test)
            except Exception as exc:  # a lost process of several: say which
                lost = cluster.explained(exc, run_dir)
                if lost is exc:
                    raise
                raise lost from exc
            finally:
                _close_callbacks(callbacks)
            if recorder.epochs_done and not recorder.directions:
                _read_directions(prepared, recorder)  # resumed with no epoch left to train
            if recorder.diverged_at:
                life.diverged(
                    f"loss or weights became NaN or infinite in epoch {recorder.diverged_at}; "
                    f"kept the weights of epoch {recorder.epochs_done}"
                )
            elif pruned := _pruned(callbacks):
                life.pruned(pruned["message"])
        train_seconds = time.perf_counter() - started
        if recorder is not None:
            life.epochs_done = recorder.epochs_done
            with life.writing():
                attempts = _attempts(run, train_seconds, recorder.epochs_done - len(rows))
                metrics = _metrics(prepared, recorder, attempts)
                stopped = _stopped_early(callbacks)
                if stopped and life.status == store.COMPLETED:
                    metrics["stopped_early"] = stopped
                if life.status == store.PRUNED:
                    metrics["pruned"] = _pruned(callbacks)
                if score_test and life.ok and recorder.epochs_done:
                    done = stages and stages[-1]["epochs_done"] == recorder.epochs_done
                    metrics["test"] = (
                        stages[-1]["test"]
                        if done
                        else _test_metrics(prepared, run_dir, recorder.best_weights)
                    )
                if stages:
                    metrics["stages"] = stages
                run.write_json(store.METRICS, metrics)
                if spec.training.tensorboard:
                    from dlrun.train.callbacks import write_hparams

                    write_hparams(run_dir, spec.resolved(), metrics)
                if recorder.rows and plot:
                    from dlrun.report.plots import history_plot

                    history_plot(recorder.rows, run.file(store.HISTORY_PLOT))
    if tracker is not None:  # the outcome is recorded: now the server learns it
        tracker.end(run)
    return Outcome(run_dir, life.status, life.exit_code, metrics, life.message)


def _callback_state(meta: dict, epoch: int) -> list | None:
    """The spec's callbacks' state after `epoch`, the checkpoint's: recorded with it before
    last.keras is written (callbacks.STATES), else meta.json's count of epochs (older runs)."""
    from dlrun.train.callbacks import STATES

    by_epoch = meta.get(STATES)
    kept = by_epoch.get(str(epoch)) if isinstance(by_epoch, dict) else None
    state = kept if isinstance(kept, list) else meta.get(knobs.STATE)
    return state if isinstance(state, list) else None


def _stages(
    prepared: Prepared, run: store.RunFolder, recorder, callbacks: list, stages: list, score: bool
) -> None:
    """fit() once per stage: the head, then (training.finetune) the unfrozen base."""
    from dlrun.train.callbacks import EarlyStopping

    spec, model = prepared.spec, prepared.model
    for stage in (1, 2) if spec.training.finetune else (1,):
        if stage < prepared.stage:
            continue
        if stage == 2:
            if prepared.stage == 1:  # starts where the first stage stopped
                start_finetune(prepared)
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
        if spec.training.adversarial:  # after start_finetune's recompile, once per stage
            _train_on_attacks(prepared)
        try:
            model.fit(
                **inputs,
                class_weight=prepared.class_weight,
                initial_epoch=begin,
                epochs=end,
                callbacks=[*feeding, *callbacks],
                shuffle=False,  # the pipeline shuffles
                verbose=0,
            )
        finally:
            _close_callbacks(feeding)  # a reorder still running when fit() stopped
        if recorder.diverged_at or not recorder.epochs_done or _pruned(callbacks):
            break
        if spec.training.finetune and len(stages) < stage and score:
            stages.append(
                {
                    "stage": stage,
                    "name": ("head", "finetune")[stage - 1],
                    "epochs_done": recorder.epochs_done,
                    "test": _test_metrics(prepared, run.path),
                }
            )
            run.update(stages=stages)


def _callbacks(
    prepared: Prepared, folder: store.RunFolder, console, recorder, rows: list[dict]
) -> list:
    from dlrun.model.layers import seed_generators
    from dlrun.train.callbacks import EarlyStopping, EpochSeeds, TensorBoard
    from dlrun.train.progress import LiveProgress, PlainProgress

    training = prepared.spec.training
    callbacks = [recorder]
    if training.early_stopping:
        settings = training.early_stopping.model_dump()
        given = directions_of.given(prepared.spec.compile.metrics)
        if settings["mode"] == "auto" and settings["monitor"] in given:  # Keras cannot tell
            settings["mode"] = given[settings["monitor"]]
        stopping = EarlyStopping(**settings)
        same = (training.early_stopping.monitor, training.early_stopping.mode) == (
            training.checkpoint.monitor,
            training.checkpoint.mode,
        )
        stopping.replay(rows, store.within(folder.path, store.BEST) if same else None)
        callbacks.append(stopping)
    if training.tensorboard:
        board = TensorBoard(
            store.safe_folder(folder.path, store.TENSORBOARD),
            histogram_freq=training.tensorboard.histogram_freq,
            write_graph=training.tensorboard.write_graph,
        )
        recorder.writers.append(board.write_epoch)  # with the history row, signals held
        callbacks.append(board)
    # Dropout, augmentation: a run from before their state was recorded set it each epoch.
    old_run = rows and "seed_states" not in folder.meta
    if old_run and seed_generators(prepared.model):
        callbacks.append(EpochSeeds(prepared.spec.seed))
        recorder.seeds = False
    progress = LiveProgress if console.is_terminal else PlainProgress
    callbacks.append(progress(console, total_epochs(prepared.spec)))
    return callbacks


def _inputs(prepared: Prepared, begin: int, end: int) -> tuple[dict, list]:
    """fit()'s data arguments for epochs begin..end-1, and the callbacks that feed them.

    TensorFlow: tf.data pipelines (one stream of epochs, each shuffled by (seed, epoch)).
    JAX and torch: NumPy arrays reordered in place before each epoch, in the same manner.
    """
    from dlrun.data.feed import EpochFeed, pipeline, shuffled_epochs, steps, uses_tf_data
    from dlrun.data.splits import count

    spec, data = prepared.spec, prepared.data
    batch, seed, source = spec.training.batch_size, spec.seed, data.source
    has_val = data.x_val is not None
    if uses_tf_data():
        if spec.training.shuffle:
            x = shuffled_epochs(data.x_train, data.y_train, batch, seed, begin, end, source)
        else:
            x = pipeline(data.x_train, data.y_train, batch, source)
        val = pipeline(data.x_val, data.y_val, batch, source) if has_val else None
        per_epoch = steps(count(data.x_train), batch)
        return {"x": x, "validation_data": val, "steps_per_epoch": per_epoch}, []
    from dlrun.train.callbacks import EpochShuffle

    # One of several processes feeds its own rows of each batch (train.cluster).
    rows = cluster.local_rows(count(data.x_train), batch)
    feed = EpochFeed(data.x_train, data.y_train, seed, spec.training.shuffle, rows)
    val = (cluster.local(data.x_val, batch), cluster.local(data.y_val, batch)) if has_val else None
    arguments = {
        "x": feed.x,
        "y": feed.y,
        "batch_size": cluster.local_batch(batch),
        "validation_data": val,
    }
    return arguments, [EpochShuffle(feed)]


def _train_on_attacks(prepared: Prepared) -> None:
    """training.adversarial: a share of each batch attacked inside the compiled train step."""
    from dlrun.adversarial import training as attack

    spec = prepared.spec
    threat = attack.training_threat(spec, prepared.data)
    attack.train_on_attacks(prepared.model, threat, spec.training.adversarial.ratio, spec.seed)


def _fitted_scores(prepared: Prepared, extra: tuple) -> tuple[list, list]:
    """The caller's callbacks: FittedScores (bound to the training split, to go before the
    recorder so that history.csv and TensorBoard see its scores), and the others."""
    from dlrun.train.callbacks import FittedScores

    first = [callback for callback in extra if isinstance(callback, FittedScores)]
    data, batch = prepared.data, prepared.spec.training.batch_size
    for callback in first:
        callback.inputs = _evaluation(data.x_train, data.y_train, batch, data.source)
    return first, [callback for callback in extra if not isinstance(callback, FittedScores)]


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


def _pruned(callbacks: list) -> dict | None:
    """Where a sweep's pruner stopped the fit, and its message (None when it did not)."""
    from dlrun.train.callbacks import Pruning

    for callback in callbacks:
        if isinstance(callback, Pruning) and callback.pruned:
            return callback.pruned
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


def _read_directions(prepared: Prepared, recorder) -> None:
    """The metrics' directions, and so the best epoch of history.csv, for a run resumed after
    its last epoch (killed before metrics.json): one batch builds Keras' compiled metrics."""
    from dlrun.data.splits import take

    data, batch = prepared.data, prepared.spec.training.batch_size
    first = slice(None, batch)
    one = _evaluation(take(data.x_train, first), take(data.y_train, first), batch, data.source)
    prepared.model.evaluate(**one, verbose=0)
    recorder.read_directions()


def _attempts(run: store.RunFolder, seconds: float, epochs: int) -> list[dict]:
    """meta.json's attempts, this one's training seconds and epochs recorded in it: the ones
    that recorded theirs (an attempt killed outright did not)."""
    attempts = run.meta.get("attempts")
    attempts = [a for a in attempts if isinstance(a, dict)] if isinstance(attempts, list) else []
    if attempts:
        attempts[-1].update(train_seconds=round(seconds, 3), epochs_trained=max(epochs, 0))
    return [
        a for a in attempts if _number(a.get("train_seconds")) and _number(a.get("epochs_trained"))
    ]


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def _metrics(prepared: Prepared, recorder, attempts: list[dict]) -> dict:
    """metrics.json; train_seconds and samples_per_second over every attempt that recorded its
    own (a resumed run trained in several)."""
    rows = recorder.rows[: recorder.epochs_done]
    from dlrun.data.splits import count, each

    train_seconds = sum(a["train_seconds"] for a in attempts)
    samples = count(prepared.data.x_train) * sum(a["epochs_trained"] for a in attempts)
    return {
        "params": int(prepared.model.count_params()),
        "epochs_done": recorder.epochs_done,
        "monitor": recorder.monitor,
        "best_epoch": recorder.best_epoch,
        "best_value": recorder.best_value,
        "final": {k: v for k, v in rows[-1].items() if k != "epoch"} if rows else {},
        "train_seconds": round(train_seconds, 3),
        # None when no attempt trained an epoch (resumed after the last one).
        "samples_per_second": round(samples / train_seconds, 1) if samples else None,
        # What reading the run later needs without Keras: which way each metric is better,
        # what the labels were.
        "directions": recorder.directions,
        "input_shape": each(prepared.data.input_shape, list),  # several inputs: by name
        "task": prepared.data.task,
    }


def _test_metrics(prepared: Prepared, run_dir: Path, best_weights: list | None = None) -> dict:
    """Scores of the best checkpoint on the test split.

    The best epoch's weights are still in memory unless it came before a resume; putting them
    back costs nothing, loading best.keras costs a model deserialisation.
    """
    from dlrun.model.checkpoints import load_model

    model, batch_size = prepared.model, prepared.spec.training.batch_size
    best = store.within(run_dir, store.BEST)  # never another run's, through a symlink
    if best_weights is not None:
        model.set_weights(best_weights)
    elif os.path.lexists(best):
        model = load_model(best, params=model.count_params())
    data = prepared.data
    test = _evaluation(data.x_test, data.y_test, batch_size, data.source)
    scores = model.evaluate(**test, verbose=0, return_dict=True)
    return {key: float(value) for key, value in scores.items()}


def _evaluation(x, y, batch_size: int, source) -> dict:
    """evaluate()'s inputs; one of several processes gives its own rows of each batch."""
    from dlrun.data.feed import evaluation_input

    local = cluster.local_batch(batch_size)
    return evaluation_input(
        cluster.local(x, batch_size), cluster.local(y, batch_size), local, source
    )
