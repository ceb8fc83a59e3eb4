"""Transfer learning: `model.base`, the finetuning stage and `dlrun features`.

The base is mostly a tiny CNN with batch normalization, trained once on digits for the whole
module; one test builds a small MobileNetV2 from a weights file (never a download).
"""

import json
import re
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from test_images import StopAfter, assert_same_run, folder_spec, one_line_error, write_folder
from typer.testing import CliRunner

from conftest import PRETRAIN, pretrained_copy, run_dirs  # noqa: F401 (test_outputs_meet)
from dlrun import api
from dlrun.cli import app
from dlrun.data.arrays import load_data
from dlrun.spec.loading import load_spec

runner = CliRunner()


def transfer_spec(tmp_path: Path, base: str, extra: str = "", head: str = "") -> Path:
    """Digits 0, 1 and 2 on a base; the head is one Dense layer unless given."""
    head = head or "    - {type: Dense, units: 3, activation: softmax, name: head}\n"
    path = tmp_path / "transfer.yaml"
    path.write_text(
        "name: transfer\n"
        "data: {dataset: digits, scale: 16, classes: [0, 1, 2]}\n"
        f"model:\n  base: {base}\n  layers:\n{head}"
        "training:\n  epochs: 1\n  batch_size: 32\n  deterministic: true\n" + extra
    )
    return path


@pytest.fixture(scope="module")
def pretrained(pretrained_template, tmp_path_factory) -> Path:
    """A completed run of a CNN with batch normalization on digits (conftest.PRETRAIN): this
    module's copy of the one trained per process."""
    return pretrained_copy(pretrained_template, tmp_path_factory)


class Snapshots(keras.callbacks.Callback):
    """Every weight of the model at the start and after each epoch, by variable path."""

    def __init__(self):
        super().__init__()
        self.taken: list[dict] = []

    def take(self) -> None:
        self.taken.append(
            {w.path: keras.ops.convert_to_numpy(w).copy() for w in self.model.weights}
        )

    def on_train_begin(self, logs=None):
        if not self.taken:
            self.take()

    def on_epoch_end(self, epoch, logs=None):
        self.take()


FINETUNE = """\
  finetune: {epochs: 1, unfreeze: all, learning_rate: 0.01}
"""


@pytest.fixture(scope="module")
def finetuned(pretrained, tmp_path_factory):
    """One epoch of the head, then one of finetuning, with every weight recorded."""
    tmp = tmp_path_factory.mktemp("finetuned")
    spec = transfer_spec(tmp, f"{{run: {pretrained}, until: flatten}}", FINETUNE)
    snapshots = Snapshots()
    outcome = api.train(spec, runs_dir=tmp / "runs", verbose=False, callbacks=(snapshots,))
    assert outcome.status == "completed", outcome.message
    return outcome.run_dir, snapshots.taken


def changed(before: dict, after: dict) -> set[str]:
    return {path for path in before if not np.array_equal(before[path], after[path])}


def test_stage_one_trains_only_the_head_and_finetuning_trains_the_base(finetuned):
    _, (start, head_done, finetuned_) = finetuned
    head = {"head/kernel", "head/bias"}
    assert changed(start, head_done) == head  # nothing of the base moved, statistics included
    # Batch normalization stays frozen, so in inference mode: its statistics never move.
    assert changed(head_done, finetuned_) == {"conv/kernel", "conv/bias", *head}


def test_the_base_starts_from_the_pretrained_run(pretrained, finetuned):
    _, (start, _, _) = finetuned
    source = keras.models.load_model(pretrained / "checkpoints" / "best.keras")
    for weight in source.weights:
        if not weight.path.startswith("out/"):
            np.testing.assert_array_equal(start[weight.path], keras.ops.convert_to_numpy(weight))


def test_both_stages_share_one_history_and_report_their_test_scores(finetuned):
    run, _ = finetuned
    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == [1, 2] and list(history["stage"]) == [1, 2]
    np.testing.assert_allclose(history["learning_rate"], [0.001, 0.01])
    metrics = json.loads((run / "metrics.json").read_text())
    stages = metrics["stages"]
    assert [s["name"] for s in stages] == ["head", "finetune"]
    assert [s["epochs_done"] for s in stages] == [1, 2]
    assert set(stages[0]["test"]) == {"loss", "accuracy"}
    assert metrics["test"] == stages[1]["test"]
    meta = json.loads((run / "meta.json").read_text())
    assert meta["epochs_planned"] == 2 and meta["finetune_from"] == 1
    assert meta["class_names"] == ["0", "1", "2"]
    # conv 3*3*4 + 4 = 40, batch norm 4 + 4 weights + 4 + 4 statistics, head 144*3 + 3 = 435
    summary = (run / "summary.txt").read_text()
    assert "stage 1 (head): trainable 435, non-trainable 56\n" in summary
    assert "stage 2 (finetune): trainable 475, non-trainable 16\n" in summary


def test_both_stages_write_one_tensorboard_log_with_epochs_numbered_on(finetuned):
    import tensorflow as tf

    run, _ = finetuned
    steps = []
    for path in sorted((run / "tensorboard" / "train").glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            if any(value.tag == "epoch_loss" for value in event.summary.value):
                steps.append(event.step)
    assert sorted(steps) == [0, 1]
    assert sorted(p.name for p in (run / "tensorboard").iterdir() if p.is_dir()) == [
        "train",
        "validation",
    ]


TWO_STAGES = """\
  finetune: {epochs: 2, unfreeze: 3, learning_rate: 0.001}
"""


@pytest.fixture(scope="module")
def two_stage_reference(pretrained, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("reference")
    spec = transfer_spec(tmp, f"{{run: {pretrained}, until: -2}}", TWO_STAGES)
    outcome = api.train(load_spec(spec, ["training.epochs=2"]), runs_dir=tmp, verbose=False)
    assert outcome.status == "completed"
    return outcome.run_dir


@pytest.mark.parametrize("stop_after", [1, 3], ids=["in-stage-1", "in-stage-2"])
def test_resume_continues_inside_either_stage(
    pretrained, two_stage_reference, tmp_path, stop_after
):
    spec = transfer_spec(tmp_path, f"{{run: {pretrained}, until: -2}}", TWO_STAGES)
    stopped = api.train(
        load_spec(spec, ["training.epochs=2"]),
        runs_dir=tmp_path / "runs",
        verbose=False,
        callbacks=(StopAfter(stop_after),),
    )
    assert stopped.status == "interrupted"
    assert api.resume(stopped.run_dir, verbose=False).status == "completed"
    assert_same_run(stopped.run_dir, two_stage_reference)
    history = pd.read_csv(stopped.run_dir / "history.csv")
    assert list(history["stage"]) == [1, 1, 2, 2]
    stages = json.loads((stopped.run_dir / "metrics.json").read_text())["stages"]
    assert [s["epochs_done"] for s in stages] == [2, 4]


def test_features_equal_a_direct_call_of_the_truncated_model(pretrained, tmp_path):
    out = tmp_path / "features.npz"
    result = runner.invoke(
        app,
        ["features", str(pretrained), "--layer", "flatten", "--out", str(out)]
        + ["--classifier", "logistic"],
    )
    assert result.exit_code == 0, result.output
    accuracy = float(result.stdout.split("LogisticRegression test accuracy: ")[1].split()[0])
    assert 0.5 < accuracy <= 1.0
    saved = np.load(out)
    model = keras.models.load_model(pretrained / "checkpoints" / "best.keras")
    cut = keras.Model(model.inputs[0], model.layers[2].output)
    data = load_data(load_spec(pretrained / "config.yaml"))
    np.testing.assert_allclose(saved["x_test"], cut(data.x_test).numpy(), atol=1e-5)
    x_train = np.concatenate([data.x_train, data.x_val])
    np.testing.assert_allclose(saved["x_train"], cut(x_train).numpy(), atol=1e-5)
    assert saved["x_train"].shape == (len(x_train), 144)
    np.testing.assert_array_equal(saved["y_test"], np.argmax(data.y_test, axis=1))
    assert list(saved["class_names"]) == [str(n) for n in range(10)]
    few = tmp_path / "few.npz"
    result = runner.invoke(
        app,
        ["features", str(pretrained), "--layer", "flatten", "--out", str(few)]
        + ["--set", "data.classes=[3, 5]", "--set", "data.limit=10"],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("10 train and 74 test samples, features 144\n")
    assert list(np.load(few)["class_names"]) == ["3", "5"]
    refused = runner.invoke(
        app, ["features", str(pretrained), "--layer", "0", "--out", str(few), "--set", "seed=1"]
    )
    assert refused.exit_code == 2
    assert refused.stderr == "Error: --set seed=1: features takes data.KEY=VALUE overrides only\n"
    by_index = tmp_path / "by-index.npz"
    result = runner.invoke(
        app, ["features", str(pretrained), "--layer", "-2", "--out", str(by_index)]
    )
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(np.load(by_index)["x_test"], saved["x_test"])


def test_features_of_a_transfer_run_are_its_frozen_base_outputs(finetuned, tmp_path):
    run, _ = finetuned
    out = tmp_path / "base.npz"
    result = runner.invoke(app, ["features", str(run), "--layer", "base", "--out", str(out)])
    assert result.exit_code == 0, result.output
    model = keras.models.load_model(run / "checkpoints" / "best.keras")
    data = load_data(load_spec(run / "config.yaml"))
    direct = model.get_layer("base")(data.x_test, training=False)  # digits need no adapter
    np.testing.assert_allclose(np.load(out)["x_test"], np.asarray(direct), atol=1e-5)
    assert list(np.load(out)["class_names"]) == ["0", "1", "2"]


@pytest.fixture(scope="module")
def mobilenet_weights(tmp_path_factory) -> Path:
    """Weights of a small MobileNetV2 built with weights=None: what `weights: PATH` loads."""
    keras.utils.set_random_seed(1)
    model = keras.applications.MobileNetV2(
        alpha=0.35, include_top=False, weights=None, input_shape=(32, 32, 3)
    )
    path = tmp_path_factory.mktemp("weights") / "mobilenet.weights.h5"
    model.save_weights(path)
    return path


def test_an_application_gets_adapters_its_weights_and_its_preprocessing(
    mobilenet_weights, tmp_path
):
    folder = write_folder(tmp_path / "imgs", per_class=4)
    spec = folder_spec(tmp_path, folder)
    base = f"{{application: MobileNetV2, weights: {mobilenet_weights}, options: {{alpha: 0.35}}}}"
    text = spec.read_text().replace("model:\n", f"model:\n  base: {base}\n")
    text = text.replace("    - {type: Conv2D, filters: 4, kernel_size: 3, activation: relu}\n", "")
    text = text.replace("    - Flatten\n", "    - GlobalAveragePooling2D\n")
    spec.write_text(text.replace("color_mode: rgb", "color_mode: grayscale"))
    result = runner.invoke(app, ["validate", str(spec)])
    assert result.exit_code == 0, result.output
    names = re.findall(r"^│ ([a-z]\S*) ", result.stdout, flags=re.MULTILINE)
    assert names[:5] == ["image", "resize_to_32x32", "gray_to_rgb", "preprocess_input", "base"]
    assert "(Resizing)" in result.stdout and "(Concatenate)" in result.stdout

    from dlrun.train.prepared import prepare

    model = prepare(load_spec(spec)).model
    expected = keras.applications.MobileNetV2(
        alpha=0.35, include_top=False, weights=None, input_shape=(32, 32, 3)
    )
    expected.load_weights(mobilenet_weights)
    for mine, theirs in zip(model.get_layer("base").weights, expected.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(mine), theirs.numpy())
    pixels = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype("float32")
    preprocessed = model.get_layer("preprocess_input")(pixels)
    reference = keras.applications.mobilenet_v2.preprocess_input(pixels * 255)
    np.testing.assert_allclose(preprocessed, reference, atol=1e-5)
    assert all(not w.trainable for w in model.get_layer("base").weights)


def test_imagenet_weights_offline_name_the_file_keras_expects(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    folder = write_folder(tmp_path / "imgs", per_class=4)
    spec = folder_spec(tmp_path, folder)
    base = "{application: MobileNetV2, weights: imagenet, options: {alpha: 0.35}}"
    text = spec.read_text().replace("model:\n", f"model:\n  base: {base}\n")
    spec.write_text(text.replace("    - Flatten\n", ""))
    line = one_line_error(tmp_path, spec)
    assert "imagenet weights for MobileNetV2 are not cached and could not be downloaded" in line
    expected = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
    assert f"put {expected} in {tmp_path / 'keras'}/models/" in line
    assert "or set weights: PATH to a weights file" in line


# --- bad input: one line, exit 2, nothing written ---------------------------------------------


def unfinished(pretrained: Path, tmp_path: Path, status: str) -> Path:
    import shutil

    copy = tmp_path / "copy" / pretrained.name
    shutil.copytree(pretrained, copy)
    meta = json.loads((copy / "meta.json").read_text())
    meta.update(status=status, epochs_done=0, epochs_planned=3)
    (copy / "meta.json").write_text(json.dumps(meta))
    return copy


BAD = {
    "unknown-application": (
        "{application: MobileNetV9, weights: null}",
        "",
        "model.base.application: unknown application 'MobileNetV9'; expected a "
        "keras.applications model; did you mean 'MobileNetV2'?",
    ),
    "unknown-head-layer": (
        "{run: RUN, until: flatten}",
        "    - {type: Dens, units: 3}\n",
        "model.layers.0.type: unknown layer 'Dens'; expected a keras.layers class; "
        "did you mean 'Dense'?",
    ),
    # a path in a spec is relative to the spec's folder (TMP: the test's), named whole
    "no-such-run": ("{run: NOWHERE}", "", "model.base.run: TMP/NOWHERE: no such run folder"),
    "until-names-no-layer": (
        "{run: RUN, until: flaten}",
        "",
        "model.base.until: the base model RUN has no layer 'flaten'; did you mean 'flatten'? "
        "Its layers (all): conv, norm, flatten, out",
    ),
    "until-index-out-of-range": (
        "{run: RUN, until: 9}",
        "",
        "model.base.until: the base model RUN has 4 layers (0 to 3, or negative from the end); "
        "got 9",
    ),
    "head-does-not-fit": (
        "{run: RUN, until: norm}",
        "",
        "model.layers.0: the head ends in shape (None, 6, 6, 3); a classifier ends in "
        "(None, classes): put {type: GlobalAveragePooling2D} or Flatten before the Dense layers",
    ),
    "head-cannot-take-the-output": (
        "{run: RUN, until: flatten}",
        "    - {type: Conv2D, filters: 2, kernel_size: 3}\n",
        "model.layers.0: Conv2D cannot take the base's output (None, 144)",
    ),
    "finetune-without-base": (
        None,
        "",
        "training.finetune: finetune needs a model.base to unfreeze; add one or remove finetune",
    ),
    "finetune-a-trainable-base": (
        "{run: RUN, until: flatten, trainable: true}",
        "",
        "training.finetune: finetune needs model.base.trainable: false",
    ),
    "unfreeze-weightless-layers": (
        "{run: RUN, until: flatten}",
        "",
        "training.finetune.unfreeze: the top 1 layers of the base have no weights to train",
    ),
    "two-sources": (
        "{run: RUN, file: model.keras}",
        "",
        "model.base: give exactly one of application, run or file; found run, file",
    ),
    "weights-for-a-run": (
        "{run: RUN, weights: null}",
        "",
        "weights is only used with application",
    ),
    "missing-weights-file": (
        "{application: MobileNetV2, weights: nothing.h5, options: {alpha: 0.35}}",
        "",
        "model.base.weights: no such file: TMP/nothing.h5 ('nothing.h5' is relative to the "
        "folder of TMP/transfer.yaml)",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_transfer_input_gives_one_line(pretrained, tmp_path, case):
    base, head, expected = BAD[case]
    extra = FINETUNE if "finetune" in case else ""
    if case == "unfreeze-weightless-layers":
        extra = "  finetune: {epochs: 1, unfreeze: 1}\n"
    spec = transfer_spec(tmp_path, (base or "null").replace("RUN", str(pretrained)), extra, head)
    if base is None:
        spec.write_text(spec.read_text().replace("  base: null\n", ""))
    line = one_line_error(tmp_path, spec)
    assert expected.replace("RUN", str(pretrained)).replace("TMP", str(tmp_path)) in line


def test_a_base_run_without_its_checkpoint_is_refused(pretrained, tmp_path):
    copy = unfinished(pretrained, tmp_path, "completed")
    (copy / "checkpoints" / "last.keras").unlink()
    spec = transfer_spec(tmp_path, f"{{run: {copy}, checkpoint: last, until: flatten}}")
    line = one_line_error(tmp_path, spec)
    assert f"model.base.checkpoint: {copy} has no checkpoints/last.keras" in line


def test_an_unfinished_base_run_is_refused(pretrained, tmp_path):
    copy = unfinished(pretrained, tmp_path, "interrupted")
    spec = transfer_spec(tmp_path, f"{{run: {copy}, until: flatten}}", FINETUNE)
    line = one_line_error(tmp_path, spec)
    assert f"model.base.run: {copy} is interrupted (0 of 3 epochs); finish it first" in line


def test_an_input_the_base_cannot_take_is_refused(pretrained, tmp_path):
    spec = transfer_spec(tmp_path, f"{{run: {pretrained}, until: flatten}}")
    line = one_line_error(tmp_path, spec, "data.flatten=true")
    assert "model.base: a base takes images (height, width, channels); the data gives " in line
    assert "shape (64,); set data.flatten: false" in line


def test_colour_images_into_a_grayscale_base_are_refused(pretrained, tmp_path):
    folder = write_folder(tmp_path / "imgs", per_class=4)
    spec = folder_spec(tmp_path, folder)
    text = spec.read_text().replace("model:\n", f"model:\n  base: {{run: {pretrained}}}\n")
    text = text.replace("    - {type: Conv2D, filters: 4, kernel_size: 3, activation: relu}\n", "")
    spec.write_text(text.replace("    - Flatten\n", ""))
    line = one_line_error(tmp_path, spec)
    assert (
        f"model.base: the base model {pretrained} takes 1 channel(s) but the data has 3; " in line
    )
    assert "set data.color_mode to grayscale or use another base" in line


def test_a_base_file_is_a_base_too(pretrained, tmp_path):
    spec = transfer_spec(
        tmp_path, f"{{file: {pretrained / 'checkpoints' / 'best.keras'}, until: -2}}"
    )
    outcome = api.train(spec, runs_dir=tmp_path / "runs", verbose=False)
    assert outcome.status == "completed"
    assert run_dirs(tmp_path / "runs") == [outcome.run_dir]
