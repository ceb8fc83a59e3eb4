"""TensorFlow takes seconds to import: --help, spec checks and run reading must not load it."""

import subprocess
import sys

import pytest

PROBE = """
import sys
{body}
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
print("HEAVY:" + ",".join(heavy))
"""


def heavy_modules(body: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(body=body)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.rsplit("HEAVY:", 1)[1].strip()


@pytest.mark.parametrize(
    "body",
    [
        "import dlrun, dlrun.cli, dlrun.spec, dlrun.store, dlrun.errors",
        "from dlrun.cli import app\ntry:\n    app(['--help'])\nexcept SystemExit:\n    pass",
        "from dlrun.cli import app\ntry:\n    app(['train', '--help'])\n"
        "except SystemExit:\n    pass",
        "from dlrun.spec.loading import load_spec\nload_spec('configs/quickstart.yaml')",
    ],
    ids=["import", "help", "train-help", "load-spec"],
)
def test_no_tensorflow_without_training(body):
    assert heavy_modules(body) == ""


def test_the_probe_can_see_tensorflow():
    # The guard above is only worth something if this probe does notice a TensorFlow import.
    # TensorFlow on its own: TF Lite's import of JAX (0.45 s a start) is kept out, and JAX
    # still imports afterwards.
    body = (
        "from dlrun.backend import tensorflow\ntensorflow()\n"
        "assert 'jax' not in sys.modules, 'jax imported with tensorflow'\n"
        "import importlib.util\n"
        "if importlib.util.find_spec('jax'):\n"
        "    import jax.numpy\n"
        "    assert jax.numpy.ones(2).sum() == 2"
    )
    assert "tensorflow" in heavy_modules(body)


@pytest.mark.parametrize(
    "body",
    [
        "import dlrun.sweep, dlrun.cli",
        "from dlrun.cli import app\ntry:\n    app(['sweep', '--help'])\n"
        "except SystemExit:\n    pass",
        "from dlrun.spec.loading import load_spec\nload_spec('configs/quickstart.yaml')",
    ],
    ids=["import-sweep", "sweep-help", "load-spec"],
)
def test_no_optuna_unless_a_search_needs_it(body):
    """Optuna (and SQLAlchemy under it) is imported only by a tpe or cmaes sweep."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys\n{body}\nprint(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('optuna', 'sqlalchemy', 'cmaes')))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
