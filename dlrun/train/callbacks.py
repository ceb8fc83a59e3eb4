"""Keras callbacks that record a run (its progress on the console: train.progress). [TensorFlow]

None of them does per-batch work beyond counting: files are written once an epoch.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path

import keras
import numpy as np

from dlrun import store
from dlrun.errors import RunError
from dlrun.model import metrics as directions_of
from dlrun.model.layers import seed_generators, seed_states
from dlrun.store import events
from dlrun.train.life import raise_unrecorded_stop

SEED_STATES = "seed_states"  # meta.json: {epoch: every seed generator's state after it}
STATES = "callback_states"  # meta.json: {epoch: the spec's callbacks' state after it}


def _finite(logs: dict) -> bool:
    return all(math.isfinite(v) for k, v in logs.items() if k.endswith("loss"))


class KnownModes(keras.callbacks.Callback):
    """Gives every Keras MonitorCallback left on `mode: auto` (EarlyStopping,
    ReduceLROnPlateau) the direction dlrun records for its monitor (model.metrics), before it
    asks Keras: Keras finds none for one output's metric (val_odd_accuracy) of several and
    stops the run after epoch 1. It must come first in fit()'s list."""

    def __init__(self, callbacks: list):
        super().__init__()
        self.callbacks = callbacks

    def on_epoch_end(self, epoch, logs=None):
        # The compile metrics exist from the first traced step on; the others read their
        # direction lazily in their own on_epoch_end, after this one.
        directions = directions_of.compiled(self.model)
        for callback in self.callbacks:
            monitor = getattr(callback, "monitor", None)
            if getattr(callback, "mode", None) == "auto" and monitor in directions:
                callback.mode = directions_of.mode(monitor, "auto", directions)


class RunRecorder(keras.callbacks.Callback):
    """Once an epoch: history.csv, then last.keras and best.keras, all atomic.

    A non-finite loss stops training, puts back the weights of the last finite epoch and
    overwrites no checkpoint, so best.keras and last.keras always hold finite weights.
    Everything --resume needs is in these files: the checkpoint's optimizer step counter says
    which epoch it ends, history.csv holds the rows (and so the best value) up to it.

    async_safe: its batch hook only notes that a batch came. Without it Keras (on JAX and
    torch) turns every batch's metrics into Python numbers on the training thread, a wait for
    the device after each step: 0.9 ms a batch, a quarter of the dense net's epoch on JAX.
    """

    async_safe = True

    def __init__(
        self,
        run: store.RunFolder,
        monitor: str,
        mode: str,
        rows: list[dict] | None = None,
        given: dict[str, str] | None = None,
    ):
        super().__init__()
        self.given = dict(given or {})  # the spec's `direction:` of code files' metrics
        self.run = run
        self.run_dir = run.path
        self.monitor = monitor
        self.mode = mode
        self.directions: dict[str, str] = {}  # from the compiled model, as fit() starts
        self.is_better = directions_of.better(mode, monitor, {})
        self.rows: list[dict] = list(rows or [])
        self.epochs_done = len(self.rows)
        self.best_value = self.best_epoch = None
        self.diverged_at: int | None = None
        self.best_weights: list | None = None  # of the best epoch of this attempt
        self.stage: int | None = None  # training.finetune: 1 or 2, a history.csv column
        self.state = None  # a callable: more to record in meta.json with each epoch
        self.seeds = True  # record the seed generators' state (not for a run EpochSeeds sets)
        # Callables (epoch, logs) that record the epoch elsewhere (TensorBoard), called with
        # the same signals held, just before its history row: a stop cannot fall between them.
        self.writers: list = []
        self._good_weights = None
        self._started = 0.0
        self._batches = 0  # of the current epoch
        from dlrun.train.checkpointing import Writer

        # last.keras after the first of a fit is written from copies, in the background
        # (train.checkpointing); the epoch it holds is counted once it is complete.
        self._layout = None  # checkpointing.Layout; False: this model keeps Keras' save
        self._writer = Writer()
        self._pending: tuple | None = None  # the epoch being written: _saved's arguments

    def on_train_end(self, logs=None):
        with store.signals_held():
            self.flush()

    def close(self) -> None:
        """fit() stopped by an exception: the epoch being written is still counted once it
        is complete (train.fit calls this)."""
        with store.signals_held():
            self.flush()

    def flush(self, save: bool = True) -> bool:
        """Wait for the checkpoint being written; then count its epoch (meta.json; with
        save=False in meta only, for the caller's next write of meta.json). Whether it did."""
        pending, self._pending = self._pending, None
        self._writer.wait()  # a failed write: its epoch is not counted, the error goes up
        if pending is not None:
            self._saved(*pending, save=save)
        return pending is not None

    def on_train_begin(self, logs=None):
        self._layout = None if self._layout is not False else False
        # The weights to go back to if the first epoch diverges; once last.keras holds an
        # epoch, it is where they come from (one copy of the weights kept, not two).
        last = self.run.file(store.LAST)
        self._good_weights = None if os.path.lexists(last) else self.model.get_weights()
        self._steps_at_epoch_end = self._optimizer_steps()

    def _restore_good_weights(self) -> None:
        """The weights of the last finite epoch back into the model: last.keras's (its
        weights file only, with the optimizer's state of that epoch; no config is read)."""
        if self._good_weights is not None:
            self.model.set_weights(self._good_weights)
            return
        from dlrun.model.checkpoints import check_archive

        last = store.within(self.run_dir, store.LAST)
        check_archive(last, self.model.count_params())
        self.model.load_weights(last)

    def _optimizer_steps(self) -> int:
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def read_directions(self) -> None:
        # Keras builds the compile metrics as it traces the first step, so their directions
        # are known only at the end of the first epoch (where its own EarlyStopping reads them).
        self.directions = {**directions_of.compiled(self.model), **self.given}
        self.is_better = directions_of.better(self.mode, self.monitor, self.directions)
        self.best_value, self.best_epoch = best_of(self.rows, self.monitor, self.is_better)

    def _record_seeds(self, epoch: int) -> bool:
        """The seed generators' state after `epoch`, in meta.json before the epoch's
        checkpoint: a resume from that checkpoint (or from the one before, if a kill lands
        in between) puts them back. The last two epochs are kept."""
        states = seed_states(self.model) if self.seeds else []
        if not states:
            return False
        kept = self.run.meta.get(SEED_STATES)
        kept = (
            {k: v for k, v in kept.items() if k == str(epoch - 1)} if isinstance(kept, dict) else {}
        )
        kept[str(epoch)] = [keras.ops.convert_to_numpy(state).tolist() for state in states]
        self.run.meta[SEED_STATES] = kept  # written before the checkpoint (_record)
        return True

    def _record_states(self, epoch: int, more: dict) -> bool:
        """The spec's callbacks' state after `epoch`, in meta.json before the epoch's
        checkpoint, as the seed generators' (meta.json counts the epoch only once last.keras
        is written, so a kill can leave last.keras an epoch ahead of the count: resume then
        takes the state of the checkpoint's epoch from here). The last two epochs are kept."""
        from dlrun.train import knobs

        if knobs.STATE not in more:
            return False
        kept = self.run.meta.get(STATES)
        kept = kept if isinstance(kept, dict) else {}
        kept = {k: v for k, v in kept.items() if k == str(epoch - 1)}
        kept[str(epoch)] = more[knobs.STATE]
        self.run.meta[STATES] = kept  # written before the checkpoint (_record)
        return True

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()
        self._batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self._batches += 1

    def on_epoch_end(self, epoch, logs=None):
        if not self._batches:  # Keras ends such an epoch quietly, with a loss of 0
            raise RunError(
                f"epoch {epoch + 1} got no training batches: the training data ran out before "
                "it began; nothing of it was recorded"
            )
        with store.signals_held():  # a stop lands before or after the epoch's records
            self._record(epoch, logs)
        raise_unrecorded_stop()  # a stop whose exception library code swallowed

    def _record(self, epoch, logs) -> None:
        # The previous epoch's checkpoint, before anything of this one. Its count goes to
        # meta.json in one write with this epoch's seed and callback states, just before this
        # epoch's checkpoint (up to three writes an epoch before).
        counted = self.flush(save=False)
        if not self.directions:
            self.read_directions()
        logs = {key: float(value) for key, value in (logs or {}).items()}
        learning_rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        row = {"epoch": epoch + 1, **logs, "learning_rate": learning_rate}
        if self.stage is not None:
            row["stage"] = self.stage
        row["epoch_seconds"] = round(time.perf_counter() - self._started, 4)
        # Every variable read to host memory once: the checkpoint, the finiteness check, the
        # best weights and TensorBoard's histograms all use these copies (each read its own
        # before: three reads of every weight an epoch, one eager op each on TensorFlow).
        layout = self._layout
        snapshot = layout.copy(self.model) if layout and layout.current(self.model) else None
        values = snapshot.by_variable() if snapshot is not None else {}
        for write in self.writers:
            write(epoch, logs, values)
        self.rows.append(row)
        self.run.record_epoch(self.rows)
        if all(id(weight) in values for weight in self.model.weights):
            weights = [values[id(weight)] for weight in self.model.weights]
        else:
            weights = self.model.get_weights()
        # Clipped losses can stay finite while the weights are already NaN: check both.
        if not (_finite(logs) and all(np.isfinite(w).all() for w in weights)):
            self.diverged_at = epoch + 1
            if counted:
                self.run.save_meta()  # the previous epoch's count
            self._restore_good_weights()
            self.model.stop_training = True
            return
        changed = self._record_seeds(epoch + 1) or counted
        value = logs.get(self.monitor)
        improved = value is not None and (
            self.best_value is None or self.is_better(value, self.best_value)
        )
        steps = self._optimizer_steps()
        more = self.state() if self.state is not None else {}
        # meta.json with the previous epoch's count and this one's states, then the checkpoint
        meta = self.run.meta_text() if self._record_states(epoch + 1, more) or changed else None
        saved = (epoch + 1, improved, value, weights, steps, steps - self._steps_at_epoch_end, more)
        self._steps_at_epoch_end = steps
        if snapshot is not None:  # both written by the writer's thread, in this order
            self._pending = saved
            self._writer.start(lambda: self._write(snapshot, improved, meta))
            return
        if meta is not None:
            self.run.save_meta(meta)
        from dlrun.train.checkpointing import Layout

        last = self.run.file(store.LAST)
        with store.atomic_path(last) as tmp:
            self._layout = Layout.learn(self.model, tmp) or False  # Keras' own save
        if improved:  # the same weights: a copy, not a second save
            with store.atomic_path(self.run.file(store.BEST)) as tmp:
                shutil.copyfile(last, tmp)
        self._saved(*saved)

    def _write(self, snapshot, improved: bool, meta: str | None) -> None:
        """meta.json's text, then last.keras (and best.keras) from a snapshot: in the writer's
        thread (replacing meta.json costs 1-3 ms on ext4, which pushes the new file's data
        out as it replaces the old one; the training thread goes on meanwhile)."""
        if meta is not None:
            self.run.save_meta(meta)
        last = self.run.file(store.LAST)
        with store.atomic_path(last) as tmp:
            snapshot.write(tmp)
        if improved:
            with store.atomic_path(self.run.file(store.BEST)) as tmp:
                shutil.copyfile(last, tmp)

    def _saved(self, epoch, improved, value, weights, steps, per_epoch, more, save=True) -> None:
        """The epoch's checkpoints are complete: count it. An interrupt before this leaves
        the previous checkpoints' count, and the counters must agree with them."""
        self._good_weights = None  # last.keras holds them now
        self.epochs_done = epoch
        if improved:
            self.best_value, self.best_epoch = value, epoch
            self.best_weights = weights
        # The optimizer's step count goes with the epoch count: a kill between the checkpoint
        # and this line leaves last.keras one epoch ahead of meta.json, which resume detects.
        # Which way the metrics go, in meta.json from the first epoch on: a sweep judging a
        # fit while it trains reads it there (metrics.json comes only at the end).
        self.run.meta.setdefault("directions", self.directions)
        self.run.epoch_done(self.epochs_done, steps, per_epoch, save=save, **more)


def best_of(rows: list[dict], monitor: str, is_better) -> tuple[float | None, int | None]:
    """The best value of the monitor over history rows, and its epoch."""
    best_value = best_epoch = None
    for row in rows:
        value = row.get(monitor)
        if value is not None and math.isfinite(value):
            if best_value is None or is_better(value, best_value):
                best_value, best_epoch = value, int(row["epoch"])
    return best_value, best_epoch


class TrackEpochs(keras.callbacks.Callback):
    """Each epoch's history.csv row sent to a tracking server (tracking.Tracker) once the
    recorder has written it: the server sees what the run folder holds."""

    def __init__(self, tracker, recorder: RunRecorder):
        super().__init__()
        self.tracker, self.recorder = tracker, recorder

    def on_epoch_end(self, epoch, logs=None):
        rows = self.recorder.rows
        if rows and rows[-1]["epoch"] == epoch + 1:
            self.tracker.epoch(rows[-1])


class TensorBoard(keras.callbacks.Callback):
    """TensorBoard logs in Keras' own layout and tags, written without TensorFlow ops.

    train/ and validation/ hold epoch_<metric> scalars (and epoch_learning_rate), train/ the
    weight histograms and the model's conceptual graph (tag `keras`). At the end, the run
    folder's tensorboard/ gets the HParams summary: config values against final metrics.
    RunRecorder calls write_epoch with the epoch's history row (RunRecorder.writers), so that
    a stop arriving then leaves both or neither, never a history row TensorBoard lacks.
    """

    def __init__(self, log_dir: Path, histogram_freq: int = 1, write_graph: bool = True):
        super().__init__()
        self.log_dir = Path(log_dir)
        self.histogram_freq = histogram_freq
        self.write_graph = write_graph
        self._train = self._validation = None

    def on_train_begin(self, logs=None):
        self._train = events.EventWriter(store.safe_folder(self.log_dir, "train"))
        self._validation = events.EventWriter(store.safe_folder(self.log_dir, "validation"))
        if self.write_graph:
            self._train.write(0, events.keras_graph(self.model.to_json()))

    def write_epoch(self, epoch: int, logs: dict, values: dict | None = None) -> None:
        """The epoch's scalars and histograms; `values`: host copies of the variables made
        for the checkpoint, by id(variable), used where they hold a weight."""
        rate = self.model.optimizer.learning_rate
        train = {f"epoch_{k}": v for k, v in logs.items() if not k.startswith("val_")}
        train["epoch_learning_rate"] = float(keras.ops.convert_to_numpy(rate))
        self._train.write(epoch, events.scalars(train))
        validation = {f"epoch_{k[4:]}": v for k, v in logs.items() if k.startswith("val_")}
        self._validation.write(epoch, events.scalars(validation))
        if self.histogram_freq and epoch % self.histogram_freq == 0:
            values = values or {}
            weights = {
                f"{weight.path.replace(':', '_')}/histogram": values[id(weight)]
                if id(weight) in values
                else keras.ops.convert_to_numpy(weight)
                for layer in self.model.layers
                for weight in layer.weights
            }
            self._train.write(epoch, events.histograms(weights))
        self._train.flush()
        self._validation.flush()

    def on_train_end(self, logs=None):
        self.close()

    def close(self) -> None:
        for writer in (self._train, self._validation):
            if writer is not None:
                writer.close()
        self._train = self._validation = None


def write_hparams(run_dir: Path, config: dict, metrics: dict) -> None:
    """The HParams summary: the run's config values against its final and test metrics.

    TensorBoard's HParams tab then lines up every run under a logdir with no extra step.
    """
    from dlrun.report.compare import config_columns

    values = {
        key: value
        for key, value in config_columns(config).items()
        if isinstance(value, (bool, int, float, str))
    }
    finite = events.hparams_scores(metrics)
    writer = events.EventWriter(store.safe_folder(run_dir, store.TENSORBOARD))
    writer.write(0, events.hparams(values, run_dir.name))
    writer.write(0, events.scalars(finite))
    writer.close()


class EarlyStopping(keras.callbacks.EarlyStopping):
    """Keras' EarlyStopping that can pick up where a resumed run left off.

    `replay(rows)` feeds it the history rows of the epochs already done, so its best value
    and patience counter continue instead of starting over. `best` is a checkpoint holding
    the best epoch on this callback's monitor (best.keras when the monitors agree): its
    weights are what restore_best_weights puts back, not the weights at resume time.
    """

    def replay(self, rows: list[dict], best: Path | None = None) -> None:
        self._rows = list(rows)
        if best is not None:  # kept across the replays of later stages
            self._best_checkpoint = best

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._pending = bool(getattr(self, "_rows", []))

    def on_epoch_end(self, epoch, logs=None):
        # Replayed here, not in on_train_begin: Keras builds the compile metrics (whose
        # directions decide mode auto) only as it traces the first step.
        if getattr(self, "_pending", False):
            self._pending = False
            self._replay()
        super().on_epoch_end(epoch, logs)

    def _replay(self) -> None:
        if self.monitor_op is None:
            self._set_monitor_op()
        for row in self._rows:
            current = row.get(self.monitor)
            if current is None or row["epoch"] - 1 < self.start_from_epoch:
                continue
            self.wait += 1
            if self._is_improvement(current, self.best):
                self.best, self.best_epoch = current, row["epoch"] - 1
                if self.baseline is None or self._is_improvement(current, self.baseline):
                    self.wait = 0
        if self.restore_best_weights:
            best = getattr(self, "_best_checkpoint", None)
            if best is not None and os.path.lexists(best):
                from dlrun.model.checkpoints import load_model

                params = self.model.count_params()  # bounds what the archive may expand to
                saved = load_model(Path(best), params=params, compile=False)
                self.best_weights = saved.get_weights()
            else:  # no checkpoint of this monitor's best epoch: the nearest we have
                self.best_weights = self.model.get_weights()


class FittedScores(keras.callbacks.Callback):
    """After each epoch, the model as it stands scored on its whole training split, added to
    the epoch's logs as fitted_<metric>: a sweep's train scores, as GridSearchCV's
    return_train_score computes them (the metrics Keras logs are running means over batches
    whose weights kept changing). train.fit binds the data and puts it before the recorder.
    """

    def __init__(self):
        super().__init__()
        self.inputs: dict | None = None  # evaluate()'s data arguments

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or self.inputs is None:
            return
        scores = self.model.evaluate(**self.inputs, verbose=0, return_dict=True)
        logs.update({f"{directions_of.FITTED}{k}": float(v) for k, v in scores.items()})


class Pruning(keras.callbacks.Callback):
    """After each epoch (once RunRecorder has recorded it), asks `judge(epoch, logs)`.

    The judge (a sweep's pruner, in another process) answers None to go on, or a message to
    stop: the fit then ends after this epoch and the run is recorded as `pruned` with that
    message. An epoch that already ends the fit (divergence, early stopping) is not judged.
    """

    def __init__(self, judge):
        super().__init__()
        self.judge = judge
        self.pruned: dict | None = None  # {"epoch": n, "message": ...} once stopped

    def on_epoch_end(self, epoch, logs=None):
        if self.model.stop_training or self.pruned:
            return
        message = self.judge(epoch + 1, logs or {})
        if message:
            self.pruned = {"epoch": epoch + 1, "message": message}
            self.model.stop_training = True


class EpochShuffle(keras.callbacks.Callback):
    """Reorders the NumPy training arrays (data.EpochFeed) before each epoch reads them.

    The next epoch's order is written while dlrun records this one: from this epoch's end
    (its training batches are all read by then; validation reads other arrays), in a thread
    (NumPy's take lets go of the GIL), and the next epoch begins once it is done. It must come
    before the recorder in fit()'s callbacks (train.fit puts it first). The thread is started
    as the checkpoint's is (checkpointing.Writer: no wait for it to run), and an error of the
    reorder stops fit() at the next epoch's start instead of leaving it a half-ordered epoch.
    """

    def __init__(self, feed):
        super().__init__()
        from dlrun.train.checkpointing import Writer

        self.feed = feed
        self._writer = Writer()
        self._ready: int | None = None  # the epoch the arrays are arranged for

    def on_epoch_begin(self, epoch, logs=None):
        self.close()
        if self._ready != epoch:
            self.feed.arrange(epoch)
        self._ready = None

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 < (self.params or {}).get("epochs", 0):
            self._ready = epoch + 1
            self._writer.start(lambda: self.feed.arrange(epoch + 1))

    def on_train_end(self, logs=None):
        self.close()

    def close(self) -> None:
        """Wait for the reorder in progress (train.fit calls this when fit() stops); raises
        what it raised."""
        try:
            self._writer.wait()
        except BaseException:
            self._ready = None  # not arranged: the next fit() arranges its first epoch itself
            raise


def restore_seeds(model, meta: dict, epoch: int) -> bool:
    """Put back the seed generators' state recorded after `epoch` (see RunRecorder); False
    when the run recorded none for it (a run from before they were recorded)."""
    recorded = meta.get(SEED_STATES)
    states = recorded.get(str(epoch)) if isinstance(recorded, dict) else None
    variables = seed_states(model)
    if not isinstance(states, list) or len(states) != len(variables):
        return False
    for variable, state in zip(variables, states, strict=True):
        variable.assign(np.array(state, dtype=variable.dtype))
    return True


class EpochSeeds(keras.callbacks.Callback):
    """Runs from before the seed generators' state was recorded (SEED_STATES) set it at each
    epoch from (seed, epoch), epoch 0 too: such a run resumes exactly with this. New runs
    leave every epoch's draws as plain Keras makes them."""

    def __init__(self, seed: int):
        super().__init__()
        self.seed = seed

    def on_epoch_begin(self, epoch, logs=None):
        for number, generator in enumerate(seed_generators(self.model)):
            start = np.random.default_rng([self.seed, number, epoch]).integers(2**31)
            generator.state.assign(np.array([start, 0], dtype=generator.state.dtype))
