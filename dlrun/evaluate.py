"""Scoring a saved run: reload its checkpoint safely and evaluate it on test data.  [TensorFlow]"""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path

import numpy as np

from dlrun import store
from dlrun.errors import DataError, RunError, SpecError
from dlrun.spec import load_spec

CHECKPOINTS = {"best": store.BEST, "last": store.LAST}
# A .keras file holds float32 weights, up to two optimizer moments per weight, the step
# counter and a config: 16 bytes a parameter leaves room; the fixed part covers the config.
BYTES_PER_PARAM = 16
FIXED_BYTES = 64 * 1024 * 1024
MAX_ENTRIES = 1000


def check_archive(path: Path, params: int | None) -> None:
    """Refuse, before loading, a model file that expands far beyond what `params` need.

    A .keras file is a zip: a few kilobytes can claim gigabytes once uncompressed.
    """
    import zipfile

    try:
        with zipfile.ZipFile(store.safe_file(path)) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError):
        return  # not a zip: Keras says what is wrong with it
    limit = FIXED_BYTES + BYTES_PER_PARAM * (params or 0) if params is not None else 2**32
    size = sum(entry.file_size for entry in entries)
    if len(entries) > MAX_ENTRIES or size > limit:
        raise RunError(
            f"{path}: expands to {size / 2**20:,.0f} MiB in {len(entries)} entries, far more "
            f"than {params:,} parameters need ({limit / 2**20:,.0f} MiB); refused unloaded"
            if params is not None
            else f"{path}: expands to {size / 2**20:,.0f} MiB; refused unloaded"
        )


def load_model(path: Path, unsafe_load: bool = False, params: int | None = None):
    """keras.models.load_model with safe_mode on, unless the user vouches for the file.

    `params`: the parameter count the run's config builds; a file expanding far beyond it
    is refused before Keras opens it.
    """
    from dlrun.backend import load

    check_archive(path, params)

    keras = load()

    try:
        return keras.models.load_model(path, safe_mode=not unsafe_load)
    except ValueError as exc:
        reason = " ".join(str(exc).split())[:300]
        if "safe_mode" in reason or "Lambda" in reason or "unsafe" in reason.lower():
            raise RunError(
                f"{path}: refused by Keras safe_mode ({reason}); pass --unsafe-load only if "
                "you trust where this file came from"
            ) from None
        raise RunError(f"{path}: cannot be loaded ({reason})") from None
    except (OSError, KeyError, EOFError) as exc:
        raise RunError(f"{path}: damaged model file ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # zipfile, h5py and Keras raise many kinds for a bad archive
        raise RunError(f"{path}: cannot be loaded ({type(exc).__name__}: {exc})") from None


def _printable(name: str) -> str:
    """A class name as printed: control characters (terminal escapes) removed."""
    return "".join(c for c in name if c.isprintable())


def evaluate(
    run_path: Path,
    checkpoint: str = "best",
    overrides: list[str] | tuple[str, ...] = (),
    unsafe_load: bool = False,
) -> dict:
    """Evaluate a run's checkpoint on its test split (or on data given by `data.*` overrides).

    Writes evaluations/<timestamp>-<checkpoint>-<data>.json and a PNG of the same name beside
    it (-confusion_matrix.png; regression: -predicted_vs_true.png): no evaluation overwrites
    another.
    """
    from dlrun.backend import use
    from dlrun.data import evaluation_input, load_data

    run = store.open_run(run_path)
    for assignment in overrides:
        if not assignment.startswith(("data.", "backend=")):
            raise SpecError(
                f"--set {assignment}: evaluate takes data.KEY=VALUE and backend=NAME overrides only"
            )
    model_path = store.within(run.path, CHECKPOINTS[checkpoint])
    if not model_path.exists():
        raise RunError(
            f"{run.path}: no {CHECKPOINTS[checkpoint]}; the run saved no checkpoint "
            f"(status {run.status}, {run.meta.get('epochs_done', 0)} epochs done)"
        )
    store.read_bytes(run.path / store.CONFIG)  # a regular file of bounded size, or refused
    spec = load_spec(run.path / store.CONFIG, overrides)
    use(spec.backend)  # the run's own, or another one: a .keras file loads on every backend
    data = load_data(spec)
    trained_on = run.metrics.get("input_shape")  # recorded at train time
    if isinstance(trained_on, list):
        check_shape(tuple(trained_on), data.input_shape, run.path)
    from dlrun.builder import build_model

    # A transfer model's base comes from elsewhere (a run, an application): rebuilding it only
    # to count parameters could fail where the checkpoint loads; the archive's plain bound holds.
    params = None if spec.model.base else build_model(spec, data.input_shape).count_params()
    model = load_model(model_path, unsafe_load, params)
    check_shape(tuple(model.input_shape[1:]), data.input_shape, run.path)
    test = evaluation_input(data.x_test, data.y_test, spec.training.batch_size, data.source)
    scores = model.evaluate(**test, verbose=0, return_dict=True)
    outputs = model.predict(test["x"], batch_size=test.get("batch_size"), verbose=0)
    created = datetime.now()
    result = {
        "run": run.name,
        "run_status": run.status,
        "checkpoint": checkpoint,
        "created": created.astimezone().isoformat(timespec="seconds"),
        "data": spec.data.model_dump(mode="json"),
        "task": data.task,
        "samples": int(len(data.x_test)),
        "scores": {key: float(value) for key, value in scores.items()},
    }
    # Into the run only: a received run's evaluations/ may be a symlink out of it.
    out = _claim(store.safe_folder(run.path, store.EVALUATIONS), created, checkpoint, spec.data)
    if data.task == "regression":
        plot = out.with_name(f"{out.stem}-predicted_vs_true.png")
        result.update(regression_report(data.y_test, outputs))
        store.write_json(out, result)
        from dlrun.plots import predicted_plot

        predicted_plot(np.ravel(data.y_test), np.ravel(outputs), plot)
    else:
        plot = out.with_name(f"{out.stem}-confusion_matrix.png")
        labels = [str(label) for label in range(data.num_classes)]
        names = [_printable(name) for name in data.class_names or labels]
        result.update(classification_result(data.y_test, outputs, names))
        store.write_json(out, result)
        from dlrun.plots import confusion_plot

        # Folder names are a stranger's text: no matplotlib mathtext from a '$'.
        shown = [name.replace("$", r"\$") for name in names]
        confusion_plot(np.array(result["confusion_matrix"]), shown, plot)
    result["written"] = [str(out), str(plot)]
    return result


def data_tag(data) -> str:
    """The data an evaluation scored, in a file name: the dataset, and the file for npz/csv."""
    tag = data.dataset + (f"-{Path(data.path).stem}" if getattr(data, "path", None) else "")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", tag)[:60]


def _claim(folder: Path, created: datetime, checkpoint: str, data) -> Path:
    """A new evaluations/<time>-<checkpoint>-<data>.json, taken atomically (-2... on a clash)."""
    stem = f"{created.strftime(store.TIMESTAMP)}-{checkpoint}-{data_tag(data)}"
    for attempt in range(1, 1000):
        path = folder / (f"{stem}.json" if attempt == 1 else f"{stem}-{attempt}.json")
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o644))
            return path
        except FileExistsError:
            continue
    raise RunError(f"{folder}: could not find a free file name for {stem}")


def check_shape(expected: tuple, input_shape: tuple[int, ...], run_path: Path) -> None:
    """Data of another shape than the model was trained on: one line naming both."""
    expected = tuple(expected)
    if tuple(input_shape) != expected:
        raise DataError(
            f"{run_path}: the model takes inputs of shape {expected} but the data gives "
            f"{tuple(input_shape)}; evaluate on data shaped like the training data "
            "(data.flatten and the data set must match the run's)"
        )


def predicted_classes(outputs: np.ndarray) -> np.ndarray:
    """Class indices from the model's outputs: one sigmoid unit is thresholded at 0.5."""
    if outputs.ndim == 1 or outputs.shape[-1] == 1:
        return (np.ravel(outputs) > 0.5).astype(int)
    return np.argmax(outputs, axis=-1)


def classification_result(y_test: np.ndarray, outputs: np.ndarray, names: list[str]) -> dict:
    """Per-class report and confusion matrix, classes named as in the data."""
    from sklearn.metrics import classification_report, confusion_matrix

    predicted = predicted_classes(outputs)
    truth = np.argmax(y_test, axis=-1) if y_test.ndim > 1 else y_test.astype(int)
    labels = list(range(len(names)))
    options = {"labels": labels, "target_names": names, "zero_division": 0}
    return {
        "classes": names,
        "report": classification_report(truth, predicted, output_dict=True, **options),
        "report_text": classification_report(truth, predicted, digits=3, **options),
        "confusion_matrix": confusion_matrix(truth, predicted, labels=labels).tolist(),
    }


def regression_report(y_test: np.ndarray, outputs: np.ndarray) -> dict:
    """MAE, RMSE and R² by scikit-learn, over every target."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    truth = y_test.reshape(len(y_test), -1)
    predicted = outputs.reshape(len(outputs), -1)
    values = {
        "mae": float(mean_absolute_error(truth, predicted)),
        "rmse": float(np.sqrt(mean_squared_error(truth, predicted))),
        "r2": float(r2_score(truth, predicted)),
    }
    text = "\n".join(f"{name.upper():>5}: {value:.4f}" for name, value in values.items())
    return {"regression": values, "report_text": text.replace("R2:", "R²:") + "\n"}
