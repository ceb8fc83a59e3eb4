"""Image folders (`data.dataset: directory`) and `data.classes` / `data.limit`.

The folders are PNG, JPEG, BMP and GIF files the tests write; each class has its own colour,
so a tiny CNN learns them in an epoch or two.
"""

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import run_dirs
from dlrun import api
from dlrun.cli import app
from dlrun.data.arrays import load_data
from dlrun.spec.loading import load_spec

runner = CliRunner()
CLASSES = ("cat", "dog", "owl")
FORMATS = ("png", "jpg", "bmp", "gif")


def write_folder(root: Path, classes=CLASSES, per_class=12, size=(12, 10)) -> Path:
    """per_class images of each class, in turn PNG, JPEG, BMP and GIF, of its own colour."""
    rng = np.random.default_rng(0)
    for number, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            pixels = rng.integers(0, 60, (*size, 3)).astype(np.uint8)
            pixels[..., number % 3] += 150
            Image.fromarray(pixels).save(folder / f"{index:03d}.{FORMATS[index % 4]}")
    return root


def folder_spec(tmp_path: Path, folder: Path, extra: str = "", classes: int = 3) -> Path:
    text = f"""\
name: folder
seed: 0
data:
  dataset: directory
  path: {folder}
  image_size: [8, 8]
  color_mode: rgb
  test_split: 0.25
model:
  layers:
    - {{type: Conv2D, filters: 4, kernel_size: 3, activation: relu}}
    - Flatten
    - {{type: Dense, units: {classes}, activation: softmax}}
training:
  batch_size: 8
  epochs: 2
  validation_split: 0.2
  tensorboard: null
{extra}"""
    path = tmp_path / "folder.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = write_folder(tmp_path_factory.mktemp("images") / "animals")
    (folder / "cat" / "notes.txt").write_text("not an image: ignored, as Keras does")
    return folder


@pytest.fixture(scope="module")
def folder_run(images, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("folder-run")
    spec = folder_spec(tmp, images, extra="  deterministic: true\n")
    result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(tmp / "runs")])
    assert result.exit_code == 0, result.output
    (run,) = run_dirs(tmp / "runs")
    return run


def test_a_folder_trains_and_its_class_names_are_kept_and_reported(folder_run):
    meta = json.loads((folder_run / "meta.json").read_text())
    assert meta["status"] == "completed"
    assert meta["class_names"] == ["cat", "dog", "owl"]
    result = runner.invoke(app, ["evaluate", str(folder_run)])
    assert result.exit_code == 0, result.output
    report = result.stdout.split("precision", 1)[1]
    rows = [line.split()[0] for line in report.splitlines()[2:5]]
    assert rows == ["cat", "dog", "owl"]
    assert "(9 samples, best checkpoint)" in result.stdout  # 25% of 36, 3 of each class
    (evaluation,) = (folder_run / "evaluations").glob("*.json")
    saved = json.loads(evaluation.read_text())
    assert set(saved["report"]) >= {"cat", "dog", "owl"}
    assert np.sum(saved["confusion_matrix"]) == 9


def test_splits_are_fixed_stratified_and_hold_file_paths(images, tmp_path):
    spec = load_spec(folder_spec(tmp_path, images))
    data = load_data(spec)
    again = load_data(load_spec(folder_spec(tmp_path, images), ["seed=7"]))
    assert list(data.x_test) == list(again.x_test)  # the seed does not move the test split
    assert len(data.x_test) == 9 and len(data.x_train) + len(data.x_val) == 27
    classes = [Path(path).parent.name for path in data.x_test]
    assert sorted(classes) == ["cat"] * 3 + ["dog"] * 3 + ["owl"] * 3
    assert all(str(path).startswith(str(images)) for path in data.x_train)
    assert not any(str(path).endswith(".txt") for path in [*data.x_train, *data.x_test])
    assert data.input_shape == (8, 8, 3) and data.num_classes == 3


@pytest.mark.parametrize("mode, channels", [("rgb", 3), ("grayscale", 1)])
def test_images_are_decoded_resized_and_scaled(images, tmp_path, mode, channels):
    spec = load_spec(folder_spec(tmp_path, images), [f"data.color_mode={mode}"])
    data = load_data(spec)
    batch, labels = next(iter(data.source.pipeline(data.x_test, data.y_test, 4)))
    assert batch.shape == (4, 8, 8, channels) and labels.shape == (4, 3)
    first = Image.open(data.x_test[0]).convert("RGB" if channels == 3 else "L")
    expected = np.asarray(first.resize((8, 8), Image.BILINEAR), np.float32) / 255
    # Bilinear resizing in TensorFlow and PIL differ a little at the edges; the mean agrees.
    assert abs(float(np.mean(batch[0])) - float(np.mean(expected))) < 0.02
    assert 0.0 <= float(np.min(batch)) and float(np.max(batch)) <= 1.0


@pytest.mark.parametrize("cache", ["memory", "disk"])
def test_a_cache_gives_the_same_images(images, tmp_path, cache):
    plain = load_data(load_spec(folder_spec(tmp_path, images)))
    cached = load_data(load_spec(folder_spec(tmp_path, images), [f"data.cache={cache}"]))
    for _ in range(2):  # the second pass reads the cache
        for (a, _), (b, _) in zip(
            plain.source.pipeline(plain.x_test, plain.y_test, 4),
            cached.source.pipeline(cached.x_test, cached.y_test, 4),
            strict=True,
        ):
            np.testing.assert_array_equal(a, b)
    epochs = cached.source.shuffled_epochs(cached.x_train, cached.y_train, 4, 0, 0, 2)
    assert sum(len(x) for x, _ in epochs) == 2 * len(cached.x_train)


@pytest.mark.parametrize("cache", ["memory", "disk"])
def test_a_cached_pipeline_does_not_grow_with_the_epochs(images, tmp_path, cache):
    """Many epochs cost nothing before epoch 1 (one concatenation per epoch took seconds), every
    epoch after the first reads the cache, and an epoch's order depends only on (seed, epoch)."""
    copy = shutil.copytree(images, tmp_path / "images")
    data = load_data(load_spec(folder_spec(tmp_path, copy), [f"data.cache={cache}"]))
    source, x, y = data.source, data.x_train, data.y_train

    def graph_size(epochs):
        return len(source.shuffled_epochs(x, y, 4, 0, 0, epochs)._as_serialized_graph().numpy())

    assert graph_size(500) < graph_size(2) + 64  # the range's end, a varint; nothing per epoch
    per_epoch = -(-len(x) // 4)
    resumed = iter(source.shuffled_epochs(x, y, 4, 7, 1, 3))  # a run resumed at epoch 2
    resumed_second = [next(resumed)[0].numpy() for _ in range(per_epoch)]
    batches = iter(source.shuffled_epochs(x, y, 4, 7, 0, 3))
    first = [next(batches)[0].numpy() for _ in range(per_epoch)]
    shutil.rmtree(copy)  # nothing left to decode: epochs 2 and 3 come from the cache
    second = [next(batches)[0].numpy() for _ in range(per_epoch)]
    assert sum(len(b) for b in second) == len(x)
    assert not all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    for a, b in zip(second, resumed_second, strict=True):
        np.testing.assert_array_equal(a, b)


class StopAfter(keras.callbacks.Callback):
    """Ctrl-C right after an epoch's checkpoints are written (dlrun's callbacks run first)."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            raise KeyboardInterrupt


def assert_same_run(run: Path, reference: Path) -> None:
    history, expected = pd.read_csv(run / "history.csv"), pd.read_csv(reference / "history.csv")
    assert list(history["epoch"]) == list(expected["epoch"])
    for column in ["loss", "accuracy", "val_loss", "val_accuracy"]:
        np.testing.assert_allclose(history[column], expected[column], atol=1e-6)
    mine = keras.models.load_model(run / "checkpoints" / "last.keras").get_weights()
    theirs = keras.models.load_model(reference / "checkpoints" / "last.keras").get_weights()
    for a, b in zip(mine, theirs, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("cache", ["none", "memory"])
def test_a_folder_run_resumes_exactly(images, tmp_path, cache):
    spec = folder_spec(tmp_path, images, extra="  deterministic: true\n")
    overrides = [f"data.cache={cache}", "training.epochs=3"]
    whole = api.train(load_spec(spec, overrides), runs_dir=tmp_path / "whole", verbose=False)
    stopped = api.train(
        load_spec(spec, overrides),
        runs_dir=tmp_path / "stopped",
        verbose=False,
        callbacks=(StopAfter(1),),
    )
    assert stopped.status == "interrupted"
    resumed = api.resume(stopped.run_dir, verbose=False)
    assert resumed.status == "completed"
    assert_same_run(stopped.run_dir, whole.run_dir)


def test_classes_and_limit_make_a_few_label_subset_of_any_data(tmp_path):
    spec = tmp_path / "digits.yaml"
    spec.write_text(
        "data: {dataset: digits, scale: 16, classes: [7, 3, 5], limit: 30}\n"
        "model: {layers: [Flatten, {type: Dense, units: 3, activation: softmax}]}\n"
        "training: {validation_split: 0, checkpoint: {monitor: loss}}\n"
    )
    data = load_data(load_spec(spec))
    assert data.num_classes == 3 and data.class_names == ["7", "3", "5"]
    assert np.bincount(np.argmax(data.y_train, axis=1)).tolist() == [10, 10, 10]
    # The test split keeps every test sample of the three classes.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    _, x_test, _, y_test = train_test_split(
        digits.data, digits.target, test_size=0.2, stratify=digits.target, random_state=0
    )
    kept = np.isin(y_test, [7, 3, 5])
    np.testing.assert_array_equal(data.x_test.reshape(len(data.x_test), -1), x_test[kept] / 16)
    relabelled = np.select([y_test[kept] == 7, y_test[kept] == 3], [0, 1], 2)
    np.testing.assert_array_equal(np.argmax(data.y_test, axis=1), relabelled)


def test_limit_on_a_folder_keeps_a_stratified_sample(images, tmp_path):
    overrides = ["data.limit=6", "training.validation_split=0", "training.checkpoint.monitor=loss"]
    spec = load_spec(folder_spec(tmp_path, images), overrides)
    data = load_data(spec)
    assert len(data.x_train) == 6
    assert sorted(Path(p).parent.name for p in data.x_train) == ["cat", "cat", "dog"] + [
        "dog",
        "owl",
        "owl",
    ]


# --- bad folders: one line, exit 2, nothing written -------------------------------------------


def one_line_error(tmp_path, spec: Path, *overrides: str) -> str:
    runs = tmp_path / "runs"
    args = [f"--set={value}" for value in overrides]
    result = runner.invoke(app, ["train", str(spec), *args, "--runs-dir", str(runs)])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert not runs.exists()
    return lines[0]


def test_a_corrupt_image_fails_naming_the_file(tmp_path):
    folder = write_folder(tmp_path / "imgs", per_class=4)
    (folder / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "owl" / "text.jpg").write_text("a text file with an image's name")
    line = one_line_error(tmp_path, folder_spec(tmp_path, folder))
    assert "2 file(s) are not readable jpg/png/bmp/gif images" in line
    assert str(folder / "dog" / "broken.png") in line and str(folder / "owl" / "text.jpg") in line


def test_a_folder_with_one_class_is_refused(tmp_path):
    folder = write_folder(tmp_path / "imgs", classes=("cat",), per_class=4)
    line = one_line_error(tmp_path, folder_spec(tmp_path, folder))
    assert "has 1 class folder(s) (cat); expected one subfolder of images per class" in line


def test_an_empty_class_folder_is_refused(tmp_path):
    folder = write_folder(tmp_path / "imgs", per_class=4)
    (folder / "yak").mkdir()
    (folder / "yak" / "readme.txt").write_text("no images here")
    line = one_line_error(tmp_path, folder_spec(tmp_path, folder))
    assert f"class folder {folder / 'yak'} holds no images" in line


def test_classes_absent_from_the_data_are_refused(images, tmp_path):
    line = one_line_error(tmp_path, folder_spec(tmp_path, images), "data.classes=[cat, zebra]")
    assert "data.classes: zebra is not in the data's labels; the data has cat, dog, owl" in line


def test_a_limit_below_the_class_count_is_refused(images, tmp_path):
    line = one_line_error(tmp_path, folder_spec(tmp_path, images), "data.limit=2")
    assert "data.limit: 2 samples cannot hold one of each of the 3 classes" in line


def test_a_missing_folder_is_refused(tmp_path):
    line = one_line_error(tmp_path, folder_spec(tmp_path, tmp_path / "nowhere"))
    assert f"data.path: no such folder: {tmp_path / 'nowhere'}" in line
