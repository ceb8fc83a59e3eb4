"""Issue 33, item 3: costs that grew for nothing, removed without changing what is recorded.

`dlrun evaluate` scores the test set from one pass (its scores equal Keras' evaluate()'s);
history.csv gets one appended row an epoch and a torn last line is dropped on read and on
resume; last.keras written from copies in the background holds what Keras' own save holds.
"""

import json
import os
import shutil

import keras
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import TINY_SPEC, run_dirs
from dlrun import api, store
from dlrun.cli import app

runner = CliRunner()


def spec_of(tmp_path, epochs: int, name: str = "tiny.yaml"):
    path = tmp_path / name
    path.write_text(TINY_SPEC.replace("epochs: 2", f"epochs: {epochs}") + "  deterministic: true\n")
    return path


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    """TINY_SPEC trained 3 and 5 epochs (the same seed): (3-epoch run, 5-epoch run, root)."""
    root = tmp_path_factory.mktemp("costs")
    runs = {}
    for epochs in (3, 5):
        spec = spec_of(root, epochs, f"tiny{epochs}.yaml")
        result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(root / f"r{epochs}")])
        assert result.exit_code == 0, result.output
        (runs[epochs],) = run_dirs(root / f"r{epochs}")
    return runs[3], runs[5], root


# --- evaluate: one pass ----------------------------------------------------------------------


def test_evaluate_scores_from_one_pass_equal_keras_evaluate(three, monkeypatch):
    run = three[0]
    model = keras.models.load_model(run / store.BEST)
    result = runner.invoke(app, ["evaluate", str(run), "--json", "--no-save"])
    assert result.exit_code == 0, result.output
    before = json.loads(result.stdout)["scores"]

    def second_pass(*args, **kwargs):
        raise AssertionError("evaluate() ran the model over the test set a second time")

    monkeypatch.setattr(keras.Model, "evaluate", second_pass)
    result = runner.invoke(app, ["evaluate", str(run), "--json", "--no-save"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)["scores"]
    monkeypatch.undo()
    # Keras' own evaluate() of the same checkpoint on the same test split
    from dlrun.data.arrays import load_data
    from dlrun.spec.loading import load_spec

    data = load_data(load_spec(run / store.CONFIG))
    keras_scores = model.evaluate(data.x_test, data.y_test, batch_size=64, return_dict=True)
    assert scores.keys() == keras_scores.keys() == before.keys()
    for name, value in keras_scores.items():
        assert scores[name] == pytest.approx(value, rel=1e-6, abs=1e-7), name
        assert scores[name] == pytest.approx(before[name], rel=1e-6, abs=1e-7), name


def test_one_pass_scores_count_the_weights_regularization_as_evaluate_does():
    from dlrun.report.evaluate import scored_outputs

    rng = np.random.default_rng(0)
    x, y = rng.random((203, 12), dtype=np.float32), rng.integers(0, 3, 203)
    dense = {"kernel_regularizer": keras.regularizers.L2(0.5)}
    model = keras.Sequential(
        [keras.Input((12,)), keras.layers.Dense(8, **dense), keras.layers.Dense(3, **dense)]
    )
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile("adam", loss, metrics=["accuracy"])
    expected = model.evaluate(x, y, batch_size=32, return_dict=True, verbose=0)
    outputs, scores = scored_outputs(model, {"x": x, "y": y, "batch_size": 32}, y, 32)
    assert outputs.shape == (203, 3)
    assert expected["loss"] > 1.0  # the regularization is most of it
    for name, value in expected.items():
        assert float(scores[name]) == pytest.approx(value, rel=1e-6), name


# --- history.csv: appended, a torn last line dropped ------------------------------------------


def test_history_csv_gets_the_epochs_row_appended_and_reads_as_written_whole(tmp_path):
    folder = store.RunFolder(tmp_path, os.open(tmp_path, os.O_RDONLY))
    with folder:
        rows = [{"epoch": 1, "loss": 0.5, "val_loss": 0.75}]
        folder.record_epoch(rows)
        inode = os.stat(tmp_path / store.HISTORY).st_ino
        rows.append({"epoch": 2, "loss": 0.25, "val_loss": 0.5})
        folder.record_epoch(rows)
        assert os.stat(tmp_path / store.HISTORY).st_ino == inode  # appended, not replaced
        assert (tmp_path / store.HISTORY).read_text() == store.history_text(rows)
        rows.append({"epoch": 3, "loss": 0.125, "val_loss": 0.25, "stage": 2})  # a new column
        folder.record_epoch(rows)
        assert (tmp_path / store.HISTORY).read_text() == store.history_text(rows)
        assert store.read_history(tmp_path) == rows


def test_a_torn_last_line_is_dropped_on_read_and_rewritten_on_the_next_record(tmp_path):
    rows = [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25}]
    whole = store.history_text(rows)
    (tmp_path / store.HISTORY).write_text(whole + "3,0.12")  # epoch 3's row cut short
    assert store.read_history(tmp_path) == rows
    (tmp_path / store.META).write_text(json.dumps({"status": "running"}))
    assert store.open_run(tmp_path).epochs_done() == 2
    folder = store.RunFolder(tmp_path, os.open(tmp_path, os.O_RDONLY))
    with folder:
        rows.append({"epoch": 3, "loss": 0.125})
        folder.record_epoch(rows)  # never appended after the torn line
        assert (tmp_path / store.HISTORY).read_text() == store.history_text(rows)


def test_a_run_killed_while_appending_a_row_resumes_to_the_uninterrupted_history(three, tmp_path):
    """Killed while epoch 4's row was half written, after epoch 3's checkpoint: the torn row
    is dropped and the resumed run's history.csv is the uninterrupted one's."""
    source, whole, _ = three
    run = tmp_path / source.name
    shutil.copytree(source, run)
    history = run / store.HISTORY
    history.write_text(history.read_text() + "4,0.81,1.0")
    meta = json.loads((run / store.META).read_text())
    meta.update(status="interrupted")
    (run / store.META).write_text(json.dumps(meta))
    result = runner.invoke(app, ["train", "--resume", str(run), "--epochs", "5"])
    assert result.exit_code == 0, result.output
    resumed, expected = pd.read_csv(history), pd.read_csv(whole / store.HISTORY)
    assert list(resumed["epoch"]) == [1, 2, 3, 4, 5]
    for column in ["loss", "accuracy", "val_loss", "val_accuracy"]:
        np.testing.assert_allclose(resumed[column], expected[column], atol=1e-6)


# --- last.keras from copies, in the background -------------------------------------------------


def test_last_keras_written_in_the_background_holds_what_keras_save_holds(tmp_path):
    reference = tmp_path / "reference.keras"

    class SaveAtTheEnd(keras.callbacks.Callback):
        def on_train_end(self, logs=None):  # after dlrun's records of the last epoch
            self.model.save(reference)

    outcome = api.train(
        spec_of(tmp_path, 3), runs_dir=tmp_path / "runs", verbose=False, callbacks=[SaveAtTheEnd()]
    )
    assert outcome.status == "completed"
    ours = keras.models.load_model(outcome.run_dir / store.LAST)
    theirs = keras.models.load_model(reference)
    assert ours.get_config() == theirs.get_config()
    for mine, expected in zip(ours.get_weights(), theirs.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, expected)
    pairs = zip(ours.optimizer.variables, theirs.optimizer.variables, strict=True)
    for mine, expected in pairs:
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(expected))
    meta = json.loads((outcome.run_dir / store.META).read_text())
    assert meta["epochs_done"] == 3
    assert int(np.asarray(ours.optimizer.iterations)) == meta["steps_done"]


def test_layout_copies_write_the_bytes_keras_writes(tmp_path):
    import zipfile

    from dlrun.train.checkpointing import Layout

    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4), keras.layers.Dense(2)])
    model.compile("adam", "mse")
    rng = np.random.default_rng(0)
    model.fit(rng.random((32, 6)), rng.random((32, 2)), epochs=1, verbose=0)
    layout = Layout.learn(model, tmp_path / "first.keras")
    assert layout is not None and layout.current(model)
    model.fit(rng.random((32, 6)), rng.random((32, 2)), epochs=1, verbose=0)  # new values
    layout.copy(model).write(tmp_path / "copied.keras")
    model.save(tmp_path / "saved.keras")
    with (
        zipfile.ZipFile(tmp_path / "copied.keras") as a,
        zipfile.ZipFile(tmp_path / "saved.keras") as b,
    ):
        assert a.namelist() == b.namelist()
        assert a.read("model.weights.h5") == b.read("model.weights.h5")
        assert a.read("config.json") == b.read("config.json")
