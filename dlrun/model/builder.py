"""Spec -> Keras model: layers by Keras' own class names, built on the data's shape.  [TensorFlow]

Every problem is reported as a SpecError on the spec's dotted path, with a "did you mean".
"""

from __future__ import annotations

import inspect
import os
from typing import Any

from dlrun.backend import load
from dlrun.errors import SpecError, first_line
from dlrun.model.compiling import _lookup_problems
from dlrun.spec.problems import did_you_mean
from dlrun.spec.schema import Spec

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


def spec_entries(spec: Spec) -> list[tuple[tuple, Any]]:
    """(location, entry) of every layer of the spec: model.augment's, then model.layers'."""
    return [
        (("model", key, index), entry)
        for key in ("augment", "layers")
        for index, entry in enumerate(getattr(spec.model, key))
    ]


def make_layers(spec: Spec) -> list[Any]:
    """One Keras layer per spec entry (spec_entries), arguments checked against the class's
    signature."""
    classes = _layer_classes()
    layers, problems = [], []
    taken: dict[str, int] = {}
    entries = spec_entries(spec)
    given = {entry.kwargs().get("name") for _, entry in entries}
    last = ("model", "layers", len(spec.model.layers) - 1)
    for loc, entry in entries:
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
        if spec.training.mixed_precision and loc == last:
            kwargs.setdefault("dtype", "float32")  # softmax and loss in full precision
        try:
            layers.append(cls(**kwargs))
        except Exception as exc:
            problems.append(
                spec.error(loc, f"{entry.type} refused its arguments: {first_line(exc)}")
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

    try:
        layers = make_layers(spec)
    except SpecError as exc:
        raise SpecError(exc.problems + _lookup_problems(spec)) from None
    if spec.model.augment and len(input_shape) != 3:
        problem = spec.error(
            ("model", "augment"),
            f"augmentation layers take images (height, width, channels); the data gives shape "
            f"{tuple(input_shape)}" + ("; set data.flatten: false" if spec.data.flatten else ""),
        )
        raise SpecError(problem.problems + _lookup_problems(spec))
    if spec.model.base is not None:  # a trained network above the augmentation layers
        from dlrun.model.transfer import build_transfer_model

        augment = len(spec.model.augment)
        return build_transfer_model(spec, input_shape, layers[augment:], layers[:augment])
    model = keras.Sequential(name=spec.name.replace(".", "_").replace("-", "_"))
    model.add(keras.Input(shape=input_shape))
    shape = (None, *input_shape)
    for layer, (loc, entry) in zip(layers, spec_entries(spec), strict=True):
        try:
            model.add(layer)
        except Exception as exc:
            problem = spec.error(
                loc, f"{entry.type} cannot be built on input shape {shape}: {first_line(exc)}"
            )
            raise SpecError(problem.problems + _lookup_problems(spec)) from None
        shape = model.output_shape
    return model


def keras_problems(path, overrides: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The unknown layers, layer arguments, optimizer, loss and metric names of a spec that
    failed schema validation, so that one round of fixes is enough ([] if none can be told)."""
    from dlrun.spec.loading import load_raw, valid_sections

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
