"""Text from disk or a spec on its way to a terminal or a file: never a control sequence.

Run folders and specs can come from someone else. Their names, statuses, messages and config
values are printed with rich markup off (see cli.py), and every control character (ESC, BEL,
the C1 range, DEL...) is replaced here, so nothing read from disk can drive the terminal.
"""

from __future__ import annotations

import re
from typing import Any

# C0 except tab and newline, DEL, C1; the bidi controls that reorder what is shown (embeddings,
# overrides, isolates, and the marks ALM, LRM, RLM); the line and paragraph separators that some
# terminals break a line at.
_CONTROL = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
_ESCAPED = re.compile(
    r"[\\\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
LINE_LIMIT = 1000  # characters of one Error line; a longer value is cut, saying so


def clean(text: Any, newlines: bool = True) -> str:
    """str(text) with control characters shown as '?'; newlines kept unless newlines=False."""
    text = _CONTROL.sub("?", str(text))
    return text if newlines else text.replace("\n", " ").replace("\t", " ")


def escaped(text: Any) -> str:
    """str(text) on one line with every control character written as an escape (\\n, \\x1b,
    \\u202e) and backslashes doubled: a path with a newline stays one row and stays distinct
    from the path with a space there (predict's rows on a terminal)."""
    return _ESCAPED.sub(_escape, str(text))


def _escape(match: re.Match) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def one_line(text: Any, limit: int = LINE_LIMIT) -> str:
    """clean(text) on one line, cut to `limit` characters with a note of the full length: an
    Error line never echoes a 100,000-character value whole."""
    text = clean(text, newlines=False)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... (cut; {len(text):,} characters in all)"


def clean_value(value: Any) -> Any:
    """Strings cleaned (one line), everything else as it is: for table cells."""
    return clean(value, newlines=False) if isinstance(value, str) else value
