"""Spec -> compiled Keras model, through Keras' own lookups.                      [TensorFlow]

Every problem is reported as a SpecError on the spec's dotted path, with a "did you mean".
"""

from __future__ import annotations

import inspect
import os
import re
from typing import Any

from dlrun.backend import load
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


def build_model(spec: Spec, input_shape: tuple[int, ...]):
    """A Sequential model on the data's input shape; a layer that cannot be built is named."""
    keras = load()
    layers = make_layers(spec)
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
            raise spec.error(
                ("model", "layers", index),
                f"{entry.type} cannot be built on input shape {shape}: {_first_line(exc)}",
            ) from None
        shape = model.output_shape
    return model


def _named(spec: Spec, field: str, getter, value: Any, candidates: list[str]):
    loc = ("compile", field)
    if isinstance(value, str):
        identifier: Any = value
    else:  # {type: adam, learning_rate: 0.01} -> Keras' own config format
        arguments = {k: v for k, v in value.items() if k != "type"}
        identifier = {"class_name": value["type"], "config": arguments}
    try:
        return getter(identifier)
    except Exception as exc:
        name = value if isinstance(value, str) else value["type"]
        if isinstance(exc, ValueError) and "Could not interpret" in str(exc):
            return_message = f"unknown {field} {name!r}" + did_you_mean(name, candidates)
            raise spec.error(
                loc if isinstance(value, str) else (*loc, "type"), return_message
            ) from None
        raise spec.error(loc, f"{name} refused its arguments: {_first_line(exc)}") from None


def compile_model(model, spec: Spec, num_classes: int) -> None:
    """compile() with the optimizer, loss and metrics looked up by Keras."""
    import keras
    from keras.src.optimizers import ALL_OBJECTS_DICT as OPTIMIZERS

    losses = [n for n in dir(keras.losses) if not n.startswith("_") and n[0].islower()]
    optimizer = _named(
        spec, "optimizer", keras.optimizers.get, spec.compile.optimizer, list(OPTIMIZERS)
    )
    loss = _named(spec, "loss", keras.losses.get, spec.compile.loss, losses)
    metrics = []
    for index, name in enumerate(spec.compile.metrics):
        if name not in COMPILE_METRIC_ALIASES:
            try:
                keras.metrics.get(name)
            except ValueError:
                public = [n for n in dir(keras.metrics) if not n.startswith("_")]
                known = sorted({n.lower() if n[0].isupper() else n for n in public})
                raise spec.error(
                    ("compile", "metrics", index),
                    f"unknown metric {name!r}" + did_you_mean(name, known),
                ) from None
        metrics.append(name)
    _check_labels(model, spec, num_classes)
    model.compile(
        optimizer=optimizer,
        loss=loss,
        metrics=metrics,
        jit_compile=spec.compile.jit_compile,
        steps_per_execution=spec.steps_per_execution(_on_gpu(spec)),
    )


def _on_gpu(spec: Spec) -> bool:
    from dlrun.devices import used

    return used(spec)[0].startswith("GPU")


def _check_labels(model, spec: Spec, num_classes: int) -> None:
    """Catch the two classic mismatches before fit() fails on them with a shape error."""
    loss = spec.compile.loss if isinstance(spec.compile.loss, str) else spec.compile.loss["type"]
    loss = loss.lower().replace("_", "")
    if "categorical" not in loss:
        return
    sparse = loss.startswith("sparse")
    if sparse and spec.data.one_hot:
        raise spec.error(
            ("compile", "loss"),
            "sparse categorical losses take integer labels; set data.one_hot: false "
            "or use categorical_crossentropy",
        )
    if not sparse and not spec.data.one_hot:
        raise spec.error(
            ("compile", "loss"),
            "categorical losses take one-hot labels; set data.one_hot: true "
            "or use sparse_categorical_crossentropy",
        )
    outputs = model.output_shape[-1]
    if outputs != num_classes:
        last = len(spec.model.layers) - 1
        raise spec.error(
            ("model", "layers", last),
            f"the last layer gives {outputs} outputs but the data has {num_classes} classes; "
            f"end with {{type: Dense, units: {num_classes}, activation: softmax}}",
        )


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
