"""Rich tables that fit the terminal: columns that do not fit are dropped, and named.

Cells are rich Text, never markup: run names, statuses and config values come from files
someone else may have written.
"""

from __future__ import annotations

from collections.abc import Sequence

# Each column costs its text plus one space of padding on both sides and one border line.
_COLUMN_EXTRA = 3


def fit_columns(widths: Sequence[int], width: int, keep: int = 1) -> list[int]:
    """Indexes of the columns that fit in `width`, in order; the first `keep` always stay."""
    used = 1  # the table's right border
    kept = []
    for index, column in enumerate(widths):
        if index < keep or used + column + _COLUMN_EXTRA <= width:
            kept.append(index)
            used += column + _COLUMN_EXTRA
    return kept


def fitted_table(
    headers: list[str],
    rows: list[list[str]],
    width: int,
    numeric: set[str] = frozenset(),
    title: str | None = None,
    keep: int = 1,
):
    """A rich Table of the columns that fit in `width`, and the headers it had to leave out."""
    from rich.table import Table
    from rich.text import Text

    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    kept = fit_columns(widths, width, keep)
    table = Table(title=Text(title) if title else None)
    for index in kept:
        justify = "right" if headers[index] in numeric else "left"
        table.add_column(Text(headers[index]), justify=justify, no_wrap=True)
    for row in rows:
        table.add_row(*(Text(row[index]) for index in kept))
    dropped = [h for i, h in enumerate(headers) if i not in set(kept)]
    return table, dropped
