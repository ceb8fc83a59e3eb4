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
    spec = load_spec(store.config_of(run.path), overrides, run.relative_to)
    use(spec.backend)  # the run's own, or another one: a .keras file loads on every backend
    usercode.use_run(spec, run.path)  # its code files, if trusted, before anything is built
    data, scored = _scored_data(run, spec)
    trained_on = run.metrics.get("input_shape")  # recorded at train time
    if isinstance(trained_on, list | dict):  # several inputs: {input name: shape}
        check_shape(_declared(trained_on, spec), data.input_shape, run.path)
    from dlrun.model.builder import build_model

    # A transfer model's base comes from elsewhere (a run, an application): rebuilding it only
    # to count parameters could fail where the checkpoint loads; the archive's plain bound holds.
    params = None if spec.model.base else build_model(spec, data.input_shape).count_params()
    model = load_model(model_path, unsafe_load, params)
    if getattr(model, "inputs", None):  # a subclassed model has none: trained_on says it
        check_shape(model_input_shape(model), data.input_shape, run.path)
    test = evaluation_input(data.x_test, data.y_test, spec.training.batch_size, data.source)
    outputs, scores = scored_outputs(model, test, data.y_test, spec.training.batch_size)
    created = datetime.now()
    result = {
        "run": run.name,
        "run_status": run.status,
        "checkpoint": checkpoint,
        "backend": spec.backend,  # the run's own (config.yaml), unless --set backend= says
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


def scored_outputs(model, test: dict, y_test, batch_size: int) -> tuple:
    """The model's outputs on the test data and its compiled loss and metrics, from one pass.

    evaluate() and predict() each ran the model over the test set; the scores are now computed
    from predict()'s outputs batch by batch, as evaluate() reduces them (the compiled loss
    and the weights' regularization, the compiled metrics), equal to
    evaluate()'s within float rounding (tests/test_epoch_costs.py). A model whose loss depends
    on the pass itself (an activity regularizer, a layer from a code file that may add a loss)
    and a model of several outputs are still scored by evaluate().
    """
    outputs = model.predict(test["x"], batch_size=test.get("batch_size"), verbose=0)
    tracker = getattr(model, "_loss_tracker", None)
    if tracker is None or not _scored_by_outputs(model):
        return outputs, model.evaluate(**test, verbose=0, return_dict=True)
    model.reset_metrics()
    size, batch = count(y_test), test.get("batch_size") or batch_size
    scores: dict = {}
    for start in range(0, size, batch):  # batch by batch, as evaluate() reduces them
        rows = slice(start, start + batch)
        y = each(y_test, lambda array, rows=rows: array[rows])
        predicted = each(outputs, lambda array, rows=rows: array[rows])
        loss = model.compute_loss(y=y, y_pred=predicted, training=False)
        tracker.update_state(loss, sample_weight=count(y))
        scores = model.compute_metrics(None, y, predicted)
    return outputs, scores


def _scored_by_outputs(model) -> bool:
    """Whether the model's compiled scores follow from its outputs alone: Keras' own layers
    and no activity regularizer (whose loss comes from the pass, not from the weights)."""
    if not type(model).__module__.startswith("keras."):  # a subclass may score otherwise
        return False
    if len(getattr(model, "outputs", None) or [None]) != 1:
        # Keras' evaluate() tracks each output's loss its own way (the outputs' losses it
        # reports do not add up to its loss); measured apart from the outputs, they differ.
        return False
    for layer in model._flatten_layers(include_self=False):
        if getattr(layer, "activity_regularizer", None) is not None:
            return False
        if not type(layer).__module__.startswith("keras."):
            return False
    return True


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
    or csv file than the run's, all of it (a folder's test/ where it has one), in the run's
    class order."""
    from dlrun.data.arrays import load_data

    def files(data) -> tuple:  # one file however it is spelt (relative, with ./, ...)
        return tuple(Path(path).resolve() if path else None for path in (data.path, data.test_path))

    own = load_spec(store.config_of(run.path), relative_to=run.relative_to).data
    other = files(spec.data)[0] != files(own)[0]
    if spec.data.dataset == "csv" and other:
        from dlrun.data.arrays import load_scored_csv

        columns = run.meta.get("feature_columns")
        if spec.data.columns is None and spec.data.drop is None and isinstance(columns, list):
            spec.data.columns = [str(column) for column in columns]  # the run's, by name
        data = load_scored_csv(spec, run.data_record())
        return data, f"every row of {spec.data.path}"
    if spec.data.dataset != "directory" or files(spec.data) == files(own):
        return load_data(spec, run.data_record()), "the test split"
    from dlrun.data.images import load_scored_folder

    classes = run.meta.get("class_names")
    if not isinstance(classes, list) or not all(isinstance(name, str) for name in classes):
        raise RunError(f"{run.path}: meta.json has no class names to label another folder by")
    data, scored = load_scored_folder(spec, classes)
    return data, f"every image in {scored}"


def _declared(trained_on, spec):
    """The shape(s) the run was trained on, with the sizes its model.inputs leaves free
    (`null`: sequences of any length) as None."""
    declared = spec.model.inputs or {}

    def free(shape, name):
        given = declared.get(name).shape if declared.get(name) is not None else None
        if not isinstance(shape, list) or not given or len(given) != len(shape):
            return shape
        return [None if size is None else known for size, known in zip(given, shape, strict=True)]

    if isinstance(trained_on, dict):
        return {name: free(shape, name) for name, shape in trained_on.items()}
    return free(trained_on, next(iter(declared), None)) if len(declared) == 1 else trained_on


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

    def fits(wanted: tuple, given: tuple) -> bool:  # None: any size (variable-length input)
        return len(wanted) == len(given) and all(
            w is None or w == g for w, g in zip(wanted, given, strict=True)
        )

    if isinstance(expected, dict) and isinstance(input_shape, dict):
        same = expected.keys() == input_shape.keys() and all(
            fits(expected[name], input_shape[name]) for name in expected
        )
    elif isinstance(expected, dict) or isinstance(input_shape, dict):
        same = False
    else:
        same = fits(expected, input_shape)
    if not same:
        raise DataError(f"{run_path}: {shape_mismatch(expected, input_shape)}")


def classification_result(y_test: np.ndarray, outputs: np.ndarray, names: list[str]) -> dict:
    """Per-class report and confusion matrix, classes named as in the data."""
    from sklearn.metrics import classification_report, confusion_matrix

    # Per-pixel labels (segmentation): every pixel is one sample of the report.
    predicted = np.ravel(predicted_classes(outputs))
    truth = np.ravel(true_classes(y_test))
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
