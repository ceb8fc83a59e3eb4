"""Image folders laid out as train/, val/ (or validation/) and test/, `data.test_path`, and
`dlrun evaluate --set data.path=OTHER`, which scores all of the other folder.

The folders are small PNG files the tests write; each class has its own colour, so a tiny
CNN tells them apart in an epoch or two.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import docs_text, run_dirs
from dlrun.cli import app
from dlrun.data.arrays import load_data
from dlrun.spec.loading import load_spec

runner = CliRunner()
CLASSES = ("cat", "dog")
# Images per class in each split folder of the laid-out data set.
COUNTS = {"train": 10, "val": 4, "test": 3}


def write_classes(root: Path, per_class: int, classes=CLASSES, seed: int = 0) -> Path:
    """per_class 8x8 PNG images of each class, in its own colour."""
    rng = np.random.default_rng(seed)
    for number, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            pixels = rng.integers(0, 60, (8, 8, 3)).astype(np.uint8)
            pixels[..., number % 3] += 150
            Image.fromarray(pixels).save(folder / f"{index:03d}.png")
    return root


def write_splits(root: Path, val: str = "val") -> Path:
    for seed, (split, count) in enumerate(COUNTS.items()):
        write_classes(root / (val if split == "val" else split), count, seed=seed)
    return root


def spec_file(tmp_path: Path, folder: Path, data: str = "", training: str = "") -> Path:
    path = tmp_path / "split.yaml"
    path.write_text(
        f"""\
name: splits
data:
  dataset: directory
  path: {folder}
  image_size: [8, 8]
{data}model:
  layers:
    - {{type: Conv2D, filters: 4, kernel_size: 3, activation: relu}}
    - Flatten
    - {{type: Dense, units: 2, activation: softmax}}
training:
  batch_size: 8
  epochs: 1
  tensorboard: null
{training}"""
    )
    return path


def readme_spec(section: str, path: Path) -> Path:
    """The README's yaml block between <!-- section --> and <!-- /section -->, as a file."""
    text = docs_text()
    block = text.split(f"<!-- {section} -->", 1)[1].split(f"<!-- /{section} -->", 1)[0]
    path.write_text(block.split("```yaml\n", 1)[1].split("```", 1)[0])
    return path


def train(spec: Path, runs: Path, *overrides: str) -> Path:
    """`dlrun train SPEC --set ...`; the one run folder it made."""
    args = [f"--set={value}" for value in overrides]
    result = runner.invoke(app, ["train", str(spec), *args, "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    (run,) = run_dirs(runs)
    return run


def train_readme(section: str, folder: Path, tmp: Path) -> Path:
    """The README's spec on `folder`, one tiny epoch; the run folder."""
    spec = readme_spec(section, tmp / f"{section}.yaml")
    quick = [f"data.path={folder}", "training.epochs=1", "training.batch_size=8"]
    return train(spec, tmp / "runs", *quick, "training.tensorboard=null")


def one_line_error(tmp_path: Path, spec: Path, *overrides: str) -> str:
    runs = tmp_path / "runs"
    args = [f"--set={value}" for value in overrides]
    result = runner.invoke(app, ["train", str(spec), *args, "--runs-dir", str(runs)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert not runs.exists()
    return lines[0]


@pytest.fixture(scope="module")
def laid_out(tmp_path_factory) -> Path:
    return write_splits(tmp_path_factory.mktemp("splits") / "pets")


@pytest.fixture(scope="module")
def split_run(laid_out, tmp_path_factory) -> Path:
    """The README's spec on the train/ val/ test/ folders, validation_split left unset."""
    return train_readme("image-splits", laid_out, tmp_path_factory.mktemp("split-run"))


@pytest.fixture(scope="module")
def flat_run(tmp_path_factory) -> Path:
    """One epoch on a folder of class folders, as dlrun has always read them."""
    tmp = tmp_path_factory.mktemp("flat-run")
    folder = write_classes(tmp / "pets", per_class=12)
    return train(spec_file(tmp, folder, data="  test_split: 0.25\n"), tmp / "runs")


def folder_of(paths) -> list[str]:
    """'split/class' of each file path, sorted."""
    return sorted(f"{Path(p).parent.parent.name}/{Path(p).parent.name}" for p in paths)


@pytest.mark.parametrize("val", ["val", "validation"])
def test_split_folders_are_the_splits_not_classes(tmp_path, val):
    folder = write_splits(tmp_path / "pets", val=val)
    data = load_data(load_spec(spec_file(tmp_path, folder)))
    assert data.class_names == ["cat", "dog"]
    assert folder_of(data.x_train) == ["train/cat"] * 10 + ["train/dog"] * 10
    assert folder_of(data.x_val) == [f"{val}/cat"] * 4 + [f"{val}/dog"] * 4
    assert folder_of(data.x_test) == ["test/cat"] * 3 + ["test/dog"] * 3
    for x, y in [(data.x_train, data.y_train), (data.x_val, data.y_val)]:
        named = [data.class_names[i] for i in np.argmax(y, axis=1)]
        assert named == [Path(p).parent.name for p in x]
    # The training images are shuffled once, by the fixed split seed, as a split would be.
    assert folder_of(data.x_train) != [folder_of([p])[0] for p in data.x_train]


def test_a_run_on_split_folders_validates_on_val_and_tests_on_test(split_run):
    meta = json.loads((split_run / "meta.json").read_text())
    assert meta["status"] == "completed"
    assert meta["class_names"] == ["cat", "dog"]
    assert meta["validation"] == "own"  # val/, not a share of train/
    config = (split_run / "config.yaml").read_text()
    assert "validation_split: 0.0" in config  # resolved: the run describes itself
    history = pd.read_csv(split_run / "history.csv")
    assert "val_loss" in history.columns and history["val_loss"].notna().all()
    result = runner.invoke(app, ["evaluate", str(split_run), "--json"])
    assert result.exit_code == 0, result.output
    scored = json.loads(result.stdout)
    assert scored["samples"] == 2 * COUNTS["test"] and scored["scored"] == "the test split"
    assert np.sum(scored["confusion_matrix"]) == 2 * COUNTS["test"]


def test_evaluate_on_another_folder_scores_all_of_it(flat_run, tmp_path):
    other = write_classes(tmp_path / "other", per_class=40, seed=5)
    args = ["evaluate", str(flat_run), f"--set=data.path={other}"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"(80 samples (every image in {other}), best checkpoint)" in result.stdout
    (evaluation,) = (flat_run / "evaluations").glob(f"*-{other.name}.json")
    saved = json.loads(evaluation.read_text())
    assert saved["samples"] == 80
    assert np.array(saved["confusion_matrix"]).sum(axis=1).tolist() == [40, 40]
    own = runner.invoke(app, ["evaluate", str(flat_run)])  # its own folder: the test split
    assert own.exit_code == 0, own.output
    assert "(6 samples, best checkpoint)" in own.stdout  # 25% of 24


def test_another_folder_of_some_classes_is_labelled_in_the_runs_order(flat_run, tmp_path):
    other = write_classes(tmp_path / "dogs", per_class=5, classes=("dog",))
    result = runner.invoke(app, ["evaluate", str(flat_run), f"--set=data.path={other}", "--json"])
    assert result.exit_code == 0, result.output
    scored = json.loads(result.stdout)
    assert scored["samples"] == 5 and scored["classes"] == ["cat", "dog"]
    assert np.array(scored["confusion_matrix"]).sum(axis=1).tolist() == [0, 5]


def test_another_laid_out_folder_is_scored_on_its_test_folder(flat_run, tmp_path):
    other = write_splits(tmp_path / "more")
    result = runner.invoke(app, ["evaluate", str(flat_run), f"--set=data.path={other}", "--json"])
    assert result.exit_code == 0, result.output
    scored = json.loads(result.stdout)
    assert scored["samples"] == 2 * COUNTS["test"]
    assert scored["scored"] == f"every image in {other / 'test'}"


def test_a_class_the_run_never_saw_is_refused(flat_run, tmp_path):
    other = write_classes(tmp_path / "zoo", per_class=2, classes=("cat", "yak"))
    result = runner.invoke(app, ["evaluate", str(flat_run), f"--set=data.path={other}"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert f"{other} has class folder(s) yak that the training data has not" in lines[0]
    assert not (flat_run / "evaluations").exists() or not list(
        (flat_run / "evaluations").glob("*-zoo*")
    )


def test_test_path_is_the_test_split_and_training_keeps_every_image(tmp_path):
    train = write_classes(tmp_path / "train-here", per_class=10)
    test = write_classes(tmp_path / "test-there", per_class=3, seed=1)
    spec = spec_file(tmp_path, train, data=f"  test_path: {test}\n  test_split: 0.5\n")
    data = load_data(load_spec(spec))
    assert sorted(map(str, data.x_test)) == sorted(str(p) for p in test.rglob("*.png"))
    assert len(data.x_train) + len(data.x_val) == 20  # no test_split share is taken
    assert not set(map(str, data.x_test)) & set(map(str, [*data.x_train, *data.x_val]))


def test_validation_split_beside_a_val_folder_is_one_line(laid_out, tmp_path):
    spec = spec_file(tmp_path, laid_out, training="  validation_split: 0.2\n")
    line = one_line_error(tmp_path, spec)
    assert "training.validation_split: 0.2 asks for a share of the training images" in line
    assert f"{laid_out / 'val'} is validation data of its own" in line
    checked = runner.invoke(app, ["validate", str(spec)])  # found by listing, reading nothing
    assert checked.exit_code == 2 and checked.stderr.strip() == line
    # 0 is the same as leaving it out.
    data = load_data(load_spec(spec, ["training.validation_split=0"]))
    assert len(data.x_val) == 2 * COUNTS["val"]


def test_split_folders_beside_class_folders_are_named(tmp_path):
    folder = write_classes(tmp_path / "mixed", per_class=2, classes=("cat", "dog", "test"))
    line = one_line_error(tmp_path, spec_file(tmp_path, folder))
    assert f"{folder} mixes split folders (test) with class folders (cat, dog)" in line


def test_val_and_validation_together_are_refused(tmp_path):
    folder = write_splits(tmp_path / "both")
    write_classes(folder / "validation", per_class=2)
    line = one_line_error(tmp_path, spec_file(tmp_path, folder))
    assert f"{folder} has both val/ and validation/; keep one of them" in line


def test_a_val_class_training_lacks_is_refused(tmp_path):
    folder = write_splits(tmp_path / "pets")
    write_classes(folder / "val", per_class=2, classes=("yak",))
    line = one_line_error(tmp_path, spec_file(tmp_path, folder))
    assert f"{folder / 'val'} has class folder(s) yak that the training data has not" in line


def test_no_validation_data_for_a_validation_monitor_is_one_line(tmp_path):
    folder = write_classes(tmp_path / "flat", per_class=4)
    spec = spec_file(tmp_path, folder, training="  validation_split: 0\n")
    line = one_line_error(tmp_path, spec)
    assert "training.checkpoint.monitor: 'val_loss' needs validation data, and the run " in line
    assert "give validation data, or monitor 'loss'" in line


def test_evaluate_with_a_test_path_scores_all_of_it(flat_run, tmp_path):
    other = write_classes(tmp_path / "held-out", per_class=7, seed=3)
    args = ["evaluate", str(flat_run), f"--set=data.test_path={other}", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    scored = json.loads(result.stdout)
    assert scored["samples"] == 14 and scored["scored"] == f"every image in {other}"
    assert scored["data"]["test_path"] == str(other)
