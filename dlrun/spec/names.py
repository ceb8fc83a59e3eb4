"""Names in a spec that other parts read without pydantic: run names and metric names.

Reading runs (dlrun runs) checks folder names with NAME_PATTERN and must not load pydantic.
"""

from __future__ import annotations

import re
from typing import Any

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
# A run folder is NAME-YYYYMMDD-HHMMSS[-N]: within the 255 bytes a file name may have.
NAME_MAX = 200


def snake_case(name: str) -> str:
    """Keras' to_snake_case rule (keras.src.utils.naming), without importing Keras; a test
    checks the two agree."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def entry_name(entry: Any) -> str:
    """The name a `compile.metrics` entry is logged under, without Keras.

    A string is logged as written; `{type: F1Score}` under its `name` argument or Keras'
    default name for the class (snake case of the class name).
    """
    if isinstance(entry, str):
        return entry
    if entry.get("name"):
        return str(entry["name"])
    return snake_case(str(entry["type"]))
