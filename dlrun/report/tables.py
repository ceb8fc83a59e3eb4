"""Rich tables that fit the terminal: columns that do not fit are dropped, and named.

Cells are rich Text, never markup: run names, statuses and config values come from files
someone else may have written.
"""

from __future__ import annotations

from collections.abc import Sequence

# Each column costs its text plus one space of padding on both sides and one border line.
_COLUMN_EXTRA = 3


def fit_columns(
    widths: Sequence[int], width: int, keep: int = 1, order: Sequence[int] | None = None
) -> list[int]:
    """Indexes of the columns that fit in `width`, in display order.

    Columns are taken in `order` (most important first; default: left to right) until one does
    not fit; that one and all after it are dropped. The first `keep` of `order` always stay.
    """
    order = list(range(len(widths))) if order is None else list(order)
    used = 1  # the table's right border
    kept = []
    for position, index in enumerate(order):
        if position >= keep and used + widths[index] + _COLUMN_EXTRA > width:
            break
        kept.append(index)
        used += widths[index] + _COLUMN_EXTRA
    return sorted(kept)


def _caps(widths: Sequence[int], kept: list[int], width: int, whole: set[int]) -> dict[int, int]:
    """Widths for the kept columns that are not whole, when all of them do not fit: the widest
    give way first, down to 1 character."""
    room = width - 1 - _COLUMN_EXTRA * len(kept) - sum(widths[i] for i in whole)
    cut = {i: widths[i] for i in kept if i not in whole}
    while cut and sum(cut.values()) > max(room, len(cut)):
        widest = max(cut, key=cut.get)
        cut[widest] -= 1
    return {i: w for i, w in cut.items() if w < widths[i]}


def fitted_table(
    headers: list[str],
    rows: list[list[str]],
    width: int,
    numeric: set[str] = frozenset(),
    title: str | None = None,
    keep: int = 1,
    priority: Sequence[str] | None = None,
    whole: Sequence[str] = ("run",),
):
    """A rich Table of the columns that fit in `width`, and the headers it had to leave out.

    `priority` names the headers from most to least important (default: left to right).
    Columns in `whole` are never cut (a run's name is what users copy): when the kept columns
    are still too wide, the others are cut, with an ellipsis.
    """
    from rich.cells import cell_len
    from rich.table import Table
    from rich.text import Text

    widths = [max([cell_len(h), *(cell_len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    order = None
    if priority is not None:
        ranked = [headers.index(h) for h in priority if h in headers]
        order = ranked + [i for i in range(len(headers)) if i not in ranked]
    kept = fit_columns(widths, width, keep, order)
    caps = _caps(widths, kept, width, {i for i in kept if headers[i] in whole})
    table = Table(title=Text(title) if title else None)
    for index in kept:
        justify = "right" if headers[index] in numeric else "left"
        table.add_column(
            Text(headers[index]),
            justify=justify,
            no_wrap=True,
            min_width=widths[index] if headers[index] in whole else None,
            max_width=caps.get(index),
        )
    for row in rows:
        table.add_row(*(Text(row[index]) for index in kept))
    dropped = [h for i, h in enumerate(headers) if i not in set(kept)]
    return table, dropped
