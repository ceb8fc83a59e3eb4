"""The architecture holds: import-linter's contracts (pyproject.toml) pass on dlrun, and they
fail on a package that loops or climbs, so a future import cycle fails CI, not a review."""

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

CONFIG = """\
[importlinter]
root_package = shop

[importlinter:contract:layers]
name = Layers
type = layers
layers =
    shop.high
    shop.low

[importlinter:contract:cycles]
name = No cycles
type = acyclic_siblings
ancestors = shop
"""


def lint(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"},
    )


def test_dlrun_keeps_every_import_contract():
    result = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def shop(tmp_path: Path, files: dict[str, str]) -> Path:
    package = tmp_path / "shop"
    package.mkdir()
    for name, text in {"__init__.py": "", **files}.items():
        (package / name).write_text(text)
    (tmp_path / ".importlinter").write_text(CONFIG)
    return tmp_path


def test_a_clean_package_passes_the_same_contracts(tmp_path):
    root = shop(tmp_path, {"high.py": "from shop import low\n", "low.py": "X = 1\n"})
    result = lint(root)
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_import_loop_breaks_the_cycle_contract(tmp_path):
    # Two modules of one layer that import each other, one of them lazily as dlrun's did.
    loop = {
        "high.py": "from shop import low\n",
        "low.py": "X = 1\n",
        "a.py": "from shop import b\n",
        "b.py": "def f():\n    from shop import a\n    return a\n",
    }
    result = lint(shop(tmp_path, loop))
    assert result.returncode != 0
    assert "No cycles BROKEN" in result.stdout
    assert "Layers KEPT" in result.stdout


def test_an_import_that_climbs_breaks_the_layers_contract(tmp_path):
    climb = {"high.py": "X = 1\n", "low.py": "def f():\n    from shop import high\n"}
    result = lint(shop(tmp_path, climb))
    assert result.returncode != 0
    assert "Layers BROKEN" in result.stdout
    assert "shop.low -> shop.high" in result.stdout


@pytest.mark.parametrize(
    "name",
    ["F1Score", "SparseCategoricalAccuracy", "AUC", "R2Score", "MeanIoU", "Dense", "GRU", "Conv2D"],
)
def test_metric_names_follow_keras_own_snake_case(name):
    from keras.src.utils.naming import to_snake_case

    from dlrun.spec.names import snake_case

    assert snake_case(name) == to_snake_case(name)


def test_one_flatten_rule_for_compare_and_sweep_keys():
    from dlrun.spec.keys import flatten, paths

    config = {
        "compile": {"metrics": ["accuracy", "auc"], "optimizer": {"type": "adam"}},
        "model": {"layers": [{"type": "Dense", "units": 8}, {"type": "Dropout"}]},
    }
    assert flatten(config) == {
        "compile.metrics": ["accuracy", "auc"],
        "compile.optimizer.type": "adam",
        "model.layers.0.type": "Dense",
        "model.layers.0.units": 8,
        "model.layers.1.type": "Dropout",
    }
    # Every leaf of flatten is a key a sweep can name, and so is everything above it.
    assert set(flatten(config)) <= paths(config)
    assert {"compile", "model.layers.0", "compile.metrics.1"} <= paths(config)
