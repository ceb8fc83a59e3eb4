"""The `dlrun` command line: parse, call the library, print. No TensorFlow at import time.

A DlrunError is printed once, as `Error: ...` lines on stderr, and becomes the exit code.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Annotated

import typer

from dlrun.errors import DlrunError

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


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def fails_cleanly(command):
    """Turn a DlrunError into `Error:` lines on stderr and its exit code; no traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except DlrunError as exc:
            for line in str(exc).splitlines() or [type(exc).__name__]:
                typer.echo(f"Error: {line}", err=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper


@app.command()
@fails_cleanly
def train(
    spec_file: Annotated[Path, typer.Argument(help="The YAML spec.")],
    set_: SetOption = None,
    runs_dir: RunsDirOption = None,
) -> None:
    """Train the model a spec describes into a new run folder.

    Example: dlrun train configs/mnist_cnn.yaml --set training.epochs=3
    """
    from dlrun.spec import load_spec

    spec = load_spec(spec_file, set_ or [])
    from dlrun import runner, store

    # The command as it would be typed again (sys.argv is the test runner's under CliRunner).
    command = ["dlrun", "train", str(spec_file)]
    command += [f"--set={value}" for value in set_ or []]
    command += [f"--runs-dir={runs_dir}"] if runs_dir else []
    console = _console()
    outcome = runner.train(spec, store.runs_root(runs_dir), console, command=command)
    _report(console, outcome)
    if outcome.exit_code:
        typer.echo(f"Error: run {outcome.status}: {outcome.message}", err=True)
        raise typer.Exit(outcome.exit_code)


def _report(console, outcome) -> None:
    from rich.table import Table

    final, test = outcome.metrics.get("final", {}), outcome.metrics.get("test", {})
    names = [
        k for k in final if not k.startswith("val_") and k not in ("learning_rate", "epoch_seconds")
    ]
    table = Table(title=f"{outcome.run_dir.name}: {outcome.status}")
    table.add_column("metric")
    for column in ("train", "validation", "test (best)"):
        table.add_column(column, justify="right")
    for name in names:
        cells = [final.get(name), final.get(f"val_{name}"), test.get(name)]
        table.add_row(name, *("" if v is None else f"{v:.4f}" for v in cells))
    console.print(table)
    best = outcome.metrics.get("best_epoch")
    if best:
        console.print(
            f"best {outcome.metrics['monitor']} {outcome.metrics['best_value']:.4f} at epoch {best}"
        )
    console.print(f"run folder: {outcome.run_dir}")


@app.command()
@fails_cleanly
def validate(
    spec_file: Annotated[Path, typer.Argument(help="The YAML spec.")],
    set_: SetOption = None,
) -> None:
    """Check a spec and print the model summary; trains nothing, writes nothing.

    Example: dlrun validate configs/mnist_cnn.yaml
    """
    from dlrun.spec import load_spec

    spec = load_spec(spec_file, set_ or [])
    from dlrun.backend import tensorflow

    tensorflow()
    from dlrun.builder import build_model, compile_model, summary_text
    from dlrun.data import signature

    input_shape, num_classes = signature(spec)
    model = build_model(spec, input_shape)
    compile_model(model, spec, num_classes)
    typer.echo(summary_text(model), nl=False)
    typer.echo(f"{spec_file}: valid; {model.count_params():,} parameters")


def main() -> None:
    app()
