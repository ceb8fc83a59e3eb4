"""Runs -> pandas tables: the `runs` listing and the `compare` table. No TensorFlow here."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dlrun.errors import QueryError
from dlrun.spec.keys import ending_in, flatten
from dlrun.store import Run
from dlrun.textsafe import clean, clean_value

if TYPE_CHECKING:  # pandas takes most of a second to import: only --where and sweeps need it
    import pandas as pd

FORMATS = ("table", "csv", "markdown", "json")


def config_columns(config: Any) -> dict[str, Any]:
    """A run's config as {dotted.path: cell value}; a list of plain values reads "a, b"."""
    return {
        key: ", ".join(map(str, value)) if isinstance(value, list) else value
        for key, value in flatten(config).items()
    }


# Results a reader looks at first, then the config keys that differ, then the bookkeeping.
FIRST = ("run", "status")
ALWAYS_SHOWN_CONFIG = ("backend",)  # the Keras backend, when runs record one
LAST = ("epochs_done", "best_epoch", "params", "train_seconds")


@dataclass(frozen=True)
class Spread:
    """A group's mean and standard deviation (numpy's, ddof 0: as cv_results' std) of one
    result, over the `count` runs of the group that have it."""

    mean: float
    std: float
    count: int

    def __str__(self) -> str:  # always both, even for a count the same in every run
        return f"{_number_text(self.mean)} ± {_number_text(self.std)}"


@dataclass
class Comparison:
    """Runs side by side: one dict per run, keyed by full column names (config by dotted path).

    With `compare --group`, one dict per group of runs instead: results are Spreads, and
    `members` holds each group's runs.
    """

    columns: list[str]  # what to show, in order
    rows: list[dict[str, Any]]
    differing: list[str]  # the config paths whose values differ among the rows
    config_keys: list[str] = field(default_factory=list)  # every config path seen
    members: list[list[Run]] | None = None  # the run of each row (--group: its runs)
    resolve: Any = field(default=None, repr=False)  # a column's full name from a short one

    def short_names(self) -> dict[str, str]:
        """Config paths cut to the last parts that keep them unique (layers.0.units)."""
        others = {c for c in self.columns if c not in self.config_keys}
        return short_names(self.config_keys, taken=others)


def short_names(paths: list[str], taken: set[str] = frozenset()) -> dict[str, str]:
    """The shortest tail of each dotted path that no other path (or taken name) shares.

    A tail never starts with a list index: `0.units` says less than `layers.0.units`.
    """
    split = {path: path.split(".") for path in paths}
    names = {}
    for path, parts in split.items():
        for size in range(1, len(parts) + 1):
            tail = parts[-size:]
            if tail[0].isdigit() and size < len(parts):
                continue
            name = ".".join(tail)
            clash = name in taken or any(
                other != path and ".".join(other_parts[-size:]) == name
                for other, other_parts in split.items()
            )
            if not clash:
                break
        names[path] = name
    return names


def shown_name(run: Run) -> str:
    """A run's name in a comparison: a sweep's refit run by its sweep (`refit` alone says
    nothing among other runs)."""
    from dlrun.report.listing import SWEEP_FILE, SWEEP_REFIT

    if run.path.name == SWEEP_REFIT and (run.path.parent / SWEEP_FILE).is_file():
        return f"{run.path.parent.name}/refit"
    return run.name


def _result_row(run: Run) -> dict[str, Any]:
    metrics = run.metrics
    row: dict[str, Any] = {"run": shown_name(run), "status": run.status}
    value = metrics.get("best_value")
    row[f"best_{metrics.get('monitor', 'value')}"] = value
    test = metrics.get("test") if isinstance(metrics.get("test"), dict) else {}
    for name in sorted(test, key=lambda n: (n == "loss", n)):  # the metric before the loss
        row[f"test_{name}"] = test[name]
    row["epochs_done"] = run.epochs_done()
    row["best_epoch"] = metrics.get("best_epoch")
    row["params"] = metrics.get("params")
    row["train_seconds"] = metrics.get("train_seconds")
    return row


_MISSING = object()


def _differs(rows: list[dict], key: str) -> bool:
    first = rows[0].get(key, _MISSING) if rows else None
    # Compared with their type: 1 and 1.0 and True are different settings.
    return any(
        (value := row.get(key, _MISSING)) != first or type(value) is not type(first) for row in rows
    )


def compare_table(
    runs: list[Run],
    *,
    show_all: bool = False,
    where: str | None = None,
    sort: str | None = None,
    reverse: bool = False,
    columns: list[str] | None = None,
    group: list[str] | None = None,
) -> Comparison:
    """`dlrun compare`: results first, then the config keys that differ among the runs kept.

    --where filters first, so the keys shown are those that differ among the runs shown.
    `group` (--group KEY,...): runs whose configs agree on everything but those keys are one
    row, with the mean ± std of each result over them and their count (group_rows).
    """
    if group:
        return _grouped(runs, group, show_all, where, sort, reverse, columns)
    results = [_result_row(run) for run in runs]
    configs = [config_columns(run.config) for run in runs]
    config_keys: list[str] = []
    seen: set[str] = set()
    for config in configs:
        for key in config:
            if key not in seen:
                seen.add(key)
                config_keys.append(key)
    result_keys: list[str] = []
    for row in results:
        result_keys += [key for key in row if key not in result_keys]
    rows = [{**config, **result} for config, result in zip(configs, results, strict=True)]
    members = [[run] for run in runs]
    if where and rows:
        import pandas as pd

        frame = pd.DataFrame(rows, columns=[*result_keys, *config_keys])
        kept = query(frame, where).index
        rows = [rows[index] for index in kept]
        members = [members[index] for index in kept]
    present = [k for k in config_keys if any(k in row for row in rows)]
    differing = [k for k in present if _differs(rows, k)]
    first = [k for k in result_keys if k in FIRST]
    first += [k for k in result_keys if k.startswith(("best_", "test_")) and k != "best_epoch"]
    first += [k for k in ALWAYS_SHOWN_CONFIG if k in present]
    last = [k for k in result_keys if k in LAST]
    config_shown = [k for k in (present if show_all else differing) if k not in first]
    comparison = Comparison([*first, *config_shown, *last], rows, differing, present, members)
    names = comparison.short_names()
    by_name = {name: key for key, name in names.items()}
    known = [*result_keys, *present]

    def resolve(name: str, option: str) -> str:
        if name in known:
            return name
        if name in by_name:
            return by_name[name]
        endings = ending_in(name, present)
        if len(endings) == 1:
            return endings[0]
        if endings:
            raise QueryError(f"{option}: {name!r} could be {', '.join(endings)}; give more of it")
        raise QueryError(
            f"{option}: no column {name!r}; columns are {', '.join(known[:60])}"
            + (" ..." if len(known) > 60 else "")
        )

    comparison.resolve = resolve  # for --group, which names columns the same way
    if columns:
        chosen = [resolve(name.strip(), "--columns") for name in columns if name.strip()]
        comparison.columns = ["run", *(c for c in chosen if c != "run")]
    if sort:
        _sort(comparison, resolve(sort, "--sort"), reverse)
    return comparison


def _sort(comparison: Comparison, key: str, reverse: bool) -> None:
    """Rows by one column (a Spread by its mean), those without a value last; the groups'
    members move with their rows."""
    rows = comparison.rows
    members = comparison.members or [None] * len(rows)

    def value(row: dict) -> Any:
        cell = row.get(key)
        return cell.mean if isinstance(cell, Spread) else cell

    pairs = list(zip(rows, members, strict=True))
    missing = [pair for pair in pairs if value(pair[0]) is None]
    present = [pair for pair in pairs if value(pair[0]) is not None]
    try:
        present.sort(key=lambda pair: value(pair[0]), reverse=reverse)
    except TypeError:  # mixed types: numbers and text
        present.sort(key=lambda pair: str(value(pair[0])), reverse=reverse)
    comparison.rows = [row for row, _ in present + missing]
    if comparison.members is not None:
        comparison.members = [group for _, group in present + missing]


GROUP_FIRST = ("count", "status")


def _grouped(
    runs: list[Run],
    keys: list[str],
    show_all: bool,
    where: str | None,
    sort: str | None,
    reverse: bool,
    columns: list[str] | None,
) -> Comparison:
    """`compare --group KEY`: one row per set of runs whose configs agree on everything but
    KEY (several keys: comma-separated), with the mean ± std of every numeric result over
    the group's runs (numpy's std, ddof 0, as cv_results'), their count and KEY's values."""
    import math

    each = compare_table(runs, show_all=True, where=where)
    resolve = each.resolve
    by = []
    for name in keys:
        key = resolve(name.strip(), "--group")
        if key not in each.config_keys:
            raise QueryError(f"--group: {name!r} is a result, not a config key; give a config key")
        by.append(key)
    same = [k for k in each.config_keys if k not in by]
    groups: dict[str, list[dict]] = {}
    group_runs: dict[str, list[Run]] = {}
    for row, (run,) in zip(each.rows, each.members, strict=True):
        signature = json.dumps([[k, row.get(k, "<absent>")] for k in same], default=str)
        groups.setdefault(signature, []).append(row)
        group_runs.setdefault(signature, []).append(run)
    numeric = [
        c
        for c in each.columns
        if c not in each.config_keys
        and c not in FIRST
        and any(
            isinstance(row.get(c), (int, float)) and not isinstance(row.get(c), bool)
            for row in each.rows
        )
    ]
    rows, members = [], []
    for signature, group in groups.items():
        row: dict[str, Any] = {"count": len(group)}
        row["status"] = ",".join(sorted({str(r["status"]) for r in group}))
        for key in by:
            values = sorted({config_cell(r.get(key)) for r in group}, key=_natural)
            row[key] = ", ".join(values)
        for column in numeric:
            values = [
                float(r[column])
                for r in group
                if isinstance(r.get(column), (int, float))
                and not isinstance(r.get(column), bool)
                and math.isfinite(r[column])
            ]
            if values:
                row[column] = Spread(_mean(values), _std(values), len(values))
        for key in same:
            if key in group[0]:
                row[key] = group[0][key]
        rows.append(row)
        members.append(group_runs[signature])
    differing = [k for k in same if _differs(rows, k)]
    config_shown = [k for k in (same if show_all else differing) if k in each.config_keys]
    results = [c for c in numeric if c not in LAST]
    last = [c for c in numeric if c in LAST]
    comparison = Comparison(
        [*GROUP_FIRST, *by, *results, *config_shown, *last],
        rows,
        differing,
        [*by, *[k for k in same if any(k in row for row in rows)]],
        members,
        resolve,
    )
    if columns:
        chosen = [
            name.strip() if name.strip() in GROUP_FIRST else resolve(name.strip(), "--columns")
            for name in columns
            if name.strip()
        ]
        comparison.columns = ["count", *(c for c in chosen if c != "count")]
    if sort:
        key = sort if sort in GROUP_FIRST else resolve(sort, "--sort")
        _sort(comparison, key, reverse)
    return comparison


def _natural(text: str) -> tuple:
    """Numbers in their order, before text."""
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)


def _mean(values: list[float]) -> float:
    import numpy as np

    return float(np.mean(values))


def _std(values: list[float]) -> float:
    import numpy as np

    return float(np.std(values))


MISSING_CELL = "\u2014"  # a missing value in a table (an absent key, a null, no result): an em dash


def shown_config_cell(value: Any) -> str:
    """A config value as a table shows it: a null and an absent key both read as MISSING_CELL."""
    return MISSING_CELL if value is None else config_cell(value)


def config_cell(value: Any) -> str:
    """A config value as it reads in YAML: 32, 0.001, adam, true, null."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str)
    if isinstance(value, float) and value == value and 0 < abs(value) < SMALL:
        return _small(value, DIGITS)  # a learning rate as 1.15e-04, not 0.000115
    return str(value)


DIGITS = 4  # significant digits of a number in a table
MAX_DIGITS = 6  # more only where two values would read the same, and never past this
SMALL = 1e-3  # below this, numbers read in scientific notation: 1.15e-04


def _small(value: float, digits: int) -> str:
    """A small number in scientific notation with as few digits as show it (up to
    `digits`): 1e-04, 1.15e-04, 1.153e-04."""
    for size in range(digits):
        text = f"{value:.{size}e}"
        if float(text) == value:
            return text
    return f"{value:.{digits - 1}e}"


def _number_text(value: float, digits: int = DIGITS) -> str:
    """A number to `digits` significant digits: 0.9812, 2.902, 1.15e-04, 12346."""
    if value != value:
        return ""
    if value == 0 or not math.isfinite(value):
        return str(value) if value else "0"
    if abs(value) < SMALL:
        return _small(value, digits)
    if abs(value) >= 10**digits:
        return f"{value:.0f}"
    return f"{value:.{digits}g}"


def decimals_for(values: list) -> int:
    """Significant digits that tell a column's numbers apart: 4, more only where two
    different values would read the same, up to 6 (not ten decimals for trials that differ in
    the tenth)."""
    numbers = {v for v in values if isinstance(v, float) and v == v}
    digits = DIGITS
    while digits < MAX_DIGITS and len({_number_text(v, digits) for v in numbers}) < len(numbers):
        digits += 1
    return digits


def result_cell(value: Any, decimals: int = 4) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return MISSING_CELL
    if isinstance(value, Spread):
        return str(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return _number_text(value, decimals)


def comparison_cells(comparison: Comparison) -> tuple[list[str], list[list[str]], set[str]]:
    """Headers (short names), formatted cells, and which headers are numeric (right-aligned)."""
    names = comparison.short_names()
    config = set(comparison.config_keys)
    headers = [clean(names.get(c, c), newlines=False) for c in comparison.columns]
    cells, numeric = [], set()
    for column, header in zip(comparison.columns, headers, strict=True):
        values = [row.get(column) for row in comparison.rows]
        if all(
            isinstance(v, (int, float, Spread)) and not isinstance(v, bool)
            for v in values
            if v is not None
        ) and any(v is not None for v in values):
            numeric.add(header)
    decimals = {c: decimals_for([r.get(c) for r in comparison.rows]) for c in comparison.columns}
    for row in comparison.rows:
        cells.append(
            [
                clean(
                    shown_config_cell(row.get(c))
                    if c in config
                    else result_cell(row.get(c), decimals[c]),
                    newlines=False,
                )
                for c in comparison.columns
            ]
        )
    return headers, cells, numeric


def _plain_columns(comparison: Comparison) -> tuple[list[str], list[dict[str, Any]]]:
    """For csv and json: a Spread column C becomes C_mean and C_std (raw numbers)."""
    spread = {
        c for c in comparison.columns if any(isinstance(r.get(c), Spread) for r in comparison.rows)
    }
    columns = [
        name
        for c in comparison.columns
        for name in ([f"{c}_mean", f"{c}_std"] if c in spread else [c])
    ]
    rows = []
    for row in comparison.rows:
        flat = dict(row)
        for c in spread:
            cell = flat.pop(c, None)
            flat[f"{c}_mean"] = cell.mean if cell is not None else None
            flat[f"{c}_std"] = cell.std if cell is not None else None
        rows.append(flat)
    return columns, rows


# A csv cell starting with one of these is a formula to a spreadsheet (CSV injection): OWASP's
# advice is to quote such cells with a leading apostrophe. Numbers are written as numbers.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def no_formula(value):
    """A string cell that a spreadsheet would run as a formula, quoted with a leading '."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def render_comparison(comparison: Comparison, fmt: str) -> str:
    """csv and json with full dotted names and raw values (a group's results as C_mean and
    C_std); markdown as the table shows it."""
    if fmt in ("csv", "json"):
        columns, rows = _plain_columns(comparison)
        comparison = Comparison(columns, rows, comparison.differing, comparison.config_keys)
    if fmt == "csv":
        import csv
        import io

        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([no_formula(clean(c, newlines=False)) for c in comparison.columns])
        for row in comparison.rows:
            writer.writerow(
                [
                    "" if row.get(c) is None else no_formula(clean_value(row[c]))
                    for c in comparison.columns
                ]
            )
        return out.getvalue()
    if fmt == "json":
        records = [
            {clean(c, newlines=False): clean_value(row.get(c)) for c in comparison.columns}
            for row in comparison.rows
        ]
        return json.dumps(records, indent=2, default=str) + "\n"
    headers, cells, _ = comparison_cells(comparison)
    header = "| " + " | ".join(headers) + " |"
    rule = "|" + "|".join("---" for _ in headers) + "|"
    return "\n".join([header, rule, *("| " + " | ".join(r) + " |" for r in cells)]) + "\n"


def query(frame: pd.DataFrame, expression: str) -> pd.DataFrame:
    """The rows where the --where filter holds; parsed into comparisons, never run as code."""
    from dlrun.report.where import filter_rows  # pandas: loaded only when there is a filter

    return filter_rows(frame, expression)


def _cell(value: Any, decimals: int = 4) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float):
        return _number_text(value, decimals)
    return clean(value, newlines=False)


def render(frame: pd.DataFrame, fmt: str, title: str | None = None):
    """A DataFrame (a sweep's results) as a rich Table for `table`, else csv, markdown or json.

    Cells and headers come from run folders: control characters are replaced in every format,
    and the table holds rich Text, so `[link=...]` or `[/]` in a name is shown as it is.
    """
    import pandas as pd

    frame = frame.rename(columns=lambda c: clean(c, newlines=False))
    frame = frame.copy()
    for index, dtype in enumerate(frame.dtypes):  # text: from disk, cleaned
        if pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
            frame.iloc[:, index] = frame.iloc[:, index].map(clean_value)
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "json":
        return json.dumps(json.loads(frame.to_json(orient="records")), indent=2) + "\n"
    rows = list(frame.itertuples(index=False))
    decimals = [decimals_for([row[i] for row in rows]) for i in range(len(frame.columns))]
    cells = [[_cell(v, d) for v, d in zip(row, decimals, strict=True)] for row in rows]
    if fmt == "markdown":
        header = "| " + " | ".join(map(str, frame.columns)) + " |"
        rule = "|" + "|".join("---" for _ in frame.columns) + "|"
        return "\n".join([header, rule, *("| " + " | ".join(r) + " |" for r in cells)]) + "\n"
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(clean(title, newlines=False)) if title else None)
    for column in frame.columns:
        numeric = pd.api.types.is_numeric_dtype(frame[column])
        table.add_column(Text(str(column)), justify="right" if numeric else "left", no_wrap=True)
    for row in cells:
        table.add_row(*(Text(cell) for cell in row))
    return table
