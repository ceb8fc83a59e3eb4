"""Which code this user trusts: the sha256 of every code file a run of theirs trained with.

Kept in one small file in the user's data folder ($XDG_DATA_HOME/dlrun, else platformdirs'
user data folder, else ~/.local/share/dlrun): one hash a line, appended with O_APPEND (whole
lines land atomically, so sweep workers may add at once). A run's code is imported by a
reading command (--resume, evaluate, predict, export, ...) only when every hash of its copies
is in this file, or when the user passes --trust-code for that command (not remembered).
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

FILE = "trusted-code.txt"
MAX_BYTES = 16 * 1024 * 1024  # far beyond any user's number of code versions
_GIVEN = False  # --trust-code for this process
PASSED_ON = "DLRUN_TRUST_CODE_PASSED_ON"  # a sweep's --trust-code, in its workers


def folder() -> Path:
    """The user's data folder for dlrun."""
    base = os.environ.get("XDG_DATA_HOME")
    if base:
        return Path(base) / "dlrun"
    try:
        import platformdirs
    except ImportError:
        return Path.home() / ".local" / "share" / "dlrun"
    return Path(platformdirs.user_data_dir("dlrun", appauthor=False))


def set_trust_given(given: bool) -> None:
    """--trust-code: import a run's code this once, without remembering it."""
    global _GIVEN
    _GIVEN = given


def given() -> bool:
    return _GIVEN or os.environ.get(PASSED_ON) == "1"


@contextlib.contextmanager
def passed_on(given: bool):
    """--trust-code of a sweep, passed on to the worker processes it starts (their environment)
    for as long as it runs."""
    if not given:
        yield
        return
    os.environ[PASSED_ON] = "1"
    try:
        yield
    finally:
        os.environ.pop(PASSED_ON, None)


def _known() -> set[str]:
    path = folder() / FILE
    try:
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
        with os.fdopen(os.open(path, flags), "rb") as handle:
            text = handle.read(MAX_BYTES).decode("ascii", "replace")
    except OSError:
        return set()
    return set(re.findall(r"^([0-9a-f]{64})\b", text, re.MULTILINE))


def known(digest: str) -> bool:
    return digest in _known()


def remember(hashes: list[str]) -> None:
    """Add the hashes of code a run trained with (a user whose data folder cannot be written
    keeps training; their later commands ask for --trust-code)."""
    new = [h for h in hashes if h not in _known()]
    if not new:
        return
    try:
        folder().mkdir(parents=True, exist_ok=True)
        fd = os.open(folder() / FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "a") as handle:
            handle.write("".join(f"{h}\n" for h in new))
    except OSError:
        pass
