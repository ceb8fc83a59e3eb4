"""What every command shares: the app, common options, the console and the one error printer.

A DlrunError is printed once, as `Error: ...` lines on stderr, and becomes the exit code.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Annotated

import typer

from dlrun.errors import DlrunError, SpecError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

app = typer.Typer(
    help="Train, record, compare and inspect Keras runs described by one YAML file.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # a traceback must never print a spec's secrets
    rich_markup_mode=None,
)

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a spec key: dotted.path=value (repeatable)."),
]
RunsDirOption = Annotated[
    Path | None,
    typer.Option("--runs-dir", help="Where run folders go [default: $DLRUN_RUNS_DIR or ./runs]."),
]
ReadRunsDirOption = Annotated[
    Path | None,
    typer.Option(
        "--runs-dir", help="The runs folder to read [default: $DLRUN_RUNS_DIR or ./runs]."
    ),
]


def make_console(stderr: bool = False):
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 200  # piped into a file or a test: tables need not fit 80 columns
    return console


def fails_cleanly(command):
    """Turn a DlrunError into `Error:` lines on stderr and its exit code; no traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        if "trust_code" in kwargs:  # a command that may import a run's code (none else loads it)
            from dlrun.usercode.trust import set_trust_given

            set_trust_given(bool(kwargs["trust_code"]))  # this command's --trust-code only
        try:
            return command(*args, **kwargs)
        except DlrunError as exc:
            from dlrun.textsafe import clean

            # Messages quote names, paths and values from disk: never a control sequence, and
            # one line per problem (a newline in a file name cannot forge a second Error line).
            problems = exc.problems if isinstance(exc, SpecError) else [str(exc)]
            for line in [clean(p, newlines=False) for p in problems] or [type(exc).__name__]:
                typer.echo(f"Error: {line}", err=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper


TrustCodeOption = Annotated[
    bool,
    typer.Option(
        "--trust-code",
        help="Import the run's code files even though you did not train with them (a run "
        "from someone else, or edited code): read them first. Not remembered.",
    ),
]

NoSaveOption = Annotated[
    bool, typer.Option("--no-save", help="Print the results only; write nothing into the run.")
]


def report_unsaved(result: dict) -> None:
    """After the results are printed: one Error line (exit 1) for what could not be written
    into the run (a read-only file system, a colleague's folder, a full disk)."""
    if result.get("not_saved"):
        from dlrun.errors import RunError

        raise RunError(
            f"not saved: {result['not_saved']}; the results above are printed only "
            "(pass --no-save to skip writing them)"
        )


def run_path(run: Path, runs_dir: Path | None) -> Path:
    """A run folder as given, or by its name inside the runs folder (dlrun show NAME)."""
    from dlrun import store

    if run.exists() or run.is_absolute():
        return run
    inside = store.runs_root(runs_dir) / run
    return inside if inside.exists() else run
