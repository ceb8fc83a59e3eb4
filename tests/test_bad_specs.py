"""Malformed specs: each exits 2 with its exact one-line error, no traceback, no run folder.

Each file in bad_specs/ ends with `# expect: <the error line>`, {spec} standing for its path
and {folder} for its folder.
"""

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import TINY_SPEC, run_dirs
from dlrun.cli import app

runner = CliRunner()
CORPUS = sorted((Path(__file__).parent / "bad_specs").glob("*.yaml"))


def expected_line(path: Path) -> str:
    last = path.read_text().rstrip("\n").splitlines()[-1]
    assert last.startswith("# expect: "), f"{path.name} has no expectation"
    expected = last.removeprefix("# expect: ").replace("{spec}", str(path))
    return expected.replace("{folder}", str(path.parent))  # a relative path, resolved


def test_the_corpus_is_large():
    assert len(CORPUS) >= 40


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_bad_spec_exits_2_with_its_message(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a YAML tag that ran a command would leave a file here
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", str(path), "--runs-dir", str(runs)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert lines[0] == expected_line(path)
    assert all(line.startswith("Error: ") for line in lines)
    assert "Traceback" not in result.output
    assert run_dirs(runs) == []
    assert list(tmp_path.iterdir()) == [], "nothing may be written for a bad spec"


def test_python_tag_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "evil.yaml"
    spec.write_text(
        "name: !!python/object/apply:os.system ['touch PWNED']\n" + TINY_SPEC.split("\n", 1)[1]
    )
    result = runner.invoke(app, ["validate", str(spec)])
    assert result.exit_code == 2
    assert not (tmp_path / "PWNED").exists()


def test_npz_without_x_train(tmp_path):
    data = tmp_path / "d.npz"
    np.savez(data, features=np.zeros((4, 3)), y_train=np.zeros(4))
    spec = tmp_path / "s.yaml"
    spec.write_text(
        f"data: {{dataset: npz, path: {data}}}\nmodel: {{layers: [{{type: Dense, units: 2}}]}}\n"
    )
    result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: {spec}:1: data.path: {data} has no x_train; expected keys x_train, y_train "
        "[, x_val, y_val, x_test, y_test], found features, y_train\n"
    )
    assert not (tmp_path / "runs").exists()


def test_keras_dataset_without_network_names_the_way_out(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    spec = tmp_path / "s.yaml"
    spec.write_text(TINY_SPEC.replace("dataset: digits", "dataset: fashion_mnist"))
    result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("Error: data.dataset: fashion_mnist could not be downloaded")
    assert f"{tmp_path}/keras/datasets/fashion-mnist/" in line
    assert "`dataset: npz`" in line
    assert not (tmp_path / "runs").exists()


def test_layer_names_do_not_depend_on_the_models_built_before():
    """Messages quote layer names (conv_on_vectors.yaml): Keras' own counter would make them
    conv2d_3 after three other Conv2D layers in the same process, here or in a notebook."""
    import keras
    import yaml

    from dlrun.model.builder import build_model
    from dlrun.spec.loading import validate

    for _ in range(3):
        keras.layers.Conv2D(2, 3)  # advances Keras' process-wide name counter
    raw = yaml.safe_load(TINY_SPEC)
    raw["model"]["layers"] = [
        {"type": "Reshape", "target_shape": [8, 8, 1]},
        {"type": "Conv2D", "filters": 2, "kernel_size": 3},
        {"type": "Conv2D", "filters": 2, "kernel_size": 3, "name": "conv2d_1"},
        {"type": "Conv2D", "filters": 2, "kernel_size": 3},
        "Flatten",
        {"type": "Dense", "units": 10, "activation": "softmax"},
    ]
    for _ in range(2):  # the same names every time
        model = build_model(validate(raw, "names"), (64,))
        assert [layer.name for layer in model.layers] == [
            "reshape",
            "conv2d",
            "conv2d_1",  # as the spec says
            "conv2d_2",  # the next free one
            "flatten",
            "dense",
        ]
