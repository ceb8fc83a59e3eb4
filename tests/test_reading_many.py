"""Reading many runs: the listing's limits and sweeps, compare's columns and width, --runs-dir
everywhere, evaluations that never overwrite each other. Real runs, trained once per module."""

import csv
import io
import json
import re
import shutil

import pytest
import yaml
from typer.testing import CliRunner

from conftest import TINY_SPEC, run_dirs
from dlrun.cli import app

runner = CliRunner()
SWEEP = """\
base: tiny.yaml
name: small
grid:
  model.layers.0.units: [8, 16]
cv: 0
workers: 1
refit: false
scoring: accuracy
"""


def train(spec, runs, *sets):
    args = ["train", str(spec), "--runs-dir", str(runs)]
    for value in sets:
        args += ["--set", value]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """Three real runs (units 8/24, epochs 1/2) and a real two-fit sweep beside them."""
    root = tmp_path_factory.mktemp("many")
    spec = root / "tiny.yaml"
    spec.write_text(TINY_SPEC)
    runs = root / "runs"
    for units, epochs in [(8, 1), (24, 2), (24, 1)]:
        train(spec, runs, f"model.layers.0.units={units}", f"training.epochs={epochs}")
    (root / "sweep.yaml").write_text(SWEEP)
    result = runner.invoke(app, ["sweep", str(root / "sweep.yaml"), "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    return runs


def plain_runs(lab):
    return [p for p in run_dirs(lab) if (p / "meta.json").exists()]


def sweep_dir(lab):
    (found,) = [p for p in run_dirs(lab) if (p / "sweep.yaml").exists()]
    return found


# --- dlrun runs ------------------------------------------------------------------------------


def test_a_sweep_is_one_row_with_its_best_score(lab):
    result = runner.invoke(app, ["runs", str(lab)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    sweep = sweep_dir(lab)
    for run in plain_runs(lab):
        assert run.name in out
    assert sweep.name in out and "fit000" not in out
    with open(sweep / "cv_results.csv") as file:
        best = max(float(row["mean_test_score"]) for row in csv.DictReader(file))
    (row,) = [line for line in out.splitlines() if sweep.name in line]
    assert "sweep completed" in row and "2/2 fits" in row
    assert f"mean accuracy {best:.4f}" in row
    assert out.splitlines()[-1] == "2 sweep trial runs not listed: --trials lists them"


def test_trials_lists_the_sweeps_fits(lab):
    result = runner.invoke(app, ["runs", str(lab), "--trials"])
    assert result.exit_code == 0, result.output
    assert "small-" in result.stdout
    assert result.stdout.count("/trials/fit00") == 2
    assert "not listed" not in result.stdout
    # Listing the sweep folder itself shows its fits without being asked.
    inside = runner.invoke(app, ["runs", str(sweep_dir(lab))])
    assert inside.stdout.count("trials/fit00") == 2


@pytest.fixture(scope="module")
def crowd(lab, tmp_path_factory):
    """25 copies of a real run, started a minute apart."""
    runs = tmp_path_factory.mktemp("crowd") / "runs"
    source = plain_runs(lab)[0]
    for index in range(25):
        target = runs / f"copy-{index:02d}"
        shutil.copytree(source, target)
        meta = json.loads((target / "meta.json").read_text())
        meta["started"] = f"2026-11-25T10:{index:02d}:00+00:00"
        (target / "meta.json").write_text(json.dumps(meta))
    return runs


def listed(out: str) -> list[str]:
    return re.findall(r"copy-\d\d", out)


def test_runs_shows_the_newest_20_and_says_how_many_more(crowd):
    result = runner.invoke(app, ["runs", str(crowd)])
    assert result.exit_code == 0, result.output
    assert listed(result.stdout) == [f"copy-{i:02d}" for i in range(24, 4, -1)]
    assert "5 more not shown (newest 20 of 25): --limit N or --all" in result.stdout

    limited = runner.invoke(app, ["runs", str(crowd), "--limit", "3"])
    assert listed(limited.stdout) == ["copy-24", "copy-23", "copy-22"]
    assert "22 more not shown (newest 3 of 25)" in limited.stdout

    every = runner.invoke(app, ["runs", str(crowd), "--all"])
    assert len(listed(every.stdout)) == 25 and "more not shown" not in every.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["runs", "NONEXISTENT"], "Error: NONEXISTENT: no such folder;"),
        (["runs", "--limit", "0"], "Error: --limit: expected a whole number of at least 1, got 0"),
        (["compare", "NONEXISTENT"], "Error: NONEXISTENT: no such folder;"),
    ],
)
def test_listing_mistakes_exit_2(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert result.stderr.startswith(message) and len(result.stderr.splitlines()) == 1


def test_runs_in_a_fresh_folder_is_an_empty_listing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DLRUN_RUNS_DIR", raising=False)
    result = runner.invoke(app, ["runs"])
    assert result.exit_code == 0 and result.stdout == "no runs yet in runs/\n"


# --- --runs-dir everywhere ---------------------------------------------------------------------


def test_runs_dir_option_and_environment_on_every_reading_command(lab, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = plain_runs(lab)[0]
    by_option = runner.invoke(app, ["runs", "--runs-dir", str(lab)])
    by_argument = runner.invoke(app, ["runs", str(lab)])
    assert by_option.exit_code == 0 and by_option.stdout == by_argument.stdout
    monkeypatch.setenv("DLRUN_RUNS_DIR", str(lab))
    assert runner.invoke(app, ["runs"]).stdout == by_argument.stdout
    assert run.name in runner.invoke(app, ["compare", "--format", "csv"]).stdout
    shown = runner.invoke(app, ["show", run.name])  # a name, found in the runs folder
    assert shown.exit_code == 0 and "units: 8" in shown.stdout
    monkeypatch.delenv("DLRUN_RUNS_DIR")
    shown = runner.invoke(app, ["show", run.name, "--runs-dir", str(lab)])
    assert shown.exit_code == 0, shown.output
    both = runner.invoke(app, ["compare", str(lab), "--runs-dir", str(lab)])
    assert both.exit_code == 2
    assert both.stderr == (
        "Error: give the folder once: as an argument or with --runs-dir, not both\n"
    )
    commands = ["train", "runs", "show", "evaluate", "features", "compare", "tensorboard", "sweep"]
    for command in commands:  # every command but validate, which reads and writes no runs
        assert "--runs-dir" in runner.invoke(app, [command, "--help"]).stdout


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--force"], "Error: --force applies only with --resume RUN; drop it or add --resume\n"),
        (
            ["--unsafe-load"],
            "Error: --unsafe-load applies only with --resume RUN; drop it or add --resume\n",
        ),
    ],
)
def test_resume_only_options_are_refused_without_resume(tiny_spec, tmp_path, extra, message):
    result = runner.invoke(
        app, ["train", str(tiny_spec), "--runs-dir", str(tmp_path / "runs"), *extra]
    )
    assert result.exit_code == 2 and result.stderr == message
    assert not (tmp_path / "runs").exists()


def test_runs_dir_is_refused_with_resume(lab, tmp_path):
    run = plain_runs(lab)[0]
    result = runner.invoke(app, ["train", "--resume", str(run), "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: --runs-dir does not apply to --resume: a resumed run stays in its own folder\n"
    )
    sweep = runner.invoke(app, ["sweep", "--resume", str(sweep_dir(lab)), "--runs-dir", "x"])
    assert sweep.exit_code == 2 and sweep.stderr.startswith("Error: --runs-dir does not apply")


# --- dlrun compare -----------------------------------------------------------------------------


def compare_csv(*args):
    result = runner.invoke(app, ["compare", *args, "--format", "csv"])
    assert result.exit_code == 0, result.output
    return list(csv.DictReader(io.StringIO(result.stdout))), result.stdout.splitlines()[0]


def test_compare_puts_results_first_then_the_keys_that_differ(lab):
    rows, header = compare_csv(*map(str, plain_runs(lab)))
    columns = header.split(",")
    assert columns[:6] == [
        "run",
        "status",
        "best_val_loss",
        "test_accuracy",
        "test_loss",
        "backend",  # the Keras backend: always shown
    ]
    assert columns[6:8] == ["model.layers.0.units", "training.epochs"]
    assert columns[8:] == ["epochs_done", "best_epoch", "params", "train_seconds"]
    assert sorted((r["model.layers.0.units"], r["training.epochs"]) for r in rows) == [
        ("24", "1"),
        ("24", "2"),
        ("8", "1"),
    ]


def test_compare_where_narrows_the_differing_keys(lab):
    runs = list(map(str, plain_runs(lab)))
    rows, header = compare_csv(*runs, "--where", "training.epochs == 1")
    assert len(rows) == 2 and "training.epochs" not in header  # both have 1 epoch
    assert "model.layers.0.units" in header
    rows, header = compare_csv(*runs, "--where", "model.layers.0.units == 24")
    assert "model.layers.0.units" not in header and "training.epochs" in header


def test_compare_table_uses_short_names_and_whole_numbers(lab):
    runs = list(map(str, plain_runs(lab)))
    result = runner.invoke(app, ["compare", *runs], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    header = result.stdout.splitlines()[1]
    names = [cell.strip() for cell in header.strip("┃ ").split("┃")]
    assert names == [
        "run",
        "status",
        "best_val_loss",
        "test_accuracy",
        "test_loss",
        "backend",
        "layers.0.units",  # model.layers.0.units: `units` and `0.units` say too little
        "epochs",  # training.epochs
        "epochs_done",
        "best_epoch",
        "params",
        "train_seconds",
    ]
    assert re.search(r"│\s+24 │\s+2 │\s+2 │", result.stdout)  # units, epochs, epochs done
    assert "24.0" not in result.stdout and "2.0000" not in result.stdout


@pytest.mark.parametrize("width", [80, 120])
def test_compare_fits_the_terminal_and_names_what_it_dropped(lab, width):
    runs = list(map(str, plain_runs(lab)))
    result = runner.invoke(app, ["compare", *runs], env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    table = [line for line in lines if line[:1] in "┏┃┡│└"]
    assert table and max(len(line) for line in table) <= width
    assert "test_accuracy" in lines[1]  # the results come first and stay
    (note,) = [line for line in lines if line.startswith("not shown")]
    dropped = note.split(": ", 1)[1].split("; ")[0].split(", ")
    assert "train_seconds" in dropped
    for name in dropped:
        assert name not in lines[1]
    assert note.endswith("choose columns with --columns, or see them all with --format csv")
    chosen = runner.invoke(
        app,
        ["compare", *runs, "--columns", "test_accuracy,0.units"],
        env={"COLUMNS": str(width)},
    )
    assert chosen.exit_code == 0, chosen.output
    names = [cell.strip() for cell in chosen.stdout.splitlines()[1].strip("┃ ").split("┃")]
    assert names == ["run", "test_accuracy", "layers.0.units"]


def test_compare_sort_takes_short_names(lab):
    runs = list(map(str, plain_runs(lab)))
    rows, _ = compare_csv(*runs, "--sort", "layers.0.units", "--reverse")
    assert [r["model.layers.0.units"] for r in rows] == ["24", "24", "8"]
    ambiguous = runner.invoke(app, ["compare", *runs, "--sort", "units"])
    assert ambiguous.exit_code == 2
    assert ambiguous.stderr == (
        "Error: --sort: 'units' could be model.layers.0.units, model.layers.1.units; "
        "give more of it\n"
    )


def test_compare_plot_labels_runs_by_name_and_warns_nothing(lab, tmp_path):
    import subprocess
    import sys

    plot = tmp_path / "curves.png"
    runs = list(map(str, plain_runs(lab)))
    result = subprocess.run(
        [sys.executable, "-W", "always", "-m", "dlrun", "compare", *runs, "--plot", str(plot)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"wrote {plot}\n"  # no matplotlib warning reaches the terminal
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_curves_plot_table_holds_the_differing_values(lab, tmp_path):
    from dlrun import store
    from dlrun.report import compare, curves

    runs = [store.open_run(p) for p in plain_runs(lab)]
    figure = curves.curves_plot(runs, compare.compare_table(runs), tmp_path / "c.png")
    # issue 34: the first panel's legend names each curve's run; the differing values stay in
    # the table under the plot, never in a legend
    legends = [axis.get_legend() for axis in figure.axes if axis.get_legend() is not None]
    assert len(legends) == 1
    assert sorted(t.get_text() for t in legends[0].get_texts()) == sorted(r.name for r in runs)
    (table,) = [t for axis in figure.axes for t in axis.tables]
    cells = {key: cell.get_text().get_text() for key, cell in table.get_celld().items()}
    assert [cells[0, c] for c in range(3)] == ["run", "layers.0.units", "epochs"]
    shown = sorted(tuple(cells[r, c] for c in range(3)) for r in range(1, 4))
    expected = []
    for run in runs:
        config = yaml.safe_load((run.path / "config.yaml").read_text())
        units, epochs = config["model"]["layers"][0]["units"], config["training"]["epochs"]
        expected.append((run.name, str(units), str(epochs)))
    assert shown == sorted(expected)


# --- evaluate ----------------------------------------------------------------------------------


def test_evaluations_never_overwrite_each_other(lab, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(plain_runs(lab)[0], run)
    first = runner.invoke(app, ["evaluate", str(run)])
    second = runner.invoke(app, ["evaluate", str(run)])
    last = runner.invoke(app, ["evaluate", str(run), "--checkpoint", "last"])
    for result in (first, second, last):
        assert result.exit_code == 0, result.output
    written = sorted(p.name for p in (run / "evaluations").iterdir())
    assert len(written) == 6  # three JSON files, three confusion matrices
    jsons = [name for name in written if name.endswith(".json")]
    assert sum("-best-digits" in name for name in jsons) == 2
    assert sum("-last-digits" in name for name in jsons) == 1
    for name in jsons:
        assert name.removesuffix(".json") + "-confusion_matrix.png" in written
    for result in (first, second, last):
        paths = [line.removeprefix("wrote ") for line in result.stdout.splitlines()[-2:]]
        assert all(p.startswith(str(run / "evaluations")) for p in paths)


def test_evaluating_a_running_run_says_it_is_running(lab, tmp_path):
    import os

    run = tmp_path / "run"
    shutil.copytree(plain_runs(lab)[0], run)
    from dlrun import store

    meta = json.loads((run / "meta.json").read_text())
    meta.update(status="running", ended=None)
    (run / "meta.json").write_text(json.dumps(meta))
    held = store.take_lock(run)  # as the training process holds it
    try:
        result = runner.invoke(app, ["evaluate", str(run)])
    finally:
        os.close(held)
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith(f"Note: {run.name} is still running (")
    assert "the run is still running)" in result.stdout


# --- what reading runs loads -------------------------------------------------------------------

PROBE = """
import sys
from dlrun.cli import app
try:
    app(sys.argv[1:])
except SystemExit:
    pass
heavy = {"tensorflow", "keras", "pandas", "pydantic"}
loaded = sorted({m.split(".")[0] for m in sys.modules} & heavy)
print("LOADED:" + ",".join(loaded))
"""


@pytest.mark.parametrize(
    "args, allowed",
    [
        (["runs"], {"pydantic"}),  # Typer itself uses pydantic
        (["compare", "--format", "csv"], {"pydantic"}),
        (["compare", "--where", "training.epochs == 1", "--format", "csv"], {"pydantic", "pandas"}),
    ],
)
def test_reading_runs_loads_neither_tensorflow_nor_pandas_unless_filtering(lab, args, allowed):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", PROBE, *args, "--runs-dir", str(lab)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    loaded = set(filter(None, result.stdout.rsplit("LOADED:", 1)[1].strip().split(",")))
    assert loaded <= allowed, loaded
    assert plain_runs(lab)[0].name in result.stdout


def test_a_narrow_listing_drops_the_start_time_before_the_scores(crowd):
    wide = runner.invoke(app, ["runs", str(crowd), "--limit", "2"], env={"COLUMNS": "250"})
    assert "started" in wide.stdout.splitlines()[1] and "width" not in wide.stdout
    narrow = runner.invoke(app, ["runs", str(crowd), "--limit", "2"], env={"COLUMNS": "110"})
    lines = narrow.stdout.splitlines()
    assert max(len(line) for line in lines if line[:1] in "┏┃┡│└") <= 110
    header = [cell.strip() for cell in lines[1].strip("┃ ").split("┃")]
    assert header[:2] == ["run", "status"] and "test" in header and "best" in header
    assert "not shown, for the terminal's width: started" in narrow.stdout
