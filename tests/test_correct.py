"""Correct answers off the lecture's path: binary, regression, odd labels, any metric.

Real runs on scikit-learn's bundled tables (breast cancer, wine, diabetes), written to csv
files once per session and trained for a few epochs each.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn import datasets
from typer.testing import CliRunner

from conftest import docs_text, run_dirs
from dlrun.cli import app

runner = CliRunner()


def _csv(folder: Path, name: str, x: np.ndarray, y, standardize: bool = True) -> Path:
    if standardize:  # these tests are about labels and metrics, not feature scaling
        x = (x - x.mean(axis=0)) / x.std(axis=0)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
    frame["label"] = y
    path = folder / f"{name}.csv"
    frame.to_csv(path, index=False)
    return path


def _spec(path: Path, data: dict, layers: list, compile_: dict, training: dict | None = None):
    spec = {
        "name": path.stem,
        "seed": 0,
        "data": {"scale": 1.0, **data},
        "model": {"layers": layers},
        "compile": compile_,
        "training": {"batch_size": 32, "epochs": 6, "validation_split": 0.2, **(training or {})},
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _train(spec: Path, runs: Path, *extra: str) -> Path:
    before = set(run_dirs(runs))
    result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(runs), *extra])
    assert result.exit_code == 0, result.output
    (made,) = set(run_dirs(runs)) - before
    return made


def _evaluate(run: Path, *extra: str) -> dict:
    result = runner.invoke(app, ["evaluate", str(run), "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.fixture(scope="session")
def tables(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tables")
    cancer = datasets.load_breast_cancer()
    _csv(folder, "cancer", cancer.data, np.where(cancer.target == 1, 1, -1))  # labels -1, 1
    wine = datasets.load_wine()
    _csv(folder, "wine123", wine.data, wine.target + 1)  # labels 1, 2, 3
    _csv(
        folder, "wine_names", wine.data, np.array(["barolo", "grignolino", "barbera"])[wine.target]
    )
    _csv(folder, "wine_raw", wine.data, wine.target, standardize=False)
    diabetes = datasets.load_diabetes()
    _csv(folder, "diabetes", diabetes.data, diabetes.target, standardize=False)
    return folder


WINE_LAYERS = [{"type": "Dense", "units": 16, "activation": "relu"}]
SOFTMAX3 = {"type": "Dense", "units": 3, "activation": "softmax"}


@pytest.fixture(scope="session")
def binary_run(tables, tmp_path_factory) -> Path:
    spec = _spec(
        tmp_path_factory.mktemp("specs") / "cancer.yaml",
        {"dataset": "csv", "path": str(tables / "cancer.csv"), "one_hot": False},
        [*WINE_LAYERS, {"type": "Dense", "units": 1, "activation": "sigmoid"}],
        {"optimizer": {"type": "adam", "learning_rate": 0.01}, "loss": "binary_crossentropy"}
        | {"metrics": ["accuracy"]},
    )
    return _train(spec, tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="session")
def f1_run(tables, tmp_path_factory) -> Path:
    """Wine with labels 1..3, checkpoint and early stopping on macro F1."""
    watch = {"monitor": "val_f1_score", "mode": "auto"}
    spec = _spec(
        tmp_path_factory.mktemp("specs") / "wine123.yaml",
        {"dataset": "csv", "path": str(tables / "wine123.csv")},
        [*WINE_LAYERS, SOFTMAX3],
        {"optimizer": {"type": "sgd", "learning_rate": 0.01}, "loss": "categorical_crossentropy"}
        | {"metrics": ["accuracy", {"type": "F1Score", "average": "macro"}]},
        {"checkpoint": watch, "early_stopping": {"monitor": "val_f1_score", "patience": 10}},
    )
    return _train(spec, tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="session")
def names_run(tables, tmp_path_factory) -> Path:
    spec = _spec(
        tmp_path_factory.mktemp("specs") / "wine_names.yaml",
        {"dataset": "csv", "path": str(tables / "wine_names.csv"), "one_hot": False},
        [*WINE_LAYERS, SOFTMAX3],
        {"loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]},
        {"epochs": 3},
    )
    return _train(spec, tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="session")
def regression_run(tables, tmp_path_factory) -> Path:
    spec = _spec(
        tmp_path_factory.mktemp("specs") / "diabetes.yaml",
        {"dataset": "csv", "path": str(tables / "diabetes.csv")},
        [{"type": "Dense", "units": 16, "activation": "relu"}, {"type": "Dense", "units": 1}],
        {"optimizer": {"type": "adam", "learning_rate": 0.05}, "loss": "mse"}
        | {"metrics": ["mae", "r2_score"]},
        {"checkpoint": {"monitor": "val_r2_score"}},
    )
    return _train(spec, tmp_path_factory.mktemp("runs"))


def _best_epoch(run: Path, column: str, highest: bool) -> int:
    history = pd.read_csv(run / "history.csv")
    index = history[column].idxmax() if highest else history[column].idxmin()
    return int(history.loc[index, "epoch"])


# --- 1, 2: which way is better, metrics with arguments ---------------------------------------


def test_directions_come_from_keras_for_every_metric_family():
    import keras

    from dlrun.model import metrics

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, activation="sigmoid")])
    names = [
        "accuracy", "auc", "precision", "recall", "r2_score", "mae", "mse", "hinge",
        "binary_crossentropy", "cosine_similarity",
    ]  # fmt: skip
    objects = [keras.metrics.F1Score(average="micro"), keras.metrics.BinaryIoU(name="iou")]
    model.compile(loss="binary_crossentropy", metrics=[*names, *objects])
    x, y = np.zeros((4, 3), "float32"), np.array([[0], [1], [0], [1]], "float32")
    model.fit(x, y, epochs=1, verbose=0)
    found = metrics.compiled(model)
    up = {"accuracy", "auc", "precision", "recall", "r2_score", "cosine_similarity", "f1_score"}
    up |= {"iou"}
    down = {"loss", "mae", "mse", "hinge", "binary_crossentropy"}
    assert {name for name in up | down if found.get(name) == "max"} == up
    assert {name for name in up | down if found.get(name) == "min"} == down
    assert found["val_f1_score"] == "max" and found["val_mae"] == "min"


def test_f1_monitored_run_keeps_its_best_epoch(f1_run):
    recorded = json.loads((f1_run / "metrics.json").read_text())
    assert recorded["directions"]["val_f1_score"] == "max"
    assert recorded["best_epoch"] == _best_epoch(f1_run, "val_f1_score", highest=True)
    history = pd.read_csv(f1_run / "history.csv")
    assert recorded["best_value"] == pytest.approx(history["val_f1_score"].max())
    assert "f1_score" in recorded["test"]


def test_a_metric_giving_one_value_per_class_is_refused_before_training(tables, tmp_path):
    spec = _spec(
        tmp_path / "vector.yaml",
        {"dataset": "csv", "path": str(tables / "wine123.csv")},
        [*WINE_LAYERS, SOFTMAX3],
        {"metrics": ["accuracy", {"type": "F1Score"}]},
    )
    for args in (["validate", str(spec)], ["train", str(spec), "--runs-dir", str(tmp_path / "r")]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert "compile.metrics.1" in result.output and "average" in result.output
        assert "Traceback" not in result.output
    assert run_dirs(tmp_path / "r") == []


# --- 3: binary --------------------------------------------------------------------------------


def test_binary_run_is_thresholded_and_its_report_agrees_with_its_accuracy(binary_run):
    result = _evaluate(binary_run)
    matrix = np.array(result["confusion_matrix"])
    assert matrix.shape == (2, 2)
    assert (matrix.sum(axis=0) > 0).all(), "both classes must be predicted"
    assert result["report"]["accuracy"] == pytest.approx(result["scores"]["accuracy"], abs=1e-6)
    assert result["classes"] == ["-1", "1"]  # the data's own labels, not indices
    assert result["scores"]["accuracy"] > 0.85


def test_one_sigmoid_unit_with_one_hot_labels_is_refused_before_a_folder_exists(tables, tmp_path):
    spec = _spec(
        tmp_path / "mismatch.yaml",
        {"dataset": "csv", "path": str(tables / "cancer.csv"), "one_hot": True},
        [*WINE_LAYERS, {"type": "Dense", "units": 1, "activation": "sigmoid"}],
        {"loss": "binary_crossentropy", "metrics": ["accuracy"]},
    )
    for args in (["validate", str(spec)], ["train", str(spec), "--runs-dir", str(tmp_path / "r")]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert "model.layers.1" in result.output and "one_hot: false" in result.output
    assert run_dirs(tmp_path / "r") == []


# --- 4: labels --------------------------------------------------------------------------------


def test_labels_1_to_3_are_three_classes_named_as_in_the_data(f1_run):
    meta = json.loads((f1_run / "meta.json").read_text())
    assert meta["class_names"] == ["1", "2", "3"]
    result = _evaluate(f1_run)
    assert result["classes"] == ["1", "2", "3"]
    assert np.array(result["confusion_matrix"]).shape == (3, 3)
    assert {"1", "2", "3"} <= set(result["report"])


def test_string_labels_keep_their_names(names_run):
    meta = json.loads((names_run / "meta.json").read_text())
    assert meta["class_names"] == ["barbera", "barolo", "grignolino"]
    result = runner.invoke(app, ["evaluate", str(names_run)])
    assert result.exit_code == 0, result.output
    for name in ("barbera", "barolo", "grignolino"):
        assert name in result.output


# --- 5: regression ----------------------------------------------------------------------------


def test_regression_run_trains_and_evaluates_as_regression(regression_run):
    recorded = json.loads((regression_run / "metrics.json").read_text())
    assert recorded["task"] == "regression"
    assert json.loads((regression_run / "meta.json").read_text())["class_names"] is None
    assert recorded["best_epoch"] == _best_epoch(regression_run, "val_r2_score", highest=True)
    result = _evaluate(regression_run)
    assert "confusion_matrix" not in result
    # scikit-learn's MAE of the predictions and Keras' own mae metric must agree.
    assert result["regression"]["mae"] == pytest.approx(result["scores"]["mae"], rel=1e-4)
    assert result["regression"]["r2"] == pytest.approx(result["scores"]["r2_score"], abs=1e-4)
    assert result["regression"]["rmse"] ** 2 == pytest.approx(result["scores"]["loss"], rel=1e-3)
    plots = list((regression_run / "evaluations").glob("*-predicted_vs_true.png"))
    assert plots and all(plot.stat().st_size > 1000 for plot in plots)
    printed = runner.invoke(app, ["evaluate", str(regression_run)])
    assert "RMSE" in printed.output and "R²" in printed.output


def test_regression_from_data_task_with_a_loss_dlrun_does_not_know(tables, tmp_path):
    spec = _spec(
        tmp_path / "task.yaml",
        {"dataset": "csv", "path": str(tables / "diabetes.csv"), "task": "regression"},
        [{"type": "Dense", "units": 1}],
        {"loss": "log_cosh", "metrics": ["mae"]},
        {"epochs": 1},
    )
    run = _train(spec, tmp_path / "runs")
    assert json.loads((run / "metrics.json").read_text())["task"] == "regression"


def test_continuous_targets_with_a_classification_loss_are_one_line(tables, tmp_path):
    spec = _spec(
        tmp_path / "wrong_loss.yaml",
        {"dataset": "csv", "path": str(tables / "diabetes.csv")},
        [{"type": "Dense", "units": 1}],
        {"metrics": ["accuracy"]},
    )
    result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    assert "data.task: regression" in line and "Traceback" not in result.output
    assert run_dirs(tmp_path / "runs") == []


# --- 6: preprocessing layers that must be adapted ---------------------------------------------


def test_normalization_is_adapted_on_the_training_split(tables, tmp_path):
    import keras

    spec = _spec(
        tmp_path / "norm.yaml",
        {"dataset": "csv", "path": str(tables / "wine_raw.csv")},
        [{"type": "Normalization"}, *WINE_LAYERS, SOFTMAX3],
        {"metrics": ["accuracy"]},
        {"epochs": 1},
    )
    run = _train(spec, tmp_path / "runs")
    assert "adapted on the training split" in (run / "summary.txt").read_text()
    model = keras.models.load_model(run / "checkpoints" / "last.keras")
    mean = keras.ops.convert_to_numpy(model.layers[0].mean).ravel()
    wine = datasets.load_wine().data
    # The training split is most of the data: its mean is near the whole set's, never 0.
    assert mean == pytest.approx(wine.mean(axis=0), rel=0.15)


# --- 9: resume bookkeeping --------------------------------------------------------------------


def test_a_completed_run_trains_on_from_its_recorded_epoch(trained):
    run = trained  # TINY_SPEC's two epochs, the module's own copy (conftest.trained)
    config = run / "config.yaml"
    # A smaller batch: the optimizer's step count no longer divides into epochs as before.
    config.write_text(config.read_text().replace("batch_size: 64", "batch_size: 16"))
    args = ["train", "--resume", str(run), "--epochs", "3", "--force"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    meta = json.loads((run / "meta.json").read_text())
    assert [a["from_epoch"] for a in meta["attempts"]] == [0, 2]
    assert meta["status"] == "completed" and meta["epochs_done"] == 3
    assert list(pd.read_csv(run / "history.csv")["epoch"]) == [1, 2, 3]
    assert yaml.safe_load(config.read_text())["training"]["epochs"] == 3
    again = runner.invoke(app, ["train", "--resume", str(run), "--epochs", "3"])
    assert again.exit_code == 1 and "not more than the 3 epochs done" in again.output


def test_early_stopping_replay_takes_the_best_weights_from_best_keras(f1_run):
    import keras

    from dlrun.store import read_history
    from dlrun.train.callbacks import EarlyStopping

    model = keras.models.load_model(f1_run / "checkpoints" / "last.keras")
    x, y = np.zeros((4, 13), "float32"), np.eye(3, dtype="float32")[[0, 1, 2, 0]]
    model.evaluate(x, y, verbose=0)  # builds the compile metrics, as fit's first step does
    model.set_weights([w + 1.0 for w in model.get_weights()])  # the weights at resume time
    best = keras.models.load_model(f1_run / "checkpoints" / "best.keras").get_weights()
    rows = read_history(f1_run)
    stopping = EarlyStopping(monitor="val_f1_score", patience=10, restore_best_weights=True)
    stopping.replay(rows, f1_run / "checkpoints" / "best.keras")
    stopping.set_model(model)
    stopping.on_train_begin()
    stopping.on_epoch_end(len(rows), {"val_f1_score": 0.0})  # no better than the best
    assert stopping.best == pytest.approx(max(row["val_f1_score"] for row in rows))
    assert len(stopping.best_weights) == len(best)
    for restored, saved in zip(stopping.best_weights, best, strict=True):
        np.testing.assert_array_equal(restored, saved)


# --- 10, 11: errors in one pass, evaluating on other data --------------------------------------

SIX_TYPOS = """\
data: {dataset: digits, scale: 16, flatten: true}
model:
  layers:
    - {type: Dence, units: 16}
    - {type: Dense, unit: 10, activation: softmax}
compile:
  optimizer: adamm
  metrics: [acuracy]
training:
  epochs: "3"
  validation_split: 2
"""


def test_schema_and_keras_problems_are_reported_in_one_pass(tmp_path):
    spec = tmp_path / "typos.yaml"
    spec.write_text(SIX_TYPOS)
    result = runner.invoke(app, ["validate", str(spec)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    expected = [
        "training.epochs:",
        "training.validation_split:",
        "model.layers.0.type: unknown layer 'Dence'",
        "model.layers.1.unit: Dense has no argument 'unit'; did you mean 'units'?",
        "compile.optimizer: unknown optimizer 'adamm'",
        "compile.metrics.0: unknown metric 'acuracy'; did you mean 'accuracy'?",
    ]
    for part in expected:
        assert sum(part in line for line in lines) == 1, (part, lines)
    assert len(lines) == 6 and all(line.startswith("Error: ") for line in lines)


def test_evaluating_on_data_of_another_shape_is_one_line(binary_run, tables):
    other = ["--set", f"data.path={tables / 'wine_raw.csv'}"]
    result = runner.invoke(app, ["evaluate", str(binary_run), *other])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith("Error: ") and "(30,)" in line and "(13,)" in line


# --- the README's sections on tabular data, binary classification and regression ----------------


@pytest.mark.parametrize("section", ["tabular", "binary", "regression"])
def test_readme_section_specs_validate(section, tables, tmp_path, monkeypatch):

    text = docs_text()
    block = text.split(f"<!-- {section} -->", 1)[1].split(f"<!-- /{section} -->", 1)[0]
    spec = block.split("```yaml\n", 1)[1].split("```", 1)[0]
    files = {"wine.csv": "wine_raw.csv", "cancer.csv": "cancer.csv"}
    files["diabetes.csv"] = "diabetes.csv"
    for name, source in files.items():
        (tmp_path / name).write_bytes((tables / source).read_bytes())
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.yaml").write_text(spec)
    result = runner.invoke(app, ["validate", "spec.yaml"])
    assert result.exit_code == 0, result.output
    assert "spec.yaml: valid" in result.output
