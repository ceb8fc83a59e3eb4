"""New inputs for a trained run (`dlrun predict`), in the user's own form, preprocessed exactly
as the run's training data was.

An npz file (`x` or `x_test`; labels `y` or `y_test`), a csv file or standard input (the
feature columns; the label column is read only for scoring), or image files and folders of
them (any nesting). Every source is read in batches: a csv a chunk at a time, a folder of
images decoded a batch at a time (images.FolderSource.batches), so nothing needs memory for
all the inputs at once; an npz file is one array on disk and is read whole, then cut.

The run's preprocessing comes from its config.yaml (scale, flatten, image size and colour mode)
and meta.json (class names, csv feature columns) through `preprocessing`, which is also what
`dlrun export` writes as preprocessing.json. No TensorFlow here (images.py decodes).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

from dlrun.data.arrays import (
    IMAGE_SHAPES,
    KERAS_SHAPES,
    class_indices,
    holds_images,
    shape_inputs,
)
from dlrun.data.checks import NUMERIC_KINDS, bad_values, shown
from dlrun.errors import DataError, UsageError
from dlrun.spec.schema import DataSpec, Spec

SHOWN = 5  # names listed in an error before "..."


@dataclass
class Preprocessing:
    """What turns a raw input into what the run's model takes."""

    spec: Spec  # the run's spec: its data section says scale, flatten, image size, columns
    input_shape: tuple[int, ...]
    task: str  # classification | regression
    class_names: list[str] | None
    feature_columns: list[str] | None  # csv runs, in training order; None: not recorded
    recorded_columns: bool  # meta.json says which columns (runs trained since it does)
    image: tuple[tuple[int, int], int] | None  # (size, channels) that images are decoded to
    categories: dict[str, list[str]] | None = None  # csv text columns: the recorded categories
    fills: dict | None = None  # csv, data.missing: fill: {column: the value a blank takes}

    @property
    def data(self) -> DataSpec:
        return self.spec.data

    def as_json(self) -> dict:
        """preprocessing.json: everything predict-side code needs besides the model."""
        data = self.data
        steps = []
        if self.image is not None:
            (height, width), channels = self.image
            colour = "grayscale" if channels == 1 else "rgb"
            steps.append(f"image files: decode as {colour}, resize to {height}x{width} (bilinear)")
        if data.dataset == "csv":
            if self.fills:
                steps.append("csv: a blank cell takes its column's value in fill")
            steps.append("csv: the feature_columns, in this order, as float32")
            if self.categories:
                steps.append(
                    "csv: each categorical column one-hot over its categories (an unknown one: "
                    "all zeros), appended after the numeric columns in the order listed"
                )
        steps.append(f"divide by scale ({data.scale:g})")
        steps.append(f"reshape each input to input_shape {list(self.input_shape)}")
        return {
            "input_shape": list(self.input_shape),
            "input_dtype": "float32",
            "scale": data.scale,
            "flatten": data.flatten,
            "dataset": data.dataset,
            "image": None
            if self.image is None
            else {
                "size": list(self.image[0]),
                "color_mode": "grayscale" if self.image[1] == 1 else "rgb",
                "interpolation": "bilinear",
            },
            "feature_columns": self.feature_columns,
            "categorical": self.categories,
            "fill": self.fills,
            "label_column": data.label_column if data.dataset == "csv" else None,
            "task": self.task,
            "class_names": self.class_names,
            "steps": steps,
        }

    def describe(self) -> str:
        """The run's input in words, for error messages."""
        what = f"inputs of shape {self.input_shape}"
        if self.data.dataset == "csv":
            if self.data.categorical:
                count = len(self.feature_columns) if self.feature_columns else "its"
                return f"{what} ({count} csv columns, text ones one-hot encoded)"
            return f"{what} ({int(np.prod(self.input_shape))} csv feature columns)"
        if self.image is not None:
            (height, width), channels = self.image
            kind = "grayscale" if channels == 1 else "rgb"
            return f"{what} ({height}x{width} {kind} images, divided by {self.data.scale:g})"
        return what


def preprocessing(spec: Spec, input_shape: tuple[int, ...], meta: dict, task: str) -> Preprocessing:
    """The run's preprocessing, from its spec, its recorded input shape and meta.json."""
    data = spec.data
    names = meta.get("class_names")
    names = [str(name) for name in names] if isinstance(names, list) else None
    columns = meta.get("feature_columns")
    recorded = isinstance(columns, list) and all(isinstance(c, str) for c in columns)
    encoding = meta.get("data_encoding")
    categories = encoding.get("categorical") if isinstance(encoding, dict) else None
    fills = encoding.get("fill") if isinstance(encoding, dict) else None
    return Preprocessing(
        spec=spec,
        input_shape=tuple(input_shape),
        task=task,
        class_names=names if task == "classification" else None,
        feature_columns=list(columns) if recorded else None,
        recorded_columns=recorded,
        image=_image_geometry(data, tuple(input_shape)),
        categories=categories if isinstance(categories, dict) else None,
        fills=fills if isinstance(fills, dict) else None,
    )


def _image_geometry(data: DataSpec, shape: tuple[int, ...]) -> tuple[tuple[int, int], int] | None:
    """(size, channels) that image files are decoded to for this run; None if it takes no
    images (a csv, a flattened npz of unknown geometry)."""
    if data.dataset == "directory":
        return tuple(data.image_size), 1 if data.color_mode == "grayscale" else 3
    image = None
    if len(shape) == 3:
        image = shape
    elif data.dataset in KERAS_SHAPES:
        image = KERAS_SHAPES[data.dataset][0]
    elif data.dataset in IMAGE_SHAPES:
        image = IMAGE_SHAPES[data.dataset]
    if image is None or image[-1] not in (1, 3):
        return None
    if int(np.prod(image)) != int(np.prod(shape)):
        return None
    return (int(image[0]), int(image[1])), int(image[2])


@dataclass
class Batch:
    ids: list  # file paths, csv row numbers (from 1, below the header) or npz indices (from 0)
    x: np.ndarray  # what the model takes
    labels: np.ndarray | None = None  # as the input spells them (--score only)


@dataclass
class Inputs:
    kind: str  # npz | csv | images
    id_column: str  # index | row | path
    count: int | None  # None: a csv, counted as it streams
    batches: Iterator[Batch]
    notes: list[str] = field(default_factory=list)


def open_inputs(
    sources: list[str],
    prep: Preprocessing,
    batch_size: int,
    labels: bool = False,
    stdin: IO[str] | None = None,
) -> Inputs:
    """The inputs named on the command line, checked against the run before any is scored."""
    if not sources:
        raise UsageError("give an input: an .npz or .csv file, image files or folders, or -")
    if "-" in sources:
        if len(sources) > 1:
            raise UsageError("- (csv on standard input) cannot be mixed with other inputs")
        if stdin is None:
            import sys

            stdin = sys.stdin
        return _csv(stdin, "standard input", prep, batch_size, labels)
    paths = [Path(source) for source in sources]
    for path in paths:
        if not path.exists():
            raise DataError(f"{path}: no such file or folder")
    kinds = {path.suffix.lower() for path in paths if path.is_file()}
    for suffix, reader in ((".npz", _npz), (".csv", _csv_file)):
        if suffix in kinds:
            if len(paths) > 1:
                raise UsageError(f"one {suffix} file at a time; got {len(paths)} inputs")
            return reader(paths[0], prep, batch_size, labels)
    return _images(paths, prep, batch_size, labels)


# --- arrays ----------------------------------------------------------------------------------


def prepared(x: np.ndarray, prep: Preprocessing, what: str, first: int = 0) -> np.ndarray:
    """Raw inputs -> the model's input, as load_data does it: float32, divided by the scale,
    shaped (flattened, a channel axis); a shape the run cannot take is one DataError."""
    raw_shape = tuple(np.shape(x)[1:])
    kind = np.asarray(x).dtype.kind
    if kind not in NUMERIC_KINDS:
        raise DataError(f"{what}: inputs of {np.asarray(x).dtype} values; expected numbers")
    found = bad_values(np.asarray(x))
    if found is not None:  # the one check training, evaluate and attack make too
        rows, _ = found
        raise DataError(
            f"{what}: missing (NaN), infinite or beyond-float32 values in input(s) "
            f"{shown((rows + first).tolist(), len(rows))}; fix or remove them"
        )
    try:
        images = holds_images(prep.spec, np.asarray(x))
        x = np.asarray(x, dtype=np.float32) / np.float32(prep.data.scale)
        x = shape_inputs(x, prep.data, images)
        if (*x.shape[1:], 1) == prep.input_shape:  # float pixels for a run trained on uint8
            x = x[..., np.newaxis]
    except (TypeError, ValueError):
        x = None
    if x is None or tuple(x.shape[1:]) != prep.input_shape:
        raise DataError(f"{what}: the run takes {prep.describe()}; got inputs of shape {raw_shape}")
    return x


def _npz(path: Path, prep: Preprocessing, batch_size: int, labels: bool) -> Inputs:
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.files)
            key = next((k for k in ("x", "x_test") if k in keys), None)
            if key is None:
                raise DataError(
                    f"{path}: no input key x or x_test; found {', '.join(keys) or 'none'}"
                )
            x = archive[key]
            label_key = "y" if key == "x" else "y_test"
            y = archive[label_key] if labels and label_key in keys else None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable npz file ({exc})") from None
    if labels and y is None:
        raise DataError(f"--score: {path} has no labels ({label_key} beside {key})")
    if y is not None and len(y) != len(x):
        raise DataError(f"{path}: {key} has {len(x)} inputs but {label_key} has {len(y)} labels")
    if len(x) == 0:
        raise DataError(f"{path}: {key} holds no inputs")
    prepared(x[:1], prep, f"{path} ({key})")  # the shape, checked before anything is scored

    def batches():
        for start in range(0, len(x), batch_size):
            stop = min(start + batch_size, len(x))
            yield Batch(
                list(range(start, stop)),
                prepared(x[start:stop], prep, str(path), start),
                None if y is None else y[start:stop],
            )

    return Inputs("npz", "index", len(x), batches())


# --- csv -------------------------------------------------------------------------------------


def _csv_file(path: Path, prep: Preprocessing, batch_size: int, labels: bool) -> Inputs:
    return _csv(path, str(path), prep, batch_size, labels)


def _csv(source, name: str, prep: Preprocessing, batch_size: int, labels: bool) -> Inputs:
    import pandas as pd

    errors = (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, ValueError)
    try:
        chunks = pd.read_csv(source, chunksize=batch_size)
        first = next(chunks, None)
    except errors as exc:
        reason = " ".join(str(exc).split())[:200]
        raise DataError(f"{name}: not a readable csv ({reason})") from None
    if first is None or first.empty:
        raise DataError(f"{name}: a header but no rows")
    label = prep.data.label_column
    columns, notes = _feature_columns([str(c) for c in first.columns], prep, name)
    if labels and label not in first.columns:
        raise DataError(f"--score: {name} has no label column {label!r}")
    _numeric(first, columns, prep, name)
    prepared(_encoded(first[columns][:1], columns, prep), prep, name)

    def batches():
        row = 1
        chunk = first
        while chunk is not None:
            _numeric(chunk, columns, prep, name)
            _blanks(chunk, columns, prep, name, row)
            x = prepared(_encoded(chunk[columns], columns, prep), prep, name, row)
            y = chunk[label].to_numpy() if labels else None
            yield Batch(list(range(row, row + len(chunk))), x, y)
            row += len(chunk)
            try:
                chunk = next(chunks, None)
            except errors as exc:
                reason = " ".join(str(exc).split())[:200]
                raise DataError(f"{name}: unreadable after row {row - 1} ({reason})") from None

    return Inputs("csv", "row", None, batches(), notes)


def _feature_columns(found: list[str], prep: Preprocessing, name: str) -> tuple[list[str], list]:
    """The csv's columns the model takes, in training order; notes for what is left out."""
    label = prep.data.label_column
    if prep.feature_columns is not None:
        missing = [c for c in prep.feature_columns if c not in found]
        if missing:
            raise DataError(
                f"{name}: no column(s) {_shown(missing)}; the run was trained on "
                f"{len(prep.feature_columns)} columns: {_shown(prep.feature_columns)}"
            )
        extra = [c for c in found if c not in prep.feature_columns and c != label]
        notes = [f"ignored column(s) the run was not trained on: {_shown(extra)}"] if extra else []
        return list(prep.feature_columns), notes
    columns = [c for c in found if c != label]
    notes = []
    if prep.data.dataset == "csv":  # a run trained before meta.json recorded its columns
        notes.append(
            "the run does not record its csv columns (trained by an older dlrun): taking "
            f"the {len(columns)} columns of {name} in file order, less {label!r}"
        )
    return columns, notes


def _numeric(frame, columns: list[str], prep: Preprocessing, name: str) -> None:
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    text = set(prep.data.categorical or [])
    bad = [
        c
        for c in columns
        if c not in text and (not is_numeric_dtype(frame[c]) or is_bool_dtype(frame[c]))
    ]
    if bad:
        raise DataError(f"{name}: column(s) {_shown(bad)} are not numeric")


def _blanks(frame, columns: list[str], prep: Preprocessing, name: str, row: int) -> None:
    """A blank cell is refused unless the run fills them (data.missing: fill): never scored as
    zeros or as a category of its own."""
    if prep.fills:
        return
    blank = frame[columns].isna().to_numpy()
    if blank.any():
        first, column = np.argwhere(blank)[0]
        raise DataError(
            f"{name}: row {row + int(first)}: column {columns[int(column)]!r} is blank; the run "
            "fills no blanks (it was trained with data.missing: refuse or drop): fill it in"
        )


def _encoded(frame, columns: list[str], prep: Preprocessing) -> np.ndarray:
    """The feature columns as the model took them: blanks filled with the values the run
    recorded, data.categorical one-hot over the categories it recorded (csvfile.encode and
    csvfile.filled, as evaluate does)."""
    if prep.fills:
        import pandas as pd

        from dlrun.data.csvfile import filled

        values = frame.to_numpy(dtype=object if prep.data.categorical else np.float32)
        frame = pd.DataFrame(filled(values, columns, prep.fills), columns=columns)
    if not prep.data.categorical:
        return frame.to_numpy(np.float32)
    from dlrun.data import csvfile

    if not prep.categories:
        raise DataError(
            "the run records no categories for its data.categorical columns; "
            "it cannot encode new inputs as it encoded its training data"
        )
    x, _, _ = csvfile.encode(prep.spec, columns, frame.to_numpy(dtype=object), [], prep.categories)
    return x


def _shown(names: list) -> str:
    text = ", ".join(map(str, names[:SHOWN]))
    return text + (f" ... ({len(names)} in all)" if len(names) > SHOWN else "")


# --- images ----------------------------------------------------------------------------------


def _images(paths: list[Path], prep: Preprocessing, batch_size: int, labels: bool) -> Inputs:
    from dlrun.data.images import EXTENSIONS, FolderSource, check_images, hidden_note, list_images

    if prep.image is None:
        raise DataError(
            f"{paths[0]}: the run takes {prep.describe()}, not images; give an .npz or .csv file"
        )
    for path in paths:
        if path.is_file() and not path.name.lower().endswith(EXTENSIONS):
            raise DataError(
                f"{path}: not an image ({', '.join(e.lstrip('.') for e in EXTENSIONS)}), "
                "an .npz or a .csv file"
            )
    hidden: list[str] = []
    files, classes = list_images(paths, hidden)
    if not files:
        raise DataError(f"{', '.join(map(str, paths))}: no images found")
    # The checks training makes (regular files, decodable, at most MAX_IMAGE_PIXELS), before
    # any image is decoded: an 81-megapixel file would take gigabytes.
    check_images(np.array(files), "input")
    if labels and None in classes:
        where = files[classes.index(None)]
        raise DataError(
            f"--score: {where} has no label; give a folder whose subfolders are named by class"
        )
    size, channels = prep.image
    source = FolderSource.shaped(size, channels, prep.data.scale, prep.data.flatten)

    def batches():
        start = 0
        for x in source.batches(files, batch_size):
            stop = start + len(x)
            y = np.array(classes[start:stop]) if labels else None
            if tuple(x.shape[1:]) != prep.input_shape:  # decoded, scaled and shaped already
                raise DataError(f"{files[start]}: decoded to {x.shape[1:]}, not {prep.input_shape}")
            yield Batch(files[start:stop], x, y)
            start = stop

    return Inputs("images", "path", len(files), batches(), hidden_note(hidden))


# --- labels ----------------------------------------------------------------------------------


def label_indices(labels: np.ndarray, names: list[str]) -> np.ndarray:
    """Labels as the input spells them -> class indices: one-hot rows by argmax, anything else
    by its name among the run's classes (3 and 3.0 both name class "3")."""
    labels = np.asarray(labels)
    if labels.ndim > 1 and labels.shape[-1] > 1:
        return np.argmax(labels, axis=-1)
    found, unknown = class_indices(labels, names)
    if unknown:
        raise DataError(
            f"--score: label(s) {_shown(unknown)} are not classes of the run ({_shown(names)})"
        )
    return found
