"""How a spec problem is told: `file:line: dotted.path: message`, with a "did you mean"."""

from __future__ import annotations

import difflib

Loc = tuple[str | int, ...]
OVERRIDDEN = 0  # the "line" of a value given with --set


def did_you_mean(word: str, candidates: list[str] | tuple[str, ...]) -> str:
    lowered = {c.lower(): c for c in candidates}
    if word.lower() in lowered:
        return f"; did you mean {lowered[word.lower()]!r}?"
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def format_problem(source: str, lines: dict[Loc, int], loc: Loc, message: str) -> str:
    """`file:line: dotted.path: message`, the one shape of every spec error."""
    line = None
    for cut in range(len(loc), 0, -1):  # the closest enclosing key that is in the file
        if loc[:cut] in lines:
            line = lines[loc[:cut]]
            break
    if line == OVERRIDDEN:
        source, message = "--set", f"{message} (given on the command line)"
    where = f"{source}:{line}" if line else source
    path = ".".join(map(str, loc))
    return f"{where}: {path}: {message}" if path else f"{where}: {message}"
