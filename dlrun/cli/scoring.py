"""`dlrun evaluate`, `attack` and `features`: the commands that load a run's checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dlrun.cli.common import (
    NoSaveOption,
    ReadRunsDirOption,
    SetOption,
    fails_cleanly,
    make_console,
    report_unsaved,
    run_path,
)


@fails_cleanly
def evaluate(
    run: Annotated[Path, typer.Argument(help="A run folder, or a run's name in the runs folder.")],
    runs_dir: ReadRunsDirOption = None,
    checkpoint: Annotated[str, typer.Option(help="best or last.")] = "best",
    set_: SetOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
    unsafe_load: Annotated[
        bool, typer.Option(help="Load model files that Keras' safe_mode refuses.")
    ] = False,
    no_save: NoSaveOption = False,
) -> None:
    """Score a run's checkpoint on its test split (or other data via --set data.KEY=VALUE).

    Example: dlrun evaluate runs/mnist-cnn-20261124-153506 --set data.dataset=mnist_5k
    """
    import json

    from dlrun.errors import SpecError
    from dlrun.model.checkpoints import CHECKPOINTS
    from dlrun.report.evaluate import evaluate as score
    from dlrun.textsafe import clean

    if checkpoint not in CHECKPOINTS:
        raise SpecError(f"--checkpoint: expected best or last, got {checkpoint!r}")
    from dlrun import store

    path = run_path(run, runs_dir)
    found = store.open_run(path)
    if found.status == store.RUNNING:
        typer.echo(
            f"Note: {found.name} is still running ({found.epochs_done()} of "
            f"{found.meta.get('epochs_planned', '?')} epochs done); scoring its {checkpoint} "
            "checkpoint as it is now",
            err=True,
        )
    result = score(path, checkpoint, set_ or [], unsafe_load, save=not no_save)
    if as_json:
        shown = {k: v for k, v in result.items() if k != "report_text"}
        typer.echo(json.dumps(shown, indent=2))
        report_unsaved(result)
        return
    scores = result["scores"]
    typer.echo(f"Test loss: {scores.get('loss', float('nan')):.4f}")
    for name, value in scores.items():
        if name != "loss":
            typer.echo(f"Test {name}: {value:.4f}")
    running = ", the run is still running" if result.get("run_status") == store.RUNNING else ""
    scored = result["scored"]
    of = "" if scored == "the test split" else f" ({clean(scored, newlines=False)})"
    typer.echo(f"({result['samples']} samples{of}, {checkpoint} checkpoint{running})\n")
    typer.echo(result["report_text"])
    for path in result["written"]:
        typer.echo(f"wrote {path}")
    report_unsaved(result)


@fails_cleanly
def attack(
    runs: Annotated[list[Path], typer.Argument(help="Run folders, attacked in turn.")],
    method: Annotated[str, typer.Option(help="fgsm, or pgd (random start).")] = "pgd",
    eps: Annotated[
        str, typer.Option(help="L-infinity radii, fractions of the input range, comma-separated.")
    ] = "0,0.02,0.05,0.1,0.2",
    steps: Annotated[int, typer.Option(help="PGD gradient steps.")] = 10,
    step_size: Annotated[
        float | None,
        typer.Option(help="PGD step, a fraction of the input range [default: 2.5*eps/steps]."),
    ] = None,
    samples: Annotated[int, typer.Option(help="Test samples, chosen stratified (seed 0).")] = 1000,
    target: Annotated[
        int | None, typer.Option(help="Push towards this class: a targeted attack.")
    ] = None,
    checkpoint: Annotated[str, typer.Option(help="best or last.")] = "best",
    set_: SetOption = None,
    unsafe_load: Annotated[
        bool, typer.Option(help="Load model files that Keras' safe_mode refuses.")
    ] = False,
    no_save: NoSaveOption = False,
) -> None:
    """Fool runs' models with adversarial examples (FGSM or PGD); accuracy per eps.

    Example: dlrun attack runs/mnist-cnn-20261124-153506 --method fgsm --eps 0,0.1,0.2
    """
    from rich.table import Table
    from rich.text import Text

    from dlrun.report import attack as attacks

    values = attacks.parse_eps(eps)
    attacks.check_arguments(method, values, steps, step_size, samples)
    for run in runs:  # every run, before the first is attacked
        attacks.check_run(run, checkpoint, set_ or [])
    for run in runs:
        result = attacks.attack(
            run,
            method=method,
            eps=values,
            steps=steps,
            step_size=step_size,
            samples=samples,
            target=target,
            checkpoint=checkpoint,
            overrides=set_ or [],
            unsafe_load=unsafe_load,
            console=make_console(stderr=True),
            save=not no_save,
        )
        targeted = result["target"] is not None
        title = f"{result['run']}: {result['method']} on {result['samples']} test samples"
        title += f" ({checkpoint} checkpoint)"
        if targeted:
            title += f", target class {result['target']} ({result['target_name']})"
        table = Table(title=Text(title))  # a run's name is never read as markup
        for column in ("eps", "clean accuracy", "adversarial accuracy"):
            table.add_column(column, justify="right")
        if targeted:
            table.add_column("target success rate", justify="right")
        for row in result["results"]:
            cells = [f"{row['eps']:g}", f"{row['clean_accuracy']:.4f}"]
            cells.append(f"{row['adversarial_accuracy']:.4f}")
            if targeted:
                cells.append(f"{row['target_success_rate']:.4f}")
            table.add_row(*cells)
        make_console().print(table)
        for path in result["written"]:
            typer.echo(f"wrote {path}")
        report_unsaved(result)


@fails_cleanly
def features(
    run: Annotated[Path, typer.Argument(help="A run folder.")],
    layer: Annotated[str, typer.Option(help="Layer name or index (as in summary.txt).")],
    out: Annotated[Path, typer.Option(help="The .npz file to write.")],
    set_: SetOption = None,
    classifier: Annotated[
        str | None, typer.Option(help="logistic: fit LogisticRegression, print test accuracy.")
    ] = None,
    checkpoint: Annotated[str, typer.Option(help="best or last.")] = "best",
    runs_dir: ReadRunsDirOption = None,
) -> None:
    """Write a layer's activations on the train and test splits to an .npz file.

    Example: dlrun features runs/cnn-20261124-153506 --layer -2 --out f.npz --classifier logistic
    """
    from dlrun.errors import SpecError
    from dlrun.model.checkpoints import CHECKPOINTS
    from dlrun.report.features import extract

    if checkpoint not in CHECKPOINTS:
        raise SpecError(f"--checkpoint: expected best or last, got {checkpoint!r}")
    result = extract(run_path(run, runs_dir), layer, out, set_ or [], classifier, checkpoint)
    shape = "x".join(map(str, result["shape"]))
    typer.echo(f"{result['train']} train and {result['test']} test samples, features {shape}")
    if "accuracy" in result:
        typer.echo(f"LogisticRegression test accuracy: {result['accuracy']:.4f}")
    typer.echo(f"wrote {result['out']}")
