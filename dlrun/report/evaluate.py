"""`dlrun evaluate`: a run's checkpoint scored on its test split or on other data.  [TensorFlow]"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import numpy as np

from dlrun import store, usercode
from dlrun.data.splits import count, each
from dlrun.errors import DataError, RunError
from dlrun.model.checkpoints import checkpoint_path, load_model
from dlrun.model.outputs import predicted_classes, true_classes
from dlrun.spec.loading import load_spec
from dlrun.spec.overrides import check_reading_overrides
from dlrun.textsafe import clean


def evaluate(
    run_path: Path,
    checkpoint: str = "best",
    overrides: list[str] | tuple[str, ...] = (),
    unsafe_load: bool = False,
    save: bool = True,
) -> dict:
    """Evaluate a run's checkpoint on its test split (or on data given by `data.*` overrides).

    Writes evaluations/<timestamp>-<checkpoint>-<data>.json and a PNG of the same name beside
    it (-confusion_matrix.png; regression: -predicted_vs_true.png): no evaluation overwrites
    another.
    """
    from dlrun.backend import use
    from dlrun.data.feed import evaluation_input

    run = store.open_run(run_path)
    check_reading_overrides("evaluate", overrides, ("data.", "backend="))
    model_path = checkpoint_path(run, checkpoint)
    spec = load_spec(store.config_of(run.path), overrides)
    use(spec.backend)  # the run's own, or another one: a .keras file loads on every backend
    usercode.use_run(spec, run.path)  # its code files, if trusted, before anything is built
    data, scored = _scored_data(run, spec)
    trained_on = run.metrics.get("input_shape")  # recorded at train time
    if isinstance(trained_on, list | dict):  # several inputs: {input name: shape}
        check_shape(trained_on, data.input_shape, run.path)
    from dlrun.model.builder import build_model

    # A transfer model's base comes from elsewhere (a run, an application): rebuilding it only
    # to count parameters could fail where the checkpoint loads; the archive's plain bound holds.
    params = None if spec.model.base else build_model(spec, data.input_shape).count_params()
    model = load_model(model_path, unsafe_load, params)
    if getattr(model, "inputs", None):  # a subclassed model has none: trained_on says it
        check_shape(model_input_shape(model), data.input_shape, run.path)
    test = evaluation_input(data.x_test, data.y_test, spec.training.batch_size, data.source)
    scores = model.evaluate(**test, verbose=0, return_dict=True)
    outputs = model.predict(test["x"], batch_size=test.get("batch_size"), verbose=0)
    created = datetime.now()
    result = {
        "run": run.name,
        "run_status": run.status,
        "checkpoint": checkpoint,
        "created": created.astimezone().isoformat(timespec="seconds"),
        "data": spec.resolved()["data"],
        "task": data.task,
        "samples": count(data.x_test),
        "scored": scored,
        "scores": {key: float(value) for key, value in scores.items()},
    }
    several = spec.model.several_outputs
    if several:  # one report per output, each by its own loss's task
        result["outputs"] = {
            output: {"task": spec.output_task(output)}
            | _report(
                spec.output_task(output),
                data.y_test[output],
                outputs[output],
                data.num_classes[output],
                data.class_names[output],
            )
            for output in several
        }
        reports = result["outputs"].items()
        result["report_text"] = "\n".join(f"{out}:\n{r['report_text']}" for out, r in reports)
    else:
        result.update(_report(data.task, data.y_test, outputs, data.num_classes, data.class_names))
    written: list[str] = []
    if save:
        with store.saving(result, run.path):
            _save(result, written, run.path, created, checkpoint, spec.data, data, outputs)
    result["written"] = written
    return result


def _report(task: str, y_test, outputs, num_classes: int, class_names) -> dict:
    """One output's report: per class and a confusion matrix, or the regression's errors."""
    if task == "regression":
        return regression_report(y_test, outputs)
    labels = [str(label) for label in range(num_classes)]
    names = [clean(name, newlines=False) for name in class_names or labels]
    return classification_result(y_test, outputs, names)


def _save(
    result: dict, written: list, run_dir: Path, created, checkpoint, spec_data, data, outputs
) -> None:
    """evaluations/<time>-<checkpoint>-<data>.json and its plot (several outputs: one per
    output, -<output>-confusion_matrix.png, ...), each written whole, so that a kill or a full
    disk leaves no empty or half file."""
    # Into the run only: a received run's evaluations/ may be a symlink out of it.
    folder = store.safe_folder(run_dir, store.EVALUATIONS)
    stem = f"{created.strftime(store.TIMESTAMP)}-{checkpoint}-{data_tag(spec_data)}"
    out = store.write_new_json(folder, stem, result)
    written.append(str(out))
    if "outputs" not in result:
        written.append(str(_plot(result, data.task, data.x_test, data.y_test, outputs, out, "")))
        return
    for output, report in result["outputs"].items():
        plot = _plot(
            report, report["task"], None, data.y_test[output], outputs[output], out, output
        )
        written.append(str(plot))


def _plot(report: dict, task: str, x_test, y_test, outputs, out: Path, output: str) -> Path:
    """The evaluation's plot beside its JSON: reconstructions, predicted against true, or the
    confusion matrix; `output` (several outputs) goes into its name."""
    tag = f"-{output}" if output else ""
    if task == "regression" and y_test.ndim >= 3 and x_test is not None:  # image-shaped targets
        from dlrun.report.plots import reconstruction_plot

        plot = out.with_name(f"{out.stem}{tag}-reconstructions.png")
        reconstruction_plot(x_test, y_test, outputs, plot)
    elif task == "regression":
        from dlrun.report.plots import predicted_plot

        plot = out.with_name(f"{out.stem}{tag}-predicted_vs_true.png")
        predicted_plot(np.ravel(y_test), np.ravel(outputs), plot)
    else:
        from dlrun.report.plots import confusion_plot

        plot = out.with_name(f"{out.stem}{tag}-confusion_matrix.png")
        # Folder names are a stranger's text: no matplotlib mathtext from a '$'.
        shown = [name.replace("$", r"\$") for name in report["classes"]]
        confusion_plot(np.array(report["confusion_matrix"]), shown, plot)
    return plot


def _scored_data(run, spec) -> tuple:
    """The data to score and what it is: the run's test split, or, for another image folder
    than the run's, all of it (its test/ where it has one), in the run's class order."""
    from dlrun.data.arrays import load_data

    def folders(data) -> tuple:  # one folder however it is spelt (relative, with ./, ...)
        return tuple(Path(path).resolve() if path else None for path in (data.path, data.test_path))

    own = load_spec(store.config_of(run.path)).data
    if spec.data.dataset != "directory" or folders(spec.data) == folders(own):
        return load_data(spec, run.data_record()), "the test split"
    from dlrun.data.images import load_scored_folder

    classes = run.meta.get("class_names")
    if not isinstance(classes, list) or not all(isinstance(name, str) for name in classes):
        raise RunError(f"{run.path}: meta.json has no class names to label another folder by")
    data, scored = load_scored_folder(spec, classes)
    return data, f"every image in {scored}"


def data_tag(data) -> str:
    """The data an evaluation scored, in a file name: the dataset, and the file for npz/csv."""
    tag = data.dataset + (f"-{Path(data.path).stem}" if getattr(data, "path", None) else "")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", tag)[:60]


def model_input_shape(model) -> tuple | dict[str, tuple]:
    """A model's sample shape, or {input name: shape} for several inputs (as Data gives)."""
    if len(model.inputs) > 1:
        return {tensor.name: tuple(tensor.shape[1:]) for tensor in model.inputs}
    return tuple(model.input_shape[1:])


def check_shape(expected, input_shape, run_path: Path) -> None:
    """Data of another shape than the model was trained on: one line naming both. Either is
    one shape, or {input name: shape} for several inputs."""
    from dlrun.data.arrays import shape_mismatch

    expected, input_shape = each(expected, tuple), each(input_shape, tuple)
    if input_shape != expected:
        raise DataError(f"{run_path}: {shape_mismatch(expected, input_shape)}")


def classification_result(y_test: np.ndarray, outputs: np.ndarray, names: list[str]) -> dict:
    """Per-class report and confusion matrix, classes named as in the data."""
    from sklearn.metrics import classification_report, confusion_matrix

    predicted = predicted_classes(outputs)
    truth = true_classes(y_test)
    labels = list(range(len(names)))
    options = {"labels": labels, "target_names": names, "zero_division": 0}
    return {
        "classes": names,
        "report": classification_report(truth, predicted, output_dict=True, **options),
        "report_text": classification_report(truth, predicted, digits=3, **options),
        "confusion_matrix": confusion_matrix(truth, predicted, labels=labels).tolist(),
    }


def regression_report(y_test: np.ndarray, outputs: np.ndarray) -> dict:
    """MAE, RMSE and R² by scikit-learn over every value of every target (for an image
    target: every pixel), so a constant pixel cannot make R² meaningless."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    truth, predicted = np.ravel(y_test), np.ravel(outputs)
    values = {
        "mae": float(mean_absolute_error(truth, predicted)),
        "rmse": float(np.sqrt(mean_squared_error(truth, predicted))),
        "r2": float(r2_score(truth, predicted)),
    }
    text = "\n".join(f"{name.upper():>5}: {value:.4f}" for name, value in values.items())
    return {"regression": values, "report_text": text.replace("R2:", "R²:") + "\n"}
