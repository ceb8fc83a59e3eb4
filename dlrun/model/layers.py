"""keras.layers by class name: the classes, the arguments each accepts, the names Keras
would give them in a fresh process, and a model's seed generators.  [TensorFlow]"""

from __future__ import annotations

import inspect

from dlrun.spec.names import snake_case

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


def layer_classes() -> dict[str, type]:
    """keras.layers' classes by name, and the code files' Layer subclasses (usercode.merged:
    an ambiguous bare name maps to a usercode.Ambiguous)."""
    import keras

    from dlrun import usercode

    def is_layer(value) -> bool:
        return isinstance(value, type) and issubclass(value, keras.layers.Layer)

    own = {name: value for name, value in vars(keras.layers).items() if is_layer(value)}
    return usercode.merged(own, is_layer)


def unknown_layer(name: str, classes: dict) -> str:
    """Why `name` names no layer class: ambiguous between code files and Keras, or unknown."""
    from dlrun import usercode
    from dlrun.spec.problems import did_you_mean

    found = classes.get(name)
    if isinstance(found, usercode.Ambiguous):
        return found.message
    return (
        f"unknown layer {name!r}; expected a keras.layers class"
        + (" or a code file's layer" if usercode.active() else "")
        + did_you_mean(
            name, sorted(k for k, v in classes.items() if not isinstance(v, usercode.Ambiguous))
        )
    )


def arguments(cls: type) -> set[str] | None:
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


def layer_name(class_name: str, taken: dict[str, int], given: set) -> str:
    """The name Keras would give in a fresh process (dense, dense_1, conv2d, ...), counted
    within this model and past the names the spec gives: Keras' own counter runs across every
    model the process ever built, so the names, and the messages that quote them, would
    depend on what was built before."""
    base = snake_case(class_name)  # Keras' own prefix for a class
    while True:
        count = taken.get(base, 0)
        taken[base] = count + 1
        name = base if count == 0 else f"{base}_{count}"
        if name not in given:
            return name


def seed_generators(model) -> list:
    """Every SeedGenerator of the model's layers, in layer order (Keras keeps them in private
    lists: a layer's own, and those it makes for another backend's tf.data graphs)."""
    found, seen = [], set()
    for layer in model._flatten_layers(include_self=True):
        mine = [*layer._seed_generators, *getattr(layer, "_backend_generators", {}).values()]
        for generator in mine:
            if id(generator) not in seen:
                seen.add(id(generator))
                found.append(generator)
    return found
