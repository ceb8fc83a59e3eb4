"""YAML from strangers: a budget on alias expansion and nesting, checked before anything is built.

A billion-laughs document is a few hundred bytes whose aliases expand to billions of nodes; the
check walks the parser's events once (no recursion, no expansion), adding up how many nodes each
anchor stands for, and refuses the document as soon as the expanded total passes the budget.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from dlrun.errors import SpecError

MAX_NODES = 100_000  # a spec has a few hundred; a sweep grid a few thousand
MAX_DEPTH = 64  # a spec nests five or six levels
# A number written with more characters than this is no setting anyone means (1e300 is 5): a
# thousand-digit integer would cost a conversion and then a layer of that many units. One bound
# for spec files, sweep files and --set alike, checked while parsing.
MAX_NUMBER_CHARS = 100
_NUMBER = re.compile(r"[-+]?(\.?[0-9])[0-9_.,:]*([eE][-+]?[0-9]+)?")
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STARTS = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_ENDS = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


def check(text: str, source: str) -> None:
    """SpecError when the YAML nests too deep or its aliases expand past the node budget."""
    anchors: dict[str, int] = {}  # anchor -> the nodes it stands for, expanded
    stack: list[list] = []  # [anchor, nodes so far] per open collection
    expanded = 0  # nodes of the document with every alias expanded
    try:
        for event in yaml.parse(text, Loader=_LOADER):
            if isinstance(event, _STARTS):
                stack.append([event.anchor, 1])
                expanded += 1
                if len(stack) > MAX_DEPTH:
                    raise SpecError(
                        f"{source}:{event.start_mark.line + 1}: nested deeper than {MAX_DEPTH} "
                        "levels; a spec is a few levels deep"
                    )
                continue
            if isinstance(event, _ENDS):
                anchor, size = stack.pop()
            elif isinstance(event, yaml.ScalarEvent):
                anchor, size = event.anchor, 1
                expanded += 1
                _check_number(event, source)
            elif isinstance(event, yaml.AliasEvent):
                anchor, size = None, anchors.get(event.anchor, 1)
                expanded += size
            else:
                continue
            if anchor is not None:
                anchors[anchor] = size
            if stack:
                stack[-1][1] += size
            if expanded > MAX_NODES:
                raise SpecError(
                    f"{source}:{event.start_mark.line + 1}: aliases expand to more than "
                    f"{MAX_NODES:,} values; refused (write the values out instead)"
                )
    except yaml.YAMLError:
        return  # the real parse reports the syntax error with its line


def _check_number(event: yaml.ScalarEvent, source: str) -> None:
    value = event.value
    if not event.style and len(value) > MAX_NUMBER_CHARS and _NUMBER.fullmatch(value):
        raise SpecError(
            f"{source}:{event.start_mark.line + 1}: a number longer than {MAX_NUMBER_CHARS} "
            f"characters ({len(value):,}); write a smaller one"
        )


def load(text: str, source: str) -> Any:
    """yaml.safe_load after the budget check (libyaml when present)."""
    check(text, source)
    return yaml.load(text, Loader=_LOADER)
