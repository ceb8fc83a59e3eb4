"""compile(): optimizer, loss and metrics through Keras' own lookups, and the checks that the
labels, the last layer and the metrics fit together, all reported at once.  [TensorFlow]"""

from __future__ import annotations

import math
from types import FunctionType
from typing import Any

from dlrun.errors import SpecError, first_line
from dlrun.spec.names import entry_name
from dlrun.spec.problems import did_you_mean
from dlrun.spec.schema import Spec, by_output

# compile() understands these metric names itself and picks the right variant for the loss.
COMPILE_METRIC_ALIASES = {"accuracy", "acc", "crossentropy", "ce"}


def _identifier(value: Any, name: str | None = None) -> Any:
    """A spec's name or {type: name, ...arguments} -> what Keras' `get` lookups take."""
    if isinstance(value, str):
        return value
    arguments = {k: v for k, v in value.items() if k != "type"}
    if name is not None:
        arguments.setdefault("name", name)  # logged under the name spec.py expects
    return {"class_name": value["type"], "config": arguments}


# Which way a metric is better, as Keras marks its metric classes (`_direction`).
DIRECTIONS = {"max": "up", "min": "down"}


def _code_kind(field: str):
    """What a code file's object must be to serve as this field."""
    import inspect

    import keras

    base = {
        "optimizer": keras.optimizers.Optimizer,
        "loss": keras.losses.Loss,
        "metric": keras.metrics.Metric,
    }[field]

    def accept(value) -> bool:
        if isinstance(value, type):
            return issubclass(value, base)
        return field != "optimizer" and inspect.isfunction(value)

    return accept


def _from_code(spec: Spec, loc: tuple, field: str, value: Any):
    """A loss, metric or optimizer a code file defines (None: none by that name)."""
    import keras

    from dlrun import usercode

    name = value if isinstance(value, str) else value["type"]
    module = {"optimizer": keras.optimizers, "loss": keras.losses, "metric": keras.metrics}
    keras_names = {n for n in dir(module[field]) if not n.startswith("_")}
    found = usercode.find(name, keras_names, _code_kind(field))
    where = loc if isinstance(value, str) else (*loc, "type")
    if found is None:
        return None
    if isinstance(found, usercode.Ambiguous):
        raise spec.error(where, found.message)
    arguments = {} if isinstance(value, str) else {k: v for k, v in value.items() if k != "type"}
    direction = arguments.pop("direction", None) if field == "metric" else None
    try:
        if isinstance(found, type):
            if field == "metric":
                arguments.setdefault("name", entry_name(value))
            made = found(**arguments)
        elif arguments:
            raise spec.error(
                loc,
                f"{name} is a function and takes no arguments here; write a "
                f"keras.{field}s class to give it some",
            )
        else:  # a function: Keras wraps a metric function itself, named as the function
            made = found
    except SpecError:
        raise
    except Exception as exc:
        raise spec.error(loc, f"{name} refused its arguments: {first_line(exc)}") from None
    if direction is not None and isinstance(made, keras.metrics.Metric):
        made._direction = DIRECTIONS[direction]
    return made


def _named(spec: Spec, loc: tuple, field: str, getter, value: Any, candidates: list[str]):
    try:
        return getter(_identifier(value, field == "metric" and entry_name(value) or None))
    except Exception as exc:
        name = value if isinstance(value, str) else value["type"]
        if isinstance(exc, ValueError) and "Could not interpret" in str(exc):
            return_message = f"unknown {field} {name!r}" + did_you_mean(name, candidates)
            raise spec.error(
                loc if isinstance(value, str) else (*loc, "type"), return_message
            ) from None
        raise spec.error(loc, f"{name} refused its arguments: {first_line(exc)}") from None


def _optimizer(identifier):
    """keras.optimizers.get, and the optimizers its table leaves out (Lamb, Muon...) by their
    lowercase names, as dlrun lists them: every Optimizer class keras.optimizers exports."""
    import keras

    try:
        return keras.optimizers.get(identifier)
    except ValueError:
        name = identifier if isinstance(identifier, str) else None
        config = {}
        if isinstance(identifier, dict) and isinstance(identifier.get("class_name"), str):
            name, config = identifier["class_name"], identifier.get("config") or {}
        classes = {
            key.lower(): value
            for key, value in vars(keras.optimizers).items()
            if isinstance(value, type) and issubclass(value, keras.optimizers.Optimizer)
        }
        if name is None or name.lower() not in classes:
            raise
        return classes[name.lower()](**config)


def _lookups(spec: Spec) -> tuple[dict, list[str]]:
    """Optimizer, loss and metric objects by Keras' lookups, and every problem found."""
    import keras

    optimizers = sorted(
        {
            name.lower()
            for name, value in vars(keras.optimizers).items()
            if isinstance(value, type) and issubclass(value, keras.optimizers.Optimizer)
        }
    )
    losses = [n for n in dir(keras.losses) if not n.startswith("_") and n[0].islower()]
    public = [n for n in dir(keras.metrics) if not n.startswith("_")]
    known_metrics = sorted({n.lower() if n[0].isupper() else n for n in public})
    # Several outputs: a loss and a list of metrics per output name, as Keras takes them.
    per_output = by_output(spec.compile.loss)
    metrics = spec.compile.metrics if isinstance(spec.compile.metrics, dict) else {None: None}
    found: dict = {"metrics": {out: [] for out in metrics} if per_output else []}
    found["loss"] = {}
    problems: list[str] = []
    if spec.compile.loss is None and spec.model.function is None:
        message = "a loss is needed; null is for a model.function whose train_step computes it"
        problems += spec.error(("compile", "loss"), message).problems
    optimizer, schedule_problems = _with_schedule(spec, spec.compile.optimizer)
    problems += schedule_problems
    given = spec.compile.loss if per_output else {None: spec.compile.loss}
    lookups = [
        ("loss", ("compile", "loss", *([out] if per_output else [])), keras.losses.get, value, out)
        for out, value in given.items()
        if value is not None  # the model's own train_step computes its loss
    ]
    if not per_output and spec.compile.loss is None:
        found["loss"] = None
    if not schedule_problems:  # else the optimizer would only repeat the schedule's problem
        lookups.insert(0, ("optimizer", ("compile", "optimizer"), _optimizer, optimizer, None))
    for out, entries in metrics.items():
        for index, entry in enumerate(spec.compile.metrics if out is None else entries):
            loc = ("compile", "metrics", *([out] if out is not None else []), index)
            lookups.append(("metric", loc, keras.metrics.get, entry, out))
    for field, loc, getter, value, out in lookups:
        listed = found["metrics"][out] if per_output and field == "metric" else found["metrics"]
        if field == "metric" and isinstance(value, str) and value in COMPILE_METRIC_ALIASES:
            listed.append(value)
            continue
        candidates = {"optimizer": optimizers, "loss": losses}.get(field, known_metrics)
        try:
            made = _from_code(spec, loc, field, value)
            from_code = made is not None
            if not from_code:
                made = _named(spec, loc, field, getter, value, candidates)
        except SpecError as exc:
            problems += exc.problems
            continue
        if field == "metric":
            listed.append(made if from_code or not isinstance(value, str) else value)
            directed = getattr(made, "_direction", None) or "direction" in value
            if from_code and not directed:
                found.setdefault("undirected", []).append(entry_name(value))
        elif field == "loss" and per_output:
            found["loss"][out] = made
        else:
            found[field] = made
    problems += _monitor_directions(spec, found.get("undirected", []))
    return found, problems


def _monitor_directions(spec: Spec, undirected: list[str]) -> list[str]:
    """A monitor on a metric whose direction nobody can tell (a code file's function without
    `direction:`) is refused: dlrun never guesses which way is better."""
    watched = [(("training", "checkpoint"), spec.training.checkpoint)]
    if spec.training.early_stopping:
        watched.append((("training", "early_stopping"), spec.training.early_stopping))
    problems = []
    for loc, settings in watched:
        base = settings.monitor.removeprefix("val_")
        if settings.mode == "auto" and base in undirected:
            problems += spec.error(
                (*loc, "monitor"),
                f"cannot tell whether a higher or a lower {base} is better; add direction: max "
                f"or min to it in compile.metrics ({{type: {base}, direction: max}}), or set "
                f"{'.'.join(loc)}.mode",
            ).problems
    return problems


def _with_schedule(spec: Spec, optimizer: Any) -> tuple[Any, list[str]]:
    """`learning_rate: {type: ExponentialDecay, ...}` made into Keras' schedule object (Keras'
    own lookup takes only the long serialised form)."""
    import keras

    rate = optimizer.get("learning_rate") if isinstance(optimizer, dict) else None
    if not isinstance(rate, dict):
        return optimizer, []
    loc = ("compile", "optimizer", "learning_rate")
    names = [
        n
        for n, v in vars(keras.optimizers.schedules).items()
        if isinstance(v, type) and n != "LearningRateSchedule"
    ]
    kind = rate.get("type")
    from dlrun import usercode

    def is_schedule(value) -> bool:
        return isinstance(value, type) and issubclass(
            value, keras.optimizers.schedules.LearningRateSchedule
        )

    own = usercode.find(kind, set(names), is_schedule) if isinstance(kind, str) else None
    if isinstance(own, usercode.Ambiguous):
        return optimizer, spec.error((*loc, "type"), own.message).problems
    if own is not None:
        arguments = {k: v for k, v in rate.items() if k != "type"}
        try:
            return {**optimizer, "learning_rate": own(**arguments)}, []
        except Exception as exc:
            return optimizer, spec.error(
                loc, f"{kind} refused its arguments: {first_line(exc)}"
            ).problems
    if not isinstance(kind, str) or kind not in names:
        message = (
            f"unknown learning rate schedule {kind!r}; expected one of {', '.join(sorted(names))}"
            + (did_you_mean(kind, names) if isinstance(kind, str) else "")
        )
        return optimizer, spec.error((*loc, "type"), message).problems
    arguments = {k: v for k, v in rate.items() if k != "type"}
    try:
        schedule = getattr(keras.optimizers.schedules, kind)(**arguments)
    except Exception as exc:
        return optimizer, spec.error(
            loc, f"{kind} refused its arguments: {first_line(exc)}"
        ).problems
    return {**optimizer, "learning_rate": schedule}, []


def _lookup_problems(spec: Spec) -> list[str]:
    return _lookups(spec)[1]


def compile_model(
    model, spec: Spec, num_classes: int, target_shape: tuple[int, ...] | None = None
) -> None:
    """compile() with the optimizer, loss and metrics looked up by Keras; every problem with
    them, or between the labels and the last layer, is reported at once. `target_shape`: the
    shape of one regression target, when the data is known."""

    found, problems = _lookups(spec)
    # A model.function's model is the user's own: its outputs and steps are its business.
    if spec.model.function is None:
        problems += [  # the labels and the last layer, of each output
            line
            for error in _check_labels(model, spec, num_classes, target_shape)
            for line in error.problems
        ]
    if not spec.model.several_outputs and spec.model.function is None:
        if not problems:
            problems += _vector_metrics(model, spec, num_classes, found["metrics"], target_shape)
    if problems:
        raise SpecError(problems)
    model.compile(
        optimizer=found["optimizer"],
        loss=found["loss"],
        metrics=found["metrics"],
        loss_weights=spec.compile.loss_weights,
        jit_compile=spec.compile.jit_compile,
        steps_per_execution=spec.steps_per_execution(_on_gpu(spec), model.count_params()),
    )


def _on_gpu(spec: Spec) -> bool:
    from dlrun.backend import used_devices

    return used_devices(spec)[0].startswith("GPU")


def _dummy_labels(model, spec: Spec, num_classes: int, target_shape: tuple | None = None):
    """Two samples shaped like the data's labels and the model's outputs, for checking metrics."""
    import numpy as np

    outputs = model.output_shape[1:]
    if None in outputs:  # a variable length: the target's, where it has one
        known = target_shape if target_shape and len(target_shape) == len(outputs) else ()
        outputs = tuple(
            o if o is not None else (known[i] if known else 2) for i, o in enumerate(outputs)
        )
    y_pred = np.full((2, *outputs), 0.5, dtype="float32")
    if spec.task == "regression":
        width = () if num_classes == 1 else (num_classes,)
        if target_shape is not None and len(target_shape) > 1:
            width = tuple(target_shape)
        return np.zeros((2, *width), dtype="float32"), y_pred
    if _positions(target_shape, spec.data.one_hot):  # a class per pixel: masks
        y_true = np.zeros((2, *target_shape), dtype="float32" if spec.data.one_hot else "int64")
        if spec.data.one_hot:
            y_true[..., 0] = 1
        return y_true, y_pred
    if spec.data.one_hot:
        return np.eye(num_classes, dtype="float32")[[0, 1 % num_classes]], y_pred
    return np.array([0, 1 % num_classes]), y_pred


def _positions(target_shape: tuple | None, one_hot: bool) -> tuple | None:
    """The positions of labels given per pixel or step (a segmentation mask): their shape, the
    class axis (one-hot) or a trailing 1 left out; None for one label per sample."""
    if not target_shape or (one_hot and len(target_shape) < 2) or math.prod(target_shape) < 2:
        return None
    if one_hot or (len(target_shape) > 1 and target_shape[-1] == 1):
        return tuple(target_shape[:-1])
    return tuple(target_shape)


def _vector_metrics(
    model, spec: Spec, num_classes: int, metrics: list, target_shape: tuple | None = None
) -> list[str]:
    """Metrics that score one number per class (F1Score's default average=None) break the
    history after epoch 1: refuse them before training, each on its own line."""
    from keras.src.trainers.compile_utils import get_metric

    y_true, y_pred = _dummy_labels(model, spec, num_classes, target_shape)
    problems = []
    for index, identifier in enumerate(metrics):
        loc = ("compile", "metrics", index)
        try:
            metric = get_metric(identifier, y_true, y_pred)
            # A fresh, unused copy of a metric object (a function is wrapped afresh anyway).
            if hasattr(metric, "get_config") and not isinstance(identifier, str | FunctionType):
                metric = type(metric).from_config(metric.get_config())  # a fresh copy
            metric.update_state(y_true, y_pred)
            shape = tuple(metric.result().shape)
        except Exception as exc:
            problems += spec.error(
                loc, f"cannot score this model's outputs: {first_line(exc)}"
            ).problems
            continue
        if shape:
            name = entry_name(spec.compile.metrics[index])
            problems += spec.error(
                loc,
                f"{name} gives {shape[0]} values (one per class), not one number; "
                "set average: macro, micro or weighted (e.g. {type: F1Score, average: macro})",
            ).problems
    return problems


def _check_labels(
    model, spec: Spec, num_classes, target_shape: tuple[int, ...] | None = None
) -> list:
    """The label/output mismatches fit() would fail on (or silently get wrong) after the run
    folder exists: of the one output, or of each of several (num_classes then is
    {output: classes or values per sample}, and each output's own loss decides)."""
    several = spec.model.several_outputs
    if not several:
        last = ("model", "layers", len(spec.model.layers) - 1)
        found = _output_problems(
            tuple(model.output_shape),
            spec.compile.loss,
            spec.task,
            spec.data.one_hot,
            num_classes,
            target_shape,
            last,
            ("compile", "loss"),
        )
        return [spec.error(loc, message) for loc, message in found]
    names = [(entry.model_extra or {}).get("name") for entry in spec.model.layers]
    problems = []
    for output in several:
        shape, wanted = tuple(model.output[output].shape), num_classes[output]
        last = ("model", "layers", names.index(output)) if output in names else ("model",)
        if spec.output_task(output) == "regression":  # its values per sample, however shaped
            given, found = math.prod(shape[1:]), []
            if given != wanted:
                message = f"it gives {given} values per sample but each target has {wanted}"
                found = [(last, f"{message}; end it with {{type: Dense, units: {wanted}}}")]
        else:
            found = _output_problems(
                shape,
                spec.compile.loss[output],
                "classification",
                False,
                wanted,
                None,
                last,
                ("compile", "loss", output),
            )
        for loc, message in found:  # several outputs' labels are class numbers: no one-hot
            message = message.replace("set data.one_hot: true or use", "use")
            message = message.replace(" or set data.one_hot: true", "")
            problems.append(spec.error(loc, f"output {output}: {message}"))
    return problems


def _output_problems(
    shape: tuple,
    loss_entry: Any,
    task: str,
    one_hot: bool,
    num_classes: int,
    target_shape: tuple[int, ...] | None,
    last: tuple,
    loss_loc: tuple,
) -> list[tuple[tuple, str]]:
    """One output's mismatches as (where, message): its shape, loss and labels."""
    outputs = shape[-1]
    loss_name = loss_entry if isinstance(loss_entry, str) else loss_entry["type"]
    if task == "regression" and target_shape is not None and len(target_shape) > 1:
        given = tuple(shape[1:])
        agrees = len(given) == len(target_shape) and all(  # None: any length (a sequence's)
            g is None or g == t for g, t in zip(given, target_shape, strict=True)
        )
        if not agrees:  # an image or sequence target: the shapes must match
            units = math.prod(target_shape)
            return [
                (
                    last,
                    f"the model's output has shape {given} but each target has shape "
                    f"{tuple(target_shape)}; end with {{type: Dense, units: {units}}} and "
                    f"{{type: Reshape, target_shape: {list(target_shape)}}}, or with layers "
                    "that keep the input's shape",
                )
            ]
        return []
    if task == "regression":
        if outputs != num_classes:
            return [
                (
                    last,
                    f"the last layer gives {outputs} outputs but the data has {num_classes} "
                    f"regression target(s); end with {{type: Dense, units: {num_classes}}}",
                )
            ]
        return []
    loss = loss_name.lower().replace("_", "")
    positions = _positions(target_shape, one_hot)
    if positions is not None:  # a class per pixel: the output keeps the positions
        given = tuple(shape[1:-1])
        if len(given) != len(positions) or any(
            g is not None and g != p for g, p in zip(given, positions, strict=True)
        ):
            return [
                (
                    last,
                    f"the labels are a class per position, shaped {tuple(target_shape)}, but the "
                    f"model's output has shape {tuple(shape[1:])}; end with a layer that keeps "
                    f"the positions, e.g. {{type: Conv2D, filters: {num_classes}, "
                    "kernel_size: 1, activation: softmax}",
                )
            ]
    if "categorical" in loss:
        sparse = loss.startswith("sparse")
        if sparse and one_hot:
            return [
                (
                    loss_loc,
                    "sparse categorical losses take integer labels; set data.one_hot: false "
                    "or use categorical_crossentropy",
                )
            ]
        if not sparse and not one_hot:
            return [
                (
                    loss_loc,
                    "categorical losses take one-hot labels; set data.one_hot: true "
                    "or use sparse_categorical_crossentropy",
                )
            ]
        if outputs != num_classes:
            return [
                (
                    last,
                    f"the last layer gives {outputs} outputs but the data has {num_classes} "
                    f"classes; end with {{type: Dense, units: {num_classes}, activation: softmax}}",
                )
            ]
        return []
    # Other losses (binary_crossentropy, hinge, ...) compare labels and outputs element-wise.
    if one_hot and outputs != num_classes:
        return [
            (
                last,
                f"the last layer gives {outputs} output(s) but one-hot labels have {num_classes} "
                "columns; for one sigmoid unit set data.one_hot: false, or end with "
                f"{{type: Dense, units: {num_classes}}}",
            )
        ]
    if not one_hot and outputs != 1:
        return [
            (
                last,
                f"the last layer gives {outputs} outputs but integer labels are one column; "
                "end with {type: Dense, units: 1, activation: sigmoid} or set data.one_hot: true",
            )
        ]
    if not one_hot and num_classes > 2:
        return [
            (
                loss_loc,
                f"{loss_name} with one "
                f"output is for two classes; the data has {num_classes}: use "
                "sparse_categorical_crossentropy with a softmax layer",
            )
        ]
    return []
