"""Spec -> compiled Keras model, through Keras' own lookups.                      [TensorFlow]

Every problem is reported as a SpecError on the spec's dotted path, with a "did you mean".
"""

from __future__ import annotations

import inspect
import os
import re
from typing import Any

from dlrun.backend import load
from dlrun.metrics import entry_name
from dlrun.spec import Spec, did_you_mean

# Keyword arguments every Keras layer takes through **kwargs on top of its own signature.
BASE_LAYER_ARGUMENTS = {
    "name",
    "dtype",
    "trainable",
    "autocast",
    "activity_regularizer",
    "input_shape",
    "input_dim",
    "batch_size",
    "batch_input_shape",
}
# compile() understands these metric names itself and picks the right variant for the loss.
COMPILE_METRIC_ALIASES = {"accuracy", "acc", "crossentropy", "ce"}


def _layer_classes() -> dict[str, type]:
    import keras

    return {
        name: value
        for name, value in vars(keras.layers).items()
        if isinstance(value, type) and issubclass(value, keras.layers.Layer)
    }


def _arguments(cls: type) -> set[str] | None:
    """Named arguments a layer class accepts (None: cannot tell, let Keras decide)."""
    names, open_ended = set(), False
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            parameters = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            return None
        names |= {p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        open_ended = any(p.kind is p.VAR_KEYWORD for p in parameters)
        if not open_ended:
            break
    names.discard("self")
    return names | BASE_LAYER_ARGUMENTS


def _first_line(exc: Exception) -> str:
    """Keras' message without colour codes, call wrappers and argument dumps, on one line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    text = text.split("Arguments received by")[0]
    text = re.sub(r"Exception encountered when calling \S+\.", "", text)
    text = " ".join(text.split())
    return text[:300] if text else type(exc).__name__


def make_layers(spec: Spec) -> list[Any]:
    """One Keras layer per spec entry, arguments checked against the class's signature."""
    classes = _layer_classes()
    layers, problems = [], []
    taken: dict[str, int] = {}
    given = {entry.kwargs().get("name") for entry in spec.model.layers}
    for index, entry in enumerate(spec.model.layers):
        loc = ("model", "layers", index)
        cls = classes.get(entry.type)
        if cls is None:
            problems.append(
                spec.error(
                    (*loc, "type"),
                    f"unknown layer {entry.type!r}; expected a keras.layers class"
                    + did_you_mean(entry.type, sorted(classes)),
                )
            )
            continue
        accepted = _arguments(cls)
        unknown = [key for key in entry.kwargs() if accepted is not None and key not in accepted]
        for key in unknown:
            problems.append(
                spec.error(
                    (*loc, key),
                    f"{entry.type} has no argument {key!r}" + did_you_mean(key, sorted(accepted)),
                )
            )
        if unknown:
            continue
        kwargs = entry.kwargs()
        if "name" not in kwargs:
            kwargs["name"] = _layer_name(cls.__name__, taken, given)
        if spec.training.mixed_precision and index == len(spec.model.layers) - 1:
            kwargs.setdefault("dtype", "float32")  # softmax and loss in full precision
        try:
            layers.append(cls(**kwargs))
        except Exception as exc:
            problems.append(
                spec.error(loc, f"{entry.type} refused its arguments: {_first_line(exc)}")
            )
    if problems:
        from dlrun.errors import SpecError

        raise SpecError([line for error in problems for line in error.problems])
    return layers


def _layer_name(class_name: str, taken: dict[str, int], given: set) -> str:
    """The name Keras would give in a fresh process (dense, dense_1, conv2d, ...), counted
    within this model and past the names the spec gives: Keras' own counter runs across every
    model the process ever built, so the names, and the messages that quote them, would
    depend on what was built before."""
    from keras.src.utils.naming import to_snake_case  # Keras' own prefix for a class

    base = to_snake_case(class_name)
    while True:
        count = taken.get(base, 0)
        taken[base] = count + 1
        name = base if count == 0 else f"{base}_{count}"
        if name not in given:
            return name


def build_model(spec: Spec, input_shape: tuple[int, ...]):
    """A Sequential model on the data's input shape; a layer that cannot be built is named.

    Unknown layers and arguments are reported together with unknown optimizer, loss and
    metric names, so one round of fixes is enough.
    """
    keras = load()
    from dlrun.errors import SpecError

    try:
        layers = make_layers(spec)
    except SpecError as exc:
        raise SpecError(exc.problems + _lookup_problems(spec)) from None
    if spec.model.base is not None:  # a trained network below these layers
        from dlrun.transfer import build_transfer_model

        return build_transfer_model(spec, input_shape, layers)
    model = keras.Sequential(name=spec.name.replace(".", "_").replace("-", "_"))
    model.add(keras.Input(shape=input_shape))
    shape = (None, *input_shape)
    for index, layer in enumerate(layers):
        entry = spec.model.layers[index]
        try:
            model.add(layer)
        except Exception as exc:
            problem = spec.error(
                ("model", "layers", index),
                f"{entry.type} cannot be built on input shape {shape}: {_first_line(exc)}",
            )
            raise SpecError(problem.problems + _lookup_problems(spec)) from None
        shape = model.output_shape
    return model


def _identifier(value: Any, name: str | None = None) -> Any:
    """A spec's name or {type: name, ...arguments} -> what Keras' `get` lookups take."""
    if isinstance(value, str):
        return value
    arguments = {k: v for k, v in value.items() if k != "type"}
    if name is not None:
        arguments.setdefault("name", name)  # logged under the name spec.py expects
    return {"class_name": value["type"], "config": arguments}


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
        raise spec.error(loc, f"{name} refused its arguments: {_first_line(exc)}") from None


def _lookups(spec: Spec) -> tuple[dict, list[str]]:
    """Optimizer, loss and metric objects by Keras' lookups, and every problem found."""
    import keras
    from keras.src.optimizers import ALL_OBJECTS_DICT as OPTIMIZERS

    from dlrun.errors import SpecError

    losses = [n for n in dir(keras.losses) if not n.startswith("_") and n[0].islower()]
    public = [n for n in dir(keras.metrics) if not n.startswith("_")]
    known_metrics = sorted({n.lower() if n[0].isupper() else n for n in public})
    found: dict = {"metrics": []}
    problems: list[str] = []
    lookups = [
        ("optimizer", ("compile", "optimizer"), keras.optimizers.get, spec.compile.optimizer),
        ("loss", ("compile", "loss"), keras.losses.get, spec.compile.loss),
    ]
    for index, entry in enumerate(spec.compile.metrics):
        lookups.append(("metric", ("compile", "metrics", index), keras.metrics.get, entry))
    for field, loc, getter, value in lookups:
        if field == "metric" and isinstance(value, str) and value in COMPILE_METRIC_ALIASES:
            found["metrics"].append(value)
            continue
        candidates = {"optimizer": list(OPTIMIZERS), "loss": losses}.get(field, known_metrics)
        try:
            made = _named(spec, loc, field, getter, value, candidates)
        except SpecError as exc:
            problems += exc.problems
            continue
        if field == "metric":
            found["metrics"].append(made if not isinstance(value, str) else value)
        else:
            found[field] = made
    return found, problems


def _lookup_problems(spec: Spec) -> list[str]:
    return _lookups(spec)[1]


def keras_problems(path, overrides: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The unknown layers, layer arguments, optimizer, loss and metric names of a spec that
    failed schema validation, so that one round of fixes is enough ([] if none can be told)."""
    from dlrun.errors import SpecError
    from dlrun.spec import load_raw, valid_sections

    try:
        raw, lines = load_raw(path, overrides)
    except SpecError:
        return []
    spec = valid_sections(raw, str(path), lines)
    if spec is None:
        return []
    load()
    try:
        make_layers(spec)
        problems = []
    except SpecError as exc:
        problems = exc.problems
    return problems + _lookup_problems(spec)


def compile_model(model, spec: Spec, num_classes: int) -> None:
    """compile() with the optimizer, loss and metrics looked up by Keras; every problem with
    them, or between the labels and the last layer, is reported at once."""
    from dlrun.errors import SpecError

    found, problems = _lookups(spec)
    problems += [
        line for error in _check_labels(model, spec, num_classes) for line in error.problems
    ]
    if not problems:
        problems += _vector_metrics(model, spec, num_classes, found["metrics"])
    if problems:
        raise SpecError(problems)
    model.compile(
        optimizer=found["optimizer"],
        loss=found["loss"],
        metrics=found["metrics"],
        jit_compile=spec.compile.jit_compile,
        steps_per_execution=spec.steps_per_execution(_on_gpu(spec)),
    )


def _on_gpu(spec: Spec) -> bool:
    from dlrun.devices import used

    return used(spec)[0].startswith("GPU")


def _dummy_labels(model, spec: Spec, num_classes: int):
    """Two samples shaped like the data's labels and the model's outputs, for checking metrics."""
    import numpy as np

    outputs = model.output_shape[1:]
    y_pred = np.full((2, *outputs), 0.5, dtype="float32")
    if spec.task == "regression":
        width = () if num_classes == 1 else (num_classes,)
        return np.zeros((2, *width), dtype="float32"), y_pred
    if spec.data.one_hot:
        return np.eye(num_classes, dtype="float32")[[0, 1 % num_classes]], y_pred
    return np.array([0, 1 % num_classes]), y_pred


def _vector_metrics(model, spec: Spec, num_classes: int, metrics: list) -> list[str]:
    """Metrics that score one number per class (F1Score's default average=None) break the
    history after epoch 1: refuse them before training, each on its own line."""
    from keras.src.trainers.compile_utils import get_metric

    y_true, y_pred = _dummy_labels(model, spec, num_classes)
    problems = []
    for index, identifier in enumerate(metrics):
        loc = ("compile", "metrics", index)
        try:
            metric = get_metric(identifier, y_true, y_pred)
            if hasattr(metric, "get_config") and not isinstance(identifier, str):
                metric = type(metric).from_config(metric.get_config())  # a fresh, unused copy
            metric.update_state(y_true, y_pred)
            shape = tuple(metric.result().shape)
        except Exception as exc:
            problems += spec.error(
                loc, f"cannot score this model's outputs: {_first_line(exc)}"
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


def _check_labels(model, spec: Spec, num_classes: int) -> list:
    """The label/output mismatches fit() would fail on (or silently get wrong) after the run
    folder exists."""
    outputs = model.output_shape[-1]
    last = ("model", "layers", len(spec.model.layers) - 1)
    if spec.task == "regression":
        if outputs != num_classes:
            return [
                spec.error(
                    last,
                    f"the last layer gives {outputs} outputs but the data has {num_classes} "
                    f"regression target(s); end with {{type: Dense, units: {num_classes}}}",
                )
            ]
        return []
    loss = spec.compile.loss if isinstance(spec.compile.loss, str) else spec.compile.loss["type"]
    loss = loss.lower().replace("_", "")
    if "categorical" in loss:
        sparse = loss.startswith("sparse")
        if sparse and spec.data.one_hot:
            return [
                spec.error(
                    ("compile", "loss"),
                    "sparse categorical losses take integer labels; set data.one_hot: false "
                    "or use categorical_crossentropy",
                )
            ]
        if not sparse and not spec.data.one_hot:
            return [
                spec.error(
                    ("compile", "loss"),
                    "categorical losses take one-hot labels; set data.one_hot: true "
                    "or use sparse_categorical_crossentropy",
                )
            ]
        if outputs != num_classes:
            return [
                spec.error(
                    last,
                    f"the last layer gives {outputs} outputs but the data has {num_classes} "
                    f"classes; end with {{type: Dense, units: {num_classes}, activation: softmax}}",
                )
            ]
        return []
    # Other losses (binary_crossentropy, hinge, ...) compare labels and outputs element-wise.
    if spec.data.one_hot and outputs != num_classes:
        return [
            spec.error(
                last,
                f"the last layer gives {outputs} output(s) but one-hot labels have {num_classes} "
                "columns; for one sigmoid unit set data.one_hot: false, or end with "
                f"{{type: Dense, units: {num_classes}}}",
            )
        ]
    if not spec.data.one_hot and outputs != 1:
        return [
            spec.error(
                last,
                f"the last layer gives {outputs} outputs but integer labels are one column; "
                "end with {type: Dense, units: 1, activation: sigmoid} or set data.one_hot: true",
            )
        ]
    if not spec.data.one_hot and num_classes > 2:
        return [
            spec.error(
                ("compile", "loss"),
                f"{spec.compile.loss if isinstance(spec.compile.loss, str) else loss} with one "
                f"output is for two classes; the data has {num_classes}: use "
                "sparse_categorical_crossentropy with a softmax layer",
            )
        ]
    return []


def summary_text(model) -> str:
    """model.summary() as text, at the same width whatever the terminal (rich reads COLUMNS)."""
    lines: list[str] = []
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line), line_length=88)
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved
    return "\n".join(lines) + "\n"
