"""Paths written in a spec: relative to the file they are written in, absolute once loaded.

A spec names data files, a base model, and (soon) code files. Each relative path is resolved
against the folder of the file that names it (a spec, a sweep file), a path given with `--set`
against the working folder, so that a spec trains the same from any folder; the run records
the absolute path. `resolve` is the one rule; `missing` says what a path was resolved against
when nothing is there.
"""

from __future__ import annotations

from pathlib import Path

from dlrun.spec.problems import OVERRIDDEN, Loc

# The spec's keys that name files or folders (model.base.weights: unless imagenet or null).
PATH_KEYS: tuple[Loc, ...] = (
    ("data", "path"),
    ("data", "test_path"),
    ("data", "validation_path"),
    ("model", "base", "file"),
    ("model", "base", "run"),
    ("model", "base", "weights"),
)
NOT_PATHS = {("model", "base", "weights"): ("imagenet",)}


def resolve(value: str | Path, written_in: str | Path | None) -> Path:
    """A path as a spec file gives it -> absolute: relative to the folder of `written_in`
    (the spec or sweep file), or to the working folder when it comes from the command line
    (None). `~` is the user's home, as in a shell."""
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = (Path(written_in).parent if written_in is not None else Path.cwd()) / path
    return Path(path.absolute())


def resolve_keys(raw: dict, written_in: str | Path | None, lines: dict[Loc, int]) -> dict:
    """The raw spec with each path key absolute, and {loc: (as given, what it is relative to)}
    for `missing`. A key given with --set (its line is OVERRIDDEN) is relative to the
    working folder."""
    origins = {}
    for loc in PATH_KEYS:
        parent, found = raw, True
        for part in loc[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
            found = isinstance(parent, dict)
        if not found or not isinstance(parent.get(loc[-1]), str) or not parent[loc[-1]]:
            continue
        given = parent[loc[-1]]
        if given in NOT_PATHS.get(loc, ()):
            continue
        origin = None if lines.get(loc) == OVERRIDDEN else written_in
        parent[loc[-1]] = str(resolve(given, origin))
        if not Path(given).expanduser().is_absolute():
            against = "the working folder" if origin is None else f"the folder of {origin}"
            origins[loc] = (given, against)
    return origins


def missing(what: str, path: str | Path, origin: tuple[str, str] | None) -> str:
    """'no such file: /abs/x.csv' and, for a relative path, what it was resolved against."""
    text = f"no such {what}: {path}"
    if origin is not None:
        given, against = origin
        text += f" ({given!r} is relative to {against})"
    return text
