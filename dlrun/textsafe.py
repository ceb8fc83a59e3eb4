"""Text from disk or a spec on its way to a terminal or a file: never a control sequence.

Run folders and specs can come from someone else. Their names, statuses, messages and config
values are printed with rich markup off (see cli.py), and every control character (ESC, BEL,
the C1 range, DEL...) is replaced here, so nothing read from disk can drive the terminal.
"""

from __future__ import annotations

import re
from typing import Any

# C0 except tab and newline, DEL, C1; and the bidi overrides that reorder what is shown.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def clean(text: Any, newlines: bool = True) -> str:
    """str(text) with control characters shown as '?'; newlines kept unless newlines=False."""
    text = _CONTROL.sub("?", str(text))
    return text if newlines else text.replace("\n", " ").replace("\t", " ")


def clean_value(value: Any) -> Any:
    """Strings cleaned (one line), everything else as it is: for table cells."""
    return clean(value, newlines=False) if isinstance(value, str) else value
