"""`dlrun predict`: a run's checkpoint scores new inputs, one row per input.  [TensorFlow]

The checkpoint is loaded by Keras, or, where `dlrun export --format onnx` kept a verified copy
of that very checkpoint in the run, scored by onnxruntime without importing Keras
(report.engines decides; --engine keras|onnx|auto).
Inputs are read, preprocessed as in training and scored a batch at a time (data.inputs), and
every batch's rows go straight to the output: a file (csv, json or npz, written atomically),
csv or json on stdout, or a table on stdout while there are few rows. Classes are named as the
run's labels spell them (meta.json), with their probability; one sigmoid unit is thresholded
at 0.5 as evaluate does (model.outputs); a regression gives its value(s).
"""

from __future__ import annotations

import contextlib
import csv
import json
import sys
from pathlib import Path
from typing import IO

import numpy as np

from dlrun import store, usercode
from dlrun.errors import RunError, UsageError
from dlrun.model.checkpoints import checkpoint_path, load_model
from dlrun.model.outputs import predicted_classes
from dlrun.report import engines
from dlrun.spec.loading import load_spec
from dlrun.textsafe import escaped

FORMATS = ("csv", "json", "npz")
TABLE_ROWS = 100  # more rows than this on stdout: csv instead of a table


def check_arguments(
    fmt: str | None, out: Path | None, top: int, force: bool = False, sources=()
) -> str | None:
    """The output format (from --format or --out's suffix), or None for a table on stdout;
    --out checked by the one owner of result files (store.output) before anything is read."""
    if top < 1:
        raise UsageError(f"--top: expected 1 or more, got {top}")
    if fmt is not None and fmt not in FORMATS:
        raise UsageError(f"--format: expected csv, json or npz, got {fmt!r}")
    if out is not None and fmt is None:
        fmt = out.suffix.lower().lstrip(".")
        fmt = fmt if fmt in FORMATS else "csv"
    if fmt == "npz" and out is None:
        raise UsageError("--format npz writes a binary file: give --out FILE.npz")
    if out is not None:
        store.output.check_suffix(out, fmt)
        store.output.check(out, force=force, inputs=_input_paths(sources))
    return fmt


def _input_paths(sources) -> list[Path]:
    return [Path(source) for source in sources if source != "-"]


def predict(
    run_path: Path,
    sources: list[str],
    checkpoint: str = "best",
    out: Path | None = None,
    fmt: str | None = None,
    top: int = 1,
    score: bool = False,
    unsafe_load: bool = False,
    console=None,
    force: bool = False,
    stdin: IO[str] | None = None,
    stdout: IO[str] | None = None,
    engine: str = "auto",
) -> dict:
    """Score `sources` with a run's checkpoint; rows go to `out`, or to `stdout` (csv/json with
    `fmt`, else a table's rows returned as `table` while there are at most TABLE_ROWS).
    `engine`: keras, onnx (the run's verified ONNX export, report.engines) or auto (onnx where
    it qualifies)."""
    from dlrun.data.inputs import open_inputs, preprocessing
    from dlrun.report.progress import Progress

    engines.check_engine(engine)
    fmt = check_arguments(fmt, out, top, force, sources)
    run = store.open_run(run_path)
    model_path = checkpoint_path(run, checkpoint, " to predict with")
    spec = load_spec(store.config_of(run.path), relative_to=run.relative_to)
    task = run.metrics.get("task") or spec.task
    notes: list[str] = []
    scorer = None
    if spec.code:  # refused unless trusted, as on every reading command, whichever engine scores
        usercode.check_run(spec, run.path)
    if engine == "onnx" or (engine == "auto" and engines.recorded(run.path, checkpoint)):
        scorer = _onnx(spec, run, checkpoint, model_path, task, engine == "onnx", notes)
    if scorer is None:
        scorer = _keras(spec, run, model_path, unsafe_load)
    prep = preprocessing(spec, scorer.input_shape, run.meta, task)
    names = _class_names(prep.class_names, scorer.units, task)
    if task == "regression" and top != 1:
        raise UsageError(f"--top: {run.name} is a regression; it has values, not classes")
    if names is not None and top > len(names):
        raise UsageError(f"--top {top}: {run.name} has {len(names)} classes")
    inputs = open_inputs(sources, prep, spec.training.batch_size, labels=score, stdin=stdin)
    stdout = stdout or sys.stdout
    sink = _sink(fmt, out, stdout, force, [*_input_paths(sources), run.path])
    truth, predicted, values = [], [], []
    count = 0
    description = f"predict {inputs.count:,} inputs" if inputs.count else "predict"
    with contextlib.ExitStack() as stack:
        stack.enter_context(sink)
        advance = stack.enter_context(Progress(console, inputs.count, description))
        for batch in inputs.batches:
            outputs = np.asarray(scorer.score(batch.x))
            rows, classes = _rows(inputs.id_column, batch, outputs, names, top, score)
            sink.write(rows, outputs)
            count += len(rows)
            if score:
                truth.append(batch.labels)
                (predicted if names is not None else values).append(
                    classes if names is not None else outputs
                )
            advance(len(rows))
    result = {
        "run": run.name,
        "run_status": run.status,
        "checkpoint": checkpoint,
        "engine": scorer.name,
        "engine_detail": scorer.detail,
        "task": task,
        "count": count,
        "id_column": inputs.id_column,
        "notes": notes + inputs.notes + sink.notes,
        "table": sink.table,
        "written": str(out) if out is not None else None,
    }
    if score:
        result["score"] = _score(truth, predicted, values, names)
    return result


def _onnx(spec, run, checkpoint: str, model_path: Path, task: str, refuse: bool, notes: list):
    """The run's verified ONNX copy (report.engines), or None with a note on why not; with
    `refuse` (--engine onnx), the reason as an error instead. No Keras is imported here."""
    from dlrun.data.inputs import preprocessing
    from dlrun.model.checkpoints import BYTES_PER_PARAM, FIXED_BYTES

    shape = run.metrics.get("input_shape")
    params = run.metrics.get("params")
    try:
        if not isinstance(shape, list) or not isinstance(params, int) or isinstance(params, bool):
            raise engines.Unusable(f"{run.path}: metrics.json records no input shape or params")
        prep = preprocessing(spec, tuple(shape), run.meta, task).as_json()
        limit = FIXED_BYTES + BYTES_PER_PARAM * params  # as a checkpoint of this run
        return engines.onnx_engine(run, checkpoint, model_path, prep, limit)
    except RunError as exc:  # Unusable, and a damaged or symlinked record or file
        if refuse:
            raise
        notes.append(f"{exc}; scored with Keras instead")
        return None


def _keras(spec, run, model_path: Path, unsafe_load: bool) -> engines.Engine:
    """The checkpoint, loaded by Keras on the run's backend (its code files imported first)."""
    from dlrun.backend import current, use

    use(spec.backend)
    usercode.use_run(spec, run.path)  # its code files, if trusted, before anything is built
    model = _model(spec, run, model_path, unsafe_load)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise RunError(
            f"{run.path}: the model has {len(model.inputs)} inputs and {len(model.outputs)} "
            "outputs; predict takes models of one input and one output"
        )
    input_shape = run.metrics.get("input_shape")
    input_shape = tuple(input_shape) if isinstance(input_shape, list) else model.input_shape[1:]
    if tuple(model.input_shape[1:]) != tuple(input_shape):
        raise RunError(
            f"{run.path}: the checkpoint takes inputs of shape {tuple(model.input_shape[1:])} "
            f"but metrics.json records {tuple(input_shape)}"
        )
    return engines.Engine(
        "keras",
        lambda x: np.asarray(model.predict_on_batch(x)),
        tuple(input_shape),
        int(model.output_shape[-1]),
        f"Keras on {current()} with {model_path.relative_to(run.path)}",
    )


def _model(spec, run, model_path: Path, unsafe_load: bool):
    """The checkpoint, through the one guarded loader, bounded by the parameters it holds."""
    params = run.metrics.get("params")
    if not isinstance(params, int) or isinstance(params, bool):
        params = None
    from dlrun.model.checkpoints import functional

    model = load_model(model_path, unsafe_load, params, compile=False)
    return functional(model, run.metrics.get("input_shape"))


def _class_names(names: list[str] | None, units: int, task: str) -> list[str] | None:
    """The run's class names; 0..K-1 for a run that recorded none. None for a regression."""
    if task == "regression":
        return None
    count = 2 if units == 1 else units
    if names is None or len(names) != count:
        return [str(number) for number in range(count)]
    return names


def _rows(id_column: str, batch, outputs: np.ndarray, names, top: int, score: bool):
    """One dict per input, and the predicted class indices (None for a regression)."""
    ids = batch.ids
    rows = [{id_column: identifier} for identifier in ids]
    if names is None:  # regression: the value, or one per target
        flat = outputs.reshape(len(outputs), -1)
        for row, values in zip(rows, flat, strict=True):
            if flat.shape[1] == 1:
                row["value"] = float(values[0])
            else:
                row.update({f"value_{i}": float(v) for i, v in enumerate(values)})
        if score:
            for row, label in zip(rows, batch.labels, strict=True):
                row["label"] = _plain(label)
        return rows, None
    classes = predicted_classes(outputs)
    if outputs.ndim == 1 or outputs.shape[-1] == 1:  # one sigmoid unit: P(second class)
        p = np.ravel(outputs).astype(np.float64)
        probabilities = np.stack([1 - p, p], axis=-1)
    else:
        probabilities = outputs.reshape(len(outputs), -1).astype(np.float64)
    for row, chosen, p in zip(rows, classes, probabilities, strict=True):
        others = [i for i in np.argsort(-p, kind="stable") if i != chosen]
        for rank, index in enumerate([int(chosen), *others][:top], start=1):
            suffix = "" if rank == 1 else f"_{rank}"
            row[f"class{suffix}"] = names[index]
            row[f"probability{suffix}"] = float(p[index])
    if score:
        for row, label in zip(rows, batch.labels, strict=True):
            row["label"] = _plain(label)
    return rows, classes


def _plain(label):
    """A label as JSON and csv write it: one-hot rows as their class index."""
    label = np.asarray(label)
    if label.ndim >= 1 and label.size > 1:
        return int(np.argmax(label))
    return label.item() if label.ndim == 0 else label.ravel()[0].item()


def _score(truth: list, predicted: list, values: list, names) -> dict:
    """evaluate's numbers on the labelled inputs: accuracy, or MAE, RMSE and R²."""
    from dlrun.data.inputs import label_indices

    if not truth:
        return {"samples": 0}
    labels = np.concatenate([np.asarray(t) for t in truth])
    if names is None:
        from dlrun.report.evaluate import regression_report

        outputs = np.concatenate(values)
        report = regression_report(labels.astype(np.float32), outputs)
        return {"samples": len(labels), **report["regression"]}
    expected = label_indices(labels, names)
    got = np.concatenate(predicted)
    return {"samples": len(expected), "accuracy": float(np.mean(got == expected))}


# --- where the rows go ----------------------------------------------------------------------


def _sink(fmt: str | None, out: Path | None, stdout: IO[str], force: bool, inputs: list[Path]):
    if out is not None:
        return _FileSink(fmt, out, force, inputs)
    if fmt is not None:
        return _StreamSink(fmt, stdout)
    return _TableSink(stdout)


def _cell(value, safe: bool):
    if isinstance(value, float):
        return float(f"{value:.7g}")  # float32 outputs: seven digits say it all
    if isinstance(value, str) and safe:  # a terminal: a newline in a path is shown as \n
        return escaped(value)
    return value


class _Rows:
    """Rows written as csv or as one JSON array, a batch at a time, to a text file."""

    def __init__(self, fmt: str, file: IO[str], safe: bool):
        self.fmt, self.file, self.safe = fmt, file, safe
        self.columns: list[str] | None = None
        self.writer = None
        self.first = True

    def write(self, rows: list[dict]) -> None:
        rows = [{k: _cell(v, self.safe) for k, v in row.items()} for row in rows]
        if self.fmt == "json":
            for row in rows:
                self.file.write(("[\n  " if self.first else ",\n  ") + json.dumps(row))
                self.first = False
            return
        if self.writer is None:
            self.columns = list(rows[0]) if rows else []
            self.writer = csv.DictWriter(self.file, self.columns, lineterminator="\n")
            self.writer.writeheader()
        self.writer.writerows(rows)

    def close(self) -> None:
        if self.fmt == "json":
            self.file.write("[]\n" if self.first else "\n]\n")
        self.file.flush()


class _StreamSink:
    """csv or JSON on stdout, as the rows come."""

    table = None

    def __init__(self, fmt: str, stdout: IO[str]):
        self.rows = _Rows(fmt, stdout, safe=True)
        self.notes: list[str] = []

    def __enter__(self):
        return self

    def write(self, rows: list[dict], outputs: np.ndarray) -> None:
        self.rows.write(rows)

    def __exit__(self, kind, *exc):
        if kind is None:
            self.rows.close()


class _TableSink:
    """Rows kept for a table while they are few; beyond TABLE_ROWS, csv on stdout instead."""

    def __init__(self, stdout: IO[str]):
        self.stdout = stdout
        self.table: list[dict] | None = []
        self.stream: _Rows | None = None
        self.notes: list[str] = []

    def __enter__(self):
        return self

    def write(self, rows: list[dict], outputs: np.ndarray) -> None:
        if self.stream is None and len(self.table) + len(rows) > TABLE_ROWS:
            self.notes.append(
                f"more than {TABLE_ROWS} rows: printed as csv; --out FILE writes them to a file"
            )
            self.stream = _Rows("csv", self.stdout, safe=True)
            self.stream.write(self.table)
            self.table = None
        if self.stream is not None:
            self.stream.write(rows)
        else:
            self.table += rows

    def __exit__(self, kind, *exc):
        if kind is None and self.stream is not None:
            self.stream.close()


class _FileSink:
    """--out: csv or JSON written as the rows come, npz at the end; moved into place only when
    every input has been scored."""

    table = None

    def __init__(self, fmt: str, out: Path, force: bool, inputs: list[Path]):
        self.fmt, self.out = fmt, out
        self.notes: list[str] = []
        self.arrays: dict[str, list] = {}
        self._atomic = store.output.writing(out, force=force, inputs=inputs)

    def __enter__(self):
        self.tmp = self._atomic.__enter__()
        if self.fmt != "npz":
            self.file = open(self.tmp, "w", newline="", encoding="utf-8")  # noqa: SIM115
            self.rows = _Rows(self.fmt, self.file, safe=False)
        return self

    def write(self, rows: list[dict], outputs: np.ndarray) -> None:
        store.output.stop_point()  # SIGTERM or SIGHUP: stop here, between batches
        if self.fmt != "npz":
            self.rows.write(rows)
            return
        for key in rows[0] if rows else []:
            self.arrays.setdefault(key, []).extend(row[key] for row in rows)
        self.arrays.setdefault("outputs", []).append(outputs)

    def __exit__(self, kind, value, traceback):
        caught = None
        try:
            try:
                if kind is None:
                    if self.fmt == "npz":
                        arrays = {
                            key: np.concatenate(values) if key == "outputs" else np.array(values)
                            for key, values in self.arrays.items()
                        }
                        with open(self.tmp, "wb") as file:
                            np.savez(file, **arrays)
                    else:
                        self.rows.close()
            finally:
                if self.fmt != "npz":
                    self.file.close()
        except BaseException as exc:  # a full disk at the last write: the owner says so
            caught = exc
        if caught is not None:
            self._atomic.__exit__(type(caught), caught, caught.__traceback__)
            raise caught
        return self._atomic.__exit__(kind, value, traceback)
