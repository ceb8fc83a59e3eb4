"""`dlrun sync mlflow`: runs that already exist, sent to a tracking server."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from dlrun.cli.common import fails_cleanly, make_console


class Server(str, enum.Enum):
    mlflow = "mlflow"


@fails_cleanly
def sync(
    server: Annotated[Server, typer.Argument(help="The tracking server's kind: mlflow.")],
    runs_dir: Annotated[
        Path | None,
        typer.Argument(help="A runs folder, sweep or run [default: $DLRUN_RUNS_DIR or ./runs]."),
    ] = None,
    uri: Annotated[
        str | None,
        typer.Option(
            help="The server [default: each run's tracking.mlflow.uri, else $MLFLOW_TRACKING_URI]."
        ),
    ] = None,
) -> None:
    """Send every run and sweep below a folder to MLflow: made once, then updated.

    Each run's MLflow run id is kept in its meta.json, so syncing again updates that run and
    never makes a second one; a sweep is a parent run with a child per fit and the refit. Runs
    a tracked training could not send (the server was down) are caught up here. Exits 1 when
    something could not be sent.

    Example: dlrun sync mlflow runs --uri http://127.0.0.1:5000
    """
    from dlrun import store
    from dlrun.errors import UsageError
    from dlrun.sweep import tracking
    from dlrun.textsafe import clean
    from dlrun.tracking.mlflow_runs import require

    require()
    root = store.runs_root(runs_dir)
    if not root.is_dir():
        raise UsageError(f"{root}: no such folder; give a runs folder, a sweep or a run")
    console = make_console()
    failed = total = 0
    for sent, lines in tracking.sync(root, uri):
        total += 1
        failed += not sent
        console.print(clean(lines), markup=False, highlight=False)
    if total == 0:
        raise UsageError(f"{root}: holds no run or sweep to send")
    if failed:
        typer.echo(f"Error: {failed} of {total} not sent in full; see above", err=True)
        raise typer.Exit(1)
