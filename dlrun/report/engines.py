"""What scores `dlrun predict`'s inputs: the run's Keras checkpoint, or the ONNX copy of it
that `dlrun export --format onnx` verified and kept in the run (exports/best.onnx).

Keras costs its import before the first row (about 3 s on JAX, 5-7 s on TensorFlow on a
2-core CPU: docs/performance.md); onnxruntime a fraction of a second. The copy stands in for
the checkpoint only where everything that makes its rows the checkpoint's holds:
- its record (exports/best.onnx.json) names the checkpoint file it came from by sha256, and
  that is the file predict would load now (a resumed run's new best.keras is not the exported
  one);
- the copy's bytes hash to the recorded sha256: in a received run it is data from a stranger,
  read like every file of a run (store.read_bytes: no symlink, bounded), and the bytes hashed
  are the bytes onnxruntime loads;
- export scored it against the checkpoint on the run's test samples within export.TOLERANCE;
- the preprocessing it was exported with (data.inputs.preprocessing, recorded) is the one
  predict applies now;
- one float32 input of the run's input shape, one output of the recorded width.
`--engine auto` scores with Keras otherwise (with a note where a copy is present but does not
qualify); `--engine onnx` refuses with one line. The ONNX path imports no Keras, no backend
and none of the run's code files.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from dlrun import store
from dlrun.errors import RunError, UsageError

ENGINES = ("auto", "keras", "onnx")
# Every export is verified within this of the checkpoint's outputs (report.export), and a copy
# recorded with more is not used.
TOLERANCE = 1e-4
RECORD_VERSION = 1


@dataclass
class Engine:
    """A model that scores a batch of preprocessed inputs."""

    name: str  # keras | onnx
    score: Callable[[np.ndarray], np.ndarray]
    input_shape: tuple[int, ...]
    units: int  # outputs per input (the last axis)
    detail: str  # what scored, in words (predict --verbose)


class Unusable(RunError):
    """The run's ONNX copy does not stand in for the checkpoint: why, in one line."""


def check_engine(engine: str) -> None:
    if engine not in ENGINES:
        raise UsageError(f"--engine: expected auto, keras or onnx, got {engine!r}")


def keep_onnx(
    run_dir: Path, checkpoint: str, checkpoint_sha256: str, onnx_file: Path, verified: dict
) -> Path:
    """export: the verified file copied into the run, then its record (the copy without its
    record, or with an older one, is never used: the hashes differ)."""
    data = store.read_bytes(onnx_file, limit=os.path.getsize(onnx_file))  # just written
    store.safe_folder(run_dir, store.EXPORTS)  # a real folder of the run, never a symlink
    path = run_dir / store.onnx_export(checkpoint)
    with store.atomic_path(path) as tmp:
        tmp.write_bytes(data)
    record = {
        "version": RECORD_VERSION,
        "format": "onnx",
        "file": store.onnx_export(checkpoint),
        "sha256": hashlib.sha256(data).hexdigest(),
        "checkpoint": checkpoint,
        "checkpoint_file": {"best": store.BEST, "last": store.LAST}[checkpoint],
        "checkpoint_sha256": checkpoint_sha256,
        "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **verified,
    }
    store.write_json(run_dir / store.onnx_record(checkpoint), record)
    return path


def recorded(run_dir: Path, checkpoint: str) -> bool:
    """Whether the run holds an ONNX copy's record for this checkpoint (not yet checked) and
    onnxruntime is installed: what `--engine auto` tries before Keras."""
    return os.path.lexists(run_dir / store.onnx_record(checkpoint)) and _onnxruntime()


def _onnxruntime() -> bool:
    try:
        return importlib.util.find_spec("onnxruntime") is not None
    except (ImportError, ValueError):
        return False


def onnx_engine(
    run: store.Run, checkpoint: str, model_path: Path, preprocessing: dict, limit: int
) -> Engine:
    """The run's ONNX copy of `checkpoint`, checked as the module docstring says; Unusable
    (one line saying why) otherwise. `preprocessing`: what predict applies now, as
    preprocessing.json writes it; `limit`: the most bytes a copy of this run's model takes."""
    where = run.path / store.onnx_record(checkpoint)
    if not os.path.lexists(where):
        raise Unusable(
            f"{run.path}: no ONNX export of its {checkpoint} checkpoint; make one with: dlrun "
            f"export {run.path} --format onnx --checkpoint {checkpoint} --out FOLDER"
        )
    if not _onnxruntime():
        raise Unusable('--engine onnx needs onnxruntime, not installed; pip install "dlrun[onnx]"')
    record = store.read_json(store.within(run.path, store.onnx_record(checkpoint)), run.path)
    name = store.onnx_record(checkpoint)
    if record.get("version") != RECORD_VERSION or record.get("checkpoint") != checkpoint:
        raise Unusable(f"{run.path}: {name} is not an ONNX record of its {checkpoint} checkpoint")
    difference, tolerance = record.get("max_difference"), record.get("tolerance")
    if not (_number(difference) and _number(tolerance) and difference <= tolerance <= TOLERANCE):
        raise Unusable(f"{run.path}: {name} records no verification within {TOLERANCE:g}")
    if record.get("checkpoint_sha256") != store.sha256(model_path):
        raise Unusable(
            f"{run.path}: its ONNX export was made from an earlier {model_path.name} (the "
            "checkpoint has changed since: resumed or replaced); export it again"
        )
    if record.get("preprocessing") != json.loads(json.dumps(preprocessing, default=store.jsonable)):
        raise Unusable(
            f"{run.path}: its ONNX export was made with other preprocessing than the run "
            "records now (meta.json or config.yaml changed); export it again"
        )
    path = store.within(run.path, store.onnx_export(checkpoint))
    try:
        data = store.read_bytes(path, limit)
    except FileNotFoundError:
        raise Unusable(f"{run.path}: {store.onnx_export(checkpoint)} is missing") from None
    if hashlib.sha256(data).hexdigest() != record.get("sha256"):
        raise Unusable(
            f"{path}: its sha256 is not the one export recorded (changed since); refused unloaded"
        )
    return _session(data, path, preprocessing, record)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _session(data: bytes, path: Path, preprocessing: dict, record: dict) -> Engine:
    """onnxruntime on the verified bytes, its one input and output checked against the run."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings are not the user's business
    try:
        session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own kinds for a bad model
        raise Unusable(f"{path}: onnxruntime cannot load it ({type(exc).__name__})") from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    shape = tuple(preprocessing.get("input_shape") or ())
    units = record.get("output_units")
    if (
        len(inputs) != 1
        or len(outputs) != 1
        or inputs[0].type != "tensor(float)"
        or not _fits(inputs[0].shape[1:], shape)
        or not isinstance(units, int)
        or not _fits(outputs[0].shape[-1:], (units,))
    ):
        raise Unusable(f"{path}: its inputs or outputs are not the run's model's")
    given = inputs[0].name

    def score(x: np.ndarray) -> np.ndarray:
        return session.run(None, {given: np.asarray(x, dtype=np.float32)})[0]

    version = onnxruntime.__version__
    return Engine(
        "onnx",
        score,
        shape,
        units,
        f"onnxruntime {version} on {path.name} (sha256 {record['sha256'][:12]}, from "
        f"{record.get('checkpoint_file')} sha256 {record['checkpoint_sha256'][:12]})",
    )


def _fits(dims, expected: tuple) -> bool:
    """ONNX dimensions (ints, or names for dynamic ones) against the run's shape."""
    dims = list(dims)
    if len(dims) != len(expected):
        return False
    return all(not isinstance(d, int) or d == e for d, e in zip(dims, expected, strict=True))
