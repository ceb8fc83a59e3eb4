"""`compare --plot`: the runs' validation curves, or each group's mean and spread, with the
config values that differ among them as a table under the plot. No TensorFlow here."""

from __future__ import annotations

from dlrun import store
from dlrun.errors import RunError
from dlrun.report.compare import Comparison, shown_config_cell, shown_name
from dlrun.textsafe import clean

# compare --plot draws at most this many validation curves: a history.csv of 400 val_ columns
# would draw a 220000-pixel-wide figure for minutes.
MAX_PANELS = 8


def _plain(text: str) -> str:
    """A stranger's text for matplotlib: no control characters, no mathtext from a '$'."""
    return clean(text, newlines=False).replace("$", r"\$")


def _panels(histories) -> list[str]:
    """The curves drawn, one panel each: every val_ metric of the histories (loss when there
    are none), at most MAX_PANELS of them, val_loss first."""
    columns = sorted({c for rows in histories if rows for c in rows[0] if c.startswith("val_")})
    columns = columns or ["loss"]
    if len(columns) > MAX_PANELS:  # val_loss first, then the others by name
        first = [c for c in columns if c == "val_loss"]
        columns = (first + [c for c in columns if c != "val_loss"])[:MAX_PANELS]
    return columns


def _figure(plt, panels: int, table_rows: int) -> tuple:
    """A figure of `panels` plots above a table of `table_rows` rows: (figure, grid, colours)."""
    table_height = 0.3 * (table_rows + 1) + 0.3
    figure = plt.figure(figsize=(max(5.5 * panels, 8), 4 + table_height), layout="constrained")
    grid = figure.add_gridspec(2, panels, height_ratios=[4, table_height])
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return figure, grid, colours


def _table_below(figure, grid, cells: list[list[str]], labels: list[str], colours) -> None:
    """The table under the plots, each row's first cell in its curve's colour: the legend."""
    below = figure.add_subplot(grid[1, :])
    below.axis("off")
    table = below.table(cellText=cells, colLabels=labels, loc="upper center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.auto_set_column_width(list(range(len(labels))))
    for row in range(len(cells)):
        table[row + 1, 0].get_text().set_color(colours[row % len(colours)])


def curves_plot(runs: list[store.Run], comparison: Comparison, path, force: bool = False):
    """Validation curves of the runs shown, one colour per run, the first panel's legend naming
    each curve's run; the config values that differ among them are a table under the plot.

    Returns the (closed) matplotlib Figure.
    """
    import warnings

    from dlrun.report.plots import pyplot

    found = zip(runs, _histories(runs), strict=True)
    histories = {shown_name(run): rows for run, rows in found if rows}
    if not histories:
        raise RunError("--plot: none of the runs shown has a history.csv")
    columns = _panels(histories.values())
    names = comparison.short_names()
    shown = [run for run in runs if shown_name(run) in histories]
    by_run = {row["run"]: row for row in comparison.rows}
    plt = pyplot()
    with warnings.catch_warnings():  # layout notes are for us, not for the user's terminal
        warnings.simplefilter("ignore")
        figure, grid, colours = _figure(plt, len(columns), len(shown))
        for position, column in enumerate(columns):
            axis = figure.add_subplot(grid[0, position])
            for index, run in enumerate(shown):
                rows = [r for r in histories[shown_name(run)] if column in r]
                axis.plot(
                    [r["epoch"] for r in rows],
                    [r[column] for r in rows],
                    marker="o",
                    markersize=3,
                    color=colours[index % len(colours)],
                    label=_plain(shown_name(run)),
                )
            if position == 0:  # the legend names each curve's run, whole
                axis.legend(fontsize=7, loc="best")
            axis.set_title(column)
            axis.set_xlabel("epoch")
            axis.grid(alpha=0.3)
        keys = comparison.differing
        cells = [
            [
                _plain(shown_name(run)),
                *(_plain(shown_config_cell(by_run.get(shown_name(run), {}).get(k))) for k in keys),
            ]
            for run in shown
        ]
        _table_below(figure, grid, cells, ["run", *(_plain(names[k]) for k in keys)], colours)
        with store.output.writing(path, option="--plot", force=force) as tmp:
            figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)
    return figure


def _histories(runs: list[store.Run]) -> list[list[dict]]:
    """Each run's history.csv rows ([] where it has none or it cannot be read)."""
    found = []
    for run in runs:
        try:  # bounded, regular files only: a received run's history.csv may be a FIFO
            found.append(store.read_history(run.path))
        except (OSError, ValueError, KeyError, RunError):
            found.append([])
    return found


def group_curves(comparison: Comparison, path, force: bool = False):
    """`compare --group --plot`: per group, the mean validation curve over its runs with a
    band of ± one std (over the runs that reached each epoch), one colour per group; the
    group's count and differing config values are a table under the plot.

    Returns the (closed) matplotlib Figure.
    """
    import warnings

    import numpy as np

    from dlrun.report.plots import pyplot

    groups = [_histories(runs) for runs in comparison.members or []]
    shown = [index for index, histories in enumerate(groups) if any(histories)]
    if not shown:
        raise RunError("--plot: none of the runs shown has a history.csv")
    columns = _panels(rows for index in shown for rows in groups[index])
    names = comparison.short_names()
    keys = [k for k in comparison.differing if k in comparison.config_keys]
    plt = pyplot()
    with warnings.catch_warnings():  # layout notes are for us, not for the user's terminal
        warnings.simplefilter("ignore")
        figure, grid, colours = _figure(plt, len(columns), len(shown))
        for position, column in enumerate(columns):
            axis = figure.add_subplot(grid[0, position])
            for order, index in enumerate(shown):
                by_epoch: dict[int, list[float]] = {}
                for rows in groups[index]:
                    for row in rows:
                        value = row.get(column)
                        if isinstance(value, (int, float)) and np.isfinite(value):
                            by_epoch.setdefault(int(row["epoch"]), []).append(float(value))
                epochs = sorted(by_epoch)
                mean = np.array([np.mean(by_epoch[e]) for e in epochs])
                std = np.array([np.std(by_epoch[e]) for e in epochs])
                colour = colours[order % len(colours)]
                axis.plot(epochs, mean, marker="o", markersize=3, color=colour)
                axis.fill_between(epochs, mean - std, mean + std, color=colour, alpha=0.2)
            axis.set_title(f"{column}: mean ± std")
            axis.set_xlabel("epoch")
            axis.grid(alpha=0.3)
        cells = [
            [
                str(order + 1),
                str(comparison.rows[index]["count"]),
                *(_plain(shown_config_cell(comparison.rows[index].get(k))) for k in keys),
            ]
            for order, index in enumerate(shown)
        ]
        labels = ["group", "runs", *(_plain(names.get(k, k)) for k in keys)]
        _table_below(figure, grid, cells, labels, colours)
        with store.output.writing(path, option="--plot", force=force) as tmp:
            figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)
    return figure
