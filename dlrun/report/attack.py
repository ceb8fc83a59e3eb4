"""`dlrun attack`: a run's checkpoint under FGSM or PGD at several eps, written into the run.

Checks the arguments and the run before anything is loaded or written, attacks a stratified
sample of the test split, and writes attacks/<timestamp>-<method>.json and its plot,
plots/adversarial-<timestamp>-<method>-eps<eps>[-target<class>].png. The attack maths lives in
dlrun.adversarial.  [TensorFlow]
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np

from dlrun import store, usercode
from dlrun.adversarial.attacks import Threat, batches, data_range, perturb, predict
from dlrun.adversarial.gradients import model_loss
from dlrun.errors import AttackError, RunError
from dlrun.model.checkpoints import CHECKPOINTS, checkpoint_path, load_model
from dlrun.model.graph import one_input_and_output
from dlrun.model.outputs import predicted_classes, true_classes
from dlrun.report.progress import Progress
from dlrun.spec.loading import load_spec
from dlrun.spec.overrides import check_reading_overrides
from dlrun.textsafe import clean as safe_text

METHODS = ("fgsm", "pgd")
DEFAULT_EPS = (0.0, 0.02, 0.05, 0.1, 0.2)
SAMPLE_SEED = 0  # the fixed seed of the stratified --samples choice: two attacks compare
PLOT_EXAMPLES = 6


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


def check_run(run_path: Path, checkpoint: str = "best", overrides=()) -> tuple:
    """The run, its checkpoint and its spec, if the run can be attacked and written to."""
    if checkpoint not in CHECKPOINTS:
        raise AttackError(f"--checkpoint: expected best or last, got {checkpoint!r}")
    check_reading_overrides("attack", overrides, ("data.", "backend="))
    run = store.open_run(run_path)
    model_path = checkpoint_path(run, checkpoint, " to attack", AttackError)
    for folder in (store.ATTACKS, store.PLOTS):
        _safe_folder(run.path, folder)
    spec = load_spec(store.config_of(run.path), overrides)
    one_input_and_output(spec, run.path, "attack", AttackError)
    if (run.metrics.get("task") or spec.task) == "regression":
        raise AttackError(
            f"{run.name} is a regression: an attack measures how much of a classifier's "
            "accuracy survives and a regression has no classes; attack a classification run"
        )
    return run, model_path, spec


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
    save: bool = True,
) -> dict:
    """Attack a run's checkpoint on (a stratified sample of) its test split, for each eps.

    Writes attacks/<timestamp>-<method>.json and its plot (store.adversarial_plot) in the run.
    `step_size` is a fraction of the input range; by default 2.5 * eps / steps (Madry et al.).
    """
    eps = [float(value) for value in eps]
    check_arguments(method, eps, steps, step_size, samples)
    run, model_path, spec = check_run(run_path, checkpoint, overrides)

    from dlrun.backend import use

    use(spec.backend)  # the run's own, or another: a .keras file loads on every backend
    usercode.use_run(spec, run.path)  # its code files, if trusted, before anything is built
    from dlrun.data.arrays import load_data
    from dlrun.model.builder import build_model

    data = load_data(spec, run.data_record())  # other data encoded as the run's was
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
    names = [safe_text(n, newlines=False) for n in data.class_names or range(data.num_classes)]
    truth = true_classes(data.y_test)
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
    with Progress(console, -(-len(x) // batch), f"{method} on {len(x)} samples") as advance:
        starts = range(0, len(x), batch)
        for start, (xb, yb) in zip(starts, batches(data, x, y, batch)(), strict=True):
            tb = truth[start : start + batch]
            clean = predict(model, xb)
            clean_correct += int(np.sum(predicted_classes(clean) == tb))
            for index, threat in enumerate(threats):
                adversarial = perturb(model, loss, xb, yb, threat, rng, target is not None)
                scores = predict(model, adversarial)
                predicted = predicted_classes(scores)
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
    written: list[str] = []
    with store.saving(result, run.path):
        if save:
            # Into the run only: a received run's attacks/ or plots/ may be a symlink out of it.
            folder = store.safe_folder(run.path, store.ATTACKS)
            stem = f"{created.strftime(store.TIMESTAMP)}-{method}"
            written_json = store.write_new_json(folder, stem, result)
            written.append(str(written_json))
            from dlrun.report.plots import adversarial_plot

            name = store.adversarial_plot(written_json.stem, eps[strongest], target)
            plot = store.inside(run.path, name)
            title = f"{method} at eps {eps[strongest]:g}" + (
                f", aimed at {names[target]}" if target is not None else ""
            )
            adversarial_plot(
                *shown, eps=eps[strongest], low=low, high=high, names=names, path=plot, title=title
            )
            written.append(str(plot))
    result["written"] = written
    return result


def _examples(x, adversarial, clean, scores, truth) -> tuple:
    """A few samples for the plot, those the attack fooled first."""
    fooled = (predicted_classes(clean) == truth) & (predicted_classes(scores) != truth)
    order = np.concatenate([np.flatnonzero(fooled), np.flatnonzero(~fooled)])[:PLOT_EXAMPLES]
    return x[order], adversarial[order], clean[order], scores[order]
