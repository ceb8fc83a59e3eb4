"""Odd arguments: overrides, bounds, folders and ports that used to pass validation and fail
later (or never). Each is one `Error:` line before anything is built or written. Issue 23,
item 15, and cases of our own.
"""

import shutil
import socket
from pathlib import Path

import pytest
from test_hostile import assert_one_clean_error, no_hang  # noqa: F401  (autouse)
from typer.testing import CliRunner

from dlrun import store
from dlrun.cli import app

runner = CliRunner()
BOMB = (
    "[&a [1,1,1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a], "
    + ", ".join(f"&{chr(99 + i)} [" + ",".join([f"*{chr(98 + i)}"] * 10) + "]" for i in range(5))
    + "]"
)

# --set ASSIGNMENT -> fragment of the Error line (validate and train alike)
OVERRIDES = {
    "model.layers.²=3": "got index '²'",  # a Unicode digit: int('²') was a traceback
    "model.layers.٣.units=3": "got index '٣'",  # an Arabic-Indic digit: not an index either
    "model.layers.01x.units=3": "got index '01x'",
    f"data.classes={BOMB}": "aliases expand to more than 100,000 values",
    "training.epochs=9223372036854775808": "epochs: expected a number <= 1000000, got 922",
    "training.epochs=1000001": "expected a number <= 1000000, got 1000001",
    "training.batch_size=9223372036854775807": "expected a number <= 2147483647",
    "training.batch_size=1e30": "training.batch_size",
    # the schema's bound (issue 30) before the epoch's batch count
    "compile.steps_per_execution=1000000000000000000": "compile.steps_per_execution: expected "
    "auto or a whole number <= 100,000, got 1000000000000000000",
    "training.finetune.epochs=9223372036854775808": "training.finetune",
    "name=" + "a" * 250: "name: String should have at most 200 characters",
    "name=" + "a" * 201: "at most 200 characters",
    "seed=1e400": "seed",
}


@pytest.mark.parametrize("assignment", list(OVERRIDES), ids=range(len(OVERRIDES)))
def test_odd_override(assignment, tiny_spec, tmp_path):
    runs = tmp_path / "runs"
    extra = ["--set", "training.shuffle=false"] if "steps_per_execution" in assignment else []
    result = runner.invoke(
        app, ["train", str(tiny_spec), "--runs-dir", str(runs), "--set", assignment, *extra]
    )
    assert_one_clean_error(result, OVERRIDES[assignment])
    assert not runs.exists()


def test_steps_per_execution_up_to_an_epoch_is_fine(tiny_spec):
    """The control: 18 steps of 64 make an epoch of the 1,149 training digits."""
    result = runner.invoke(
        app,
        ["validate", str(tiny_spec), "--set", "compile.steps_per_execution=18"]
        + ["--set", "training.shuffle=false"],
    )
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("below", ["", "checkpoints", "plots/deeper/still"])
def test_runs_dir_inside_a_run_is_refused(trained, tiny_spec, below, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    runs = run / below if below else run
    result = runner.invoke(app, ["train", str(tiny_spec), "--runs-dir", str(runs)])
    assert_one_clean_error(result, f"is inside the run {run}; give a folder outside any run")
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in trained.iterdir())


@pytest.mark.parametrize(
    "port, fragment",
    [
        ("-1", "--port: expected a number from 1 to 65535, got -1"),
        ("0", "--port: expected a number from 1 to 65535, got 0"),
        ("65536", "got 65536"),
        ("99999999999999999999", "got 99999999999999999999"),
    ],
)
def test_tensorboard_port_out_of_range(port, fragment, tmp_path):
    result = runner.invoke(app, ["tensorboard", str(tmp_path), "--port", port])
    assert_one_clean_error(result, fragment)


def test_tensorboard_on_a_port_another_server_owns(tmp_path):
    """It printed 'TensorBoard on http://...' and exited 255; the address was another's."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        result = runner.invoke(app, ["tensorboard", str(tmp_path), "--port", str(port)])
    line = assert_one_clean_error(result, f"--port {port}: cannot listen on 127.0.0.1:{port}")
    assert "Address already in use" in line and "TensorBoard on" not in result.output


def test_tensorboard_on_an_unknown_host(tmp_path):
    result = runner.invoke(app, ["tensorboard", str(tmp_path), "--host", "no.such.host.invalid"])
    assert_one_clean_error(result, "cannot listen on no.such.host.invalid")


# --- features: the destination and the classifier are checked before the extraction ----------


@pytest.mark.parametrize(
    "out, fragment",
    [
        (lambda t: (t / "taken.npz").mkdir() or t / "taken.npz", "exists and is not a file"),
        (lambda t: Path("/proc/dlrun-features.npz"), "cannot be written"),
        (lambda t: t / "nowhere" / "f.npz", "no such folder"),
        (lambda t: t / "f.csv", "expected a file name ending in .npz"),
    ],
    ids=["a-folder", "unwritable", "missing-folder", "not-npz"],
)
def test_features_checks_its_destination_first(trained, out, fragment, tmp_path):
    path = out(tmp_path)
    result = runner.invoke(app, ["features", str(trained), "--layer", "0", "--out", str(path)])
    assert_one_clean_error(result, fragment)


def test_features_classifier_on_a_regression_run(trained, tmp_path):
    run = tmp_path / "regression"
    shutil.copytree(trained, run)
    config = run / store.CONFIG
    config.write_text(config.read_text().replace("task: null", "task: regression"))
    out = tmp_path / "f.npz"
    result = runner.invoke(
        app, ["features", str(run), "--layer", "0", "--out", str(out), "--classifier", "logistic"]
    )
    assert_one_clean_error(result, "is a regression run; a classifier needs classes")
    assert not out.exists()


def test_a_name_of_200_characters_still_makes_a_run_folder(tiny_spec, tmp_path):
    """The bound's control: the longest name allowed is valid and fits in a folder name with
    its timestamp (a 250-character one blamed the runs folder for 'File name too long')."""
    result = runner.invoke(app, ["validate", str(tiny_spec), "--set", "name=" + "a" * 200])
    assert result.exit_code == 0, result.output
    folder = store.create_run_dir(tmp_path / "runs", "a" * 200)
    assert folder.is_dir() and len(folder.name) == 216
