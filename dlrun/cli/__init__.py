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
ReadRunsDirOption = Annotated[
    Path | None,
    typer.Option(
        "--runs-dir", help="The runs folder to read [default: $DLRUN_RUNS_DIR or ./runs]."
    ),
]


def _console(stderr: bool = False):
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 200  # piped into a file or a test: tables need not fit 80 columns
    return console


def fails_cleanly(command):
    """Turn a DlrunError into `Error:` lines on stderr and its exit code; no traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except DlrunError as exc:
            from dlrun.textsafe import clean

            # Messages quote names, paths and values from disk: never a control sequence.
            for line in clean(exc).splitlines() or [type(exc).__name__]:
                typer.echo(f"Error: {line}", err=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper


@app.command()
@fails_cleanly
def train(
    spec_file: Annotated[Path | None, typer.Argument(help="The YAML spec.")] = None,
    set_: SetOption = None,
    runs_dir: RunsDirOption = None,
    resume: Annotated[
        Path | None,
        typer.Option(help="Continue this interrupted, crashed or failed run instead."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Resume even if config.yaml was edited.")] = False,
    unsafe_load: Annotated[
        bool, typer.Option(help="Resume from a checkpoint that Keras' safe_mode refuses.")
    ] = False,
    epochs: Annotated[
        int | None,
        typer.Option(
            min=1, help="With --resume: train to this many epochs in all, even a completed run."
        ),
    ] = None,
) -> None:
    """Train the model a spec describes into a new run folder, or --resume a stopped run.

    `--resume RUN --epochs N` continues a completed run up to N epochs (a new attempt).

    Example: dlrun train configs/mnist_cnn.yaml --set training.epochs=3
    """
    from dlrun.errors import SpecError

    if (spec_file is None) == (resume is None):
        raise SpecError("give a spec file to train, or --resume RUN to continue a run (not both)")
    if resume is not None and set_:
        raise SpecError("--set does not apply to --resume; the run's config.yaml is its spec")
    if epochs is not None and resume is None:
        raise SpecError("--epochs goes with --resume; for a new run use --set training.epochs=N")
    _check_resume_options(resume, runs_dir, force=force, unsafe_load=unsafe_load)
    if resume is None:
        spec = _load(spec_file, set_ or [])
    from dlrun import store
    from dlrun.train import runner

    if resume is None:
        store.check_runs_root(store.runs_root(runs_dir))  # before TensorFlow and the data

    console = _console()
    if resume is not None:
        command = ["dlrun", "train", f"--resume={resume}"] + ["--force"] * force
        command += [f"--epochs={epochs}"] if epochs else []
        outcome = runner.resume(resume, console, command, force, unsafe_load, epochs=epochs)
    else:
        # The command as it would be typed again (sys.argv is the test runner's under CliRunner).
        command = ["dlrun", "train", str(spec_file)]
        command += [f"--set={value}" for value in set_ or []]
        command += [f"--runs-dir={runs_dir}"] if runs_dir else []
        outcome = runner.train(spec, store.runs_root(runs_dir), console, command=command)
    _report(console, outcome)
    if outcome.exit_code:
        from dlrun.textsafe import clean

        typer.echo(clean(f"Error: run {outcome.status}: {outcome.message}", False), err=True)
        if outcome.status == store.INTERRUPTED:
            typer.echo(clean(f"resume with: dlrun train --resume {outcome.run_dir}"), err=True)
        raise typer.Exit(outcome.exit_code)


def _check_resume_options(resume: Path | None, runs_dir: Path | None, **flags: bool) -> None:
    """Options that mean something only with --resume (or only without it) are refused."""
    from dlrun.errors import UsageError

    if resume is not None and runs_dir is not None:
        raise UsageError(
            "--runs-dir does not apply to --resume: a resumed run stays in its own folder"
        )
    for name, given in flags.items():
        if given and resume is None:
            option = "--" + name.replace("_", "-")
            raise UsageError(f"{option} applies only with --resume RUN; drop it or add --resume")


def _load(spec_file: Path, overrides: list[str]):
    """The spec; when its schema is wrong, Keras' problems with the model and compile
    sections are reported in the same go (TensorFlow is loaded only then)."""
    from dlrun.errors import SpecError
    from dlrun.spec.loading import load_spec

    try:
        return load_spec(spec_file, overrides)
    except SpecError as exc:
        from dlrun.model.builder import keras_problems

        problems = exc.problems + [
            p for p in keras_problems(spec_file, overrides) if p not in exc.problems
        ]
        raise SpecError(problems) from None


def _report(console, outcome) -> None:
    from rich.table import Table

    final, test = outcome.metrics.get("final", {}), outcome.metrics.get("test", {})
    names = [
        k
        for k in final
        if not k.startswith("val_") and k not in ("learning_rate", "epoch_seconds", "stage")
    ]
    from rich.text import Text

    from dlrun.textsafe import clean

    # A resumed run may be someone else's: its folder name is shown, never obeyed as markup.
    table = Table(title=Text(clean(f"{outcome.run_dir.name}: {outcome.status}", newlines=False)))
    table.add_column("metric")
    for column in ("train", "validation", "test (best)"):
        table.add_column(column, justify="right")
    for name in names:
        cells = [final.get(name), final.get(f"val_{name}"), test.get(name)]
        table.add_row(name, *("" if v is None else f"{v:.4f}" for v in cells))
    console.print(table)
    stopped = outcome.metrics.get("stopped_early")
    if stopped:
        console.print(
            f"stopped early at epoch {stopped['epoch']}: {stopped['monitor']} did not improve "
            f"for {stopped['patience']} epochs",
            markup=False,
        )
    best = outcome.metrics.get("best_epoch")
    if best:
        console.print(
            clean(
                f"best {outcome.metrics['monitor']} {outcome.metrics['best_value']:.4f} "
                f"at epoch {best}"
            ),
            markup=False,
        )
    console.print(clean(f"run folder: {outcome.run_dir}"), markup=False)


@app.command()
@fails_cleanly
def validate(
    spec_file: Annotated[Path, typer.Argument(help="The YAML spec.")],
    set_: SetOption = None,
) -> None:
    """Check a spec and print the model summary; trains nothing, writes nothing.

    Example: dlrun validate configs/mnist_cnn.yaml
    """
    spec = _load(spec_file, set_ or [])
    from dlrun.backend import load, use

    use(spec.backend, spec.training.device)
    load()
    from dlrun.data.arrays import signature
    from dlrun.model.builder import build_model, summary_text
    from dlrun.model.compiling import compile_model

    input_shape, num_classes = signature(spec)
    model = build_model(spec, input_shape)
    compile_model(model, spec, num_classes)
    typer.echo(summary_text(model), nl=False)
    typer.echo(f"{spec_file}: valid; {model.count_params():,} parameters")


def _roots(paths: list[Path] | None, runs_dir: Path | None) -> list[Path]:
    """The folders to read: the positional shorthand, or --runs-dir / $DLRUN_RUNS_DIR / ./runs."""
    from dlrun import store
    from dlrun.errors import UsageError

    if paths and runs_dir is not None:
        raise UsageError("give the folder once: as an argument or with --runs-dir, not both")
    return list(paths) if paths else [store.runs_root(runs_dir)]


def _run_path(run: Path, runs_dir: Path | None) -> Path:
    """A run folder as given, or by its name inside the runs folder (dlrun show NAME)."""
    from dlrun import store

    if run.exists() or run.is_absolute():
        return run
    inside = store.runs_root(runs_dir) / run
    return inside if inside.exists() else run


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


@app.command("runs")
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
    console = _console()
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


@app.command()
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

    found = store.open_run(_run_path(run, runs_dir))
    console = _console()

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


@app.command()
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
) -> None:
    """Score a run's checkpoint on its test split (or other data via --set data.KEY=VALUE).

    Example: dlrun evaluate runs/mnist-cnn-20261124-153506 --set data.dataset=mnist_5k
    """
    import json

    from dlrun.errors import SpecError
    from dlrun.model.checkpoints import CHECKPOINTS
    from dlrun.report.evaluate import evaluate as score

    if checkpoint not in CHECKPOINTS:
        raise SpecError(f"--checkpoint: expected best or last, got {checkpoint!r}")
    from dlrun import store

    path = _run_path(run, runs_dir)
    found = store.open_run(path)
    if found.status == store.RUNNING:
        typer.echo(
            f"Note: {found.name} is still running ({found.epochs_done()} of "
            f"{found.meta.get('epochs_planned', '?')} epochs done); scoring its {checkpoint} "
            "checkpoint as it is now",
            err=True,
        )
    result = score(path, checkpoint, set_ or [], unsafe_load)
    if as_json:
        shown = {k: v for k, v in result.items() if k != "report_text"}
        typer.echo(json.dumps(shown, indent=2))
        return
    scores = result["scores"]
    typer.echo(f"Test loss: {scores.get('loss', float('nan')):.4f}")
    for name, value in scores.items():
        if name != "loss":
            typer.echo(f"Test {name}: {value:.4f}")
    running = ", the run is still running" if result.get("run_status") == store.RUNNING else ""
    typer.echo(f"({result['samples']} samples, {checkpoint} checkpoint{running})\n")
    typer.echo(result["report_text"])
    for path in result["written"]:
        typer.echo(f"wrote {path}")


@app.command()
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
            console=_console(stderr=True),
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
        _console().print(table)
        for path in result["written"]:
            typer.echo(f"wrote {path}")


@app.command()
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
    result = extract(_run_path(run, runs_dir), layer, out, set_ or [], classifier, checkpoint)
    shape = "x".join(map(str, result["shape"]))
    typer.echo(f"{result['train']} train and {result['test']} test samples, features {shape}")
    if "accuracy" in result:
        typer.echo(f"LogisticRegression test accuracy: {result['accuracy']:.4f}")
    typer.echo(f"wrote {result['out']}")


@app.command()
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
) -> None:
    """Compare runs side by side: their results, then the config keys that differ among them.

    Example: dlrun compare runs/ --where "status == 'completed'" --sort test_accuracy --reverse
    """
    from dlrun.errors import QueryError
    from dlrun.report.compare import (
        FORMATS,
        compare_table,
        comparison_cells,
        curves_plot,
        render_comparison,
    )

    if fmt not in FORMATS:
        raise QueryError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    runs = _readable_configs(_collect(paths, runs_dir))
    comparison = compare_table(
        runs,
        show_all=show_all,
        where=where,
        sort=sort,
        reverse=reverse,
        columns=columns.split(",") if columns else None,
    )
    if not comparison.rows:
        typer.echo("no runs to compare")
        return
    if fmt != "table":
        typer.echo(render_comparison(comparison, fmt), nl=False)
    else:
        from dlrun.report.tables import fitted_table

        console = _console()
        headers, cells, numeric = comparison_cells(comparison)
        table, dropped = fitted_table(headers, cells, console.width, numeric, keep=2)
        console.print(table)
        if dropped:
            typer.echo(
                f"not shown, for the terminal's width: {', '.join(dropped)}; "
                "choose columns with --columns, or see them all with --format csv"
            )
    if plot:
        shown = {row["run"] for row in comparison.rows}
        curves_plot([r for r in runs if r.name in shown], comparison, plot)
        typer.echo(f"wrote {plot}", err=True)


@app.command()
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
    raise typer.Exit(board.run(command))


@app.command()
@fails_cleanly
def sweep(
    sweep_file: Annotated[Path | None, typer.Argument(help="The sweep YAML file.")] = None,
    set_: SetOption = None,
    runs_dir: RunsDirOption = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue this sweep folder, skipping finished fits.")
    ] = None,
    executor: Annotated[
        str, typer.Option(help="local (worker processes) or ray (Ray tasks).")
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option(help="Ray cluster to use [default: $RAY_ADDRESS, else a local Ray]."),
    ] = None,
) -> None:
    """Grid or random search with k-fold cross-validation; every fit is an ordinary run.

    --set overrides a key of the base spec, e.g. --set data.dataset=digits.

    Example: dlrun sweep configs/sweep_hidden_epochs.yaml
    """
    from dlrun import store
    from dlrun import sweep as sweeps
    from dlrun.errors import SpecError
    from dlrun.report.compare import render

    if (sweep_file is None) == (resume is None):
        raise SpecError("give a sweep file, or --resume SWEEP_DIR to continue one (not both)")
    if resume is not None and set_:
        raise SpecError("--set does not apply to --resume; the sweep folder's base.yaml is fixed")
    _check_resume_options(resume, runs_dir)
    if executor not in ("local", "ray"):
        raise SpecError(f"--executor: expected local or ray, got {executor!r}")
    if address and executor != "ray":
        raise SpecError("--address is a Ray cluster's; add --executor ray")
    if executor == "ray":
        from dlrun.sweep.ray import ray_module

        ray_module()  # installed? Said before any folder is made
    if resume is not None:
        held = sweeps.lock(resume)  # before anything is read: a second resume stops here
        found, sweep_dir = sweeps.reopen(resume), resume
    else:
        found, sweep_dir = sweeps.start(sweep_file, store.runs_root(runs_dir), set_ or [])
        held = sweeps.lock(sweep_dir)
    try:
        result = _run_sweep(found, sweep_dir, executor, address)
    finally:
        os.close(held)
    console = _console()
    table = sweeps.pivot(result["frame"], found.spec.scoring).reset_index()
    console.print(render(table, "table", title=f"mean {found.spec.scoring} over the folds"))
    if result["best"] is None:
        typer.echo("Error: no fit finished with a score; see the trials' meta.json", err=True)
        raise typer.Exit(1)
    console.print(
        f"best: {result['best']['params']} -> {result['best']['mean_test_score']:.4f}",
        markup=False,
    )
    if "refit" in result:
        scores = ", ".join(f"{k} {v:.4f}" for k, v in result["refit"].items())
        console.print(f"refit on the whole training split, test: {scores}")
    console.print(f"wrote {sweep_dir / sweeps.RESULTS} and {sweep_dir / sweeps.BEST_SPEC}")


def _run_sweep(found, sweep_dir: Path, executor: str = "local", address: str | None = None) -> dict:
    """Start the workers only now that the sweep file is checked; Ctrl-C/SIGTERM stop them."""
    from dlrun import sweep as sweeps

    console = _console()
    fits = found.fits()
    console.print(
        f"sweep folder: {sweep_dir}; {len(found.settings)} settings, "
        f"{len(fits)} fits "
        + ("as Ray tasks" if executor == "ray" else f"on {found.spec.workers} worker(s)"),
        markup=False,
    )
    try:
        if executor == "ray":
            workers = sweeps.ray_pool(found, sweep_dir, address)
        else:
            workers = sweeps.pool(found.spec.workers, found.base["backend"])
        return sweeps.run_sweep(found, sweep_dir, console, workers)
    except sweeps.SweepStopped as exc:
        typer.echo(f"Error: {exc}", err=True)
        again = " --executor ray" if executor == "ray" else ""
        typer.echo(f"resume with: dlrun sweep --resume {sweep_dir}{again}", err=True)
        raise typer.Exit(exc.exit_code) from None


def main() -> None:
    app()
