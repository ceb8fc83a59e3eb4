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


@pytest.fixture(scope="module", params=["block-head", "docs"])
def resumed(request, tmp_path_factory):
    """Each several-output spec trained whole, and again killed after two epochs and resumed
    (tests/test_graphs.py's resumes_exactly): (the resumed run, its spec text, other data)."""
    from test_graphs import resumes_exactly

    root = tmp_path_factory.mktemp(request.param)
    path = digits_npz(root / "digits.npz")
    if request.param == "docs":
        (block,) = docs_several_outputs()
        text = as_spec(block, path, EPOCHS)
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


def test_finetuning_after_a_schedule_trains_stage_two_at_its_rate_and_resumes(tmp_path):
    """Stage 1 on an ExponentialDecay schedule, stage 2 at finetune.learning_rate: it failed at
    stage 2 (a plain rate set on a schedule); each row's rate is Keras' schedule's, and a run
    stopped in stage 2 resumes to the same weights."""
    from dlrun import api
    from dlrun.spec.loading import load_spec
    from test_images import StopAfter, assert_same_run
    from test_transfer import PRETRAIN, transfer_spec

    (tmp_path / "pretrain.yaml").write_text(PRETRAIN)
    base = api.train(tmp_path / "pretrain.yaml", runs_dir=tmp_path / "base", verbose=False)
    schedule = "{type: ExponentialDecay, initial_learning_rate: 0.01, decay_steps: 3, decay_rate: 0.5}"
    spec = transfer_spec(
        tmp_path,
        f"{{run: {base.run_dir}, until: flatten}}",
        "  finetune: {epochs: 2, unfreeze: all, learning_rate: 0.002}\n",
    )
    spec.write_text(
        spec.read_text().replace(
            "training:", f"compile:\n  optimizer: {{type: adam, learning_rate: {schedule}}}\ntraining:"
        )
    )
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
