"""Numbers and records read back from a run: other data scored with the run's own class
numbers, only the settings that apply to a run's data, a transfer run's base recorded so it
resumes from any folder (issue 22, items 3, 13 and 14)."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from conftest import DLRUN_ENV, TINY_SPEC, run_dirs
from dlrun.cli import app

runner = CliRunner()

WINE_SPEC = """\
name: wine
seed: 0
data: {dataset: csv, path: WINE, scale: 1, one_hot: false}  # the silent case: no shape check
model:
  layers:
    - Normalization
    - {type: Dense, units: 16, activation: relu}
    - {type: Dense, units: 3, activation: softmax}
compile: {optimizer: {type: adam, learning_rate: 0.03}, loss: sparse_categorical_crossentropy}
training: {batch_size: 32, epochs: 12, validation_split: 0.2, tensorboard: null}
"""


@pytest.fixture(scope="module")
def wine(tmp_path_factory):
    """A wine csv whose classes are named a, b, c, the same without class a and with an
    unknown class z, and one run trained on the whole file."""
    from sklearn.datasets import load_wine

    root = tmp_path_factory.mktemp("wine")
    frame = load_wine(as_frame=True).frame.rename(columns={"target": "label"})
    frame["label"] = frame["label"].map({0: "a", 1: "b", 2: "c"})
    frame.to_csv(root / "wine.csv", index=False)
    frame[frame.label != "a"].to_csv(root / "no_a.csv", index=False)
    unknown = frame.copy()
    unknown.loc[unknown.index[:6], "label"] = "z"
    unknown.to_csv(root / "with_z.csv", index=False)
    spec = root / "wine.yaml"
    spec.write_text(WINE_SPEC.replace("WINE", str(root / "wine.csv")))
    result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(root / "runs")])
    assert result.exit_code == 0, result.output
    (run,) = run_dirs(root / "runs")
    return root, run


def evaluate_json(run, *args) -> dict:
    result = runner.invoke(app, ["evaluate", str(run), "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_other_data_without_a_class_keeps_the_run_class_numbers(wine):
    root, run = wine
    own = evaluate_json(run)
    assert own["scores"]["accuracy"] >= 0.9  # the model is good on its own test split
    other = evaluate_json(run, "--set", f"data.path={root / 'no_a.csv'}")
    assert other["classes"] == ["a", "b", "c"]  # as recorded in meta.json, not refitted
    assert json.loads((run / "meta.json").read_text())["class_names"] == ["a", "b", "c"]
    report = other["report"]
    assert report["a"]["support"] == 0
    assert report["b"]["support"] + report["c"]["support"] == other["samples"]
    # Keras' accuracy and the confusion matrix agree only when the labels mean the same
    # classes as the model's outputs; a refitted encoder scored b as a and c as b (0.0).
    matrix = np.array(other["confusion_matrix"])
    assert other["scores"]["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    assert other["scores"]["accuracy"] >= 0.8


def test_features_on_other_data_keep_the_run_class_numbers(wine, tmp_path):
    root, run = wine
    out = tmp_path / "features.npz"
    args = ["features", str(run), "--layer", "1", "--out", str(out)]
    result = runner.invoke(app, [*args, "--set", f"data.path={root / 'no_a.csv'}"])
    assert result.exit_code == 0, result.output
    with np.load(out) as saved:
        assert list(saved["class_names"]) == ["a", "b", "c"]
        labels = np.concatenate([saved["y_train"], saved["y_test"]])
    expected = pd.read_csv(root / "no_a.csv")["label"].map({"b": 1, "c": 2})
    assert sorted(np.unique(labels)) == [1, 2]
    assert np.bincount(labels, minlength=3).tolist() == np.bincount(expected, minlength=3).tolist()


def test_a_label_the_run_never_saw_is_one_error_line(wine):
    root, run = wine
    evaluations = run / "evaluations"
    before = sorted(evaluations.iterdir()) if evaluations.exists() else []
    result = subprocess.run(
        [sys.executable, "-m", "dlrun", "evaluate", str(run)]
        + ["--set", f"data.path={root / 'with_z.csv'}"],
        capture_output=True,
        text=True,
        env=DLRUN_ENV,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
    assert "z" in lines[0] and "a, b, c" in lines[0]
    assert "Traceback" not in result.stderr
    after = sorted(evaluations.iterdir()) if evaluations.exists() else []
    assert after == before  # nothing written, no empty json
