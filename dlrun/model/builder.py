"""Spec -> Keras model: layers by Keras' own class names, built on the data's shape.  [TensorFlow]

Every problem is reported as a SpecError on the spec's dotted path, with a "did you mean".
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dlrun.backend import load
from dlrun.errors import SpecError, first_line
from dlrun.model.compiling import _lookup_problems
from dlrun.model.layers import arguments, layer_classes, layer_name, unknown_layer
from dlrun.spec.problems import did_you_mean
from dlrun.spec.schema import Spec


def spec_entries(spec: Spec, keys: tuple = ("augment", "layers")) -> list[tuple[tuple, Any]]:
    """(location, entry) of every layer of the spec: model.augment's, then model.layers'."""
    return [
        (("model", key, index), entry)
        for key in keys
        for index, entry in enumerate(getattr(spec.model, key))
    ]


def make_layers(spec: Spec, keys: tuple = ("augment", "layers")) -> list[Any]:
    """One Keras layer per spec entry (spec_entries), arguments checked against the class's
    signature."""
    classes = layer_classes()
    layers, problems = [], []
    taken: dict[str, int] = {}
    entries = spec_entries(spec, keys)
    given = {entry.kwargs().get("name") for _, entry in entries}
    last = ("model", "layers", len(spec.model.layers) - 1)
    named: set = set()
    for loc, entry in entries:
        name = entry.kwargs().get("name")
        if name is not None and name in named:
            problems.append(spec.error((*loc, "name"), f"the name {name!r} is given twice here"))
            continue
        named.add(name)
        cls = classes.get(entry.type)
        if not isinstance(cls, type):
            problems.append(spec.error((*loc, "type"), unknown_layer(entry.type, classes)))
            continue
        accepted = arguments(cls)
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
            kwargs["name"] = layer_name(cls.__name__, taken, given)
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


def build_model(spec: Spec, input_shape: tuple[int, ...]):
    """A Sequential model on the data's input shape; a layer that cannot be built is named.

    Unknown layers and arguments are reported together with unknown optimizer, loss and
    metric names, so one round of fixes is enough.
    """
    keras = load()

    if spec.model.function is not None:
        return _from_function(spec, input_shape)
    if spec.model.is_graph:
        if spec.model.augment and spec.model.base is None:
            raise spec.error(
                ("model", "augment"),
                "augment goes before a stack of layers or a base; in a graph, put the "
                "augmentation layers first among its layers",
            )
        return _graph(spec, input_shape)
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
                loc,
                f"{entry.type} cannot be built on input shape {shape}: {first_line(exc)}"
                + channels_hint(entry.type, input_shape),
            )
            raise SpecError(problem.problems + _lookup_problems(spec)) from None
        shape = model.output_shape
    return model


def _from_function(spec: Spec, input_shape: tuple[int, ...]):
    """model.function: the keras.Model a code file's function returns, built on the data's
    shape when it is not built yet (a subclassed model builds on its first call)."""
    import numpy as np

    from dlrun import usercode

    keras = load()
    loc = ("model", "function")
    model = usercode.call_function(
        spec, loc, spec.model.function, dict(spec.model.args), "a keras.Model"
    )
    if not isinstance(model, keras.Model):
        raise spec.error(
            loc,
            f"{spec.model.function}() returned {type(model).__name__}; expected a keras.Model",
        )
    if not model.built:
        try:
            model(np.zeros((1, *input_shape), dtype="float32"))
        except Exception as exc:
            raise spec.error(
                loc,
                f"the model of {spec.model.function}() cannot be built on input shape "
                f"{(None, *input_shape)}: {first_line(exc)}",
            ) from None
    return model


def channels_hint(layer_type: str, input_shape: tuple) -> str:
    """A 2-D layer on (steps, features) data: the data may be grayscale images that kept no
    channel axis (float arrays are read as sequences)."""
    if "2D" in layer_type and len(input_shape) == 2:
        return (
            f"; the data {tuple(input_shape)} is read as sequences (samples, steps, features): "
            "if they are grayscale images, set data.channels: add"
        )
    return ""


def _graph(spec: Spec, input_shape: tuple[int, ...]):
    """A graph (model.inputs, blocks, `inputs:` references): Keras' functional API."""
    from dlrun.model.graph import build_graph

    base = None
    if spec.model.base is not None:  # the graph reads the base's output as `base`
        from dlrun.model.transfer import base_below

        if spec.model.inputs is not None:
            raise spec.error(
                ("model", "inputs"),
                "a graph on a base reads the base's output as `base` (and an inner layer as "
                "base.LAYER); remove model.inputs",
            )

        def base(taps: dict):
            return base_below(spec, input_shape, make_layers(spec, ("augment",)), taps)

    given = {entry.kwargs().get("name") for entry in spec.model.layers}
    try:
        return build_graph(spec, input_shape, {}, given, layer_classes(), base)
    except SpecError as exc:
        raise SpecError(exc.problems + _lookup_problems(spec)) from None


def keras_problems(path, overrides: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The unknown layers, layer arguments, optimizer, loss and metric names of a spec that
    failed schema validation, so that one round of fixes is enough ([] if none can be told)."""
    from dlrun.spec.loading import load_raw, valid_sections

    try:
        raw, lines = load_raw(path, overrides)
    except SpecError:
        return []
    spec = valid_sections(raw, str(path), lines)
    if spec is None or raw.get("code"):  # a code file's names are found once it is imported
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


def graph_text(model) -> str:
    """A graph model as text, one layer a line with what it reads: the picture of the graph
    where graphviz is not installed (written beside summary.txt as graph.txt). Read from the
    model's own config (the functional API's serialised wiring), not from Keras' internals."""
    shapes = {layer.name: _shape(layer.output) for layer in model.layers}
    config = model.get_config().get("layers", [])
    # A base with taps: its outputs after the first are inner layers, shown as base.LAYER.
    inner = {
        layer["config"].get("name"): [output[0] for output in layer["config"]["output_layers"]]
        for layer in config
        if isinstance(layer.get("config", {}).get("output_layers"), list)
    }
    lines = []
    for layer in config:
        found: list[tuple] = []
        _sources(layer.get("inbound_nodes"), found)
        reads = [
            f"{source}.{inner[source][index]}" if index and source in inner else source
            for source, index in found
        ]
        name = layer.get("name") or layer["config"].get("name")
        source = f" <- {', '.join(reads)}" if reads else ""
        lines.append(f"{name} ({layer['class_name']}) {shapes.get(name, '')}{source}")
    return "\n".join(lines) + "\n"


def _shape(output) -> tuple:
    """A layer's output shape; a base with taps has several outputs: their shapes."""
    if isinstance(output, (list, tuple)):
        return tuple(_shape(item) for item in output)
    return tuple(output.shape)


def draw_graph(model, path: Path) -> bool:
    """model.png through keras.utils.plot_model, written whole, where pydot and graphviz's `dot`
    are installed; False elsewhere (graph.txt is then the picture)."""
    import importlib.util
    import shutil

    if importlib.util.find_spec("pydot") is None or shutil.which("dot") is None:
        return False
    from dlrun.store.files import atomic_path

    keras = load()
    with atomic_path(path) as tmp:  # keeps the .png suffix plot_model reads the format from
        keras.utils.plot_model(model, to_file=str(tmp), show_shapes=True, show_layer_names=True)
    return True


def _sources(value, found: list[tuple]) -> None:
    """(layer name, output index) of each tensor in a serialised inbound node (its
    keras_history: layer, node, output index)."""
    if isinstance(value, dict):
        history = value.get("keras_history")
        if isinstance(history, (list, tuple)) and history:
            index = history[2] if len(history) > 2 and isinstance(history[2], int) else 0
            found.append((str(history[0]), index))
            return
        for item in value.values():
            _sources(item, found)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _sources(item, found)
