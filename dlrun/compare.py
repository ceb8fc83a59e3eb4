"""Runs -> pandas tables: the `runs` listing and the `compare` table. No TensorFlow here."""

from __future__ import annotations

import io
import json
from datetime import datetime
from typing import Any

import pandas as pd

from dlrun.errors import RunError
from dlrun.store import Run
from dlrun.textsafe import clean, clean_value
from dlrun.where import QueryError as QueryError
from dlrun.where import filter_rows

FORMATS = ("table", "csv", "markdown", "json")


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """Nested config -> {dotted.path: scalar}; list items by index (model.layers.0.units)."""
    if isinstance(config, dict):
        items = config.items()
    elif isinstance(config, list) and config and any(isinstance(v, (dict, list)) for v in config):
        items = enumerate(config)
    else:
        return {prefix: ", ".join(map(str, config)) if isinstance(config, list) else config}
    flat: dict[str, Any] = {}
    for key, value in items:
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _duration(meta: dict) -> str:
    try:
        start = datetime.fromisoformat(meta["started"])
        end = datetime.fromisoformat(meta["ended"]) if meta.get("ended") else None
    except (KeyError, TypeError, ValueError):
        return ""
    if end is None:
        return ""
    minutes, seconds = divmod(int((end - start).total_seconds()), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def headline(run: Run) -> tuple[str, float | None]:
    """The test metric a user looks at first: accuracy if there is one, else the first."""
    test = run.metrics.get("test") or {}
    for name in ("accuracy", *test):
        if name in test and name != "loss":
            return f"test_{name}", test[name]
    return "test_loss", test.get("loss")


def runs_table(runs: list[Run]) -> pd.DataFrame:
    """`dlrun runs`: one row per run, newest first."""
    rows = []
    for run in runs:
        meta, metrics = run.meta, run.metrics
        name, score = headline(run)
        rows.append(
            {
                "run": run.name,
                "status": run.status,
                "backend": meta.get("backend", "tensorflow"),  # runs before backends: TF
                "started": (meta.get("started") or "")[:19].replace("T", " "),
                "duration": _duration(meta),
                "epochs": f"{run.epochs_done()}/{meta.get('epochs_planned', '?')}",
                "params": metrics.get("params"),
                "best": _best(metrics),
                "test": f"{name.removeprefix('test_')} {score:.4f}" if score is not None else None,
            }
        )
    return pd.DataFrame(rows)


def _best(metrics: dict) -> str | None:
    if metrics.get("best_value") is None:
        return None
    return f"{metrics['monitor']} {metrics['best_value']:.4f} @{metrics['best_epoch']}"


def compare_table(
    runs: list[Run],
    *,
    show_all: bool = False,
    where: str | None = None,
    sort: str | None = None,
    reverse: bool = False,
) -> tuple[pd.DataFrame, list[str]]:
    """`dlrun compare`: run, status, the config keys that differ, then results.

    Returns the table and the config columns that differ (what labels each run).
    """
    rows = []
    for run in runs:
        row: dict[str, Any] = {"run": run.name, "status": run.status}
        row.update(flatten(run.config))
        metrics = run.metrics
        row["epochs"] = run.epochs_done()
        row["params"] = metrics.get("params")
        row["best_epoch"] = metrics.get("best_epoch")
        row[f"best_{metrics.get('monitor', 'value')}"] = metrics.get("best_value")
        for name, value in (metrics.get("test") or {}).items():
            row[f"test_{name}"] = value
        row["train_seconds"] = metrics.get("train_seconds")
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame, []
    config_keys = [c for c in frame.columns if "." in c or c in ("name", "backend", "seed")]
    result_keys = [c for c in frame.columns if c not in config_keys and c not in ("run", "status")]
    differing = [c for c in config_keys if frame[c].astype(str).nunique(dropna=False) > 1]
    if where:
        frame = query(frame, where)
    if sort:
        if sort not in frame.columns:
            raise QueryError(
                f"--sort: no column {sort!r}; columns are {', '.join(frame.columns[:40])}"
            )
        frame = frame.sort_values(sort, ascending=not reverse, na_position="last")
    shown = ["run", "status", *(config_keys if show_all else differing), *result_keys]
    return frame[shown].reset_index(drop=True), differing


def query(frame: pd.DataFrame, expression: str) -> pd.DataFrame:
    """The rows where the --where filter holds; parsed into comparisons, never run as code."""
    return filter_rows(frame, expression)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e5 else f"{value:.4g}"
    return clean(value, newlines=False)


def render(frame: pd.DataFrame, fmt: str, title: str | None = None):
    """A rich Table for `table`, else text in csv, markdown or json.

    Cells and headers come from run folders: control characters are replaced in every format,
    and the table holds rich Text, so `[link=...]` or `[/]` in a name is shown as it is.
    """
    frame = frame.rename(columns=lambda c: clean(c, newlines=False))
    frame = frame.copy()
    for index, dtype in enumerate(frame.dtypes):  # text: from disk, cleaned
        if pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
            frame.iloc[:, index] = frame.iloc[:, index].map(clean_value)
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "json":
        return json.dumps(json.loads(frame.to_json(orient="records")), indent=2) + "\n"
    cells = [[_cell(v) for v in row] for row in frame.itertuples(index=False)]
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


def curves_plot(runs: list[Run], differing: list[str], path) -> None:
    """Validation curves of several runs overlaid, one line per run, labelled by what differs."""
    from dlrun import store
    from dlrun.plots import pyplot

    plt = pyplot()
    histories = {}
    for run in runs:
        try:  # bounded, regular files only: a received run's history.csv may be a FIFO
            text = store.read_text(run.path / store.HISTORY)
            histories[run.name] = pd.read_csv(io.StringIO(text))
        except (FileNotFoundError, RunError, pd.errors.ParserError, pd.errors.EmptyDataError):
            continue
    if not histories:
        raise RunError("--plot: none of the runs shown has a history.csv")
    columns = sorted({c for h in histories.values() for c in h.columns if c.startswith("val_")})
    columns = columns or ["loss"]
    figure, axes = plt.subplots(1, len(columns), figsize=(6 * len(columns), 4), squeeze=False)
    for run in runs:
        if run.name not in histories:
            continue
        flat = flatten(run.config)
        label = ", ".join(f"{k}={flat.get(k)}" for k in differing) or run.name
        history = histories[run.name]
        for axis, column in zip(axes[0], columns, strict=True):
            if column in history:
                axis.plot(history["epoch"], history[column], marker="o", label=label)
    for axis, column in zip(axes[0], columns, strict=True):
        axis.set_title(column)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    with store.atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)
