"""`--set dotted.path=value`: one override applied to a raw spec before it is validated."""

from __future__ import annotations

from typing import Any

import yaml

from dlrun.errors import SpecError
from dlrun.spec import safeyaml


def apply_override(raw: dict, assignment: str) -> None:
    """Apply one `--set dotted.path=value` to the raw spec; the value parses as a YAML scalar."""
    key, sep, text = assignment.partition("=")
    if not sep or not key:
        raise SpecError(f"--set {assignment}: expected KEY=VALUE, e.g. training.epochs=3")
    try:  # with the alias budget of spec files: a value can be a billion laughs too
        value = safeyaml.load(text, f"--set {key}") if text else None
    except yaml.YAMLError:
        raise SpecError(f"--set {assignment}: the value is not valid YAML") from None
    parts = key.split(".")
    node: Any = raw
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not _index(part) or int(part) >= len(node):
                raise SpecError(
                    f"--set {key}: {'.'.join(parts[:depth]) or 'spec'} has {len(node)} items "
                    f"(0-{len(node) - 1}); got index {part!r}"
                )
            index = int(part)
            if last:
                node[index] = value
            else:
                if isinstance(node[index], str):  # a bare layer name gains arguments
                    node[index] = {"type": node[index]}
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                elif isinstance(node[part], str):  # `optimizer: adam` gains arguments
                    node[part] = {"type": node[part]}
                node = node[part]
        else:
            parent = ".".join(parts[:depth])
            raise SpecError(f"--set {key}: {parent} is not a mapping or a list")


def _index(part: str) -> bool:
    """An index into a list: ASCII digits only ('²' and '٣' are digits to str.isdigit)."""
    return part.isascii() and part.isdigit()


def check_reading_overrides(
    command: str, overrides: list[str] | tuple[str, ...], allowed: tuple[str, ...]
) -> None:
    """A command that reads a run (evaluate, attack, features) changes only where its data
    comes from (`data.`) and, where it can, the backend it runs on (`backend=`): the model is
    the run's own."""
    kinds = {"data.": "data.KEY=VALUE", "backend=": "backend=NAME"}
    for assignment in overrides:
        if not assignment.startswith(allowed):
            takes = " and ".join(kinds[prefix] for prefix in allowed)
            raise SpecError(f"--set {assignment}: {command} takes {takes} overrides only")
