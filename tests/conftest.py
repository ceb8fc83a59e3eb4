import os
import signal
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"

# A tiny, fast spec on the offline digits data: the default subject of the tests.
TINY_SPEC = """\
name: tiny
seed: 0
data:
  dataset: digits
  scale: 16
  flatten: true
model:
  layers:
    - {type: Dense, units: 16, activation: relu}
    - {type: Dense, units: 10, activation: softmax}
training:
  batch_size: 64
  epochs: 2
  validation_split: 0.2
"""


@pytest.fixture
def tiny_spec(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_SPEC)
    return path


def run_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []


def default_sigint() -> None:
    """For subprocesses that tests stop with Ctrl-C: a shell running CI in the background
    starts its children with SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
