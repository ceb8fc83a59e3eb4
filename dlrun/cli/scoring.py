"""`dlrun evaluate`, `attack`, `features`, `predict` and `export`: the commands that load a
run's checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dlrun.cli.common import (
    ForceOption,
    NoSaveOption,
    ReadRunsDirOption,
    SetOption,
    TrustCodeOption,
    fails_cleanly,
    make_console,
    report_unsaved,
    run_path,
)


@fails_cleanly
def evaluate(
    run: Annotated[Path, typer.Argument(help="A run folder, or a run's name in the runs folder.")],
    runs_dir: ReadRunsDirOption = None,
    trust_code: TrustCodeOption = False,
    checkpoint: Annotated[str, typer.Option(help="best or last.")] = "best",
    set_: SetOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
    unsafe_load: Annotated[
        bool, typer.Option(help="Load model files that Keras' safe_mode refuses.")
    ] = False,
    no_save: NoSaveOption = False,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Write the JSON to this file instead: whole, and only if evaluate succeeds "
            "(a shell's > FILE is left empty when it fails)."
        ),
    ] = None,
    force: ForceOption = False,
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

    path = _refit_of_sweep(run_path(run, runs_dir))
    if out is not None:
        if not out.parent.is_dir():
            raise SpecError(f"--out {out}: expected a file name in an existing folder")
        store.output.check_suffix(out, "json")
        store.output.check(out, force=force, inputs=[path])
    found = store.open_run(path)
    if found.status == store.RUNNING:
        typer.echo(
            f"Note: {found.name} is still running ({found.epochs_done()} of "
            f"{found.meta.get('epochs_planned', '?')} epochs done); scoring its {checkpoint} "
            "checkpoint as it is now",
            err=True,
        )
    result = score(path, checkpoint, set_ or [], unsafe_load, save=not no_save)
    if as_json or out is not None:
        shown = json.dumps({k: v for k, v in result.items() if k != "report_text"}, indent=2)
        if out is None:
            typer.echo(shown)
        else:
            with store.output.writing(out, force=force, inputs=[path]) as tmp:
                tmp.write_text(shown + "\n")
            typer.echo(f"wrote {out}", err=True)
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
    typer.echo(clean(result["report_text"]))  # class names come from the data
    for path in result["written"]:
        typer.echo(f"wrote {path}")
    report_unsaved(result)


def _refit_of_sweep(path: Path) -> Path:
    """A sweep folder stands for its refit run (said on stderr); without one, one line
    naming what there is to evaluate."""
    from dlrun import store
    from dlrun.errors import RunError
    from dlrun.sweep.schema import REFIT, SWEEP_FILE, TRIALS
    from dlrun.textsafe import clean

    if (path / store.META).exists() or not (path / SWEEP_FILE).is_file():
        return path
    refit = path / REFIT
    if (refit / store.META).is_file() and not refit.is_symlink():
        typer.echo(clean(f"Note: {path} is a sweep; evaluating its refit run {refit}"), err=True)
        return refit
    raise RunError(
        f"{path} is a sweep folder, and it has no refit run (refit: false, or the sweep has not "
        f"finished); evaluate one of its fits in {path / TRIALS}, or train its best.yaml"
    )


@fails_cleanly
def attack(
    runs: Annotated[
        list[Path],
        typer.Argument(help="Run folders, or runs' names in the runs folder, attacked in turn."),
    ],
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
    runs_dir: ReadRunsDirOption = None,
    trust_code: TrustCodeOption = False,
) -> None:
    """Fool runs' models with adversarial examples (FGSM or PGD); accuracy per eps.

    Example: dlrun attack runs/mnist-cnn-20261124-153506 --method fgsm --eps 0,0.1,0.2
    """
    from rich.table import Table
    from rich.text import Text

    from dlrun.report import attack as attacks

    values = attacks.parse_eps(eps)
    attacks.check_arguments(method, values, steps, step_size, samples)
    runs = [run_path(run, runs_dir) for run in runs]
    overrides = list(set_ or [])
    # every run, before the first is attacked
    backends = [attacks.check_run(run, checkpoint, overrides)[2].backend for run in runs]
    if len(set(backends)) > 1 and not any(o.startswith("backend=") for o in overrides):
        # Keras runs one backend per process: the first run's, for every run (a .keras file
        # loads on each); said, since a run attacked alone would use its own.
        others = sorted({b for b in backends if b != backends[0]})
        typer.echo(
            f"Note: the runs trained on {', '.join(others)} are attacked on {backends[0]} "
            f"(Keras runs one backend per process); attack them alone, or give "
            "--set backend=NAME, to choose",
            err=True,
        )
        overrides.append(f"backend={backends[0]}")
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
            overrides=overrides,
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
    trust_code: TrustCodeOption = False,
    force: ForceOption = False,
) -> None:
    """Write a layer's activations on the train and test splits to an .npz file.

    Example: dlrun features runs/cnn-20261124-153506 --layer -2 --out f.npz --classifier logistic
    """
    from dlrun.errors import SpecError
    from dlrun.model.checkpoints import CHECKPOINTS
    from dlrun.report.features import extract

    if checkpoint not in CHECKPOINTS:
        raise SpecError(f"--checkpoint: expected best or last, got {checkpoint!r}")
    result = extract(run_path(run, runs_dir), layer, out, set_ or [], classifier, checkpoint, force)
    shape = "x".join(map(str, result["shape"]))
    typer.echo(f"{result['train']} train and {result['test']} test samples, features {shape}")
    if "accuracy" in result:
        typer.echo(f"LogisticRegression test accuracy: {result['accuracy']:.4f}")
    typer.echo(f"wrote {result['out']}")


@fails_cleanly
def predict(
    run: Annotated[Path, typer.Argument(help="A run folder, or a run's name in the runs folder.")],
    inputs: Annotated[
        list[str],
        typer.Argument(help="An .npz or .csv file, image files or folders, or - for csv on stdin."),
    ],
    checkpoint: Annotated[str, typer.Option(help="best or last.")] = "best",
    out: Annotated[Path | None, typer.Option(help="Write the rows to this file.")] = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="csv, json or npz [default: from --out, else a table]."),
    ] = None,
    top: Annotated[int, typer.Option(help="The K most likely classes per input.")] = 1,
    score: Annotated[
        bool, typer.Option(help="Where the inputs have labels, print evaluate's scores too.")
    ] = False,
    runs_dir: ReadRunsDirOption = None,
    trust_code: TrustCodeOption = False,
    unsafe_load: Annotated[
        bool, typer.Option(help="Load model files that Keras' safe_mode refuses.")
    ] = False,
    force: ForceOption = False,
    engine: Annotated[
        str,
        typer.Option(
            help="keras, onnx (the run's ONNX export, kept by `dlrun export --format onnx` and "
            "verified against this checkpoint: no Keras import), or auto: onnx where it "
            "qualifies, else keras."
        ),
    ] = "auto",
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Say on stderr which engine scored.")
    ] = False,
) -> None:
    """Score new inputs with a run's model: one row per input, classes named as in its data.

    Example: dlrun predict runs/quickstart-20261124-153506 digits.npz --top 3 --out preds.csv
    """
    from rich.table import Table
    from rich.text import Text

    from dlrun import store
    from dlrun.report.predict import predict as score_inputs
    from dlrun.textsafe import clean

    path = _refit_of_sweep(run_path(run, runs_dir))
    found = store.open_run(path)
    if found.status == store.RUNNING:
        typer.echo(
            f"Note: {found.name} is still running; predicting with its {checkpoint} checkpoint "
            "as it is now",
            err=True,
        )
    result = score_inputs(
        path,
        inputs,
        checkpoint=checkpoint,
        out=out,
        fmt=fmt,
        top=top,
        score=score,
        unsafe_load=unsafe_load,
        console=make_console(stderr=True),
        force=force,
        engine=engine,
    )
    for note in result["notes"]:
        typer.echo(f"Note: {clean(note)}", err=True)
    if verbose:
        typer.echo(clean(f"engine: {result['engine']}: {result['engine_detail']}"), err=True)
    if result["table"] is not None:
        rows = result["table"]
        table = Table()
        for column in rows[0] if rows else []:
            table.add_column(column, justify="left" if column in ("path", "label") else "right")
        for row in rows:
            table.add_row(*(Text(_shown(value)) for value in row.values()))
        make_console().print(table)
    if result["written"]:
        typer.echo(f"wrote {result['count']} rows to {result['written']}", err=True)
    scores = result.get("score")
    if scores:
        lines = [f"{name}: {value:.4f}" for name, value in scores.items() if name != "samples"]
        text = ", ".join(lines) or "no labelled inputs"
        typer.echo(
            f"{text} ({scores['samples']} labelled inputs, {checkpoint} checkpoint)", err=True
        )


def _shown(value) -> str:
    from dlrun.textsafe import escaped

    return f"{value:.4f}" if isinstance(value, float) else escaped(value)


@fails_cleanly
def export(
    run: Annotated[Path, typer.Argument(help="A run folder, or a run's name in the runs folder.")],
    fmt: Annotated[
        str, typer.Option("--format", help="keras, savedmodel, onnx, litert or script.")
    ],
    out: Annotated[Path, typer.Option(help="The folder to write (a .py file for script).")],
    force: Annotated[bool, typer.Option(help="Replace an earlier export at --out.")] = False,
    checkpoint: Annotated[str, typer.Option(help="best or last.")] = "best",
    runs_dir: ReadRunsDirOption = None,
    trust_code: TrustCodeOption = False,
    unsafe_load: Annotated[
        bool, typer.Option(help="Load model files that Keras' safe_mode refuses.")
    ] = False,
    no_save: Annotated[
        bool,
        typer.Option(
            "--no-save",
            help="onnx: keep no copy in the run (exports/), which `dlrun predict` scores with.",
        ),
    ] = False,
) -> None:
    """Export a run's model for other programs, verified in their runtime, or as a Keras script.

    Example: dlrun export runs/quickstart-20261124-153506 --format onnx --out quickstart-onnx
    """
    from dlrun.report.export import export as write_export

    path = run_path(run, runs_dir)
    result = write_export(path, fmt, out, force, checkpoint, unsafe_load, save=not no_save)
    if fmt == "script":
        typer.echo(f"wrote {result['artifact']}: {result['run']} as a plain Keras script")
        return
    typer.echo(
        f"verified with {result['runtime']} on {result['samples']} test samples: max difference "
        f"{result['max_difference']:.1e} (tolerance {result['tolerance']:g})"
    )
    typer.echo(f"wrote {result['artifact']} ({fmt}, {result['checkpoint']} checkpoint)")
    typer.echo(f"wrote {result['preprocessing']}")
    if result.get("kept"):
        typer.echo(f"kept a copy in {result['kept']}: dlrun predict scores with it")
    report_unsaved(result)
