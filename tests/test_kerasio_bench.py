"""keras.io's examples as dlrun specs with the user's own code (bench/kerasio/, issue 28): every
spec there validates, and the model `dlrun validate` builds from it has exactly as many
parameters as the example's model composed in plain Keras the way the example's script does
(bench/kerasio.py's PLAIN builders)."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("dlrun.usercode") is None,
    reason="this dlrun takes no code files yet (issue 28: code:, model.function, data.function)",
)


def _kerasio():
    sys.path.insert(0, str(BENCH))
    try:
        import kerasio
    finally:
        sys.path.remove(str(BENCH))
    return kerasio


KERASIO = _kerasio()


def test_every_spec_folder_is_compared():
    folders = {p.parent.name for p in (BENCH / "kerasio").glob("*/spec.yaml")}
    assert folders == {example.folder for example in KERASIO.EXAMPLES.values()}
    examples = {example.source for example in KERASIO.EXAMPLES.values()}
    assert len(examples) >= 12  # issue 28: at least 12 keras.io examples


@pytest.mark.parametrize("name", sorted(KERASIO.EXAMPLES))
def test_spec_builds_the_examples_model(name):
    from typer.testing import CliRunner

    from dlrun.cli import app

    path, spec = KERASIO.spec_of(name)
    assert spec.get("code"), "the example's own code is a code file of the spec"
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(f"{path}: valid; "), last
    ours = int(last.rsplit("valid; ", 1)[1].split()[0].replace(",", ""))
    assert ours == KERASIO.plain_model(name).count_params()
