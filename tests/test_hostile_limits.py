"""Issue 30, patterns 3 and 6: the same limits on every path, and text on its way to a terminal.

Feature values are checked in one place (data.checks.bad_values, after the float32 cast) that
training, evaluate, features, attack and predict all reach; every number in a spec, a sweep
file and `--set` passes one bound on its length (spec.safeyaml) and the bounds of its field;
text from data goes through textsafe (bidi controls, escapes, Error lines cut).
"""

import io
from pathlib import Path

import numpy as np
import pytest
from test_hostile import assert_one_clean_error, no_hang  # noqa: F401  (autouse)
from typer.testing import CliRunner

from conftest import TINY_SPEC
from dlrun import textsafe
from dlrun.cli import app
from dlrun.data.checks import bad_values

runner = CliRunner()


def invoke(*args, input=None):
    return runner.invoke(app, [*map(str, args)], input=input)


# --- one check of feature values ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "rows"),
    [
        (np.array([[1.0, np.nan], [2.0, 3.0]]), [0]),
        (np.array([[1.0, 2.0], [np.inf, 3.0]]), [1]),
        (np.array([[1e300, 2.0], [1.0, 3.0]]), [0]),  # finite in float64, inf in float32
        (np.array([[-1e39, 2.0], [1.0, 3.0]]), [0]),
        (np.array([[1.0, 2.0], [3.0, 4e38]]), [1]),
        (np.array([[1 + 0j, 2.0], [np.nan + 1j, 3.0]]), [1]),
    ],
)
def test_bad_values_are_found_after_the_float32_cast(values, rows):
    found = bad_values(values)
    assert found is not None and found[0].tolist() == rows


@pytest.mark.parametrize(
    "values",
    [np.ones((3, 2)), np.arange(6).reshape(3, 2), np.array([[3.4e38]]), np.zeros((0, 2))],
)
def test_values_within_float32_pass(values):
    assert bad_values(values) is None


@pytest.fixture
def inputs(tmp_path):
    def make(x) -> Path:
        path = tmp_path / "inputs.npz"
        np.savez(path, x=x)
        return path

    return make


def digits_like(value, dtype=np.float64) -> np.ndarray:
    x = np.ones((5, 8, 8), dtype=dtype)
    x[3, 2, 2] = value
    return x


@pytest.mark.parametrize(
    ("value", "dtype"),
    [(np.nan, np.float64), (np.inf, np.float64), (-np.inf, np.float32), (1e300, np.float64)],
    ids=["nan", "inf", "-inf", "1e300"],
)
def test_predict_refuses_what_training_refuses(trained, inputs, tmp_path, value, dtype):
    out = tmp_path / "rows.csv"
    result = invoke("predict", trained, inputs(digits_like(value, dtype)), "--out", out)
    assert_one_clean_error(result, "input(s) 3")
    assert not out.exists()


def test_predict_refuses_complex_numbers(trained, inputs):
    result = invoke("predict", trained, inputs(digits_like(1 + 2j, np.complex128)))
    assert_one_clean_error(result, "complex128 values; expected numbers")


@pytest.mark.parametrize("cell", ["", "nan", "inf", "1e300", "-1e39"])
def test_predict_refuses_a_csv_cell_that_is_no_float32(trained, tmp_path, cell):
    header = ",".join(f"pixel{i}" for i in range(64))
    row = ",".join(["1"] * 64)
    bad = ",".join(["1"] * 10 + [cell] + ["1"] * 53)
    path = tmp_path / "x.csv"
    path.write_text(f"{header}\n{row}\n{bad}\n{row}\n")
    result = invoke("predict", trained, path)
    if result.exit_code == 2 and "feature" in result.stderr:  # the run takes 8x8 images
        pytest.skip("this run takes no csv rows")
    # a blank (pandas reads "nan" as one) is data.missing's to refuse, naming row and column
    blank = cell in ("", "nan")
    assert_one_clean_error(result, "row 2: column 'pixel10' is blank" if blank else "input(s) 2")


def train_on(tmp_path: Path, arrays: dict) -> object:
    np.savez(tmp_path / "data.npz", **arrays)
    spec = TINY_SPEC.replace("dataset: digits", f"dataset: npz\n  path: {tmp_path / 'data.npz'}")
    (tmp_path / "s.yaml").write_text(spec)
    return invoke("train", tmp_path / "s.yaml", "--runs-dir", tmp_path / "runs")


def arrays(n: int = 40, **changes) -> dict:
    rng = np.random.default_rng(0)
    found = {
        "x_train": rng.random((n, 4)),
        "y_train": np.arange(n) % 2,
        "x_test": rng.random((10, 4)),
        "y_test": np.arange(10) % 2,
    }
    found.update(changes)
    return found


def test_training_refuses_values_beyond_float32(tmp_path):
    x = np.random.default_rng(0).random((40, 4))
    x[7, 1] = 1e300
    result = train_on(tmp_path, arrays(x_train=x))
    assert_one_clean_error(result, "x_train has missing (NaN) or infinite values")
    assert not (tmp_path / "runs").exists()


def test_x_test_and_y_test_of_different_lengths_are_refused(tmp_path):
    result = train_on(tmp_path, arrays(y_test=np.arange(9) % 2))
    assert_one_clean_error(result, "x_test has 10 samples but y_test has 9 labels")
    assert not (tmp_path / "runs").exists()


def test_evaluate_on_new_data_makes_the_same_check(trained, tmp_path):
    """evaluate reads --set data through the loader training uses: one check for both."""
    x = np.ones((20, 8, 8))
    x[4, 0, 0] = 1e300
    path = tmp_path / "new.npz"
    np.savez(path, x_train=x, y_train=np.arange(20) % 10, x_test=x, y_test=np.arange(20) % 10)
    result = invoke("evaluate", trained, "--set", "data.dataset=npz", "--set", f"data.path={path}")
    assert result.exit_code == 2, result.output
    assert "missing (NaN) or infinite values" in result.stderr


# --- every number bounded -----------------------------------------------------------------------

BIG = "9" * 1000


@pytest.mark.parametrize(
    "assignment",
    [
        f"model.layers.0.units={BIG}",
        f"training.epochs={'9' * 5000}",  # past Python's own int conversion limit
        f"training.batch_size=1{'0' * 120}.5",
        f"seed=-{BIG}",
        f"compile.optimizer.learning_rate=0.{'0' * 200}1",
    ],
)
def test_a_thousand_digit_number_in_set_is_one_line(tiny_spec, assignment):
    result = invoke("validate", tiny_spec, "--set", assignment)
    line = assert_one_clean_error(result, "a number longer than 100 characters")
    assert len(line) < 300


def test_a_thousand_digit_number_in_a_spec_file_is_one_line(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(TINY_SPEC.replace("units: 16", f"units: {BIG}"))
    assert_one_clean_error(invoke("validate", path), "a number longer than 100 characters (1,000)")


def test_a_long_quoted_string_is_no_number(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(TINY_SPEC.replace("name: tiny", f"name: '{'9' * 150}'"))
    result = invoke("validate", path)
    assert "a number longer" not in result.output


SWEEP = """\
base: tiny.yaml
tpe:
  n_iter: 2
  space:
    model.layers.0.units: {{randint: [4, 32]}}
prune: {{method: {method}, {key}: {value}}}
cv: 0
"""


@pytest.mark.parametrize(
    ("method", "key", "value", "said"),
    [
        ("asha", "reduction_factor", "1e12", "reduction_factor"),
        ("hyperband", "reduction_factor", "1000000", "expected a number <= 100,"),
        ("median", "min_epochs", "1e22", "min_epochs"),
        ("asha", "min_epochs", "10000000", "expected a number <= 1000000,"),
        ("asha", "reduction_factor", BIG, "a number longer than 100 characters (1,000)"),
    ],
)
def test_prune_numbers_are_bounded(tmp_path, method, key, value, said):
    (tmp_path / "tiny.yaml").write_text(TINY_SPEC)
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP.format(method=method, key=key, value=value))
    result = invoke("sweep", path, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2, result.output
    assert said in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


GRAPH = """\
name: blocks
data: {{dataset: digits}}
model:
  blocks:
    dense: [{{type: Dense, units: 4}}]
  layers:
    - {{type: Flatten}}
    - {{block: dense, repeat: {repeat}}}
    - {{type: Dense, units: 10, activation: softmax}}
"""


@pytest.mark.parametrize("repeat", ["1e9", "1000000000", "1001", BIG])
def test_a_blocks_repeat_is_bounded(tmp_path, repeat):
    path = tmp_path / "g.yaml"
    path.write_text(GRAPH.format(repeat=repeat))
    result = invoke("validate", path)
    assert result.exit_code == 2, result.output
    assert ("from 1 to 1000" in result.stderr) or ("a number longer" in result.stderr)


def test_a_blocks_repeat_at_its_bound_is_allowed_by_the_schema():
    from dlrun.spec.schema import MAX_BLOCK_REPEAT

    assert MAX_BLOCK_REPEAT == 1000


# --- text on its way to a terminal ----------------------------------------------------------------


@pytest.mark.parametrize(
    "char", ["\u202e", "\u202a", "\u2066", "\u2069", "\u200e", "\u200f", "\u061c", "\u2028"]
)
def test_bidi_controls_and_line_separators_never_reach_the_terminal(char):
    assert char not in textsafe.clean(f"run{char}name")
    assert char not in textsafe.escaped(f"run{char}name")
    assert char not in textsafe.one_line(f"run{char}name")


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("a\nb.png", "a\\nb.png"),
        ("a b.png", "a b.png"),
        ("a\\nb.png", "a\\\\nb.png"),
        ("\x1b[2Jx.png", "\\x1b[2Jx.png"),
        ("x\u202egnp.exe", "x\\u202egnp.exe"),
    ],
)
def test_escaped_keeps_distinct_paths_distinct_on_one_line(raw, shown):
    assert textsafe.escaped(raw) == shown


def test_predict_rows_on_a_terminal_escape_a_newline_in_a_path():
    from dlrun.report.predict import _Rows

    out = io.StringIO()
    rows = _Rows("csv", out, safe=True)
    rows.write([{"path": "cats/a\nb.png", "class": "cat"}, {"path": "cats/a b.png", "class": "x"}])
    lines = out.getvalue().splitlines()
    assert lines == ["path,class", "cats/a\\nb.png,cat", "cats/a b.png,x"]


def test_an_error_line_never_echoes_a_huge_value_whole(tiny_spec):
    result = invoke("validate", tiny_spec, "--set", f"compile.optimizer={'x' * 100_000}")
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert all(len(line) < 1200 for line in lines), [len(line) for line in lines]
    assert any("characters in all" in line for line in lines)


def test_one_line_cuts_and_says_how_long_the_text_was():
    text = textsafe.one_line("y" * 5000)
    assert len(text) < 1100 and text.endswith("(cut; 5,000 characters in all)")
    assert textsafe.one_line("short") == "short"


def test_a_control_character_in_a_value_of_an_error_line_is_replaced(tiny_spec):
    result = invoke("validate", tiny_spec, "--set", "compile.optimizer=a\u202eb")
    assert result.exit_code == 2 and "\u202e" not in result.output


# --- what training would refuse, validate refuses first --------------------------------------


def spec_with_layer_name(tmp_path: Path, name) -> Path:
    import yaml

    raw = yaml.safe_load(TINY_SPEC)
    raw["model"]["layers"][0]["name"] = name
    path = tmp_path / "named.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return path


@pytest.mark.parametrize(
    "name", ["größe", "", "a b", "a/b", "tab\tname", "x" * 101, "\u202ename", "名前"]
)
def test_validate_refuses_a_layer_name_training_cannot_use(tmp_path, name):
    result = invoke("validate", spec_with_layer_name(tmp_path, name))
    assert_one_clean_error(result, "name: expected")


@pytest.mark.parametrize("name", ["conv_1", "features.v2", "head-1", "x" * 100])
def test_validate_takes_a_layer_name_training_can_use(tmp_path, name):
    result = invoke("validate", spec_with_layer_name(tmp_path, name))
    assert result.exit_code == 0, result.output


UNREAD = """\
name: g
data: {{dataset: digits, scale: 16, flatten: true}}
model:
  layers:
    - {{type: Dense, units: 8, name: a}}
{middle}
    - {{type: Dense, units: 10, activation: softmax, inputs: a}}
training: {{epochs: 1}}
"""


@pytest.mark.parametrize(
    ("middle", "named"),
    [
        ("    - {type: Dense, units: 4, name: dead, inputs: a}", "dead"),
        ("    - {type: Dense, units: 4}", "Dense"),
        (
            "    - {type: Dropout, rate: 0.5, name: drop}\n    - {type: Dense, units: 3, name: d2}",
            "drop",
        ),
    ],
    ids=["named", "unnamed", "a-chain"],
)
def test_graph_entries_nothing_reads_are_refused_by_name(tmp_path, middle, named):
    path = tmp_path / "g.yaml"
    path.write_text(UNREAD.format(middle=middle))
    result = invoke("validate", path)
    assert result.exit_code == 2, result.output
    assert f"{named}: nothing reads this entry's output" in result.stderr
    assert "Traceback" not in result.output


def test_a_graph_whose_entries_are_all_read_is_valid(tmp_path):
    path = tmp_path / "g.yaml"
    text = UNREAD.format(middle="    - {type: Dense, units: 4, name: b, inputs: a}")
    path.write_text(text.replace("softmax, inputs: a}", "softmax, inputs: b}"))
    result = invoke("validate", path)
    assert result.exit_code == 0, result.output
