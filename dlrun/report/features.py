"""`dlrun features`: a layer's activations as features for another classifier.  [TensorFlow]

The run's checkpoint is cut after the named layer (one of model.layers, as summary.txt lists
them); its training (validation included) and test splits stream through
in batches and the activations go to one .npz file (x_train, y_train, x_test, y_test and
the class names). With a classifier, scikit-learn fits it on them and scores the test split.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from dlrun import store, usercode
from dlrun.errors import SpecError
from dlrun.model.checkpoints import checkpoint_path, load_model
from dlrun.model.graph import one_input_and_output
from dlrun.model.outputs import true_classes
from dlrun.spec.loading import load_spec
from dlrun.spec.overrides import check_reading_overrides
from dlrun.spec.problems import did_you_mean

CLASSIFIERS = ("logistic",)


def truncated(model, layer: str | int):
    """The model from its input up to `layer` (a name, or an index into model.layers)."""
    import keras

    names = [item.name for item in model.layers]
    if isinstance(layer, int) or layer.lstrip("-").isdigit():
        index = int(layer)
        if not -len(names) <= index < len(names):
            raise SpecError(
                f"--layer {layer}: the model has {len(names)} layers (0 to {len(names) - 1}, "
                "or negative from the end)"
            )
        chosen = model.layers[index]
    elif layer in names:
        chosen = model.get_layer(layer)
    else:
        raise SpecError(
            f"--layer {layer}: no such layer{did_you_mean(layer, names)} "
            f"Its layers: {', '.join(names)}"
        )
    from dlrun.model.transfer import layer_output

    return keras.Model(model.inputs[0], layer_output(chosen))


def _activations(model, x: np.ndarray, y: np.ndarray, batch_size: int, source) -> np.ndarray:
    if source is None:  # arrays in memory: slices of them, no tf.data (TensorFlow on JAX: 5 s)
        batches = (x[start : start + batch_size] for start in range(0, len(x), batch_size))
    else:  # file paths, decoded as training decodes them
        from dlrun.data.feed import pipeline

        batches = (images for images, _ in pipeline(x, y, batch_size, source))
    parts = [np.asarray(model(images, training=False)) for images in batches]
    return np.concatenate(parts) if parts else np.zeros((0,), np.float32)


def extract(
    run_path: Path,
    layer: str,
    out: Path,
    overrides: list[str] | tuple[str, ...] = (),
    classifier: str | None = None,
    checkpoint: str = "best",
    force: bool = False,
) -> dict:
    """Write the layer's activations on the train and test splits to `out` (.npz)."""
    if classifier is not None and classifier not in CLASSIFIERS:
        raise SpecError(
            f"--classifier: expected one of {', '.join(CLASSIFIERS)}, got {classifier!r}"
        )
    if out.suffix != ".npz":
        raise SpecError(f"--out {out}: expected a file name ending in .npz")
    if not out.parent.is_dir():
        raise SpecError(f"--out {out}: no such folder {out.parent}")
    run = store.open_run(run_path)
    check_reading_overrides("features", overrides, ("data.",))
    store.output.check(out, force=force, inputs=[run_path])  # before anything is loaded
    model_path = checkpoint_path(run, checkpoint)
    spec = load_spec(store.config_of(run.path), overrides, run.relative_to)
    one_input_and_output(spec, run.path, "features")
    if classifier and spec.task == "regression":
        raise SpecError(
            f"--classifier {classifier}: {run.name} is a regression run; a classifier needs "
            "classes (leave --classifier out to write the features only)"
        )
    from dlrun.backend import use
    from dlrun.data.arrays import load_data
    from dlrun.model.builder import build_model

    use(spec.backend)
    usercode.use_run(spec, run.path)  # its code files, if trusted, before anything is built
    data = load_data(spec, run.data_record())  # new data encoded as the run's was
    # A transfer model's base comes from elsewhere: the archive's plain size bound holds.
    params = None if spec.model.base else build_model(spec, data.input_shape).count_params()
    model = truncated(load_model(model_path, params=params), layer)
    # The destination is taken before the extraction: an unwritable --out fails now.
    destination = contextlib.ExitStack()
    try:
        tmp = destination.enter_context(store.output.writing(out, force=force, inputs=[run.path]))
    except store.output.NotWritten as exc:
        raise SpecError(f"--out {out}: cannot be written ({exc.reason})") from None
    with destination:
        return _extract(spec, data, model, out, tmp, classifier)


def _extract(spec, data, model, out: Path, tmp: Path, classifier: str | None) -> dict:
    batch = spec.training.batch_size
    # The validation split joins the training one: every labelled sample the run had.
    x, y = data.x_train, data.y_train
    if data.x_val is not None:
        x, y = np.concatenate([x, data.x_val]), np.concatenate([y, data.y_val])
    x_train = _activations(model, x, y, batch, data.source)
    x_test = _activations(model, data.x_test, data.y_test, batch, data.source)
    y_train, y_test = true_classes(y), true_classes(data.y_test)
    names = data.class_names or [str(n) for n in range(data.num_classes)]
    with open(tmp, "wb") as handle:
        np.savez(
            handle,
            x_train=x_train,
            y_train=y_train,
            x_test=x_test,
            y_test=y_test,
            class_names=np.array(names),
        )
    result = {"out": str(out), "shape": list(x_train.shape[1:]), "train": len(x_train)}
    result["test"] = len(x_test)
    if classifier:
        from sklearn.linear_model import LogisticRegression

        fitted = LogisticRegression(max_iter=1000)
        fitted.fit(x_train.reshape(len(x_train), -1), y_train)
        result["accuracy"] = float(fitted.score(x_test.reshape(len(x_test), -1), y_test))
    return result
