"""dlrun from Python: the same training the CLI runs, for notebooks and scripts.

from dlrun import api
outcome = api.train("configs/quickstart.yaml", overrides=["training.epochs=3"])
outcome.run_dir, outcome.status, outcome.metrics["test"]
"""

from __future__ import annotations

from pathlib import Path

from dlrun import store
from dlrun.spec.loading import load_spec
from dlrun.spec.schema import Spec
from dlrun.train.prepared import Outcome

__all__ = ["Outcome", "Spec", "load_spec", "resume", "train"]


def train(
    spec: Spec | str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    runs_dir: str | Path | None = None,
    verbose: bool = True,
    callbacks: tuple = (),
) -> Outcome:
    """Train a spec (a Spec or a YAML path, with optional `dotted.path=value` overrides).

    `callbacks` are extra keras Callbacks, run after dlrun's own.
    """
    from rich.console import Console

    from dlrun.train import runner

    if not isinstance(spec, Spec):
        spec = load_spec(spec, overrides)
    elif overrides:
        raise ValueError("overrides apply to a spec file; change the Spec object instead")
    console = Console(quiet=not verbose, highlight=False, soft_wrap=True)
    return runner.train(
        spec, store.runs_root(runs_dir), console, ["dlrun.api.train"], tuple(callbacks)
    )


def resume(run_dir: str | Path, force: bool = False, verbose: bool = True) -> Outcome:
    """Continue an interrupted, crashed or failed run from its last completed epoch."""
    from rich.console import Console

    from dlrun.train import runner

    console = Console(quiet=not verbose, highlight=False, soft_wrap=True)
    return runner.resume(Path(run_dir), console, ["dlrun.api.resume"], force)
