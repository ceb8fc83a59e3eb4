"""Spec files read as YAML from strangers: bounded regular files, an alias budget, no tags,
no duplicate keys, and the line of every dotted path for error messages."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import Any

import yaml

from dlrun.errors import SpecError
from dlrun.spec import safeyaml
from dlrun.spec.problems import Loc


def _walk(node: yaml.Node, loc: Loc, lines: dict[Loc, int], source: str) -> None:
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                where = ".".join(map(str, (*loc, key)))
                raise SpecError(
                    f"{source}:{line}: {where}: key {key!r} appears twice "
                    f"(first on line {seen[key]}); keep one"
                )
            seen[key] = line
            _walk(value_node, (*loc, key), lines, source)
            lines[(*loc, key)] = line
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*loc, index), lines, source)


def parse_yaml(text: str, source: str) -> tuple[Any, dict[Loc, int]]:
    """Safe-load YAML, refusing duplicate keys; also return the line of every dotted path."""
    safeyaml.check(text, source)  # before anything is built: an alias bomb stops here
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # its reader refuses NUL, ESC... right here
        node = loader.get_single_node()
        if node is None:
            return None, {}
        lines: dict[Loc, int] = {}
        _walk(node, (), lines, source)
        return loader.construct_document(node), lines
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        tag = (exc.problem or "").split("'")[1] if "'" in (exc.problem or "") else "?"
        tag = tag.replace("tag:yaml.org,2002:", "!!")
        raise SpecError(
            f"{source}:{mark.line + 1}: YAML tag {tag} is not allowed; a spec holds plain values"
        ) from None
    except yaml.reader.ReaderError as exc:  # NUL, ESC and other bytes YAML does not allow
        raise SpecError(
            f"{source}: character #x{exc.character:04x} at position {exc.position} is not "
            "allowed in YAML; remove it"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc)
        problem = " ".join(str(problem).split())
        raise SpecError(f"{where}: YAML syntax error: {problem}") from None
    except RecursionError:
        raise SpecError(f"{source}: nested too deeply to read") from None
    except ValueError as exc:  # e.g. an integer of thousands of digits
        if "digits" not in str(exc):
            raise
        raise SpecError(
            f"{source}: a number longer than {sys.get_int_max_str_digits()} digits; "
            "write a smaller one"
        ) from None
    finally:
        if loader is not None:
            loader.dispose()


# A spec is a few kilobytes; a file far bigger than this is no spec (or a trap).
MAX_SPEC_BYTES = 1024 * 1024


def read_spec_file(path: Path) -> str:
    """A spec file's text: a regular file of bounded size, opened without blocking (a FIFO
    named config.yaml in a received run must not hang dlrun, a link to /dev/zero not fill
    memory)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot be read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise SpecError(f"{path}: not a regular file; give the path of a YAML file")
        data = file.read(MAX_SPEC_BYTES + 1)
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(f"{path}: larger than {MAX_SPEC_BYTES // 1024} KiB; not a spec file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError(f"{path}: cannot be read (not UTF-8 text); save it as UTF-8") from None
