"""`dlrun train`, `dlrun validate` and `dlrun sweep`: the commands that make runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from dlrun.cli.common import (
    RunsDirOption,
    SetOption,
    TrustCodeOption,
    fails_cleanly,
    make_console,
)


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
    trust_code: TrustCodeOption = False,
    unsafe_load: Annotated[
        bool, typer.Option(help="Resume from a checkpoint that Keras' safe_mode refuses.")
    ] = False,
    epochs: Annotated[
        int | None,
        typer.Option(
            min=1, help="With --resume: train to this many epochs in all, even a completed run."
        ),
    ] = None,
    repeats: Annotated[
        int,
        typer.Option(
            help="Train N runs, with seeds seed, seed+1, ...; then their mean ± std.",
        ),
    ] = 1,
    executor: Annotated[
        str,
        typer.Option(help="Where the processes of distribute: {processes: N} run: local or ray."),
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option(help="Ray cluster to use [default: $RAY_ADDRESS, else a local Ray]."),
    ] = None,
) -> None:
    """Train the model a spec describes into a new run folder, or --resume a stopped run.

    `--resume RUN --epochs N` continues a completed run up to N epochs (a new attempt).
    `--repeats N` trains N runs of the spec with seeds seed..seed+N-1 and prints the mean and
    std of their scores (`dlrun compare --group seed` shows them again later).
    `training.distribute: {processes: N}` starts N processes here (or in a Ray placement
    group with --executor ray); under a scheduler, run it on every host with Keras'
    KERAS_DISTRIBUTION_* variables set.

    Example: dlrun train configs/mnist_cnn.yaml --set training.epochs=3
    """
    from dlrun.errors import SpecError, UsageError
    from dlrun.sweep.schema import MAX_REPEATS

    if (spec_file is None) == (resume is None):
        raise SpecError("give a spec file to train, or --resume RUN to continue a run (not both)")
    if resume is not None and set_:
        raise SpecError("--set does not apply to --resume; the run's config.yaml is its spec")
    if epochs is not None and resume is None:
        raise SpecError("--epochs goes with --resume; for a new run use --set training.epochs=N")
    if not 1 <= repeats <= MAX_REPEATS:
        raise UsageError(
            f"--repeats: expected a whole number from 1 to {MAX_REPEATS}, got {repeats}"
        )
    if repeats > 1 and resume is not None:
        raise UsageError("--repeats trains new runs; --resume continues one (not both)")
    _check_resume_options(resume, runs_dir, force=force, unsafe_load=unsafe_load)
    if executor not in ("local", "ray"):
        raise UsageError(f"--executor: expected local or ray, got {executor!r}")
    if address and executor != "ray":
        raise UsageError("--address is a Ray cluster's; add --executor ray")
    spec = None
    if resume is None:
        spec = _load(spec_file, set_ or [])
        if spec.seed + repeats - 1 >= 2**32:
            raise UsageError(
                f"--repeats {repeats}: seeds {spec.seed} to {spec.seed + repeats - 1} go past "
                "the largest seed, 2**32 - 1"
            )
    from dlrun import store
    from dlrun.train import cluster, runner

    if resume is None:
        store.check_runs_root(store.runs_root(runs_dir))  # before TensorFlow and the data
    role = cluster.role_from_env()
    if role is None:
        launched = _launch(spec, resume, executor, address, locals())
        if launched is not None:
            raise typer.Exit(launched)
    console = make_console()
    if role is not None and not role.leader:  # process 0 shows the run and writes it
        from rich.console import Console

        console = Console(file=open(os.devnull, "w"))  # noqa: SIM115 (for the process' life)
        if resume is not None and os.path.isfile(resume / store.META):
            resume, force = cluster.scratch_copy(resume), True  # process 0 checked config.yaml
    if resume is not None:
        command = ["dlrun", "train", f"--resume={resume}"] + ["--force"] * force
        command += [f"--epochs={epochs}"] if epochs else []
        outcome = runner.resume(resume, console, command, force, unsafe_load, epochs=epochs)
    elif repeats > 1:
        outcome = _repeat(spec, spec_file, set_ or [], runs_dir, repeats, console)
    else:
        # The command as it would be typed again (sys.argv is the test runner's under CliRunner).
        command = ["dlrun", "train", str(spec_file)]
        command += [f"--set={value}" for value in set_ or []]
        command += [f"--runs-dir={runs_dir}"] if runs_dir else []
        outcome = runner.train(spec, store.runs_root(runs_dir), console, command=command)
    if repeats == 1:
        _report(console, outcome)
    if outcome.exit_code:
        from dlrun.textsafe import clean

        typer.echo(clean(f"Error: run {outcome.status}: {outcome.message}", False), err=True)
        if outcome.status == store.INTERRUPTED:
            typer.echo(clean(f"resume with: dlrun train --resume {outcome.run_dir}"), err=True)
    cluster.leave(outcome.exit_code == 0, outcome.exit_code)
    if outcome.exit_code:
        raise typer.Exit(outcome.exit_code)


def _launch(spec, resume: Path | None, executor: str, address: str | None, given: dict):
    """With distribute: {processes: N > 1}, the N processes started here or on Ray, and the
    exit code of the run; None when the run has one process (this one trains it)."""
    from dlrun.errors import UsageError
    from dlrun.train import launch

    if resume is not None:
        spec = _run_spec(resume)
    count = spec.processes if spec is not None else 1
    if count == 1:
        if executor == "ray":
            raise UsageError(
                "--executor ray places the processes of training.distribute: {processes: N}; "
                "this run has one (use dlrun sweep --executor ray for many runs)"
            )
        return None
    arguments = ["train"]
    if given["spec_file"] is not None:
        arguments.append(str(Path(given["spec_file"]).resolve()))
    arguments += [f"--set={value}" for value in given["set_"] or []]
    if given["runs_dir"] is not None:
        arguments.append(f"--runs-dir={Path(given['runs_dir']).resolve()}")
    if resume is not None:
        arguments.append(f"--resume={Path(resume).resolve()}")
    arguments += ["--force"] * given["force"] + ["--unsafe-load"] * given["unsafe_load"]
    arguments += [f"--epochs={given['epochs']}"] if given["epochs"] else []
    arguments += [f"--repeats={given['repeats']}"] if given["repeats"] > 1 else []
    if executor == "ray":
        return launch.run_ray(arguments, count, spec.training.distribute.resources, address)
    return launch.run_local(arguments, count)


def _run_spec(run: Path):
    """The spec of a run to resume, to see on how many processes it trains (None: unreadable,
    and resuming it says why)."""
    from dlrun import store
    from dlrun.errors import DlrunError
    from dlrun.spec.loading import load_spec

    try:
        return load_spec(store.config_of(run))
    except (DlrunError, OSError):
        return None


def _repeat(spec, spec_file: Path, overrides: list[str], runs_dir, repeats: int, console):
    """`--repeats N`: the spec with seeds seed..seed+N-1, one run each, then the spread of
    their scores. A run that does not complete ends the repeats; its outcome is returned."""
    import numpy as np

    from dlrun import store
    from dlrun.train import runner

    outcomes = []
    first = spec.seed
    for seed in range(first, first + repeats):
        spec.seed = seed
        command = ["dlrun", "train", str(spec_file)]
        command += [f"--set={value}" for value in overrides] + [f"--set=seed={seed}"]
        command += [f"--runs-dir={runs_dir}"] if runs_dir else []
        console.print(f"seed {seed} ({seed - first + 1} of {repeats})", markup=False)
        outcome = runner.train(spec, store.runs_root(runs_dir), console, command=command)
        _report(console, outcome)
        outcomes.append(outcome)
        if outcome.exit_code:
            return outcome
    from dlrun.textsafe import clean

    names = sorted({name for o in outcomes for name in o.metrics.get("test", {})})
    for name in names:
        values = [o.metrics["test"][name] for o in outcomes if name in o.metrics.get("test", {})]
        console.print(
            f"test {name} over {len(values)} seeds: {np.mean(values):.4f} ± {np.std(values):.4f}"
            f" (mean ± std; min {min(values):.4f}, max {max(values):.4f})",
            markup=False,
        )
    folders = ", ".join(o.run_dir.name for o in outcomes)
    console.print(clean(f"run folders: {folders}"), markup=False)
    return outcomes[-1]


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


@fails_cleanly
def validate(
    spec_file: Annotated[Path, typer.Argument(help="The YAML spec, or a sweep file.")],
    set_: SetOption = None,
) -> None:
    """Check a spec and print the model summary; trains nothing, writes nothing.

    A sweep file (base: and grid:, random:, tpe: or cmaes:) is checked as `dlrun sweep` would
    plan it, and every setting's model is built.

    Example: dlrun validate configs/mnist_cnn.yaml
    """
    if _is_sweep(spec_file):
        _validate_sweep(spec_file, set_ or [])
        return
    spec = _load(spec_file, set_ or [])
    model = _built(spec, echo=True)
    from dlrun.model.builder import summary_text

    typer.echo(summary_text(model), nl=False)
    if spec.model.is_graph:
        from dlrun.model.builder import graph_text

        typer.echo(graph_text(model), nl=False)
    typer.echo(f"{spec_file}: valid; {model.count_params():,} parameters")


def _built(spec, echo: bool):
    """The spec's model, built and compiled on its data's shape; every problem at once."""
    from dlrun.backend import load, use

    use(spec.backend, spec.training.device)
    load()
    from dlrun import usercode
    from dlrun.data.arrays import signature

    usercode.add_base_code(spec)
    usercode.use_spec(spec)  # the spec's own code files, before anything is built
    from dlrun.errors import SpecError
    from dlrun.model.builder import build_model
    from dlrun.model.compiling import compile_model
    from dlrun.train.knobs import make_callbacks

    notes: list[str] = []
    input_shape, num_classes, target_shape = signature(spec, notes)
    from dlrun.textsafe import clean

    for note in notes if echo else ():  # what loading decided: rows dropped, an input shape
        typer.echo(clean(note, newlines=False))
    model = build_model(spec, input_shape)
    problems = []  # every problem at once: one round of fixes
    try:
        compile_model(model, spec, num_classes, target_shape)
    except SpecError as exc:
        problems += exc.problems
    try:
        make_callbacks(spec)
    except SpecError as exc:
        problems += exc.problems
    if problems:
        raise SpecError(problems)
    return model


def _is_sweep(path: Path) -> bool:
    """A sweep file: a base spec and a search, no model of its own."""
    from dlrun.errors import SpecError
    from dlrun.spec.loading import load_raw
    from dlrun.sweep.schema import SEARCHES

    try:
        raw, _ = load_raw(path)
    except SpecError:
        return False  # the spec's own loading says what is wrong
    return (
        isinstance(raw, dict)
        and "base" in raw
        and "model" not in raw
        and any(search in raw for search in SEARCHES)
    )


def _validate_sweep(path: Path, overrides: list[str]) -> None:
    """A sweep file checked as `dlrun sweep` plans it (sweep.load_sweep), then every planned
    setting's model built (tpe and cmaes: each value and end of the space)."""
    from dlrun.errors import SpecError
    from dlrun.sweep import load_sweep
    from dlrun.sweep.schema import EPOCHS
    from dlrun.sweep.space import candidates

    found = load_sweep(path, overrides)
    spec = found.spec
    settings = found.settings or [
        {key: value} for key, rule in spec.space.items() for value in candidates(rule)
    ]
    sizes = []
    for setting in settings:
        params = {k: v for k, v in setting.items() if k != EPOCHS}
        trial = found.trial_spec(params, 0 if spec.cv else None, setting.get(EPOCHS))
        try:
            sizes.append(_built(trial, echo=not sizes).count_params())
        except SpecError as exc:
            shown = ", ".join(f"{k}={v!r}" for k, v in setting.items())
            raise SpecError([f"setting {shown}: {problem}" for problem in exc.problems]) from None
    planned = "settings" if found.settings else "values of the space"
    folds = f", {spec.cv}-fold cross-validation" if spec.cv else ""
    typer.echo(
        f"{path}: a valid {spec.search} sweep of base {spec.base}: {len(settings)} {planned} "
        f"built ({min(sizes):,} to {max(sizes):,} parameters), up to {found.planned_fits} "
        f"fits{folds}, scored on {spec.scoring}"
    )


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
    trust_code: TrustCodeOption = False,
) -> None:
    """Grid, random, TPE or CMA-ES search with k-fold cross-validation; every fit is a run.

    tpe: and cmaes: ask Optuna for each setting (pip install "dlrun[optuna]"); prune: stops
    the losing fits after a few epochs; repeats: trains each fit with several seeds. --set
    overrides a key of the base spec, e.g. --set data.dataset=digits.

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
        from dlrun.sweep.ray import check_address, ray_module

        ray_module()  # installed? Said before any folder is made
        check_address(address)  # something listening there? Before Ray's reconnect loop
    from dlrun.sweep import tracking

    if resume is not None:
        held = sweeps.lock(resume)  # before anything is read: a second resume stops here
        found, sweep_dir = sweeps.reopen(resume), resume
    else:
        found, sweep_dir = sweeps.start(sweep_file, store.runs_root(runs_dir), set_ or [])
        held = sweeps.lock(sweep_dir)
    from dlrun.usercode import trust

    try:
        with trust.passed_on(trust_code):  # --resume: its local workers trust it too
            tracking.check(found)  # a new sweep's was checked before its folder was made
            try:
                result = _run_sweep(found, sweep_dir, executor, address)
            finally:  # whatever the outcome, the tracking server learns it
                tracking.send_live(found, sweep_dir, make_console())
    finally:
        os.close(held)
    console = make_console()
    spec = found.spec
    over = "the folds" if spec.repeats == 1 else "the folds and seeds"
    if spec.adaptive:  # many settings, in the order asked: the best ten
        shown = min(len(result["frame"]), sweeps.TOP)
        title = f"mean {spec.scoring} over {over}: the best {shown} of {len(result['frame'])}"
    else:
        title = f"mean {spec.scoring} over {over}"
    table = sweeps.pivot(result["frame"], spec.scoring, spec.adaptive).reset_index()
    console.print(render(table, "table", title=title))
    if result["best"] is None:
        typer.echo("Error: no fit finished with a score; see the trials' meta.json", err=True)
        raise typer.Exit(1)
    best = result["best"]
    spread = f" ± {best['std_test_score']:.4f}" if len(found.folds) * spec.repeats > 1 else ""
    console.print(f"best: {best['params']} -> {best['mean_test_score']:.4f}{spread}", markup=False)
    if result.get("importances"):
        ranked = sorted(result["importances"].items(), key=lambda item: -item[1])
        text = ", ".join(f"{name} {value:.2f}" for name, value in ranked)
        console.print(f"parameter importances (Optuna, fANOVA): {text}", markup=False)
    elif spec.adaptive:
        console.print("parameter importances: not computable (too few completed settings)")
    if "refit" in result:
        scores = ", ".join(f"{k} {v:.4f}" for k, v in result["refit"].items())
        console.print(f"refit on {result['refit_data']}, test: {scores}", markup=False)
    console.print(
        f"{result['fits']} fits, {result['epochs']} epochs in all, {result['seconds']:.1f} s",
        markup=False,
    )
    wrote = [sweeps.RESULTS, sweeps.BEST_SPEC, *([sweeps.SEARCH_PLOT] * ("plot" in result))]
    console.print(f"wrote {', '.join(str(sweep_dir / name) for name in wrote)}", markup=False)


def _run_sweep(found, sweep_dir: Path, executor: str = "local", address: str | None = None) -> dict:
    """Start the workers only now that the sweep file is checked; Ctrl-C/SIGTERM stop them."""
    from dlrun import sweep as sweeps

    console = make_console()
    spec = found.spec
    settings = getattr(spec, spec.search).n_iter if spec.adaptive else len(found.settings)
    console.print(
        f"sweep folder: {sweep_dir}; {settings} settings, "
        f"{'up to ' if spec.adaptive else ''}{found.planned_fits} fits "
        + ("as Ray tasks" if executor == "ray" else f"on {spec.workers} worker(s)"),
        markup=False,
    )
    try:
        with sweeps.recorded(found, sweep_dir):
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
