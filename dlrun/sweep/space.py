"""A search space's entries checked before any fit is planned: lists of values and
distributions, their numbers, and their kinds against the base spec's (sweep.plan)."""

from __future__ import annotations

import json
import math
from typing import Any

from dlrun.spec.keys import paths
from dlrun.spec.problems import did_you_mean
from dlrun.sweep.schema import DISTRIBUTIONS, MAX_SPACE_NUMBER


def check_rule(path: str, rule: Any, numeric: bool = False) -> str | None:
    """A space entry's problem, or None. `numeric` (cmaes): only uniform, loguniform, randint."""
    if isinstance(rule, list):
        if numeric:
            return "cmaes searches numbers only: give {uniform|loguniform|randint: [low, high]}"
        return check_values(rule) if rule else "expected at least one value, got []"
    if not isinstance(rule, dict) or len(rule) != 1:
        return (
            f"expected a list of values or one of {{{', '.join(DISTRIBUTIONS)}: ...}}, got {rule!r}"
        )
    ((kind, bounds),) = rule.items()
    if kind not in DISTRIBUTIONS:
        return f"unknown distribution {kind!r}; expected one of {', '.join(DISTRIBUTIONS)}" + (
            did_you_mean(kind, DISTRIBUTIONS)
        )
    if numeric and kind == "choice":
        return "cmaes searches numbers only (uniform, loguniform, randint); use tpe for a choice"
    if kind == "choice":
        if not (isinstance(bounds, list) and bounds):
            return "choice needs a non-empty list"
        return check_values(bounds)
    if not (
        isinstance(bounds, list)
        and len(bounds) == 2
        and all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
    ):
        return f"{kind} needs [low, high] with low < high, got {bounds!r}"
    if message := check_values(bounds):
        return message
    if not bounds[0] < bounds[1]:
        return f"{kind} needs [low, high] with low < high, got {bounds!r}"
    if kind == "loguniform" and bounds[0] <= 0:
        return f"loguniform needs low > 0, got {bounds[0]}"
    if kind == "randint" and not all(isinstance(b, int) for b in bounds):
        return f"randint needs whole numbers, got {bounds!r}"
    return None


def check_values(values: list) -> str | None:
    """A list of values (a grid's, a choice's, a distribution's ends): every number in them
    finite, every whole number within MAX_SPACE_NUMBER, and no two kinds a YAML reader takes
    for one (true and 1, 1 and 1.0), which would search the same setting twice or a bool where
    a count is meant."""
    for value in values:
        if message := bad_number(value):
            return message
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    flags = [v for v in values if isinstance(v, bool)]
    if numbers and flags:
        return (
            f"{json.dumps(values)} mixes true/false with numbers; YAML's true is not 1: give "
            "numbers only (or true and false only)"
        )
    for index, number in enumerate(numbers):
        same = [other for other in numbers[index + 1 :] if other == number]
        if same and type(same[0]) is not type(number):
            return (
                f"{json.dumps(values)} gives {number!r} and {same[0]!r}, one value as a whole "
                "number and as a float; give it once, as the kind the setting takes"
            )
    return None


def bad_number(value: Any) -> str | None:
    """A number in a value (or nested in a mapping or list of one) that is not finite, or a
    whole number beyond MAX_SPACE_NUMBER, as a message. A float may be large (a learning rate
    of 1e12 makes a fit diverge on purpose): it sizes nothing."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack += item.values()
        elif isinstance(item, list):
            stack += item
        elif isinstance(item, float) and not math.isfinite(item):
            return f"{item!r} is no setting: every number in a search space is finite"
        elif isinstance(item, int) and not isinstance(item, bool) and abs(item) > MAX_SPACE_NUMBER:
            return (
                f"{item!r} is beyond the {MAX_SPACE_NUMBER:,} a whole number in a search space "
                "may be (no count or size a fit can train with)"
            )
    return None


def base_kind(base: dict, key: str, values: list) -> str | None:
    """A value that is a bool where the base spec has a number at `key`, or the reverse: a
    layer's units: true is 1 to Python and a mistake to anyone writing it."""
    node: Any = base
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part in map(str, range(len(node))):
            node = node[int(part)]
        else:
            return None  # a Keras argument the base leaves at its default
    if node is None or not isinstance(node, (bool, int, float)):
        return None
    for value in values:
        if value is None or not isinstance(value, (bool, int, float)):
            continue
        if isinstance(value, bool) != isinstance(node, bool):
            kind = "true or false" if isinstance(node, bool) else "a number"
            return (
                f"value {json.dumps(value)}: the base spec's {key} is {kind} ({json.dumps(node)})"
            )
    return None


def path_exists(base: dict, path: str) -> bool:
    """In the resolved base spec, or an argument of a layer, optimizer or loss (Keras checks)."""
    if path in paths(base):
        return True
    parent = path.rsplit(".", 1)[0]
    parts = parent.split(".")
    return (
        parts[:2] == ["model", "layers"] and len(parts) == 3 and parent in paths(base)
    ) or parent in ("compile.optimizer", "compile.loss")


def candidates(rule: Any) -> list[Any]:
    """The values of a space entry worth checking against the spec: every listed value, or a
    distribution's two ends."""
    if isinstance(rule, list):
        return rule
    ((kind, bounds),) = rule.items()
    return list(bounds)
