"""What a spec adds to fit() beyond the model and the data: Keras callbacks by name
(`training.callbacks`) with their state kept across --resume, and class weights
(`training.class_weight`).  [TensorFlow]

Callbacks are made before the run folder exists, so an unknown name or argument is a spec
error. They run before dlrun records each epoch: a ReduceLROnPlateau's new learning rate is in
that epoch's checkpoint, and its counters (wait, best, cooldown) go into meta.json with the
epoch, so a resumed run continues them instead of starting over.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import numpy as np

from dlrun.errors import first_line
from dlrun.model.outputs import true_classes
from dlrun.spec.problems import did_you_mean
from dlrun.spec.schema import CODE_CALLBACKS, OWNED_CALLBACKS, Spec

STATE = "callback_state"  # the meta.json key


def _classes() -> dict[str, type]:
    """keras.callbacks' classes dlrun allows, and the code files' Callback subclasses."""
    import keras

    from dlrun import usercode

    base = keras.callbacks.Callback
    own = {
        name: value
        for name, value in vars(keras.callbacks).items()
        if isinstance(value, type) and issubclass(value, base) and value is not base
        if name not in OWNED_CALLBACKS and name not in CODE_CALLBACKS and name != "CallbackList"
    }
    return usercode.merged(own, lambda v: isinstance(v, type) and issubclass(v, base))


def make_callbacks(spec: Spec) -> list:
    """training.callbacks as Keras callback objects; every problem named on its entry."""
    from dlrun.errors import SpecError

    if not spec.training.callbacks:
        return []
    classes, made, problems = _classes(), [], []
    for index, entry in enumerate(spec.training.callbacks):
        loc = ("training", "callbacks", index)
        cls = classes.get(entry.type)
        if not isinstance(cls, type):
            message = getattr(cls, "message", None) or (
                f"unknown callback {entry.type!r}" + did_you_mean(entry.type, list(classes))
            )
            problems += spec.error((*loc, "type"), message).problems
            continue
        accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
        for key in entry.kwargs():
            if key not in accepted:
                message = f"{entry.type} takes no argument {key!r}" + did_you_mean(
                    key, sorted(accepted)
                )
                problems += spec.error((*loc, key), message).problems
        try:
            made.append(cls(**entry.kwargs()))
        except Exception as exc:
            problems += spec.error(
                loc, f"{entry.type} refused its arguments: {first_line(exc)}"
            ).problems
    if problems:
        raise SpecError(problems)
    return made


def _plain(value: Any) -> Any:
    """A JSON-able scalar of a callback's state, or None when it is not one."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)  # inf: "inf", read back below
    return None


def state_of(callbacks: list) -> list[dict]:
    """Each callback's counters: its public scalar attributes that are not arguments of its
    class (ReduceLROnPlateau's wait, best, cooldown_counter), which Keras resets in
    on_train_begin. Arguments come from the spec; some are rewritten as training starts (a
    MonitorCallback flips min_delta's sign) and must not be put back."""
    states = []
    for callback in callbacks:
        arguments = set(inspect.signature(type(callback).__init__).parameters)
        state = {}
        for key, value in vars(callback).items():
            plain = _plain(value)
            if not key.startswith("_") and key not in arguments and plain is not None:
                state[key] = plain
        states.append({"type": type(callback).__name__, "state": state})
    return states


def _value(value: Any) -> Any:
    if value in ("inf", "-inf", "nan"):
        return float(value)
    return value


def restorer(callbacks: list, states: list):
    """A callback that puts saved counters back after the callbacks' own on_train_begin has
    reset them; it must come after them in the list."""
    import keras

    class RestoreCallbackState(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            for callback, saved in zip(callbacks, states, strict=False):
                if isinstance(saved, dict) and saved.get("type") == type(callback).__name__:
                    for key, value in (saved.get("state") or {}).items():
                        if hasattr(callback, key):
                            setattr(callback, key, _value(value))

    return RestoreCallbackState()


def class_weights(spec: Spec, data) -> dict[int, float] | None:
    """training.class_weight as fit() takes it: {class index: weight}."""
    wanted = spec.training.class_weight
    if wanted is None:
        return None
    labels = true_classes(data.y_train)
    if wanted == "balanced":
        from sklearn.utils.class_weight import compute_class_weight

        present = np.unique(labels)
        weights = compute_class_weight("balanced", classes=present, y=labels)
        return {int(c): float(w) for c, w in zip(present, weights, strict=True)}
    names = data.class_names or [str(n) for n in range(data.num_classes)]
    given = {str(key): float(value) for key, value in wanted.items()}
    unknown = [key for key in given if key not in names]
    if unknown:
        raise spec.error(
            ("training", "class_weight", unknown[0]),
            f"no class {unknown[0]!r}; the classes are {', '.join(names[:20])}"
            + did_you_mean(unknown[0], names),
        )
    if any(weight < 0 or not math.isfinite(weight) for weight in given.values()):
        raise spec.error(("training", "class_weight"), "weights must be finite and >= 0")
    # Classes left out keep weight 1, as Keras does for a missing key.
    return {index: given.get(name, 1.0) for index, name in enumerate(names)}
