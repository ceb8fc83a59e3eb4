"""The few exception types dlrun raises for things a user can fix.

Each is raised where the problem is found and printed once, as `Error: ...`, by the CLI.
"""

from __future__ import annotations

import re


class DlrunError(Exception):
    """A problem the user can fix; `exit_code` is what the CLI exits with."""

    exit_code = 1


class SpecError(DlrunError, ValueError):
    """The spec (or a sweep file, or an override) is wrong: nothing was trained or written.

    Holds one line per problem so that a user fixes them all in one go.
    """

    exit_code = 2

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class DataError(DlrunError):
    """The data named by the spec cannot be loaded (missing file, no network, bad layout)."""

    exit_code = 2


class RunError(DlrunError):
    """A run folder is missing, damaged or in the wrong state for what was asked."""

    exit_code = 1


class AttackError(DlrunError):
    """An attack was asked for with settings, a target or a model it cannot work with."""

    exit_code = 2


class RunInUse(RunError):
    """Another process holds the run's (or sweep's) lock: it is training right now."""

    exit_code = 2


class UsageError(DlrunError):
    """The command line asks for something impossible: a missing folder, clashing options."""

    exit_code = 2


class QueryError(UsageError):
    """A --where, --sort, --columns or --format that the table cannot apply."""


class DamagedRun(RunError):
    """A file of a run cannot be read back (a received run, or a hand edit): fix or remove it."""

    exit_code = 2


class CodeError(DlrunError):
    """A code file a spec names cannot be used: missing, not a file, or failing at import."""

    exit_code = 2


class UntrustedCode(DlrunError):
    """A run's code files are not among those this user trained with: nothing was imported."""

    exit_code = 2


class BackendError(DlrunError):
    """The Keras backend or device a spec asks for is not available on this machine."""

    exit_code = 2


def _without_dumps(text: str, longest: int = 60) -> str:
    """Mappings longer than `longest` characters (the configs Keras prints whole) as {...}."""
    out, depth, start = [], 0, 0
    for at, char in enumerate(text):
        if char == "{":
            if depth == 0:
                start = at
            depth += 1
        elif char == "}" and depth:
            depth -= 1
            if depth == 0:
                chunk = text[start : at + 1]
                out.append(chunk if len(chunk) <= longest else "{...}")
        elif depth == 0:
            out.append(char)
    if depth:  # an unclosed brace: the text as it was from there
        out.append(text[start:])
    return "".join(out)


def shortened(text: str, limit: int = 1000) -> str:
    """A message on one line, its config dumps left out, and, if still longer than `limit`,
    cut after its last whole sentence (or word) that fits, with " ..." saying so."""
    text = " ".join(_without_dumps(text).split())
    if len(text) <= limit:
        return text
    cut = text[: limit + 1]
    sentence = max(cut.rfind(". "), cut.rfind("; "))
    if sentence >= limit // 2:
        return cut[: sentence + 1] + " ..."
    return cut.rsplit(" ", 1)[0] + " ..."


def first_line(exc: Exception) -> str:
    """Keras' message without colour codes, call wrappers and argument dumps, on one line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    text = text.split("Arguments received by")[0]
    text = re.sub(r"Exception encountered when calling \S+\.", "", text)
    return shortened(text) or type(exc).__name__
