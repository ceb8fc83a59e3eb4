"""Adversarial examples: FGSM and PGD against a run's model, and adversarial training.  [TensorFlow]

An attack moves each input by at most eps (L-infinity) in the direction that raises the
model's own loss on the true label (or lowers it on a target class), and keeps it inside the
valid input range, [min, max] of the scaled training data. eps is given as a fraction of that
range, so eps 0.1 means 0.1 on data scaled to [0, 1] whatever the spec's `scale`.

PGD (Madry et al. 2018) starts at a random point of the eps ball and takes `steps` signed
gradient steps, projecting back after each; FGSM (Goodfellow et al. 2015) is its one-step case
from the clean input with step eps. The input gradient is the only backend-specific piece:
`input_gradient` picks tf.GradientTape, jax.grad or torch autograd by Keras' backend.
"""

from __future__ import annotations

import os
import tempfile
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from dlrun import store
from dlrun.errors import AttackError, RunError, SpecError

METHODS = ("fgsm", "pgd")
DEFAULT_EPS = (0.0, 0.02, 0.05, 0.1, 0.2)
SAMPLE_SEED = 0  # the fixed seed of the stratified --samples choice: two attacks compare
PLOT_EXAMPLES = 6


# --- the input gradient, per backend ----------------------------------------------------------


def _tensorflow_gradient(model, loss, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    inputs = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        values = loss(tf.convert_to_tensor(y), model(inputs, training=False))
        total = tf.reduce_sum(values)
    return tape.gradient(total, inputs).numpy(), values.numpy()


def _jax_gradient(model, loss, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    import jax.numpy as jnp

    trainable, non_trainable = _jax_weights(model)
    step = _jax_compiled(model, loss)
    gradient, values = step(jnp.asarray(x), list(trainable), list(non_trainable), jnp.asarray(y))
    return np.asarray(gradient), np.asarray(values)


# One compiled input gradient per (model, loss); the weights are arguments, not constants, so
# it serves every step of training. Op-by-op it took 60% of an adversarial fit on JAX.
_JAX_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _jax_compiled(model, loss):
    import jax
    import jax.numpy as jnp

    by_loss = _JAX_COMPILED.setdefault(model, {})
    if loss not in by_loss:

        def total(inputs, trainable, non_trainable, labels):
            outputs, _ = model.stateless_call(trainable, non_trainable, inputs, training=False)
            values = loss(labels, outputs)
            return jnp.sum(values), values

        by_loss[loss] = jax.jit(jax.grad(total, has_aux=True))
    return by_loss[loss]


def _jax_weights(model) -> tuple[list, list]:
    """The current weights. Inside JAX's fit they live in the trainer's state, not in the
    model's variables (emptied to save memory, filled again at the end of each epoch)."""
    state = getattr(model, "_jax_state", None)
    if state and not getattr(model, "_jax_state_synced", True):
        return state["trainable_variables"], state["non_trainable_variables"]
    if any(v._value is None for v in model.trainable_variables):  # the epoch's first batch
        return model._weights_at_epoch_begin
    return _variable_values(model)


def _variable_values(model) -> tuple[list, list]:
    trainable = [v.value for v in model.trainable_variables]
    return trainable, [v.value for v in model.non_trainable_variables]


def _torch_gradient(model, loss, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    import keras
    import torch

    inputs = keras.ops.convert_to_tensor(x).detach().requires_grad_(True)
    values = loss(keras.ops.convert_to_tensor(y), model(inputs, training=False))
    (gradient,) = torch.autograd.grad(torch.sum(values), inputs)
    return gradient.detach().cpu().numpy(), values.detach().cpu().numpy()


GRADIENTS = {"tensorflow": _tensorflow_gradient, "jax": _jax_gradient, "torch": _torch_gradient}


def input_gradient(model, loss, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """d sum(loss(y, model(x))) / dx on Keras' current backend, and the per-sample losses."""
    import keras

    backend = keras.backend.backend()
    if backend not in GRADIENTS:
        raise AttackError(
            f"attacks need input gradients, which dlrun computes on tensorflow, jax or torch; "
            f"Keras runs on {backend}"
        )
    return GRADIENTS[backend](model, loss, x, y)


def model_loss(model):
    """The loss the model was compiled with (what it was trained to lower), as a function."""
    import keras

    compiled = getattr(model, "loss", None)
    if compiled is None:
        return keras.losses.categorical_crossentropy
    function = keras.losses.get(compiled)
    return function if callable(function) else keras.losses.categorical_crossentropy


# --- one perturbation -------------------------------------------------------------------------


@dataclass(frozen=True)
class Threat:
    """How to perturb: the method, eps and step on the model's input scale, and the valid range."""

    method: str
    eps: float  # absolute, on the model's input scale
    steps: int
    step: float  # absolute PGD step
    low: float
    high: float


def perturb(
    model,
    loss,
    x: np.ndarray,
    y: np.ndarray,
    threat: Threat,
    rng: np.random.Generator,
    targeted: bool = False,
) -> np.ndarray:
    """Adversarial versions of x: |x_adv - x| <= eps everywhere, low <= x_adv <= high.

    Untargeted: raise loss(y, .) (y the true labels); targeted: lower it (y the target).
    """
    if threat.eps == 0:
        return x.copy()
    lower = np.maximum(x - threat.eps, threat.low).astype(x.dtype)
    upper = np.minimum(x + threat.eps, threat.high).astype(x.dtype)
    if threat.method == "fgsm":
        adversarial, steps, step = x.copy(), 1, threat.eps
    else:
        noise = rng.uniform(-threat.eps, threat.eps, size=x.shape).astype(x.dtype)
        adversarial, steps, step = np.clip(x + noise, lower, upper), threat.steps, threat.step
    # Minimise sign * loss; PGD keeps each sample's best iterate, not merely its last one.
    sign = -1.0 if targeted else 1.0
    best, best_score = adversarial, None
    for _ in range(steps):
        gradient, values = input_gradient(model, loss, adversarial, y)
        if threat.method == "pgd":
            best, best_score = _keep_better(best, best_score, adversarial, sign * values)
        adversarial = np.clip(adversarial + sign * step * np.sign(gradient), lower, upper)
    if threat.method == "fgsm":
        return adversarial.astype(x.dtype)
    _, values = input_gradient(model, loss, adversarial, y)  # the one backend-specific call
    best, _ = _keep_better(best, best_score, adversarial, sign * values)
    return best.astype(x.dtype)


def _keep_better(best, best_score, candidate, score):
    if best_score is None:
        return candidate.copy(), score
    better = score > best_score
    best = best.copy()
    best[better] = candidate[better]
    return best, np.where(better, score, best_score)


def predict(model, x: np.ndarray) -> np.ndarray:
    import keras

    return keras.ops.convert_to_numpy(model(x, training=False))


def input_range(x_train: np.ndarray) -> tuple[float, float]:
    """The valid input range: [min, max] of the scaled training data."""
    low, high = float(np.min(x_train)), float(np.max(x_train))
    if not high > low:
        raise AttackError(
            f"the training inputs are constant ({low}); there is no input range to attack in"
        )
    return low, high


def data_range(data, spec) -> tuple[float, float]:
    """The valid input range of the spec's data, on the model's input scale."""
    if data.source is not None:  # an image folder, decoded as it streams: pixels over scale
        return 0.0, 255.0 / spec.data.scale
    # The training data's range, widened to the test inputs so that every x lies inside it.
    low, high = input_range(data.x_train)
    return min(low, float(np.min(data.x_test))), max(high, float(np.max(data.x_test)))


def batches(data, x: np.ndarray, y: np.ndarray, batch: int) -> Callable[[], Iterator]:
    """A fresh iterator of (x, y) NumPy batches each call: slices, or decoded image files."""
    if data.source is None:
        return lambda: ((x[i : i + batch], y[i : i + batch]) for i in range(0, len(x), batch))
    from dlrun.data import pipeline

    def decoded():
        for xb, yb in pipeline(x, y, batch, data.source):
            yield np.asarray(xb), np.asarray(yb)

    return decoded


# --- checks before anything is loaded or written ----------------------------------------------


def check_arguments(
    method: str, eps: list[float], steps: int, step_size: float | None, samples: int
) -> None:
    if method not in METHODS:
        raise AttackError(f"--method: expected fgsm or pgd, got {method!r}")
    if not eps:
        raise AttackError("--eps: give at least one value, e.g. --eps 0,0.05,0.1")
    wrong = [value for value in eps if not 0 <= value <= 1]
    if wrong:
        raise AttackError(
            f"--eps: {wrong[0]} is outside [0, 1]; eps is a fraction of the input range "
            "(0.1 = a tenth of it), e.g. --eps 0,0.05,0.1"
        )
    if steps < 1:
        raise AttackError(f"--steps: expected 1 or more gradient steps, got {steps}")
    if step_size is not None and not 0 < step_size <= 1:
        raise AttackError(
            f"--step-size: expected a fraction of the input range in (0, 1], got {step_size}"
        )
    if samples < 1:
        raise AttackError(f"--samples: expected 1 or more, got {samples}")


def parse_eps(text: str) -> list[float]:
    """`0,0.02,0.1` -> [0.0, 0.02, 0.1]."""
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise AttackError(f"--eps: expected numbers separated by commas, got {text!r}") from None


def _check_numeric_input(model, path: Path) -> None:
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) != 1:
        raise AttackError(f"{path}: the model takes {len(inputs)} inputs; attacks need exactly one")
    dtype = str(inputs[0].dtype)
    if "float" not in dtype:
        raise AttackError(
            f"{path}: the model's input is {dtype}, not numeric (floating point); attacks "
            "perturb inputs along the gradient, which only exists for numbers"
        )


def _safe_folder(run_path: Path, name: str) -> None:
    """Check, writing nothing yet, that a folder of the run is no symlink out of it."""
    folder = run_path / name
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        kind = "a symlink" if folder.is_symlink() else "not a folder"
        raise RunError(f"{folder}: is {kind}; refusing to write out of the run {run_path.name}")


def stratified(labels: np.ndarray, samples: int) -> np.ndarray:
    """Indices of `samples` items with the class proportions of `labels`, fixed by SAMPLE_SEED."""
    count = len(labels)
    if samples >= count:
        return np.arange(count)
    from sklearn.model_selection import train_test_split

    try:
        chosen, _ = train_test_split(
            np.arange(count), train_size=samples, stratify=labels, random_state=SAMPLE_SEED
        )
    except ValueError:  # a class too small to stratify: a plain seeded choice
        chosen = np.random.default_rng(SAMPLE_SEED).permutation(count)[:samples]
    return np.sort(chosen)


def _write_new_json(folder: Path, stem: str, data: dict) -> Path:
    """folder/stem.json, or stem-2.json, ...: written whole, never over another file.

    The complete file is linked into place: os.link fails if the name is taken, even by a
    second attack in the same second, and a reader never sees half a file.
    """
    import json

    text = json.dumps(data, indent=2, default=store._jsonable) + "\n"
    fd, name = tempfile.mkstemp(prefix=f".{stem}.", suffix=".tmp.json", dir=folder)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(text)
        os.chmod(tmp, 0o666 & ~store._UMASK)  # mkstemp makes 0600
        for attempt in range(1, 10_000):
            path = folder / (f"{stem}.json" if attempt == 1 else f"{stem}-{attempt}.json")
            try:
                os.link(tmp, path)
            except FileExistsError:
                continue
            return path
    finally:
        tmp.unlink(missing_ok=True)
    raise RunError(f"{folder}: no free file name for {stem}")


def check_run(run_path: Path, checkpoint: str = "best", overrides=()) -> tuple:
    """The run, its checkpoint and its spec, if the run can be attacked and written to."""
    from dlrun.evaluate import CHECKPOINTS
    from dlrun.spec import load_spec

    if checkpoint not in CHECKPOINTS:
        raise AttackError(f"--checkpoint: expected best or last, got {checkpoint!r}")
    for assignment in overrides:
        if not assignment.startswith(("data.", "backend=")):
            raise SpecError(
                f"--set {assignment}: attack takes data.KEY=VALUE and backend=NAME overrides only"
            )
    run = store.open_run(run_path)
    model_path = store.within(run.path, CHECKPOINTS[checkpoint])
    if not model_path.is_file():
        raise AttackError(
            f"{run.path}: no {CHECKPOINTS[checkpoint]} to attack; the run saved no checkpoint "
            f"(status {run.status}, {run.meta.get('epochs_done', 0)} epochs done)"
        )
    for folder in (store.ATTACKS, store.PLOTS):
        _safe_folder(run.path, folder)
    return run, model_path, load_spec(store.config_of(run.path), overrides)


# --- the attack command -----------------------------------------------------------------------


def attack(
    run_path: Path,
    method: str = "pgd",
    eps: list[float] | tuple[float, ...] = DEFAULT_EPS,
    steps: int = 10,
    step_size: float | None = None,
    samples: int = 1000,
    target: int | None = None,
    checkpoint: str = "best",
    overrides: list[str] | tuple[str, ...] = (),
    unsafe_load: bool = False,
    console=None,
) -> dict:
    """Attack a run's checkpoint on (a stratified sample of) its test split, for each eps.

    Writes attacks/<timestamp>-<method>.json and plots/adversarial.png inside the run.
    `step_size` is a fraction of the input range; by default 2.5 * eps / steps (Madry et al.).
    """
    from dlrun.evaluate import load_model

    eps = [float(value) for value in eps]
    check_arguments(method, eps, steps, step_size, samples)
    run, model_path, spec = check_run(run_path, checkpoint, overrides)

    from dlrun.backend import use

    use(spec.backend)  # the run's own, or another: a .keras file loads on every backend
    from dlrun.builder import build_model
    from dlrun.data import load_data

    data = load_data(spec)
    # A transfer model's base comes from elsewhere: the archive's plain size bound holds.
    params = None if spec.model.base else build_model(spec, data.input_shape).count_params()
    model = load_model(model_path, unsafe_load, params)
    _check_numeric_input(model, model_path)
    if target is not None and not 0 <= target < data.num_classes:
        raise AttackError(
            f"--target: class {target} does not exist; the data has classes "
            f"0-{data.num_classes - 1}"
        )
    low, high = data_range(data, spec)
    from dlrun.evaluate import _printable

    names = [_printable(str(n)) for n in data.class_names or range(data.num_classes)]
    truth = np.argmax(data.y_test, axis=-1) if data.y_test.ndim > 1 else data.y_test.astype(int)
    chosen = stratified(truth, samples)
    if target is not None:  # a targeted attack is scored on the samples not already of it
        chosen = chosen[truth[chosen] != target]
        if not len(chosen):
            raise AttackError(f"--target: every chosen sample is already of class {target}")
    x, y, truth = data.x_test[chosen], data.y_test[chosen], truth[chosen]  # x: or file paths
    if target is not None:  # the labels the attack pulls towards, in the run's label format
        aimed = np.full(len(x), target)
        y = np.eye(data.num_classes, dtype=y.dtype)[aimed] if y.ndim > 1 else aimed.astype(y.dtype)

    width = high - low
    threats = [
        Threat(
            method,
            value * width,
            steps,
            (step_size if step_size is not None else 2.5 * value / steps) * width,
            low,
            high,
        )
        for value in eps
    ]
    loss = model_loss(model)
    rng = np.random.default_rng(spec.seed)
    batch = spec.training.batch_size
    clean_correct = 0
    correct = np.zeros(len(eps), dtype=np.int64)
    hits = np.zeros(len(eps), dtype=np.int64)  # predicted as the target
    largest_change = np.zeros(len(eps))
    shown = None
    strongest = int(np.argmax(eps))
    with _progress(console, -(-len(x) // batch), f"{method} on {len(x)} samples") as advance:
        starts = range(0, len(x), batch)
        for start, (xb, yb) in zip(starts, batches(data, x, y, batch)(), strict=True):
            tb = truth[start : start + batch]
            clean = predict(model, xb)
            clean_correct += int(np.sum(np.argmax(clean, -1) == tb))
            for index, threat in enumerate(threats):
                adversarial = perturb(model, loss, xb, yb, threat, rng, target is not None)
                scores = predict(model, adversarial)
                predicted = np.argmax(scores, -1)
                correct[index] += int(np.sum(predicted == tb))
                if target is not None:
                    hits[index] += int(np.sum(predicted == target))
                change = float(np.max(np.abs(adversarial - xb))) if len(xb) else 0.0
                largest_change[index] = max(largest_change[index], change)
                if shown is None and index == strongest:
                    shown = _examples(xb, adversarial, clean, scores, tb)
            advance()

    total = len(x)
    results = []
    for index, value in enumerate(eps):
        row = {
            "eps": value,
            "eps_input_scale": threats[index].eps,
            "clean_accuracy": clean_correct / total,
            "adversarial_accuracy": int(correct[index]) / total,
            "max_abs_perturbation": largest_change[index],
        }
        if target is not None:
            row["target_success_rate"] = int(hits[index]) / total
        results.append(row)
    created = datetime.now()
    result = {
        "run": run.name,
        "checkpoint": checkpoint,
        "created": created.astimezone().isoformat(timespec="seconds"),
        "method": method,
        "steps": 1 if method == "fgsm" else steps,
        "step_size": step_size,
        "random_start": method == "pgd",
        "target": target,
        "target_name": names[target] if target is not None else None,
        "class_names": names,
        "samples": total,
        "sample_seed": SAMPLE_SEED,
        "input_range": [low, high],
        "data": spec.data.model_dump(mode="json"),
        "results": results,
    }
    # Into the run only: a received run's attacks/ or plots/ may be a symlink out of it.
    folder = store.safe_folder(run.path, store.ATTACKS)
    written = _write_new_json(folder, f"{created.strftime(store.TIMESTAMP)}-{method}", result)
    from dlrun.plots import adversarial_plot

    plot = store.inside(run.path, store.ADVERSARIAL_PLOT)
    adversarial_plot(*shown, eps=eps[strongest], low=low, high=high, names=names, path=plot)
    result["written"] = [str(written), str(plot)]
    return result


def _examples(x, adversarial, clean, scores, truth) -> tuple:
    """A few samples for the plot, those the attack fooled first."""
    fooled = (np.argmax(clean, -1) == truth) & (np.argmax(scores, -1) != truth)
    order = np.concatenate([np.flatnonzero(fooled), np.flatnonzero(~fooled)])[:PLOT_EXAMPLES]
    return x[order], adversarial[order], clean[order], scores[order]


class _progress:
    """A transient rich progress bar over batches on `console` (none without a console)."""

    def __init__(self, console, total: int, description: str):
        self.console, self.total, self.description = console, total, description
        self.bar = None

    def __enter__(self):
        if self.console is None:
            return lambda: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self.bar = Progress(
            "{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self.bar.start()
        task = self.bar.add_task(self.description, total=self.total)
        return lambda: self.bar.advance(task)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()


# --- adversarial training ---------------------------------------------------------------------


def training_threat(spec, data) -> Threat:
    """The threat of `training.adversarial`, on the model's input scale."""
    settings = spec.training.adversarial
    low, high = data_range(data, spec)
    width = high - low
    return Threat(
        settings.method,
        settings.eps * width,
        settings.steps,
        2.5 * settings.eps / settings.steps * width,
        low,
        high,
    )


def mixed_batches(
    model, batches: Iterable, threat: Threat, ratio: float, seed: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Training batches with a `ratio` share of each replaced by adversarial examples.

    The examples are made when the batch is drawn, against the model's weights of that moment
    (a prefetched batch is a step or two behind). Any iterable of (x, y) batches works: a
    tf.data stream on TensorFlow, NumPy batches elsewhere.
    """
    loss = model_loss(model)
    rng = np.random.default_rng(seed)
    for x, y in batches:
        x, y = np.array(x), np.asarray(y)
        count = int(round(ratio * len(x)))
        if count:
            chosen = np.sort(rng.choice(len(x), count, replace=False))
            x[chosen] = perturb(model, loss, x[chosen], y[chosen], threat, rng)
        yield x, y


def weights_keeper():
    """On JAX, a callback keeping the weights of each epoch's start for its first batch: fit
    empties the variables before it, and its state holds them only after the first step."""
    import keras

    class KeepWeights(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.model._weights_at_epoch_begin = _variable_values(self.model)

    return KeepWeights()


def adversarial_accuracy(
    model, batches: Callable[[], Iterator], threat: Threat, seed: int
) -> float:
    """Accuracy on adversarial versions of the batches."""
    loss = model_loss(model)
    rng = np.random.default_rng(seed)
    correct = total = 0
    for x, y in batches():
        truth = np.argmax(y, axis=-1) if y.ndim > 1 else y.astype(int)
        adversarial = perturb(model, loss, x, y, threat, rng)
        correct += int(np.sum(np.argmax(predict(model, adversarial), -1) == truth))
        total += len(x)
    return correct / total


def validation_callback(batches: Callable[[], Iterator], threat: Threat, seed: int):
    """A callback adding val_adversarial_accuracy to each epoch's logs, before they are recorded."""
    import keras

    class AdversarialValidation(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                logs[ADVERSARIAL_METRIC] = adversarial_accuracy(self.model, batches, threat, seed)

    return AdversarialValidation()


ADVERSARIAL_METRIC = "val_adversarial_accuracy"
