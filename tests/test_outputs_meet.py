"""Where the new features meet (issue 29): several outputs with blocks, callbacks, other data,
finetuning with schedules, keras.io's shapes, pruning with folds, the per-epoch seeds. Every
number is checked against plain Keras, scikit-learn or a recomputation from history.csv."""

import json
import re
import textwrap

import keras
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import docs_text, run_dirs
from dlrun import store
from dlrun.cli import app

runner = CliRunner()

# --- several outputs: one spec from the docs, one whose output is a block ----------------------

# The odd head is a block: its layers get Keras' own names (dense_1, ...), and the output is
# logged under the name model.outputs gives it.
BLOCK_HEAD = """\
name: block-head
seed: 0
data: {{dataset: npz, path: {path}, scale: 16, one_hot: false}}
model:
  blocks:
    head:
      params: {{units: 1}}
      layers:
        - {{type: Dense, units: 8, activation: relu}}
        - {{type: Dense, units: $units, activation: sigmoid}}
  layers:
    - Flatten
    - {{type: Dense, units: 16, activation: relu, name: h}}
    - {{type: Dense, units: 10, activation: softmax, name: digit}}
    - {{block: head, inputs: h, name: odd}}
  outputs: [digit, odd]
compile:
  loss: {{digit: sparse_categorical_crossentropy, odd: binary_crossentropy}}
  metrics: {{digit: [accuracy], odd: [accuracy]}}
training:
  epochs: {epochs}
  batch_size: 32
  deterministic: true
  tensorboard: null
  checkpoint: {{monitor: val_odd_accuracy}}
"""


def docs_several_outputs() -> list[str]:
    """Every yaml block of the docs whose model has several outputs (model.outputs a list)."""
    blocks = re.findall(r"```yaml\n(.*?)```", docs_text(), re.S)
    found = []
    for block in blocks:
        text = textwrap.dedent(block)
        if re.search(r"^\s*outputs: \[[^\]]*,", text, re.M) and "model:" in text:
            found.append(text)
    return found


def as_spec(block: str, path, epochs: int) -> str:
    """A docs block made a whole spec on the digits npz (its own data:, if any, replaced)."""
    import yaml

    spec = yaml.safe_load(block)
    spec.update(name="docs-outputs", seed=0)
    spec["data"] = {"dataset": "npz", "path": str(path), "scale": 16, "one_hot": False}
    training = spec.setdefault("training", {})
    training.update(epochs=epochs, batch_size=32, deterministic=True, tensorboard=None)
    return yaml.safe_dump(spec, sort_keys=False)


def digits_npz(path, drop: int | None = None):
    """digits as uint8 images with two targets, the digit and whether it is odd; `drop`: a
    digit left out of the file (other data that lacks one class)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = digits.images.astype(np.uint8), digits.target
    if drop is not None:
        x, y = x[y != drop][-300:], y[y != drop][-300:]
    else:
        x, y = x[:500], y[:500]
    cut = len(x) * 4 // 5
    np.savez(
        path,
        x_train=x[:cut],
        y_train_digit=y[:cut],
        y_train_odd=y[:cut] % 2,
        x_test=x[cut:],
        y_test_digit=y[cut:],
        y_test_odd=y[cut:] % 2,
    )
    return path


EPOCHS = 4


DOCS_BLOCKS = docs_several_outputs()
assert DOCS_BLOCKS, "docs/graphs.md shows a model of several outputs"
# No shipped config has several outputs: every spec of the docs that does, and one whose
# output is a block.
SEVERAL = ["block-head", *(f"docs{index}" for index in range(len(DOCS_BLOCKS)))]


@pytest.fixture(scope="module", params=SEVERAL)
def resumed(request, tmp_path_factory):
    """Each several-output spec trained whole, and again killed once its first epoch is
    recorded and resumed
    (tests/test_graphs.py's resumes_exactly): (the resumed run, its spec text, other data)."""
    from test_graphs import resumes_exactly

    root = tmp_path_factory.mktemp(request.param)
    path = digits_npz(root / "digits.npz")
    if request.param.startswith("docs"):
        text = as_spec(DOCS_BLOCKS[int(request.param[4:])], path, EPOCHS)
    else:
        text = BLOCK_HEAD.format(path=path, epochs=EPOCHS)
    run = resumes_exactly(root, text, EPOCHS)
    return run, text, digits_npz(root / "other.npz", drop=3)


def keras_scores(model, path) -> tuple[dict, dict]:
    """Plain Keras on an npz's test split: evaluate()'s scores, and each output's predicted
    classes beside the true ones."""
    with np.load(path) as archive:
        x = archive["x_test"][..., None].astype("float32") / 16
        y = {out: archive[f"y_test_{out}"] for out in ("digit", "odd")}
    scores = model.evaluate(x, y, verbose=0, return_dict=True)
    outputs = model.predict(x, verbose=0)
    predicted = {"digit": outputs["digit"].argmax(-1), "odd": (outputs["odd"][:, 0] > 0.5) * 1}
    return scores, {out: (y[out], predicted[out]) for out in y}


def test_several_outputs_train_resume_evaluate_other_data_and_compare(resumed):
    """Issue 29's done-when: best epoch and every score recomputed from history.csv and the
    checkpoints, by plain Keras and scikit-learn; on other data lacking a digit, every
    output keeps the classes it was trained with (items 1 and 2)."""
    from sklearn.metrics import accuracy_score

    run, text, other = resumed
    metrics = json.loads((run / store.METRICS).read_text())
    history = pd.read_csv(run / store.HISTORY)
    monitor = metrics["monitor"]
    # Keras' own metric objects say accuracy goes up, a loss down.
    up = monitor.endswith("accuracy")
    assert metrics["directions"][monitor] == ("max" if up else "min")
    values = history[monitor].to_numpy()
    best = int(values.argmax() if up else values.argmin()) + 1  # the first best
    assert metrics["best_epoch"] == best
    assert metrics["best_value"] == pytest.approx(values[best - 1])

    if "block-head" in text:  # the odd head reads h, as its block's inputs: says
        image = keras.Input((8, 8, 1))
        h = keras.layers.Dense(16, activation="relu")(keras.layers.Flatten()(image))
        odd = keras.layers.Dense(1)(keras.layers.Dense(8)(h))
        plain = keras.Model(image, [keras.layers.Dense(10)(h), odd])
        assert metrics["params"] == plain.count_params() == 1355
    model = keras.models.load_model(run / store.BEST)
    scores, _ = keras_scores(model, run.parent.parent / "digits.npz")
    for name, value in metrics["test"].items():
        assert value == pytest.approx(scores[name], abs=1e-5), name

    result = runner.invoke(
        app, ["evaluate", str(run), "--set", f"data.path={other}", "--json", "--no-save"]
    )
    assert result.exit_code == 0, result.output
    evaluation = json.loads(result.stdout)
    scores, classes = keras_scores(model, other)
    for name, value in evaluation["scores"].items():
        assert value == pytest.approx(scores[name], abs=1e-5), name
    assert evaluation["outputs"]["digit"]["classes"] == [str(d) for d in range(10)]
    for output, (truth, predicted) in classes.items():
        report = evaluation["outputs"][output]["report"]
        assert report["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
    record = store.open_run(run).data_record()
    assert record["class_names"] == {"digit": [str(d) for d in range(10)], "odd": ["0", "1"]}

    result = runner.invoke(app, ["compare", str(run), "--format", "json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert (row["best_epoch"], row[f"best_{monitor}"]) == (best, pytest.approx(values[best - 1]))
    for name, value in metrics["test"].items():
        assert row[f"test_{name}"] == pytest.approx(value)


# --- item 3: mode auto on one output's metric ---------------------------------------------------


def test_callbacks_on_mode_auto_watch_one_outputs_metric(tmp_path):
    """EarlyStopping and ReduceLROnPlateau left on mode auto, watching one output's metric of
    several: Keras finds no direction for val_odd_accuracy and failed the run after epoch 1;
    they get dlrun's (accuracy: up), and stop where a replay of history.csv says."""
    from test_graphs import train

    path = digits_npz(tmp_path / "digits.npz")
    extra = (
        "  early_stopping: {monitor: val_odd_accuracy, patience: 1, restore_best_weights: "
        "false}\n"
        "  callbacks: [{type: ReduceLROnPlateau, monitor: val_digit_accuracy, patience: 1, "
        "factor: 0.5, min_delta: 0}]\n"
    )
    run = train(tmp_path, BLOCK_HEAD.format(path=path, epochs=8) + extra)
    history = pd.read_csv(run / store.HISTORY)
    odd, digit = (history[f"val_{out}_accuracy"].to_numpy() for out in ("odd", "digit"))
    # Patience 1, maximised: the run stops at the first epoch that does not beat the best.
    stop = next((i for i in range(1, 8) if odd[i] <= odd[:i].max()), None)
    assert len(history) == (stop + 1 if stop is not None else 8)
    # ReduceLROnPlateau, maximised: the rate halves at an epoch that beats nothing (and the
    # epoch's row records the halved rate: the spec's callbacks run before dlrun records).
    rate = 0.001
    for i in range(len(history)):
        if i and digit[i] <= digit[:i].max():
            rate /= 2
        assert history["learning_rate"][i] == pytest.approx(rate)
    assert json.loads((run / store.META).read_text())["status"] == "completed"


# --- item 4: finetuning after a learning-rate schedule ------------------------------------------


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """tests/test_transfer.py's PRETRAIN trained once: the base this module's heads are put
    on (they only read it)."""
    from test_transfer import PRETRAIN

    from dlrun import api

    folder = tmp_path_factory.mktemp("base")
    (folder / "pretrain.yaml").write_text(PRETRAIN)
    outcome = api.train(folder / "pretrain.yaml", runs_dir=folder / "base", verbose=False)
    assert outcome.status == "completed", outcome.message
    return outcome.run_dir


def test_finetuning_after_a_schedule_trains_stage_two_at_its_rate_and_resumes(tmp_path, base):
    """Stage 1 on an ExponentialDecay schedule, stage 2 at finetune.learning_rate: it failed at
    stage 2 (a plain rate set on a schedule); each row's rate is Keras' schedule's, and a run
    stopped in stage 2 resumes to the same weights."""
    from test_images import StopAfter, assert_same_run
    from test_transfer import transfer_spec

    from dlrun import api
    from dlrun.spec.loading import load_spec

    schedule = (
        "{type: ExponentialDecay, initial_learning_rate: 0.01, decay_steps: 3, decay_rate: 0.5}"
    )
    spec = transfer_spec(
        tmp_path,
        f"{{run: {base}, until: flatten}}",
        "  finetune: {epochs: 2, unfreeze: all, learning_rate: 0.002}\n",
    )
    optimizer = f"compile:\n  optimizer: {{type: adam, learning_rate: {schedule}}}\n"
    spec.write_text(spec.read_text().replace("training:", optimizer + "training:"))
    overrides = ["training.epochs=2"]
    whole = api.train(load_spec(spec, overrides), runs_dir=tmp_path / "whole", verbose=False)
    assert whole.status == "completed", whole.message
    history = pd.read_csv(whole.run_dir / store.HISTORY)
    assert list(history["stage"]) == [1, 1, 2, 2]
    steps = json.loads((whole.run_dir / store.META).read_text())["steps_per_epoch"]
    decay = keras.optimizers.schedules.ExponentialDecay(0.01, 3, 0.5)
    for epoch in (1, 2):  # the rate at the step the epoch ended on
        expected = float(decay(epoch * steps))
        assert history["learning_rate"][epoch - 1] == pytest.approx(expected, rel=1e-5)
    assert list(history["learning_rate"][2:]) == pytest.approx([0.002, 0.002])
    stopped = api.train(
        load_spec(spec, overrides),
        runs_dir=tmp_path / "stopped",
        verbose=False,
        callbacks=(StopAfter(3),),
    )
    assert stopped.status == "interrupted"
    assert api.resume(stopped.run_dir, verbose=False).status == "completed"
    assert_same_run(stopped.run_dir, whole.run_dir)


# --- items 7 and 8: pruning with folds, fewer workers than fits ---------------------------------

FOLDS_ONE_WORKER = """\
base: tiny.yaml
name: folds
tpe:
  n_iter: 4
  seed: 3
  space:
    compile.optimizer.learning_rate: {loguniform: [1.0e-5, 0.1]}
prune: {method: asha, min_epochs: 1, reduction_factor: 3}
cv: 3
workers: 1
refit: false
"""


def test_pruning_with_folds_on_one_worker_judges_the_mean_over_every_fold(tmp_path):
    """One worker, three folds: each setting is judged at each epoch on the mean over all
    three folds, the quantity cv_results scores it on (the pruner saw the first fold alone);
    a pruned setting's splits are its folds' scores at the epoch it was pruned at, their mean
    the mean_test_score as scikit-learn's cv_results_ has it, and epochs_trained counts the
    epochs its folds trained (0.33 averaged in folds that never ran)."""
    import optuna
    from test_search import write

    path = write(tmp_path, FOLDS_ONE_WORKER, epochs=3)
    result = runner.invoke(app, ["sweep", str(path), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    (sweep_dir,) = run_dirs(tmp_path / "runs")
    frame = pd.read_csv(sweep_dir / "cv_results.csv")
    study = optuna.load_study(study_name="dlrun", storage=f"sqlite:///{sweep_dir / 'study.db'}")
    pruned = 0
    for number, trial in enumerate(study.get_trials(deepcopy=False)):
        folds = [sweep_dir / "trials" / f"fit{number:03d}-fold{fold}" for fold in range(3)]
        histories = [pd.read_csv(fold / store.HISTORY) for fold in folds]  # every fold ran
        for step, value in trial.intermediate_values.items():
            mean = np.mean([h["val_accuracy"][step - 1] for h in histories])
            assert value == pytest.approx(mean), (number, step)
        row = frame.iloc[number]
        splits = [row[f"split{fold}_test_score"] for fold in range(3)]
        assert row["mean_test_score"] == pytest.approx(np.mean(splits))
        if "pruned" not in row["status"]:
            assert row["epochs_trained"] == 3
            for history, split in zip(histories, splits, strict=True):
                assert split == pytest.approx(history["val_accuracy"].iloc[-1])
            continue
        pruned += 1
        at = max(trial.intermediate_values)  # the epoch it was pruned at
        assert trial.state.name == "PRUNED"
        for history, split in zip(histories, splits, strict=True):
            assert split == pytest.approx(history["val_accuracy"][at - 1])
        assert row["mean_test_score"] == pytest.approx(trial.intermediate_values[at])
        assert row["epochs_trained"] == pytest.approx(np.mean([len(h) for h in histories]))
    assert pruned, frame


# --- item 5: several outputs' labels, losses and last layers, checked before any run folder ----


def test_several_outputs_mismatches_are_refused_before_the_run_folder(tmp_path):
    path = digits_npz(tmp_path / "digits.npz")
    spec = tmp_path / "bad.yaml"
    text = BLOCK_HEAD.format(path=path, epochs=1)
    text = text.replace("units: 10, activation: softmax, name: digit", "units: 5, name: digit")
    spec.write_text(text.replace("odd: binary_crossentropy", "odd: categorical_crossentropy"))
    for command in (["validate"], ["train", "--runs-dir", str(tmp_path / "runs")]):
        result = runner.invoke(app, [*command, str(spec)])
        assert result.exit_code == 2, result.output
        assert result.stderr.splitlines() == [
            f"Error: {spec}:14: model.layers.2: output digit: the last layer gives 5 outputs but "
            "the data has 10 classes; end with {type: Dense, units: 10, activation: softmax}",
            f"Error: {spec}:18: compile.loss.odd: output odd: categorical losses take one-hot "
            "labels; use sparse_categorical_crossentropy",
        ]
    assert not (tmp_path / "runs").exists()


# --- item 6: keras.io's shapes --------------------------------------------------------------------


def masks_npz(path):
    """keras.io's oxford_pets, tiny: uint8 images and integer masks (N, H, W, 1) of classes 1,
    2 and 3 (a pixel's brightness)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(200, 12, 12, 3)).astype(np.uint8)
    bright = x.mean(-1)
    y = (1 + (bright > 100) + (bright > 160))[..., None].astype(np.uint8)
    np.savez(path, x_train=x[:160], y_train=y[:160], x_test=x[160:], y_test=y[160:])
    return path


SEGMENTATION = """name: segmentation
seed: 0
data: {{dataset: npz, path: {path}, scale: 255, one_hot: {one_hot}}}
model:
  layers:
    - {{type: Conv2D, filters: 8, kernel_size: 3, padding: same, activation: relu}}
    - {{type: Conv2D, filters: 3, kernel_size: 1, padding: same, activation: softmax}}
compile: {{loss: {loss}, metrics: [accuracy]}}
training: {{epochs: 2, batch_size: 32, tensorboard: null}}
"""


@pytest.mark.parametrize(
    "one_hot, loss",
    [("false", "sparse_categorical_crossentropy"), ("true", "categorical_crossentropy")],
    ids=["sparse", "one-hot"],
)
def test_per_pixel_class_masks_train_and_evaluate_pixel_by_pixel(tmp_path, one_hot, loss):
    """Integer masks with a per-pixel softmax (keras.io's oxford_pets): they passed validate
    and failed in training. The classes are the masks' values, encoded as other labels are
    (1, 2, 3 -> 0, 1, 2); the test score is plain Keras', the report every pixel's."""
    from sklearn.metrics import accuracy_score
    from test_graphs import train

    path = masks_npz(tmp_path / "masks.npz")
    run = train(tmp_path, SEGMENTATION.format(path=path, one_hot=one_hot, loss=loss))
    with np.load(path) as archive:
        x, y = archive["x_test"].astype("float32") / 255, archive["y_test"].astype(int) - 1
    model = keras.models.load_model(run / store.BEST)
    labels = np.eye(3)[y[..., 0]] if one_hot == "true" else y
    scores = model.evaluate(x, labels, verbose=0, return_dict=True)
    metrics = json.loads((run / store.METRICS).read_text())
    assert metrics["test"]["accuracy"] == pytest.approx(scores["accuracy"], abs=1e-5)
    result = runner.invoke(app, ["evaluate", str(run), "--json", "--no-save"])
    assert result.exit_code == 0, result.output
    evaluation = json.loads(result.stdout)
    predicted = model.predict(x, verbose=0).argmax(-1)
    assert evaluation["classes"] == ["1", "2", "3"]
    assert evaluation["report"]["accuracy"] == pytest.approx(
        accuracy_score(np.ravel(y), np.ravel(predicted))
    )
    assert np.sum(evaluation["confusion_matrix"]) == y.size


def test_a_mask_the_output_does_not_keep_is_refused(tmp_path):
    path = masks_npz(tmp_path / "masks.npz")
    spec = tmp_path / "flat.yaml"
    text = SEGMENTATION.format(path=path, one_hot="false", loss="sparse_categorical_crossentropy")
    spec.write_text(text.replace("padding: same, activation: softmax", "activation: softmax"))
    spec.write_text(spec.read_text().replace("kernel_size: 1,", "kernel_size: 3,"))
    result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"Error: {spec}:7: model.layers.1: the labels are a class per position, shaped "
        "(12, 12, 1), but the model's output has shape (10, 10, 3); end with a layer that "
        "keeps the positions, e.g. {type: Conv2D, filters: 3, kernel_size: 1, activation: "
        "softmax}\n"
    )
    assert not (tmp_path / "runs").exists()


def test_a_block_in_a_head_on_a_base_trains(tmp_path, base):
    """validate printed a traceback and train left a failed folder (graph.txt of a base
    without taps)."""
    from test_graphs import train

    text = f"""\
name: head-block
data: {{dataset: digits, scale: 16, classes: [0, 1, 2]}}
model:
  base: {{run: {base}, until: norm}}
  blocks:
    up:
      layers:
        - {{type: Conv2D, filters: 4, kernel_size: 3, padding: same, activation: relu}}
  layers:
    - {{block: up}}
    - Flatten
    - {{type: Dense, units: 3, activation: softmax}}
training: {{epochs: 1, tensorboard: null}}
"""
    run = train(tmp_path, text)
    assert "conv2d (Conv2D) (None, 6, 6, 4) <- base\n" in (run / store.GRAPH).read_text()
    head = keras.Sequential(
        [keras.Input((6, 6, 4)), keras.layers.Conv2D(4, 3, padding="same"), keras.layers.Flatten()]
    )
    head.add(keras.layers.Dense(3))
    base_params = json.loads((base / store.METRICS).read_text())["params"] - 1450
    assert json.loads((run / store.METRICS).read_text())["params"] == (
        base_params + head.count_params()
    )


def test_a_first_block_that_reads_in_uses_the_input(tmp_path):
    """A block first in model.layers whose layers read `in` was 'input never used'."""
    from test_graphs import train

    text = """\
name: first-block
data: {dataset: digits, scale: 16, flatten: true}
model:
  blocks:
    pair:
      layers:
        - {type: Dense, units: 8, activation: relu, inputs: in, name: a}
        - {type: Dense, units: 8, activation: relu, inputs: in, name: b}
        - {type: Concatenate, inputs: [a, b]}
  layers:
    - {block: pair}
    - {type: Dense, units: 10, activation: softmax}
training: {epochs: 1, tensorboard: null}
"""
    run = train(tmp_path, text)
    image = keras.Input((64,))
    both = keras.layers.Concatenate()([keras.layers.Dense(8)(image), keras.layers.Dense(8)(image)])
    plain = keras.Model(image, keras.layers.Dense(10)(both))
    assert json.loads((run / store.METRICS).read_text())["params"] == plain.count_params()


def test_a_null_dimension_takes_sequences_of_any_length(tmp_path):
    """shape: [null, 8] (variable-length sequences) with a target per step: it was refused
    with the data's length as a wrong shape and a Dense of length x 1 units; it trains, and
    evaluate takes the run's data and sequences of another length, scored as scikit-learn
    scores plain Keras' predictions."""
    from sklearn.metrics import mean_absolute_error, r2_score
    from test_graphs import train

    rng = np.random.default_rng(0)
    for name, steps in (("seq", 19), ("longer", 23)):
        x = rng.normal(size=(200, steps, 8)).astype("float32")
        y = np.cumsum(x[:, :, :1], axis=1)
        np.savez(tmp_path / f"{name}.npz", x_train=x[:160], y_train=y[:160], x_test=x[160:],
                 y_test=y[160:])  # fmt: skip
    text = f"""\
name: sequences
seed: 0
data: {{dataset: npz, path: {tmp_path / "seq.npz"}, scale: 1}}
model:
  inputs: {{steps: {{shape: [null, 8]}}}}
  layers:
    - {{type: LSTM, units: 4, return_sequences: true}}
    - {{type: Dense, units: 1}}
compile: {{loss: mse, metrics: [mae]}}
training: {{epochs: 1, tensorboard: null}}
"""
    run = train(tmp_path, text)
    model = keras.models.load_model(run / store.BEST)
    assert model.input_shape == (None, None, 8)
    other = tmp_path / "longer.npz"
    result = runner.invoke(
        app, ["evaluate", str(run), "--set", f"data.path={other}", "--json", "--no-save"]
    )
    assert result.exit_code == 0, result.output
    with np.load(other) as archive:
        x, y = archive["x_test"], archive["y_test"]
    predicted = model.predict(x, verbose=0)
    regression = json.loads(result.stdout)["regression"]
    assert regression["mae"] == pytest.approx(mean_absolute_error(np.ravel(y), np.ravel(predicted)))
    assert regression["r2"] == pytest.approx(r2_score(np.ravel(y), np.ravel(predicted)))


def test_a_regression_head_on_a_base_is_not_called_a_classifier(tmp_path, base):
    spec = tmp_path / "regression.yaml"
    spec.write_text(
        "name: regression-head\n"
        "data: {dataset: digits, scale: 16, task: regression}\n"
        f"model:\n  base: {{run: {base}, until: norm}}\n"
        "  layers:\n    - {type: Dense, units: 1}\n"
        "compile: {loss: mse, metrics: [mae]}\n"
    )
    result = runner.invoke(app, ["validate", str(spec)])
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"Error: {spec}:6: model.layers.0: the head ends in shape (None, 6, 6, 1); a regression "
        "head ends in (None, targets): put {type: GlobalAveragePooling2D} or Flatten before "
        "the Dense layers\n"
    )


# --- item 9: random layers draw as plain Keras, and resume exactly ------------------------------

DROPOUT = """\
name: dropout
seed: 0
data: {{dataset: digits, scale: 16, flatten: true}}
model:
  layers:
    - {{type: Dense, units: 32, activation: relu}}
    - {{type: Dropout, rate: 0.5, seed: 3}}
    - {{type: Dense, units: 10, activation: softmax}}
training: {{epochs: {epochs}, batch_size: 64, deterministic: true, tensorboard: null}}
"""


def test_dropout_draws_as_plain_keras_from_epoch_0_and_resumes_exactly(tmp_path):
    """dlrun set every seed generator from (seed, epoch) as each epoch began, epoch 0 too, so
    Dropout drew other masks than plain Keras with the same seed; now its stream is Keras'
    own (the generator's state after an epoch is plain Keras' after fitting as many batches),
    recorded each epoch through model.variables, and a run killed once its first epoch is
    recorded resumes to the uninterrupted run's history."""
    from test_graphs import resumes_exactly

    run = resumes_exactly(tmp_path, DROPOUT.format(epochs=4), 4)
    meta = json.loads((run / store.META).read_text())
    steps = meta["steps_per_epoch"]
    plain = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(32), keras.layers.Dropout(0.5, seed=3)]
    )
    plain.compile(loss="mse")
    x = np.zeros((steps * 64, 64), dtype="float32")
    plain.fit(x, np.zeros((len(x), 32)), batch_size=64, epochs=4, shuffle=False, verbose=0)
    (state,) = [v for v in plain.variables if v.path.endswith("seed_generator_state")]
    assert meta["seed_states"]["4"] == [keras.ops.convert_to_numpy(state).tolist()]
    assert set(meta["seed_states"]) == {"3", "4"}  # the last two epochs'
