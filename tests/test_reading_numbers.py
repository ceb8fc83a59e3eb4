"""Numbers and records read back from a run: other data scored with the run's own class
numbers, only the settings that apply to a run's data, a transfer run's base recorded so it
resumes from any folder (issue 22, items 3, 13 and 14)."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from conftest import run_dirs
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
    result = runner.invoke(app, ["evaluate", str(run), "--set", f"data.path={root / 'with_z.csv'}"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
    assert "label(s) z are not classes of the run" in lines[0] and "a, b, c" in lines[0]
    assert "Traceback" not in result.stderr
    after = sorted(evaluations.iterdir()) if evaluations.exists() else []
    assert after == before  # nothing written, no empty json


# --- item 13: settings that do not apply are neither recorded nor shown -----------------------

FOLDER_ONLY = ("image_size", "color_mode", "cache", "test_path")
# digits as images: the npz and digits runs of item 13, and the base of item 14's transfer run
BASE_SPEC = """\
name: base
data: {dataset: digits, scale: 16}
model:
  layers: [Flatten, {type: Dense, units: 16, activation: relu}, {type: Dense, units: 10}]
compile: {loss: {type: CategoricalCrossentropy, from_logits: true}}
training: {batch_size: 64, epochs: 1, validation_split: 0.2}
"""


@pytest.fixture(scope="module")
def digits_and_npz(tmp_path_factory):
    """Two tiny runs in ROOT/runs: digits, and an npz file of digits."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("sources")
    digits = load_digits()
    np.savez(root / "digits.npz", x_train=digits.data[:400], y_train=digits.target[:400])
    spec = root / "base.yaml"
    spec.write_text(BASE_SPEC)
    runs = root / "runs"
    for extra in ([], ["--set", "data.dataset=npz", "--set", f"data.path={root / 'digits.npz'}"]):
        result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(runs), *extra])
        assert result.exit_code == 0, result.output
    return runs


def hparam_names(run) -> set[str]:
    import tensorflow as tf
    from tensorboard.plugins.hparams import plugin_data_pb2

    names = set()
    for path in (run / "tensorboard").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "hparams":
                    data = plugin_data_pb2.HParamsPluginData.FromString(
                        value.metadata.plugin_data.content
                    )
                    names |= set(data.session_start_info.hparams)
    return names


def test_image_folder_settings_are_not_recorded_or_shown_for_other_sources(digits_and_npz):
    runs = digits_and_npz
    for run in run_dirs(runs):
        data = yaml.safe_load((run / "config.yaml").read_text())["data"]
        assert data["dataset"] in ("digits", "npz") and "scale" in data
        assert not set(FOLDER_ONLY + ("label_column", "categorical")) & set(data), data
        shown = runner.invoke(app, ["show", str(run)])
        assert shown.exit_code == 0, shown.output
        assert "scale: 16" in shown.output
        assert "image_size" not in shown.output and "color_mode" not in shown.output
        names = hparam_names(run)
        assert "data.scale" in names and "training.epochs" in names
        assert not {f"data.{key}" for key in FOLDER_ONLY} & names, names
    result = runner.invoke(app, ["compare", str(runs), "--all", "--format", "csv"])
    assert result.exit_code == 0, result.output
    header = result.stdout.splitlines()[0].split(",")
    assert "data.scale" in header and "data.image_size" not in header
    assert "data.color_mode" not in header


# --- item 14: a transfer run's base is recorded absolute, with its config digest ------------

TRANSFER_SPEC = """\
name: head
data: {dataset: digits, scale: 16}
model:
  base: {run: BASE, until: -2}
  layers:
    - {type: Dense, units: 10, activation: softmax}
training: {batch_size: 64, epochs: 1, validation_split: 0.2, tensorboard: null}
"""


def cli(*args):
    result = runner.invoke(app, list(map(str, args)))
    assert result.exit_code == 0, result.output
    return result


def test_a_transfer_run_resumes_and_evaluates_from_another_folder(
    digits_and_npz, tmp_path, monkeypatch
):
    runs = digits_and_npz
    (base,) = [
        run
        for run in run_dirs(runs)
        if yaml.safe_load((run / "config.yaml").read_text())["data"]["dataset"] == "digits"
    ]
    monkeypatch.chdir(runs.parent)  # the base named relative to this folder, as a user writes it
    (runs.parent / "head.yaml").write_text(TRANSFER_SPEC.replace("BASE", f"runs/{base.name}"))
    cli("train", "head.yaml", "--runs-dir", tmp_path / "heads")
    (head,) = run_dirs(tmp_path / "heads")
    recorded = yaml.safe_load((head / "config.yaml").read_text())["model"]["base"]["run"]
    assert recorded == str(base.resolve())
    meta = json.loads((head / "meta.json").read_text())
    base_meta = json.loads((base / "meta.json").read_text())
    assert meta["base"] == {"run": str(base.resolve()), "config_sha256": base_meta["config_sha256"]}
    monkeypatch.chdir(tmp_path)  # another folder: the relative base name means nothing here
    cli("train", "--resume", head, "--epochs", 2)
    assert json.loads((head / "meta.json").read_text())["epochs_done"] == 2
    evaluated = json.loads(cli("evaluate", head, "--json").stdout)
    assert evaluated["samples"] > 0
