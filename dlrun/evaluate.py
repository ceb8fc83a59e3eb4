"""Scoring a saved run: reload its checkpoint safely and evaluate it on test data.  [TensorFlow]"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np

from dlrun import store
from dlrun.errors import RunError, SpecError
from dlrun.spec import load_spec

CHECKPOINTS = {"best": store.BEST, "last": store.LAST}


def load_model(path: Path, unsafe_load: bool = False):
    """keras.models.load_model with safe_mode on, unless the user vouches for the file."""
    from dlrun.backend import load

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


def evaluate(
    run_path: Path,
    checkpoint: str = "best",
    overrides: list[str] | tuple[str, ...] = (),
    unsafe_load: bool = False,
) -> dict:
    """Evaluate a run's checkpoint on its test split (or on data given by `data.*` overrides).

    Writes evaluations/<timestamp>.json and plots/confusion_matrix.png inside the run.
    """
    from sklearn.metrics import classification_report, confusion_matrix

    from dlrun.backend import use
    from dlrun.data import evaluation_input, load_data

    run = store.open_run(run_path)
    for assignment in overrides:
        if not assignment.startswith(("data.", "backend=")):
            raise SpecError(
                f"--set {assignment}: evaluate takes data.KEY=VALUE and backend=NAME overrides only"
            )
    model_path = run.path / CHECKPOINTS[checkpoint]
    if not model_path.exists():
        raise RunError(
            f"{run.path}: no {CHECKPOINTS[checkpoint]}; the run saved no checkpoint "
            f"(status {run.status}, {run.meta.get('epochs_done', 0)} epochs done)"
        )
    spec = load_spec(run.path / store.CONFIG, overrides)
    use(spec.backend)  # the run's own, or another one: a .keras file loads on every backend
    model = load_model(model_path, unsafe_load)
    data = load_data(spec)
    test = evaluation_input(data.x_test, data.y_test, spec.training.batch_size)
    scores = model.evaluate(**test, verbose=0, return_dict=True)
    probabilities = model.predict(data.x_test, batch_size=spec.training.batch_size, verbose=0)
    predicted = np.argmax(probabilities, axis=-1)
    truth = np.argmax(data.y_test, axis=-1) if data.y_test.ndim > 1 else data.y_test.astype(int)
    labels = list(range(data.num_classes))
    names = [str(label) for label in labels]
    report = classification_report(
        truth, predicted, labels=labels, target_names=names, output_dict=True, zero_division=0
    )
    matrix = confusion_matrix(truth, predicted, labels=labels)
    created = datetime.now()
    result = {
        "run": run.name,
        "checkpoint": checkpoint,
        "created": created.astimezone().isoformat(timespec="seconds"),
        "data": spec.data.model_dump(mode="json"),
        "samples": int(len(truth)),
        "scores": {key: float(value) for key, value in scores.items()},
        "report": report,
        "report_text": classification_report(
            truth, predicted, labels=labels, target_names=names, zero_division=0, digits=3
        ),
        "confusion_matrix": matrix.tolist(),
    }
    stamp = created.strftime(store.TIMESTAMP)
    out = run.path / store.EVALUATIONS / f"{stamp}-{checkpoint}.json"
    store.write_json(out, result)
    from dlrun.plots import confusion_plot

    confusion_plot(matrix, names, run.path / store.CONFUSION_PLOT)
    result["written"] = [str(out), str(run.path / store.CONFUSION_PLOT)]
    return result
