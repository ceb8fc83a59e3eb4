"""Dotted config keys, the one rule: mapping keys by name, list items by index, as `--set`
addresses them (model.layers.0.units). compare's columns, TensorBoard's hparams and a sweep's
keys all go through here."""

from __future__ import annotations

from typing import Any


def _indexed(value: Any) -> bool:
    """A list whose items are settings of their own (layers): addressed item by item. A list
    of plain values (compile.metrics, data.classes) is one value."""
    return isinstance(value, list) and any(isinstance(item, (dict, list)) for item in value)


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """Nested config -> {dotted.path: value} for every leaf; a list of plain values stays one
    list-valued leaf."""
    if isinstance(config, dict):
        items = config.items()
    elif _indexed(config):
        items = enumerate(config)
    else:
        return {prefix: config}
    flat: dict[str, Any] = {}
    for key, value in items:
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def paths(config: Any) -> set[str]:
    """Every dotted path a `--set` or a sweep key can name: each leaf of flatten, every
    mapping and list above one, and each item of a list of plain values."""
    found: set[str] = set()
    stack: list[tuple[str, Any]] = [("", config)]
    while stack:
        prefix, value = stack.pop()
        if prefix:
            found.add(prefix)
        if isinstance(value, dict):
            items = value.items()
        elif isinstance(value, list):
            items = enumerate(value)
        else:
            continue
        stack += [(f"{prefix}.{key}" if prefix else str(key), item) for key, item in items]
    return found


def ending_in(name: str, keys: list[str]) -> list[str]:
    """The dotted keys that `name` is the last parts of (units: model.layers.0.units), as the
    tables show keys cut short; a caller refuses more than one as ambiguous."""
    return [key for key in keys if isinstance(key, str) and key.endswith(f".{name}")]
