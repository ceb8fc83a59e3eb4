"""`dlrun export`: a run's checkpoint as files other programs load, verified before it is
reported done.  [TensorFlow]

keras writes the model as a standalone .keras file; savedmodel, onnx and litert go through
Keras' own model.export. Each artifact is then loaded back in its own runtime (Keras,
TensorFlow, onnxruntime, the LiteRT interpreter) and its outputs on up to 64 samples of the
run's test split must equal the checkpoint's within 1e-4. Beside it, preprocessing.json says
what predict-side code must do to an input first (data.inputs.Preprocessing). `script` writes
the spec as a plain Keras script instead (report.script).

Everything is built in a temporary folder beside --out and moved into place only once
verified, so a failed or interrupted export leaves nothing behind. An existing --out is
replaced only with --force, and only when it is an earlier export (a folder holding a
preprocessing.json, or for a script, a file).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np

from dlrun import store, usercode
from dlrun.errors import RunError, UsageError
from dlrun.model.checkpoints import checkpoint_path, load_model
from dlrun.model.graph import one_input_and_output
from dlrun.report.engines import TOLERANCE, keep_onnx
from dlrun.spec.loading import load_spec

FORMATS = ("keras", "savedmodel", "onnx", "litert", "script")
ARTIFACTS = {
    "keras": "model.keras",
    "savedmodel": ".",
    "onnx": "model.onnx",
    "litert": "model.tflite",
}
PREPROCESSING = "preprocessing.json"
SAMPLES = 64
# format -> (the modules it needs, the extra that installs them)
EXTRAS = {
    "onnx": (("tf2onnx", "onnx", "onnxruntime"), "onnx"),
    "litert": (("ai_edge_litert",), "litert"),
}


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise UsageError(f"--format: expected {', '.join(FORMATS)}; got {fmt!r}")
    modules, extra = EXTRAS.get(fmt, ((), ""))
    missing = [name for name in modules if not _installed(name)]
    if missing:
        raise UsageError(
            f"--format {fmt} needs {', '.join(missing)}, not installed; install the extra: "
            f'pip install "dlrun[{extra}]"'
        )


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_out(out: Path, force: bool, fmt: str, run_path: Path | None = None) -> None:
    """--out must not exist, or (with --force) be an earlier export of the same kind: the
    rules of every result path (store.output), checked before anything is loaded."""
    store.output.check_suffix(out, fmt)
    store.output.check(out, **_rules(out, force, fmt, run_path))


def _rules(out: Path, force: bool, fmt: str, run_path: Path | None) -> dict:
    folder = fmt != "script"
    return {
        "force": force,
        "inputs": [run_path] if run_path is not None else [],
        "folder": folder,
        "earlier": _earlier_export if folder else None,
    }


def _earlier_export(out: Path) -> bool:
    """A folder an export wrote (it holds preprocessing.json), or an empty one."""
    return os.path.isfile(out / PREPROCESSING) or not any(out.iterdir())


def export(
    run_path: Path,
    fmt: str,
    out: Path,
    force: bool = False,
    checkpoint: str = "best",
    unsafe_load: bool = False,
    save: bool = True,
) -> dict:
    """Export a run's checkpoint (or, `script`, its spec) to `out`; see the module docstring.
    An ONNX export is also kept in the run, with what was verified (report.engines), unless
    `save` is False."""
    check_format(fmt)
    run = store.open_run(run_path)
    if run.status == store.RUNNING:
        raise RunError(
            f"{run.path}: still training ({run.epochs_done()} of "
            f"{run.meta.get('epochs_planned', '?')} epochs done); export it once it has ended"
        )
    check_out(out, force, fmt, run.path)
    rules = _rules(out, force, fmt, run.path)
    spec = load_spec(store.config_of(run.path), relative_to=run.relative_to)
    one_input_and_output(spec, run.path, "export")
    result = {"run": run.name, "format": fmt, "out": str(out), "checkpoint": checkpoint}
    if fmt == "script":
        return {**result, **_script(spec, run, out, rules)}
    model_path = checkpoint_path(run, checkpoint, " to export")
    from dlrun.backend import load, use

    use("tensorflow")  # Keras' exporters and tf.data; a .keras file loads on every backend
    load()
    usercode.use_run(spec, run.path)  # its code files, if trusted, before anything is built
    checkpoint_sha256 = store.sha256(model_path)  # the file the ONNX copy is recorded against
    model = _model(spec, run, model_path, unsafe_load, fmt)
    samples = _test_samples(spec, run.meta.get("data_encoding"))
    expected = np.asarray(model.predict(samples, batch_size=len(samples), verbose=0))
    with store.output.writing(out, **rules) as folder:
        artifact, runtime, got = _EXPORTERS[fmt](model, folder, samples, unsafe_load)
        difference = float(np.max(np.abs(np.reshape(got, expected.shape) - expected)))
        if not difference <= TOLERANCE:  # NaN fails too
            raise RunError(
                f"{run.path}: the {fmt} export gives outputs up to {difference:.2e} away from "
                f"Keras' on {len(samples)} test samples (tolerance {TOLERANCE:g}); nothing written"
            )
        prep = _run_preprocessing(spec, run, model)
        store.write_json(folder / PREPROCESSING, _preprocessing(spec, run, checkpoint, model, prep))
    result = {
        **result,
        "artifact": str(out if artifact == "." else out / artifact),
        "preprocessing": str(out / PREPROCESSING),
        "runtime": runtime,
        "samples": int(len(samples)),
        "max_difference": difference,
        "tolerance": TOLERANCE,
    }
    if fmt == "onnx" and save:  # predict may score with it instead of Keras (report.engines)
        verified = {
            "runtime": runtime,
            "samples": int(len(samples)),
            "max_difference": difference,
            "tolerance": TOLERANCE,
            "output_units": int(model.output_shape[-1]),
            "preprocessing": json.loads(json.dumps(prep.as_json(), default=store.jsonable)),
        }
        with store.saving(result, run.path):
            kept = keep_onnx(run.path, checkpoint, checkpoint_sha256, out / artifact, verified)
            result["kept"] = str(kept)
    return result


def _script(spec, run: store.Run, out: Path, rules: dict) -> dict:
    from dlrun.backend import load, use
    from dlrun.report import script

    script.check_scriptable(spec)  # before Keras is imported
    use(spec.backend)
    load()
    usercode.use_run(spec, run.path)  # its code files, if trusted, before anything is built
    shape = run.metrics.get("input_shape")
    if isinstance(shape, list):
        input_shape = tuple(shape)
    else:  # a run that never finished: the data's shape, as validate finds it
        from dlrun.data.arrays import signature

        input_shape = signature(spec)[0]
    folder = script.code_folder(out)
    if spec.code:  # the run's code files beside the script, which imports them
        files = usercode.check_trusted(run.path, [run.path / entry for entry in spec.code])
        if folder.is_symlink() or (os.path.lexists(folder) and not folder.is_dir()):
            raise UsageError(
                f"{folder}: is a symlink or not a folder; the script's code goes there"
            )
        folder.mkdir(exist_ok=True)
        usercode.copy_into_run(folder, files)  # into <script>_code/code/
    text = script.render(spec, run, input_shape, f"{folder.name}/{store.CODE}")
    with store.output.writing(out, **rules) as tmp:
        tmp.write_text(text)
    result = {"artifact": str(out)}
    if spec.code:
        result["code"] = str(folder)
    return result


def _model(spec, run: store.Run, model_path: Path, unsafe_load: bool, fmt: str):
    params = run.metrics.get("params")
    params = params if isinstance(params, int) and not isinstance(params, bool) else None
    # keras: the checkpoint whole, compiled as trained; the others need only the network.
    model = load_model(model_path, unsafe_load, params, compile=fmt == "keras")
    if fmt == "keras":
        return model
    from dlrun.model.checkpoints import functional

    return functional(model, run.metrics.get("input_shape"))


def _test_samples(spec, encoding) -> np.ndarray:
    """Up to SAMPLES inputs of the run's test split, preprocessed (and csv text columns
    encoded) as in training."""
    from dlrun.data.arrays import load_data

    data = load_data(spec, encoding if isinstance(encoding, dict) else None)
    x = data.x_test[:SAMPLES]
    if data.source is not None:  # file paths: decoded as training decodes them
        x = np.concatenate(list(data.source.batches(list(x), SAMPLES)))
    return np.asarray(x, dtype=np.float32)


def _run_preprocessing(spec, run: store.Run, model):
    """What predict-side code does to an input (data.inputs.preprocessing owns it)."""
    from dlrun.data.inputs import preprocessing

    task = run.metrics.get("task") or spec.task
    return preprocessing(spec, tuple(model.input_shape[1:]), run.meta, task)


def _preprocessing(spec, run: store.Run, checkpoint: str, model, prep) -> dict:
    import keras

    import dlrun

    task = prep.task
    units = int(model.output_shape[-1])
    if task == "regression":
        output = f"{units} regression value(s) per input"
    elif units == 1:
        output = "one sigmoid unit: the probability of class_names[1]; above 0.5 is class 1"
    else:
        output = f"{units} scores per input, one per class_names entry; the largest wins"
    return {
        "run": run.name,
        "checkpoint": checkpoint,
        **prep.as_json(),
        "output": output,
        "versions": {"keras": keras.__version__, "dlrun": dlrun.__version__},
    }


# --- each format: write, load in its own runtime, score the samples --------------------------


def _quietly(action):
    from dlrun.backend import quietly

    return quietly(action)


def _keras(model, folder: Path, samples: np.ndarray, unsafe_load: bool):
    import keras

    from dlrun.model.frozen import standalone

    path = folder / ARTIFACTS["keras"]
    standalone(model).save(path)  # no class of dlrun's in it: it loads in plain Keras
    loaded = load_model(path, unsafe_load, compile=False)
    got = loaded.predict(samples, batch_size=len(samples), verbose=0)
    return ARTIFACTS["keras"], f"Keras {keras.__version__}", got


def _savedmodel(model, folder: Path, samples: np.ndarray, unsafe_load: bool):
    from dlrun.backend import tensorflow

    _quietly(lambda: model.export(str(folder), format="tf_saved_model", verbose=False))
    tf = tensorflow()
    loaded = tf.saved_model.load(str(folder))
    return ".", f"TensorFlow {tf.__version__}", _first(loaded.serve(tf.constant(samples)))


def _onnx(model, folder: Path, samples: np.ndarray, unsafe_load: bool):
    import onnxruntime

    path = folder / ARTIFACTS["onnx"]
    _quietly(lambda: model.export(str(path), format="onnx", verbose=False))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    got = session.run(None, {name: samples})[0]
    return ARTIFACTS["onnx"], f"onnxruntime {onnxruntime.__version__}", got


def _litert(model, folder: Path, samples: np.ndarray, unsafe_load: bool):
    import ai_edge_litert
    from ai_edge_litert.interpreter import Interpreter

    path = folder / ARTIFACTS["litert"]
    _quietly(lambda: model.export(str(path), format="litert", verbose=False))

    def run():
        interpreter = Interpreter(model_path=str(path))
        (given,) = interpreter.get_input_details()
        interpreter.resize_tensor_input(given["index"], list(samples.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(given["index"], samples)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])

    version = getattr(ai_edge_litert, "__version__", "")
    return ARTIFACTS["litert"], f"LiteRT interpreter {version}".strip(), _quietly(run)


def _first(outputs) -> np.ndarray:
    """A runtime's outputs: the tensor itself, or the first of a dict or list of them."""
    if isinstance(outputs, dict):
        outputs = next(iter(outputs.values()))
    elif isinstance(outputs, (list, tuple)):
        outputs = outputs[0]
    return np.asarray(outputs)


_EXPORTERS = {"keras": _keras, "savedmodel": _savedmodel, "onnx": _onnx, "litert": _litert}
