"""`model.base`: a trained network below a new head, and the finetuning stage.  [TensorFlow]

The model is functional: input -> augmentation (model.augment, active in training only) ->
adapters (resize, gray to rgb, preprocess) -> base -> head.
The base is one nested model named `base` (model.frozen.FrozenBase), in inference mode
whatever fit passes on, so its Dropout is off and its batch normalization uses its moving
statistics, in both stages; finetuning unfreezes everything but the batch
normalization layers, which keeps them so (see unfreeze). Adapters are ordinary, saveable
layers (no Lambda), frozen, and show in summary.txt.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import numpy as np

from dlrun import store
from dlrun.backend import load
from dlrun.errors import DlrunError, SpecError, first_line
from dlrun.model.checkpoints import CHECKPOINTS, load_model
from dlrun.model.frozen import frozen_base_class
from dlrun.model.graph import BASE  # the nested model's name, which a graph head reads
from dlrun.spec.problems import did_you_mean
from dlrun.spec.schema import Spec

STAGES = ("head", "finetune")
SHOWN_LAYERS = 20  # layer names listed when `until` names none


def _applications() -> dict:
    import keras

    return {
        name: value
        for name, value in vars(keras.applications).items()
        if name[:1].isupper() and callable(value)
    }


def _minimum_size(build, options: dict, shape: tuple[int, int]) -> tuple[int, int] | None:
    """The smallest input Keras' own check lets this application take, if `shape` is smaller."""
    try:
        build(weights=None, input_shape=(*shape, 3), **options)
    except ValueError as exc:
        found = re.search(r"at least (\d+)x(\d+)", str(exc))
        if found:
            return int(found.group(1)), int(found.group(2))
        raise
    return None


def _download_error(spec: Spec, name: str, exc: Exception) -> DlrunError:
    import os

    text = " ".join(str(exc).split())
    url = re.search(r"https?://\S+?\.h5", text)
    file = url.group(0).rsplit("/", 1)[-1] if url else f"the {name} weights file"
    home = os.environ.get("KERAS_HOME", "~/.keras")
    reason = text.rsplit(" -- ", 1)[-1][:120]
    return spec.error(
        ("model", "base", "weights"),
        f"imagenet weights for {name} are not cached and could not be downloaded ({reason}); "
        f"put {file} in {home}/models/ or set weights: PATH to a weights file",
    )


def _imagenet(spec: Spec, build, size: tuple[int, int], options: dict):
    """The application with Keras' imagenet weights: its own download and cache."""
    import contextlib
    import io
    import warnings

    # Keras prints "Downloading data from ..." and warns about sizes it has no weights for;
    # a failure is reported in one line instead.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return build(weights="imagenet", input_shape=(*size, 3), **options)
        except ValueError:
            raise
        except Exception as exc:  # urllib and Keras raise many kinds for "no network"
            raise _download_error(spec, spec.model.base.application, exc) from None


def _application(spec: Spec, size: tuple[int, int]):
    """The keras.applications model, its input size, and its preprocessing function."""
    base = spec.model.base
    constructors = _applications()
    build = constructors.get(base.application)
    if build is None:
        raise spec.error(
            ("model", "base", "application"),
            f"unknown application {base.application!r}; expected a keras.applications model"
            + did_you_mean(base.application, sorted(constructors)),
        )
    options = {"include_top": False, **base.options}
    if base.weights not in (None, "imagenet") and not Path(base.weights).is_file():
        raise spec.missing(("model", "base", "weights"), base.weights)
    try:
        size = _minimum_size(build, options, size) or size
        if base.weights == "imagenet":
            model = _imagenet(spec, build, size, options)
        else:
            model = build(weights=None, input_shape=(*size, 3), **options)
    except SpecError:
        raise
    except (TypeError, ValueError) as exc:
        raise spec.error(
            ("model", "base"), f"{base.application} refused: {first_line(exc)}"
        ) from None
    if base.weights not in (None, "imagenet"):
        path = Path(base.weights)
        try:
            model.load_weights(path)
        except Exception as exc:
            raise spec.error(
                ("model", "base", "weights"),
                f"{path} does not fit {base.application} with these options: {first_line(exc)}",
            ) from None
    module = importlib.import_module(build.__module__)
    return model, size, getattr(module, "preprocess_input", None)


def _saved(spec: Spec):
    """The model of `run:` (its checkpoint) or `file:`, loaded with Keras' safe_mode."""
    base = spec.model.base
    if base.file is not None:
        path = Path(base.file)
        if not path.is_file():
            raise spec.missing(("model", "base", "file"), path)
        return _load(spec, ("model", "base", "file"), path, load_model)
    try:
        run = store.open_run(Path(base.run))
    except DlrunError as exc:
        raise spec.error(("model", "base", "run"), str(exc)) from None
    if run.status != store.COMPLETED:
        raise spec.error(
            ("model", "base", "run"),
            f"{run.path} is {run.status} ({run.meta.get('epochs_done', 0)} of "
            f"{run.meta.get('epochs_planned', '?')} epochs); finish it first "
            f"(dlrun train --resume {run.path})",
        )
    path = store.within(run.path, CHECKPOINTS[base.checkpoint])  # no symlink out of the run
    if not path.is_file():
        raise spec.error(
            ("model", "base", "checkpoint"), f"{run.path} has no {CHECKPOINTS[base.checkpoint]}"
        )
    return _load(spec, ("model", "base", "run"), path, load_model)


def _load(spec: Spec, loc: tuple, path: Path, load_model):
    try:
        return load_model(path)
    except DlrunError as exc:
        raise spec.error(loc, str(exc)) from None


def layer_output(layer):
    """The layer's output in the model that calls it.

    For a nested model (a transfer run's `base`), `.output` is the end of its own inner
    graph, not connected to the outer model's input; the node of its call is.
    """
    return layer._inbound_nodes[-1].output_tensors[0]


def _truncate(spec: Spec, model, what: str, taps: dict[str, tuple] | None = None):
    """The base up to `until` (a layer name or index), as one model named `base`, always in
    inference mode (FrozenBase). taps: {layer name: where the spec reads it}, inner layers a
    graph head reads; each becomes one more output of the base, after its own."""
    until = spec.model.base.until
    layers = model.layers
    if until is None:
        layer = None
    elif isinstance(until, int):
        if not -len(layers) <= until < len(layers):
            raise spec.error(
                ("model", "base", "until"),
                f"{what} has {len(layers)} layers (0 to {len(layers) - 1}, or negative from "
                f"the end); got {until}",
            )
        layer = layers[until]
    else:
        names = [layer.name for layer in layers]
        if until not in names:
            shown = ", ".join(names[-SHOWN_LAYERS:])
            more = f"the last {SHOWN_LAYERS} of {len(names)}" if len(names) > SHOWN_LAYERS else ""
            raise spec.error(
                ("model", "base", "until"),
                f"{what} has no layer {until!r}{did_you_mean(until, names)} "
                f"Its layers ({more or 'all'}): {shown}",
            )
        layer = model.get_layer(until)
    outputs = model.outputs[0] if layer is None else layer_output(layer)
    if taps:
        outputs = [outputs, *(_tap(spec, model, what, name, loc) for name, loc in taps.items())]
    return frozen_base_class()(model.inputs[0], outputs, name=BASE)


def _tap(spec: Spec, model, what: str, name: str, loc: tuple):
    """The output of the base's layer `name`, which the entry at `loc` reads as base.NAME."""
    names = [layer.name for layer in model.layers]
    if name not in names:
        raise spec.error(
            loc,
            f"{what} has no layer {name!r} to read as {BASE}.{name}"
            + (did_you_mean(name, names) or f"; its layers: {', '.join(names[-SHOWN_LAYERS:])}"),
        )
    return layer_output(model.get_layer(name))


def _preprocess_layer(function, scale: float, channels: int):
    """preprocess_input as a saveable layer, or None when it changes nothing.

    Every keras.applications preprocess_input is affine per pixel (scale, shift, maybe swap
    channels), so it is measured on unit inputs; the data arrive divided by data.scale, so
    that factor is folded back in. Per channel (EfficientNet's identity on 0..255 pixels, or
    torch's mean and std) it is a Rescaling, with no weights; only a channel swap (caffe's
    BGR) needs a frozen 1x1 convolution.
    """
    import keras

    def apply(pixel: np.ndarray) -> np.ndarray:
        return np.asarray(function(pixel.reshape(1, 1, 1, channels).copy()), np.float64)[0, 0, 0]

    shift = apply(np.zeros(channels, np.float32))
    kernel = np.stack(
        [apply(np.eye(channels, dtype=np.float32)[c]) - shift for c in range(channels)]
    )
    kernel = kernel * scale  # rows: input channel, columns: output channel
    if np.allclose(kernel, np.eye(channels)) and np.allclose(shift, 0):
        return None
    factors = np.diag(kernel)
    if np.allclose(kernel, np.diag(factors)):

        def value(v: np.ndarray):  # one number when every channel has it
            return float(v[0]) if np.allclose(v, v[0]) else [float(x) for x in v]

        return keras.layers.Rescaling(value(factors), value(shift), name="preprocess_input")
    layer = keras.layers.Conv2D(channels, 1, name="preprocess_input", trainable=False)
    layer.build((None, None, None, channels))
    layer.set_weights([kernel.reshape(1, 1, channels, channels).astype("float32"), shift])
    return layer


def build_transfer_model(spec: Spec, input_shape: tuple[int, ...], head: list, augment: list = ()):
    """input -> augmentation -> adapters -> frozen base (training=False) -> head, as one
    functional model."""
    keras = load()

    inputs, x = base_below(spec, input_shape, augment)
    for index, layer in enumerate(head):
        entry = spec.model.layers[index]
        shape = tuple(x.shape)
        try:
            x = layer(x)
        except Exception as exc:
            raise spec.error(
                ("model", "layers", index),
                f"{entry.type} cannot take the base's output {shape}: {first_line(exc)}",
            ) from None
    if len(x.shape) != 2:
        last = len(spec.model.layers) - 1
        raise spec.error(
            ("model", "layers", last),
            f"the head ends in shape {tuple(x.shape)}; {_head_end(spec)}: "
            "put {type: GlobalAveragePooling2D} or Flatten before the Dense layers",
        )
    return keras.Model(inputs, x, name=spec.name.replace(".", "_").replace("-", "_"))


def _head_end(spec: Spec) -> str:
    """What a head on a base ends in, said for the spec's task."""
    if spec.task == "regression":
        return "a regression head ends in (None, targets)"
    return "a classifier ends in (None, classes)"


def base_below(spec: Spec, input_shape: tuple[int, ...], augment: list = (), taps=None):
    """The image input and the frozen base's output on it (input -> augmentation -> adapters
    -> base, training=False): what a head reads. With taps ({layer name: spec location}), the
    base's outputs: its own, then each tapped layer's, in the order of taps."""
    keras = load()

    base_spec = spec.model.base
    if len(input_shape) != 3:
        raise spec.error(
            ("model", "base"),
            f"a base takes images (height, width, channels); the data gives shape {input_shape}"
            + ("; set data.flatten: false" if spec.data.flatten else ""),
        )
    height, width, channels = input_shape
    preprocess = None
    if base_spec.application:
        model, (want_h, want_w), function = _application(spec, (height, width))
        want_c = 3
        what = base_spec.application
        if base_spec.preprocess == "auto" and function is not None:
            preprocess = _preprocess_layer(function, spec.data.scale, want_c)
    else:
        model = _saved(spec)
        shape = tuple(model.inputs[0].shape[1:]) if model.inputs else ()
        what = f"the base model {base_spec.run or base_spec.file}"
        if len(shape) != 3:
            raise spec.error(
                ("model", "base"),
                f"{what} takes input shape {shape}; only image bases (height, width, channels) "
                "can be adapted",
            )
        want_h, want_w, want_c = shape
    if channels != want_c and not (channels == 1 and want_c == 3):
        raise spec.error(
            ("model", "base"),
            f"{what} takes {want_c} channel(s) but the data has {channels}; "
            f"set data.color_mode to {'rgb' if want_c == 3 else 'grayscale'} or use another base",
        )
    base = _truncate(spec, model, what, taps)
    base.trainable = base_spec.trainable

    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for index, layer in enumerate(augment):  # on the images as the data gives them
        try:
            x = layer(x)
        except Exception as exc:
            raise spec.error(
                ("model", "augment", index),
                f"{spec.model.augment[index].type} cannot take the images {tuple(x.shape)}: "
                f"{first_line(exc)}",
            ) from None
    if (height, width) != (want_h, want_w):
        x = keras.layers.Resizing(want_h, want_w, name=f"resize_to_{want_h}x{want_w}")(x)
    if channels != want_c:  # grayscale into an rgb base: the one channel three times
        x = keras.layers.Concatenate(name="gray_to_rgb")([x, x, x])
    if preprocess is not None:
        x = preprocess(x)
    return inputs, base(x, training=False)


def base_of(model):
    """The nested base model of a transfer model (None for a plain one)."""
    try:
        return model.get_layer(BASE)
    except ValueError:
        return None


def _batch_norms(layer) -> list:
    import keras

    if isinstance(layer, keras.layers.BatchNormalization):
        return [layer]
    return [found for inner in getattr(layer, "layers", []) for found in _batch_norms(inner)]


def unfreeze(model, spec: Spec) -> None:
    """The finetuning stage's trainable flags: all of the base, or its top N layers.

    Batch normalization stays frozen: the base runs in inference mode (FrozenBase), so its
    statistics, learnt on much more data, stay as they were, and so do its scale and shift.
    """
    base = base_of(model)
    unfreeze = spec.training.finetune.unfreeze
    base.trainable = True
    if unfreeze != "all":
        for layer in base.layers[:-unfreeze]:
            layer.trainable = False
    for layer in _batch_norms(base):
        layer.trainable = False


def counts(model) -> tuple[int, int]:
    """(trainable, non-trainable) parameter counts as model.summary() reports them."""
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    return trainable, sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)


def _flags(model) -> list:
    base = base_of(model)
    return [(layer, layer.trainable) for layer in [base, *base.layers]]


def _restore(flags: list) -> None:
    for layer, flag in flags:  # the base first: setting it sets every layer inside
        layer.trainable = flag


def stage_counts(model, spec: Spec) -> str:
    """summary.txt's lines: trainable and non-trainable parameters in each stage."""
    flags = _flags(model)
    base_of(model).trainable = spec.model.base.trainable
    trainable, frozen = counts(model)
    lines = [f"stage 1 (head): trainable {trainable:,}, non-trainable {frozen:,}"]
    if spec.training.finetune:
        unfreeze(model, spec)
        trainable, frozen = counts(model)
        lines.append(f"stage 2 (finetune): trainable {trainable:,}, non-trainable {frozen:,}")
    _restore(flags)
    return "\n".join(lines) + "\n"


def check_finetune(model, spec: Spec) -> None:
    """Finetuning must unfreeze some weights: the top N layers may all be weightless."""
    flags = _flags(model)
    before = len(model.trainable_weights)
    unfreeze(model, spec)
    after = len(model.trainable_weights)
    _restore(flags)
    if after == before:
        raise spec.error(
            ("training", "finetune", "unfreeze"),
            f"the top {spec.training.finetune.unfreeze} layers of the base have no weights "
            "to train; unfreeze more layers or all",
        )
