"""The classes and functions the code files define, by name, beside Keras' own.

A code file's object is found by its bare name, or as `module.Name` (module: the file's stem).
A bare name that Keras also has, or that two code files define, is ambiguous and must be
written `module.Name`: dlrun never picks one silently.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dlrun.usercode.importing import active


class Ambiguous:
    """A bare name with more than one meaning; `message` says which and what to write."""

    def __init__(self, name: str, owners: list[str]):
        self.message = f"{name} is defined by {' and '.join(owners)}; write " + " or ".join(
            o if "." in o else f"{o}.{name}" for o in owners if o != "keras"
        )


def defined(accept: Callable[[Any], bool]) -> dict[str, list[tuple[str, Any]]]:
    """{bare name: [(module, object), ...]} of what the code files define themselves (not
    what they import), kept when `accept` takes it."""
    found: dict[str, list[tuple[str, Any]]] = {}
    for module in active():
        for name, value in vars(module).items():
            if name.startswith("_") or getattr(value, "__module__", None) != module.__name__:
                continue
            if accept(value):
                found.setdefault(name, []).append((module.__name__, value))
    return found


def merged(keras_names: dict[str, Any], accept: Callable[[Any], bool]) -> dict[str, Any]:
    """Keras' objects by name with the code files' added: `module.Name` always, the bare name
    where it is unambiguous, an Ambiguous where it is not."""
    table = dict(keras_names)
    for name, owners in defined(accept).items():
        for module, value in owners:
            table[f"{module}.{name}"] = value
        if len(owners) == 1 and name not in keras_names:
            table[name] = owners[0][1]
        else:
            listed = (["keras"] if name in keras_names else []) + [
                f"{module}.{name}" for module, _ in owners
            ]
            table[name] = Ambiguous(name, listed)
    return table


def find(name: str, keras_names: set[str] | dict, accept: Callable[[Any], bool]) -> Any:
    """A code file's object named `name` (bare or module.Name), None when the code files have
    none (Keras' lookups go on), or an Ambiguous."""
    if not active():
        return None
    known = keras_names if isinstance(keras_names, dict) else dict.fromkeys(keras_names)
    found = merged(known, accept).get(name)
    if found is None or (name in known and not isinstance(found, Ambiguous)):
        return None
    return found


def custom_objects() -> dict[str, Any]:
    """Every class and function the code files define, for loading a model file."""
    objects = {}
    for name, owners in defined(lambda value: callable(value)).items():
        for module, value in owners:
            objects[f"{module}>{name}"] = value  # register_keras_serializable's form
            objects[name] = value
    return objects


def call_function(spec, loc: tuple, name: str, args: dict, what: str) -> Any:
    """`name(**args)`: a function a code file defines (model.function, data.function); every
    problem is a SpecError on `loc`, its arguments checked against the signature first."""
    import inspect

    from dlrun.errors import SpecError, first_line
    from dlrun.spec.problems import did_you_mean

    if not active():
        raise spec.error(loc, f"{name} is looked up in the code files; add code: [FILE.py]")
    table = merged({}, lambda value: inspect.isfunction(value))
    found = table.get(name)
    if isinstance(found, Ambiguous):
        raise spec.error(loc, found.message)
    if found is None:
        known = sorted(k for k, v in table.items() if not isinstance(v, Ambiguous))
        raise spec.error(
            loc,
            f"no function {name!r} in the code files; expected a function returning {what}"
            + did_you_mean(name, known),
        )
    parameters = inspect.signature(found).parameters.values()
    if not any(p.kind is p.VAR_KEYWORD for p in parameters):
        accepted = [p.name for p in parameters if p.kind is not p.VAR_POSITIONAL]
        unknown = [key for key in args if key not in accepted]
        if unknown:
            problems = [
                spec.error(
                    (*loc[:-1], "args", key),
                    f"{name}() has no argument {key!r}" + did_you_mean(key, accepted),
                ).problems[0]
                for key in unknown
            ]
            raise SpecError(problems)
    try:
        import sys
        from contextlib import redirect_stdout

        with redirect_stdout(sys.stderr):  # stdout stays dlrun's
            return found(**args)
    except SpecError:
        raise
    except Exception as exc:
        raise spec.error(loc, f"{name}() failed: {type(exc).__name__}: {first_line(exc)}") from None
