"""The rough edges a new user hit (issue 22, items 16, 17 and 18, and the README's evaluate
--out): attack by run name, --where by the table's names, digits that tell values apart,
preprocessing without weights, whole Keras messages, run names never cut, the Keras internals
dlrun still relies on."""

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from conftest import DLRUN_ENV, ROOT
from dlrun.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def two_runs(trained, tmp_path_factory):
    """The module's trained run and a copy that differs in its first layer's units and a long
    data.path (compare reads config.yaml only), in one runs folder."""
    root = tmp_path_factory.mktemp("two") / "runs"
    first = root / trained.name
    shutil.copytree(trained, first)
    last = "8" if trained.name.endswith("9") else "9"  # another second of the same minute
    second = root / f"{trained.name[:-1]}{last}"
    shutil.copytree(trained, second)
    config = yaml.safe_load((second / "config.yaml").read_text())
    config["model"]["layers"][0]["units"] = 32
    config["data"]["path"] = "/home/someone/lecture/data/" + "a-long-folder-name/" * 4 + "x.csv"
    (second / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root, first, second


def dlrun(*args, **env):
    return subprocess.run(
        [sys.executable, "-m", "dlrun", *map(str, args)],
        capture_output=True,
        text=True,
        env={**DLRUN_ENV, **env},
    )


def test_attack_takes_a_bare_run_name_and_runs_dir(two_runs):
    root, first, _ = two_runs
    args = ["attack", first.name, "--runs-dir", str(root), "--method", "fgsm", "--eps", "0,0.1"]
    result = runner.invoke(app, [*args, "--samples", "40", "--no-save"])
    assert result.exit_code == 0, result.output
    assert f"{first.name}: fgsm on 40 test samples" in result.stdout


def test_where_takes_the_short_names_the_table_shows(two_runs):
    root, first, second = two_runs
    table = runner.invoke(app, ["compare", str(root)])
    assert table.exit_code == 0, table.output
    assert "layers.0.units" in table.stdout and "model.layers.0.units" not in table.stdout
    for where in ("layers.0.units == 32", "model.layers.0.units == 32"):
        result = runner.invoke(app, ["compare", str(root), "--where", where, "--format", "csv"])
        assert result.exit_code == 0, result.output
        assert [line.split(",")[0] for line in result.stdout.splitlines()[1:]] == [second.name]
    ambiguous = runner.invoke(app, ["compare", str(root), "--where", "units == 32"])
    assert ambiguous.exit_code == 2
    assert ambiguous.stderr.count("\n") == 1 and ambiguous.stderr.startswith("Error: --where:")
    assert "model.layers.0.units" in ambiguous.stderr and "model.layers.1.units" in ambiguous.stderr


def test_numbers_in_a_column_show_the_digits_that_tell_them_apart(two_runs):
    import pandas as pd

    from dlrun.report.compare import render

    root, first, second = two_runs
    for run, accuracy in ((first, 0.857012), (second, 0.857041)):
        metrics = json.loads((run / "metrics.json").read_text())
        metrics["test"]["accuracy"] = accuracy
        (run / "metrics.json").write_text(json.dumps(metrics))
    result = runner.invoke(app, ["compare", str(root), "--format", "markdown"])
    assert result.exit_code == 0, result.output
    assert "0.85701" in result.stdout and "0.85704" in result.stdout
    # A sweep's table: two learning rates that read 0.0001 at four decimals, in e notation at
    # four significant digits (issue 34), still told apart.
    frame = pd.DataFrame({"learning_rate": [0.0001, 0.00012], "mean_test_score": [0.5, 0.75]})
    text = render(frame, "markdown")
    assert "| 1e-04 | 0.5 |" in text and "| 1.2e-04 | 0.75 |" in text


def test_the_run_name_is_never_cut_in_80_columns(two_runs):
    root, first, second = two_runs
    for command in (["compare", root, "--columns", "path,status"], ["compare", root, "--all"]):
        result = dlrun(*command, COLUMNS="80")
        assert result.returncode == 0, result.stderr
        table = result.stdout.split("not shown")[0]
        assert first.name in table and second.name in table, table
        assert max(len(line) for line in table.splitlines()) <= 80, table
    assert "a-long-folder-name" in dlrun("compare", root, "--columns", "path", COLUMNS="80").stdout


def test_preprocessing_per_channel_adds_no_weights():
    """EfficientNet's preprocess_input is the identity on 0..255 pixels: the data's /255 is
    undone by a Rescaling, not a frozen 12-parameter convolution; caffe's BGR swap still needs
    the convolution. Checked on the choice itself: no weights are downloaded."""
    import keras

    from dlrun.model.transfer import _preprocess_layer

    pixels = np.random.default_rng(0).uniform(0, 1, (2, 4, 4, 3)).astype("float32")
    apps = keras.applications
    for function, kind in (
        (apps.efficientnet.preprocess_input, keras.layers.Rescaling),
        (apps.mobilenet_v2.preprocess_input, keras.layers.Rescaling),
        (apps.resnet50.preprocess_input, keras.layers.Conv2D),
    ):
        layer = _preprocess_layer(function, 255.0, 3)
        assert isinstance(layer, kind), (function.__module__, layer)
        model = keras.Sequential([keras.Input((4, 4, 3)), layer])
        assert model.count_params() == (12 if kind is keras.layers.Conv2D else 0)
        expected = np.asarray(function(pixels * 255))
        np.testing.assert_allclose(model.predict(pixels, verbose=0), expected, atol=1e-3)
    assert _preprocess_layer(apps.efficientnet.preprocess_input, 1.0, 3) is None


def test_a_long_keras_message_is_kept_whole_without_its_config_dumps(trained, tmp_path):
    run = tmp_path / trained.name
    shutil.copytree(trained, run)
    model_file = run / "checkpoints" / "best.keras"
    with zipfile.ZipFile(model_file) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])
    layer = config["config"]["layers"][1]
    layer["class_name"], layer["module"] = "NoSuchLayer", None
    layer["registered_name"] = "Custom>NoSuchLayer"
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(model_file, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    result = runner.invoke(app, ["evaluate", str(run)])
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"Error: {model_file}: cannot be loaded")
    # Keras' own words, every sentence of them, and not its 3000-character config dumps.
    assert "Could not locate class 'NoSuchLayer'." in line
    assert "make sure they are all imported so that the decorator is run" in line
    assert len(line) < 1200 and "'kernel_initializer'" not in line


def test_shortened_cuts_after_a_sentence_and_says_so():
    from dlrun.errors import shortened

    text = "First sentence is here. " * 20 + "A last sentence that goes past the limit"
    cut = shortened(text, 300)
    assert cut.endswith("is here. ...") and len(cut) <= 304
    words = "word " * 100
    assert shortened(words, 52) == "word " * 9 + "word ..."
    assert shortened("kept whole.", 300) == "kept whole."


def test_evaluate_out_writes_the_json_whole_and_only_on_success(trained, tmp_path):
    out = tmp_path / "evaluation.json"
    missing = tmp_path / "none.npz"
    args = ["evaluate", str(trained), "--no-save", "--out", str(out)]
    failed = runner.invoke(
        app, [*args, "--set", "data.dataset=npz", "--set", f"data.path={missing}"]
    )
    assert failed.exit_code == 2 and failed.stderr.startswith("Error:")
    assert not out.exists()  # no empty file left, unlike `--json > evaluation.json`
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and f"wrote {out}" in result.stderr
    written = json.loads(out.read_text())
    printed = json.loads(
        runner.invoke(app, ["evaluate", str(trained), "--no-save", "--json"]).stdout
    )
    assert written["scores"] == printed["scores"] and written["samples"] == printed["samples"]


# --- item 18: the Keras internals dlrun still relies on --------------------------------------


def test_keras_is_pinned_below_the_next_minor_version():
    import keras

    (spec,) = re.findall(r'^\s*"(keras[<>=].*?)",', (ROOT / "pyproject.toml").read_text(), re.M)
    major, minor = map(int, keras.__version__.split(".")[:2])
    assert spec == f"keras>={major}.{minor},<{major}.{minor + 1}", spec


def test_the_keras_internals_dlrun_uses_are_still_there():
    """Each private name dlrun reaches for, where Keras has no public one. When this fails after
    a Keras upgrade, fix the module named in the message before raising the pin."""
    import keras

    # dlrun/model/compiling.py: the metric compile() would make of a name for these labels.
    from keras.src.trainers.compile_utils import get_metric

    metric = get_metric("accuracy", np.eye(3)[[0, 1]], np.eye(3)[[0, 2]])
    assert isinstance(metric, keras.metrics.Metric), "model/compiling.py: get_metric"

    # dlrun/backend.py: TensorFlow's availability flag, and the global seeds for jax/torch.
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator
    from keras.src.utils import module_utils, rng_utils

    assert hasattr(module_utils.tensorflow, "_available"), "backend.py: module_utils"
    assert isinstance(rng_utils.GLOBAL_RANDOM_SEED, str), "backend.py: rng_utils"
    assert isinstance(seed_generator.GLOBAL_SEED_GENERATOR, str), "backend.py: seed_generator"
    assert callable(global_state.set_global_attribute), "backend.py: global_state"

    # dlrun/model/layers.py (and the script export): every layer's seed generators.
    dropout = keras.layers.Dropout(0.5, seed=1)
    model = keras.Sequential([keras.Input((2,)), dropout])
    layers = list(model._flatten_layers(include_self=True))
    assert dropout in layers, "model/layers.py: _flatten_layers"
    assert len(dropout._seed_generators) == 1, "model/layers.py: _seed_generators"
    assert isinstance(getattr(dropout, "_backend_generators", {}), dict)

    # dlrun/model/transfer.py: a nested model's output in the model that calls it.
    inner = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    outer_input = keras.Input((2,))
    outer_output = inner(outer_input)
    assert inner._inbound_nodes[-1].output_tensors[0] is outer_output, "transfer.py"

    # dlrun/model/metrics.py: several outputs' compiled metrics, one list per output.
    image = keras.Input((2,))
    heads = [keras.layers.Dense(2, name="p")(image), keras.layers.Dense(1, name="q")(image)]
    two = keras.Model(image, heads)
    two.compile(loss=["mse", "mse"], metrics=[["mae"], ["mse"]])
    two.fit(np.zeros((2, 2)), [np.zeros((2, 2)), np.zeros((2, 1))], verbose=0)
    containers = [m for m in two.metrics if getattr(m, "output_names", None)]
    assert containers and [
        [metric.name for metric in listed.metrics] for listed in containers[0]._flat_metrics
    ] == [["mae"], ["mse"]], "model/metrics.py: _flat_metrics"
    assert [listed.output_name for listed in containers[0]._flat_metrics] == ["p", "q"], (
        "model/metrics.py: MetricsList.output_name"
    )


def test_tensorboard_links_name_runs_and_pick_up_new_ones(trained, tmp_path):
    """The folder TensorBoard reads: <run>/train -> the run's tensorboard/train (and each of
    its folders), beside the run's HParams, a sweep's trials as <sweep>/<trial>, runs started
    later linked on the next pass, a symlinked tensorboard/ of a received run never linked."""
    from dlrun.store.board import link_runs

    runs, logdir = tmp_path / "runs", tmp_path / "links"
    logdir.mkdir()
    shutil.copytree(trained, runs / "first")
    assert link_runs(runs, logdir) == 1
    board = runs / "first" / "tensorboard"
    parts = sorted(p.name for p in board.iterdir() if p.is_dir())
    assert parts and sorted(p.name for p in (logdir / "first").iterdir() if p.is_dir()) == parts
    for part in parts:
        assert (logdir / "first" / part).resolve() == (board / part).resolve()
    assert list((logdir / "first").glob("events.out.tfevents.*"))  # its HParams, written here
    shutil.copytree(trained, runs / "sweep" / "trials" / "trial-1")
    hostile = runs / "received"
    shutil.copytree(trained, hostile)
    shutil.rmtree(hostile / "tensorboard")
    (hostile / "tensorboard").symlink_to(tmp_path)
    assert link_runs(runs, logdir) == 1  # the new trial; first is linked already
    assert (logdir / "sweep" / "trials" / "trial-1" / "train").resolve() == (
        runs / "sweep" / "trials" / "trial-1" / "tensorboard" / "train"
    ).resolve()
    assert not os.path.lexists(logdir / "received")


def test_tensorboard_names_a_trial_by_its_setting_within_a_file_name(trained, tmp_path):
    """Issue 34: a sweep's trial shows as SWEEP/<key>=<value>/fold0; a value with a / stays
    one folder, and a setting too long for a file name falls back to its fit number."""
    from dlrun.store.board import link_runs

    runs, logdir = tmp_path / "runs", tmp_path / "links"
    logdir.mkdir()
    (runs / "sw").mkdir(parents=True)
    (runs / "sw" / "sweep.yaml").write_text("base: b.yaml\ngrid:\n  name: [a]\ncv: 2\n")
    for fit, name in (("fit000-fold0", "a/b"), ("fit001-fold1", "x" * 300)):
        trial = runs / "sw" / "trials" / fit
        shutil.copytree(trained, trial)
        config = yaml.safe_load((trial / "config.yaml").read_text())
        config["name"] = name
        (trial / "config.yaml").write_text(yaml.safe_dump(config))
    assert link_runs(runs, logdir) == 2
    assert (logdir / "sw" / "name=a_b" / "fold0" / "train").is_dir()
    assert (logdir / "sw" / "fit001" / "fold1" / "train").is_dir()
