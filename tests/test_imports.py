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
        "from dlrun.spec import load_spec\nload_spec('configs/quickstart.yaml')",
    ],
    ids=["import", "help", "train-help", "load-spec"],
)
def test_no_tensorflow_without_training(body):
    assert heavy_modules(body) == ""


def test_the_probe_can_see_tensorflow():
    # The guard above is only worth something if this probe does notice a TensorFlow import.
    assert "tensorflow" in heavy_modules("from dlrun.backend import tensorflow\ntensorflow()")
