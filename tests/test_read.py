"""Reading runs back: runs, show, evaluate, compare, on real runs and hand-damaged ones."""

import io
import json
import shutil
import subprocess
import sys

import keras
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import TINY_SPEC, run_dirs
from dlrun.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two real runs that differ in two keys: hidden units and epochs."""
    root = tmp_path_factory.mktemp("read")
    spec = root / "tiny.yaml"
    spec.write_text(TINY_SPEC)
    runs = root / "runs"
    for units, epochs in [(8, 1), (24, 2)]:
        result = runner.invoke(
            app,
            [
                "train",
                str(spec),
                "--set",
                f"model.layers.0.units={units}",
                "--set",
                f"training.epochs={epochs}",
                "--runs-dir",
                str(runs),
            ],
        )
        assert result.exit_code == 0, result.output
    return runs


def copy_runs(two_runs, tmp_path):
    target = tmp_path / "runs"
    shutil.copytree(two_runs, target)
    return target, run_dirs(target)


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_runs_lists_newest_first(two_runs):
    result = runner.invoke(app, ["runs", str(two_runs)])
    assert result.exit_code == 0, result.output
    first, second = run_dirs(two_runs)
    out = result.stdout
    assert out.index(second.name) < out.index(first.name)  # the later run comes first
    assert "completed" in out and "2/2" in out and "1/1" in out
    params_24 = 64 * 24 + 24 + 24 * 10 + 10
    assert f"{params_24:,}" in out
    metrics = json.loads((second / "metrics.json").read_text())
    assert f"accuracy {metrics['test']['accuracy']:.4f}" in out


def test_running_run_with_dead_pid_is_crashed_and_damaged_run_is_skipped(two_runs, tmp_path):
    runs, (first, second) = copy_runs(two_runs, tmp_path)
    meta = json.loads((first / "meta.json").read_text())
    meta.update(status="running", pid=dead_pid(), ended=None)
    (first / "meta.json").write_text(json.dumps(meta))
    (second / "meta.json").write_text('{"status": "compl')  # truncated
    result = runner.invoke(app, ["runs", str(runs)])
    assert result.exit_code == 0, result.output
    assert "crashed" in result.stdout and "running" not in result.stdout
    assert second.name not in result.stdout
    assert result.stderr == f"Warning: skipped {second}: meta.json is damaged (not valid JSON)\n"


def test_show_prints_config_summary_metrics_and_files(two_runs):
    run = run_dirs(two_runs)[0]
    result = runner.invoke(app, ["show", str(run)])
    assert result.exit_code == 0, result.output
    assert "units: 8" in result.stdout
    assert "Total params: 610" in result.stdout  # 64*8+8 + 8*10+10
    assert '"best_epoch": 1' in result.stdout
    assert str(run / "checkpoints" / "best.keras") in result.stdout


def test_show_on_a_folder_that_is_not_a_run(tmp_path):
    result = runner.invoke(app, ["show", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr == f"Error: {tmp_path}: not a run folder (meta.json is missing)\n"


def test_evaluate_prints_scores_report_and_writes_files(two_runs, tmp_path):
    runs, (run, _) = copy_runs(two_runs, tmp_path)
    result = runner.invoke(app, ["evaluate", str(run)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Test loss: ") and lines[1].startswith("Test accuracy: ")
    assert "precision" in result.stdout and "recall" in result.stdout
    (written,) = (run / "evaluations").glob("*.json")
    record = json.loads(written.read_text())
    # The test split of digits is a fixed 20%: 360 of 1,797 samples.
    assert record["samples"] == 360
    assert sum(map(sum, record["confusion_matrix"])) == 360
    accuracy = np.trace(np.array(record["confusion_matrix"])) / 360
    assert record["scores"]["accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert lines[1] == f"Test accuracy: {accuracy:.4f}"
    metrics = json.loads((run / "metrics.json").read_text())
    assert record["scores"]["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-6)
    picture = written.with_name(f"{written.stem}-confusion_matrix.png")
    assert picture.read_bytes().startswith(b"\x89PNG")


def test_evaluate_on_other_data_as_json(two_runs, tmp_path):
    runs, (run, _) = copy_runs(two_runs, tmp_path)
    rng = np.random.default_rng(0)
    data = tmp_path / "other.npz"
    x = rng.integers(0, 17, size=(50, 64)).astype("float32")
    y = np.arange(50) % 10
    np.savez(data, x_train=x, y_train=y, x_test=x[:30], y_test=y[:30])
    args = ["evaluate", str(run), "--json", "--checkpoint", "last"]
    args += ["--set", "data.dataset=npz", "--set", f"data.path={data}"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["samples"] == 30 and record["checkpoint"] == "last"
    assert record["data"]["path"] == str(data)


def test_evaluate_without_checkpoint_exits_1(two_runs, tmp_path):
    runs, (run, _) = copy_runs(two_runs, tmp_path)
    (run / "checkpoints" / "best.keras").unlink()
    result = runner.invoke(app, ["evaluate", str(run)])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {run}: no checkpoints/best.keras;")


def test_evaluate_refuses_a_model_that_safe_mode_refuses(two_runs, tmp_path):
    runs, (run, _) = copy_runs(two_runs, tmp_path)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Lambda(lambda x: x * 2)])
    model.add(keras.layers.Dense(10, activation="softmax"))
    model.compile(loss="categorical_crossentropy", metrics=["accuracy"])
    model.save(run / "checkpoints" / "best.keras")
    result = runner.invoke(app, ["evaluate", str(run)])
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        f"Error: {run / 'checkpoints' / 'best.keras'}: refused by Keras safe_mode"
    )
    assert line.endswith("pass --unsafe-load only if you trust where this file came from")
    trusted = runner.invoke(app, ["evaluate", str(run), "--unsafe-load"])
    assert trusted.exit_code == 0, trusted.output


def test_compare_shows_only_the_keys_that_differ(two_runs):
    result = runner.invoke(app, ["compare", str(two_runs), "--format", "csv"])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(io.StringIO(result.stdout))
    config_columns = [c for c in frame.columns if "." in c]
    assert config_columns == ["model.layers.0.units", "training.epochs"]
    pairs = zip(frame["model.layers.0.units"], frame["training.epochs"], strict=True)
    assert sorted(pairs) == [(8, 1), (24, 2)]
    for column in ["run", "status", "epochs_done", "params", "best_val_loss", "test_accuracy"]:
        assert column in frame.columns
    every = runner.invoke(app, ["compare", str(two_runs), "--all", "--format", "csv"])
    assert "data.dataset" in every.stdout.splitlines()[0]


def test_compare_where_sort_and_formats(two_runs, tmp_path):
    where = ["--where", "training.epochs >= 2 and status == 'completed'"]
    result = runner.invoke(app, ["compare", str(two_runs), *where, "--format", "json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["run"] == run_dirs(two_runs)[1].name and row["epochs_done"] == 2
    assert "training.epochs" not in row  # one run shown: no key differs among the shown

    result = runner.invoke(
        app,
        [
            "compare",
            str(two_runs),
            "--sort",
            "model.layers.0.units",
            "--reverse",
            "--format",
            "markdown",
        ],
    )
    lines = result.stdout.splitlines()
    assert lines[0].startswith(
        "| run | status | best_val_loss | test_accuracy | test_loss | backend |"
    )
    assert "| layers.0.units | epochs | epochs_done |" in lines[0]
    assert lines[1].startswith("|---|")
    assert "| 24 | 2 | 2 |" in lines[2] and "| 8 | 1 | 1 |" in lines[3]

    table = runner.invoke(app, ["compare", str(two_runs), "--format", "table"])
    assert table.exit_code == 0 and "layers.0.units" in table.stdout

    plot = tmp_path / "curves.png"
    result = runner.invoke(app, ["compare", str(two_runs), "--plot", str(plot)])
    assert result.exit_code == 0 and plot.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--where", "epochz > 1"], "Error: --where: no column 'epochz'; columns are run, status"),
        (["--sort", "nope"], "Error: --sort: no column 'nope'; columns are"),
        (
            ["--format", "xml"],
            "Error: --format: expected one of table, csv, markdown, json, got 'xml'\n",
        ),
    ],
)
def test_compare_bad_options(two_runs, args, message):
    result = runner.invoke(app, ["compare", str(two_runs), *args])
    assert result.exit_code == 2
    assert result.stderr.startswith(message)
