"""`dlrun runs`, `show`, `compare` and `tensorboard`: the commands that read runs, no TensorFlow."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from dlrun.cli.common import (
    ForceOption,
    ReadRunsDirOption,
    fails_cleanly,
    make_console,
    run_path,
)


def _roots(paths: list[Path] | None, runs_dir: Path | None) -> list[Path]:
    """The folders to read: the positional shorthand, or --runs-dir / $DLRUN_RUNS_DIR / ./runs."""
    from dlrun import store
    from dlrun.errors import UsageError

    if paths and runs_dir is not None:
        raise UsageError("give the folder once: as an argument or with --runs-dir, not both")
    return list(paths) if paths else [store.runs_root(runs_dir)]


def _warn(warnings: list[str]) -> None:
    from dlrun.textsafe import clean

    for warning in warnings:
        typer.echo(f"Warning: {clean(warning, newlines=False)}", err=True)


def _collect(paths: list[Path] | None, runs_dir: Path | None = None):
    """Runs under the given run folders or runs folders (default: the runs folder)."""
    from dlrun import store
    from dlrun.report import listing

    roots = _roots(paths, runs_dir)
    listing.check_roots(roots)
    runs, warnings = store.list_runs(roots)
    _warn(warnings)
    return runs


def _without_trials(runs: list, roots: list[Path]) -> tuple[list, int]:
    """The runs less the fits of sweeps (each sweep stays as its refit run), unless a root
    given is that sweep or inside it; and how many were left out."""
    from dlrun.report.listing import SWEEP_FILE, SWEEP_TRIALS

    def sweep_of(run) -> Path | None:
        folder = run.path.parent
        if folder.name == SWEEP_TRIALS and (folder.parent / SWEEP_FILE).is_file():
            return folder.parent
        return None

    inside = [root.resolve() for root in roots]
    kept, hidden = [], 0
    for run in runs:
        sweep = sweep_of(run)
        asked = sweep is not None and any(
            root == sweep.resolve() or sweep.resolve() in root.parents for root in inside
        )
        if sweep is None or asked:
            kept.append(run)
        else:
            hidden += 1
    return kept, hidden


def _default_root_missing(paths: list[Path] | None, runs_dir: Path | None) -> bool:
    """Nothing asked for and no ./runs yet: an empty listing, not a mistake."""
    import os

    return not paths and runs_dir is None and "DLRUN_RUNS_DIR" not in os.environ


def _readable_configs(runs: list) -> list:
    """The runs whose config.yaml reads; a damaged one is skipped with a warning."""
    from dlrun.errors import RunError
    from dlrun.textsafe import clean

    readable = []
    for run in runs:
        try:
            run.config  # noqa: B018 - read now, so that a damaged one is skipped here
        except RunError as exc:
            typer.echo(f"Warning: skipped {clean(exc, newlines=False)}", err=True)
            continue
        readable.append(run)
    return readable


@fails_cleanly
def runs_command(
    runs_dir_arg: Annotated[
        Path | None, typer.Argument(help="Runs folder (shorthand for --runs-dir).")
    ] = None,
    runs_dir: ReadRunsDirOption = None,
    limit: Annotated[int, typer.Option(help="Show the newest N runs.")] = 20,
    show_all: Annotated[bool, typer.Option("--all", help="Show every run.")] = False,
    trials: Annotated[bool, typer.Option(help="Also list each sweep's trial runs.")] = False,
) -> None:
    """List runs, newest first: status, duration, epochs, parameters, best and test scores.

    A sweep is one row with its best mean score; --trials lists its fits too.
    Example: dlrun runs runs/ --limit 50
    """
    from dlrun.errors import UsageError
    from dlrun.report import listing
    from dlrun.report.tables import fitted_table

    if limit < 1:
        raise UsageError(f"--limit: expected a whole number of at least 1, got {limit}")
    roots = _roots([runs_dir_arg] if runs_dir_arg else None, runs_dir)
    if _default_root_missing(runs_dir_arg and [runs_dir_arg], runs_dir) and not roots[0].exists():
        typer.echo(f"no runs yet in {roots[0]}/")
        return
    found, hidden, warnings = listing.find(roots, trials)
    _warn(warnings)
    shown, more = listing.limited(found, None if show_all else limit)
    rows, damaged = listing.rows(shown)
    _warn(damaged)
    console = make_console()
    if rows:
        headers = list(rows[0])
        cells = [[row[h] for h in headers] for row in rows]
        # Narrow terminals lose the start time first, the scores last.
        priority = ["run", "status", "test", "best", "epochs", "backend", "params", "duration"]
        table, dropped = fitted_table(
            headers, cells, console.width, {"params"}, keep=2, priority=priority
        )
        console.print(table)
        if dropped:
            typer.echo(f"not shown, for the terminal's width: {', '.join(dropped)}")
    else:
        typer.echo("no runs found")
    if more:
        typer.echo(
            f"{more} more not shown (newest {len(shown)} of {len(found)}): --limit N or --all"
        )
    if hidden:
        typer.echo(f"{hidden} sweep trial runs not listed: --trials lists them")


@fails_cleanly
def show(
    run: Annotated[Path, typer.Argument(help="A run folder, or a run's name in the runs folder.")],
    runs_dir: ReadRunsDirOption = None,
) -> None:
    """Show a run: its resolved config, model summary, final metrics and files.

    Example: dlrun show runs/mnist-cnn-20261124-153506
    """
    import json

    from rich.text import Text

    from dlrun import store
    from dlrun.textsafe import clean

    found = store.open_run(run_path(run, runs_dir))
    console = make_console()

    def say(text: str) -> None:  # all of it from disk: no markup, no control characters
        console.print(clean(text), markup=False, highlight=False)

    console.rule(Text(clean(f"{found.name}: {found.status}", newlines=False)))
    if found.meta.get("message"):
        say(f"message: {found.meta['message']}")
    say(store.read_text(found.path / store.CONFIG).rstrip())
    summary = found.path / store.SUMMARY
    if os.path.lexists(summary):
        say(store.read_text(summary).rstrip())
    if found.metrics:
        say(json.dumps(found.metrics, indent=2))
    say("files:")
    for path in sorted(store.run_files(found.path)):
        say(f"  {path}")


@fails_cleanly
def compare(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Runs or runs folders (shorthand for --runs-dir) [default: ./runs]."),
    ] = None,
    runs_dir: ReadRunsDirOption = None,
    sort: Annotated[str | None, typer.Option(help="Sort by this column.")] = None,
    reverse: Annotated[bool, typer.Option(help="Sort descending.")] = False,
    where: Annotated[str | None, typer.Option(help='Filter, e.g. "training.epochs >= 5".')] = None,
    show_all: Annotated[bool, typer.Option("--all", help="Show every config key.")] = False,
    columns: Annotated[
        str | None,
        typer.Option(help="Only these columns, comma-separated (e.g. test_accuracy,units)."),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, csv, markdown or json.")] = "table",
    plot: Annotated[
        Path | None, typer.Option(help="Write the runs' validation curves to this PNG.")
    ] = None,
    group: Annotated[
        str | None,
        typer.Option(
            metavar="KEY",
            help="One row per group of runs that differ only in KEY, e.g. seed (several: "
            "comma-separated), with each result's mean ± std and the count.",
        ),
    ] = None,
    force: ForceOption = False,
    trials: Annotated[
        bool, typer.Option(help="Also compare each sweep's trial runs (as `runs --trials`).")
    ] = False,
) -> None:
    """Compare runs side by side: their results, then the config keys that differ among them.

    A sweep is its refit run (named SWEEP/refit); --trials adds every fit of it, and a sweep
    folder given by itself shows its fits.

    --group seed: runs that differ only in their seed are one row, each result as mean ± std
    over them (numpy's std, ddof 0) with their count; --plot then draws each group's mean
    curve with a band of ± one std.

    Example: dlrun compare runs/ --where "status == 'completed'" --sort test_accuracy --reverse
    """
    from dlrun.errors import QueryError
    from dlrun.report.compare import FORMATS, compare_table, comparison_cells, render_comparison

    if fmt not in FORMATS:
        raise QueryError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if plot:
        from dlrun import store

        store.output.check_suffix(plot, "png", "--plot")
        store.output.check(plot, option="--plot", force=force)
    runs = _readable_configs(_collect(paths, runs_dir))
    if not trials:
        runs, hidden = _without_trials(runs, _roots(paths, runs_dir))
        if hidden:
            typer.echo(f"{hidden} sweep trial runs not compared: --trials adds them", err=True)
    comparison = compare_table(
        runs,
        show_all=show_all,
        where=where,
        sort=sort,
        reverse=reverse,
        columns=columns.split(",") if columns else None,
        group=group.split(",") if group is not None else None,
    )
    if not comparison.rows:
        typer.echo("no runs to compare")
        return
    if fmt != "table":
        typer.echo(render_comparison(comparison, fmt), nl=False)
    else:
        from dlrun.report.tables import fitted_table

        console = make_console()
        headers, cells, numeric = comparison_cells(comparison)
        table, dropped = fitted_table(headers, cells, console.width, numeric, keep=2)
        console.print(table)
        if dropped:
            typer.echo(
                f"not shown, for the terminal's width: {', '.join(dropped)}; "
                "choose columns with --columns, or see them all with --format csv"
            )
    # The table above is printed whole; a plot that cannot be written is one Error line.
    if plot and group is not None:
        from dlrun.report.curves import group_curves

        group_curves(comparison, plot, force)
        typer.echo(f"wrote {plot}", err=True)
    elif plot:
        from dlrun.report.compare import shown_name
        from dlrun.report.curves import curves_plot

        shown = {row["run"] for row in comparison.rows}
        curves_plot([r for r in runs if shown_name(r) in shown], comparison, plot, force)
        typer.echo(f"wrote {plot}", err=True)


@fails_cleanly
def tensorboard(
    runs_dir_arg: Annotated[
        Path | None, typer.Argument(help="Runs folder (shorthand for --runs-dir).")
    ] = None,
    runs_dir: ReadRunsDirOption = None,
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 6006,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
) -> None:
    """Start TensorBoard on every run (scalars, histograms, graphs, HParams).

    Example: dlrun tensorboard runs/ --port 6006
    """
    from dlrun.store import board

    (root,) = _roots([runs_dir_arg] if runs_dir_arg else None, runs_dir)
    command = board.command(root, port, host)
    if board.exposed(host):
        typer.echo(
            f"Warning: listening on {host} exposes TensorBoard to every machine that can reach "
            "this one; use --host 127.0.0.1 to keep it local",
            err=True,
        )
    typer.echo(f"TensorBoard on http://{host}:{port}/ (Ctrl-C to stop)", err=True)
    raise typer.Exit(board.run(command, root))
