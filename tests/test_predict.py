"""`dlrun predict` on npz, csv, standard input and image folders, for a classifier, a binary
and a regression run; its scores equal `dlrun evaluate`'s on the same data."""

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from sklearn import datasets
from typer.testing import CliRunner

from conftest import run_dirs
from dlrun.cli import app
from dlrun.data.arrays import load_data
from dlrun.report import predict as predicting
from dlrun.spec.loading import load_spec

runner = CliRunner()


def train(folder: Path, text: str) -> Path:
    (folder / "spec.yaml").write_text(text)
    runs = folder / "runs"
    result = runner.invoke(app, ["train", str(folder / "spec.yaml"), "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    (run,) = run_dirs(runs)
    return run


def evaluate(run: Path) -> dict:
    result = runner.invoke(app, ["evaluate", str(run), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def predict(*args, input=None) -> "object":
    return runner.invoke(app, ["predict", *map(str, args)], input=input)


def split_of(run: Path):
    """The run's own test split, as load_data gives it (x preprocessed)."""
    return load_data(load_spec(run / "config.yaml"))


@pytest.fixture(scope="module")
def digits_run(trained) -> Path:
    """TINY_SPEC trained: the module's copy of the session's run (conftest.trained)."""
    return trained


@pytest.fixture(scope="module")
def digits_npz(digits_run, tmp_path_factory) -> Path:
    """The digits run's test split as a user would hand it over: raw pixels 0..16, labels."""
    data = split_of(digits_run)
    path = tmp_path_factory.mktemp("inputs") / "digits_test.npz"
    pixels = np.rint(data.x_test * 16).astype(np.uint8).reshape(-1, 8, 8)
    np.savez(path, x_test=pixels, y_test=np.argmax(data.y_test, axis=1))
    return path


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tables")
    cancer = datasets.load_breast_cancer()
    x = (cancer.data - cancer.data.mean(axis=0)) / cancer.data.std(axis=0)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
    frame["label"] = np.array(["malignant", "benign"])[cancer.target]
    frame.to_csv(folder / "cancer.csv", index=False)
    diabetes = datasets.load_diabetes()
    frame = pd.DataFrame(diabetes.data, columns=[f"d{i}" for i in range(10)])
    frame["target"] = diabetes.target
    frame.to_csv(folder / "diabetes.csv", index=False)
    return folder


def _spec(name: str, data: dict, last: dict, compile_: dict) -> str:
    spec = {
        "name": name,
        "seed": 0,
        "data": {"scale": 1.0, **data},
        "model": {"layers": [{"type": "Dense", "units": 16, "activation": "relu"}, last]},
        "compile": compile_,
        "training": {"batch_size": 32, "epochs": 4, "validation_split": 0.2},
    }
    return yaml.safe_dump(spec, sort_keys=False)


@pytest.fixture(scope="module")
def binary_run(tables, tmp_path_factory) -> Path:
    text = _spec(
        "cancer",
        {"dataset": "csv", "path": str(tables / "cancer.csv"), "one_hot": False},
        {"type": "Dense", "units": 1, "activation": "sigmoid"},
        {"loss": "binary_crossentropy", "metrics": ["accuracy"]},
    )
    return train(tmp_path_factory.mktemp("binary"), text)


@pytest.fixture(scope="module")
def regression_run(tables, tmp_path_factory) -> Path:
    text = _spec(
        "diabetes",
        {"dataset": "csv", "path": str(tables / "diabetes.csv"), "label_column": "target"},
        {"type": "Dense", "units": 1},
        {"optimizer": {"type": "adam", "learning_rate": 0.05}, "loss": "mse", "metrics": ["mae"]},
    )
    return train(tmp_path_factory.mktemp("regression"), text)


def csv_of(run: Path, path: Path, label: str) -> pd.DataFrame:
    """The test split of a csv run, rows as in the csv, written to `path`."""
    data = split_of(run)
    columns = json.loads((run / "meta.json").read_text())["feature_columns"]
    frame = pd.DataFrame(data.x_test, columns=columns)
    names = json.loads((run / "meta.json").read_text())["class_names"]
    frame[label] = np.ravel(data.y_test) if names is None else np.array(names)[data.y_test]
    frame.to_csv(path, index=False)
    return frame


# --- a classifier: npz, stdin, images ------------------------------------------------------------


def test_npz_scores_equal_evaluate_and_rows_name_classes(digits_run, digits_npz, tmp_path):
    out = tmp_path / "predictions.csv"
    result = predict(digits_run, digits_npz, "--score", "--top", "3", "--out", out)
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(out)
    assert len(rows) == 360 and list(rows.columns[:3]) == ["index", "class", "probability"]
    assert {"class_3", "probability_3", "label"} <= set(rows.columns)
    assert (rows["probability"] >= rows["probability_2"]).all()
    assert (rows["probability_2"] >= rows["probability_3"]).all()
    evaluated = evaluate(digits_run)
    accuracy = evaluated["scores"]["accuracy"]
    assert f"accuracy: {accuracy:.4f} (360 labelled inputs, best checkpoint)" in result.stderr
    assert np.mean(rows["class"] == rows["label"]) == pytest.approx(accuracy, abs=1e-6)
    # evaluate's own predictions, class by class: its confusion matrix
    matrix = np.zeros((10, 10), dtype=int)
    np.add.at(matrix, (rows["label"], rows["class"]), 1)
    assert matrix.tolist() == evaluated["confusion_matrix"]


def test_a_small_input_is_a_table_and_a_large_one_csv_on_stdout(digits_run, digits_npz, tmp_path):
    with np.load(digits_npz) as archive:
        np.savez(tmp_path / "few.npz", x=archive["x_test"][:3])
    result = predict(digits_run, tmp_path / "few.npz")
    assert result.exit_code == 0, result.output
    assert "┃ index ┃ class ┃ probability ┃" in result.stdout
    assert result.stdout.count("\n│ ") == 3
    result = predict(digits_run, digits_npz)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("index,class,probability\n")
    assert len(result.stdout.splitlines()) == 361
    assert "more than 100 rows: printed as csv" in result.stderr


def test_json_and_npz_outputs(digits_run, digits_npz, tmp_path):
    result = predict(digits_run, digits_npz, "--format", "json", "--top", "2")
    rows = json.loads(result.stdout)
    assert len(rows) == 360 and set(rows[0]) == {
        "index",
        "class",
        "probability",
        "class_2",
        "probability_2",
    }
    result = predict(digits_run, digits_npz, "--out", tmp_path / "p.npz")
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "p.npz") as archive:
        assert archive["outputs"].shape == (360, 10)
        assert archive["class"].tolist() == [r["class"] for r in rows]
        assert np.array_equal(archive["index"], np.arange(360))


def test_csv_on_stdin_gives_the_npz_predictions(digits_run, digits_npz):
    with np.load(digits_npz) as archive:
        pixels, labels = archive["x_test"].reshape(360, 64), archive["y_test"]
    frame = pd.DataFrame(pixels, columns=[f"p{i}" for i in range(64)])
    frame["label"] = labels
    from_stdin = predict(
        digits_run, "-", "--format", "csv", "--score", input=frame.to_csv(index=False)
    )
    assert from_stdin.exit_code == 0, from_stdin.output
    from_npz = predict(digits_run, digits_npz, "--format", "csv")
    stdin_rows = pd.read_csv(io.StringIO(from_stdin.stdout))
    npz_rows = pd.read_csv(io.StringIO(from_npz.stdout))
    assert stdin_rows["row"].tolist() == list(range(1, 361))  # data rows, from 1
    assert stdin_rows["class"].tolist() == npz_rows["class"].tolist()
    assert stdin_rows["probability"].tolist() == npz_rows["probability"].tolist()
    accuracy = evaluate(digits_run)["scores"]["accuracy"]
    assert f"accuracy: {accuracy:.4f}" in from_stdin.stderr


def test_an_image_folder_of_any_nesting_gives_the_npz_predictions(digits_run, digits_npz, tmp_path):
    """8x8 grayscale PNGs of the test split, in class folders with a nested one."""
    with np.load(digits_npz) as archive:
        pixels, labels = archive["x_test"], archive["y_test"]
    folder = tmp_path / "digits"
    for index, (image, label) in enumerate(zip(pixels, labels, strict=True)):
        place = folder / str(label) / ("deeper" if index % 3 == 0 else "")
        place.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, mode="L").save(place / f"{index:04d}.png")
    (folder / "notes.txt").write_text("not an image: ignored")
    out = tmp_path / "images.csv"
    result = predict(digits_run, folder, "--score", "--out", out)
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(out, dtype={"label": str, "class": str})
    assert len(rows) == 360
    index = rows["path"].map(lambda p: int(Path(p).stem))
    npz_rows = pd.read_csv(io.StringIO(predict(digits_run, digits_npz, "--format", "csv").stdout))
    assert rows["class"].tolist() == npz_rows["class"].astype(str)[index].tolist()
    assert rows["label"].tolist() == [str(labels[i]) for i in index]
    accuracy = evaluate(digits_run)["scores"]["accuracy"]
    assert f"accuracy: {accuracy:.4f} (360 labelled inputs" in result.stderr
    # single files too, without labels
    one = sorted(folder.rglob("*.png"))[:2]
    result = predict(digits_run, *one)
    assert result.exit_code == 0 and result.stdout.count("\n│ ") == 2


def test_progress_bar_on_a_terminal(digits_run, digits_npz):
    from rich.console import Console

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    sink = io.StringIO()
    result = predicting.predict(
        digits_run, [str(digits_npz)], fmt="csv", console=console, stdout=sink
    )
    assert result["count"] == 360
    assert "predict 360 inputs" in out.getvalue() and "360/360" in out.getvalue()


# --- binary and regression ---------------------------------------------------------------------


def test_binary_classes_are_named_and_thresholded_like_evaluate(binary_run, tmp_path):
    csv_of(binary_run, tmp_path / "test.csv", "label")
    out = tmp_path / "p.csv"
    result = predict(binary_run, tmp_path / "test.csv", "--score", "--top", "2", "--out", out)
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(out)
    assert set(rows["class"]) <= {"benign", "malignant"}
    assert np.allclose(rows["probability"] + rows["probability_2"], 1, atol=1e-6)
    assert (rows["probability"] >= 0.5).all()
    accuracy = evaluate(binary_run)["scores"]["accuracy"]
    assert f"accuracy: {accuracy:.4f}" in result.stderr
    assert np.mean(rows["class"] == rows["label"]) == pytest.approx(accuracy, abs=1e-6)


def test_regression_values_and_scores_equal_evaluate(regression_run, tmp_path):
    frame = csv_of(regression_run, tmp_path / "test.csv", "target")
    result = predict(regression_run, tmp_path / "test.csv", "--score", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(io.StringIO(result.stdout))
    assert list(rows.columns) == ["row", "value", "label"] and len(rows) == len(frame)
    report = evaluate(regression_run)["regression"]
    for name in ("mae", "rmse", "r2"):
        assert f"{name}: {report[name]:.4f}" in result.stderr
    result = predict(regression_run, tmp_path / "test.csv", "--top", "2")
    assert result.exit_code == 2
    assert "is a regression; it has values, not classes" in result.stderr


# --- columns, shapes and keys ------------------------------------------------------------------


def test_csv_columns_are_taken_by_name_and_extra_ones_noted(binary_run, tmp_path):
    frame = csv_of(binary_run, tmp_path / "test.csv", "label")
    frame.insert(0, "id", range(len(frame)))
    frame[list(frame.columns[::-1])].to_csv(tmp_path / "reordered.csv", index=False)
    same = predict(binary_run, tmp_path / "test.csv", "--format", "csv").stdout
    reordered = predict(binary_run, tmp_path / "reordered.csv", "--format", "csv")
    assert reordered.exit_code == 0, reordered.output
    assert reordered.stdout == same
    assert "Note: ignored column(s) the run was not trained on: id" in reordered.stderr
    frame.drop(columns=["f3"]).to_csv(tmp_path / "missing.csv", index=False)
    result = predict(binary_run, tmp_path / "missing.csv")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    assert "no column(s) f3; the run was trained on 30 columns" in result.stderr


def test_a_run_without_recorded_columns_takes_them_in_order(binary_run, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(binary_run, old)
    meta = json.loads((old / "meta.json").read_text())
    del meta["feature_columns"]
    (old / "meta.json").write_text(json.dumps(meta))
    csv_of(binary_run, tmp_path / "test.csv", "label")
    result = predict(old, tmp_path / "test.csv", "--format", "csv")
    assert result.exit_code == 0, result.output
    assert "the run does not record its csv columns (trained by an older dlrun)" in result.stderr
    frame = pd.read_csv(tmp_path / "test.csv")
    frame.drop(columns=["f0"]).to_csv(tmp_path / "short.csv", index=False)
    result = predict(old, tmp_path / "short.csv")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert (
        "the run takes inputs of shape (30,) (30 csv feature columns); got inputs of shape (29,)"
        in result.stderr
    )


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"pixels": np.zeros((2, 64))}, "no input key x or x_test; found pixels"),
        (
            {"x": np.zeros((2, 9, 9))},
            "the run takes inputs of shape (64,) (8x8 grayscale images, divided by 16); "
            "got inputs of shape (9, 9)",
        ),
    ],
)
def test_bad_npz_inputs_are_one_line(digits_run, tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    result = predict(digits_run, tmp_path / "bad.npz")
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and message in result.stderr


def test_other_bad_inputs_are_one_line(digits_run, binary_run, digits_npz, tmp_path):
    (tmp_path / "a.png").write_bytes(b"not a png")
    cases = [
        ((digits_run, digits_npz, "--top", "11"), "--top 11: tiny-"),
        ((digits_run, digits_npz, "--format", "npz"), "--format npz writes a binary file"),
        ((digits_run, tmp_path / "a.png"), "input: 1 file(s) are not readable"),
        ((digits_run, tmp_path / "nothing.npz"), "no such file or folder"),
        ((binary_run, tmp_path / "a.png"), "not images; give an .npz or .csv file"),
        ((digits_run, digits_npz, "--score", "-"), "cannot be mixed"),
    ]
    for args, message in cases:
        result = predict(*args)
        assert result.exit_code != 0, args
        assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
        assert message in result.stderr, (args, result.stderr)


def test_csv_text_columns_are_encoded_with_the_categories_the_run_recorded(tmp_path):
    rng = np.random.default_rng(0)
    colour = rng.choice(["red", "green", "blue"], 300)
    x1 = rng.normal(size=300)
    frame = pd.DataFrame({"x1": x1, "colour": colour, "x2": rng.normal(size=300)})
    frame["label"] = np.where((colour == "red") ^ (x1 > 0.3), "yes", "no")
    frame.to_csv(tmp_path / "cat.csv", index=False)
    text = _spec(
        "cat",
        {"dataset": "csv", "path": str(tmp_path / "cat.csv"), "categorical": ["colour"]},
        {"type": "Dense", "units": 2, "activation": "softmax"},
        {"loss": "categorical_crossentropy", "metrics": ["accuracy"]},
    )
    run = train(tmp_path, text)
    meta = json.loads((run / "meta.json").read_text())
    assert meta["feature_columns"] == ["x1", "colour", "x2"]
    data = load_data(load_spec(run / "config.yaml"), meta["data_encoding"])
    # the test split, as the user has it: rows of the csv, text and all
    test = frame.iloc[[frame.index[(np.isclose(frame.x1, row[0]))][0] for row in data.x_test]]
    test.to_csv(tmp_path / "test.csv", index=False)
    result = predict(run, tmp_path / "test.csv", "--score", "--format", "csv")
    assert result.exit_code == 0, result.output
    accuracy = evaluate(run)["scores"]["accuracy"]
    assert f"accuracy: {accuracy:.4f} ({len(test)} labelled inputs" in result.stderr
    odd = pd.DataFrame({"x1": [0.9], "colour": ["purple"], "x2": [0.1]})  # never seen: zeros
    odd.to_csv(tmp_path / "odd.csv", index=False)
    result = predict(run, tmp_path / "odd.csv")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("\n│ ") == 1
