"""Data files and image folders from strangers, checked before any run folder exists.

Each check raises one `Error:` line naming the file, the key or column, and the first bad rows,
so that a csv with its answer in two columns, a blank label, a NaN feature, an npz whose keys do
not fit together, a FIFO named like an image or a picture that decodes to gigabytes is refused
before anything is trained or written. No TensorFlow; NumPy, and PIL for images.
"""

from __future__ import annotations

import csv
import os
import stat
from collections import Counter
from pathlib import Path

import numpy as np

from dlrun.errors import DataError
from dlrun.spec.schema import Spec
from dlrun.textsafe import clean

SHOWN = 5  # rows, columns or files named in an error before "and N more"
# The npz keys dlrun reads; others in the file are never decompressed.
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
NUMERIC_KINDS = "biuf"  # bool, int, unsigned, float: what a feature array may hold
# An image file is refused above this many pixels (width x height): decoding it takes 4 bytes a
# pixel per channel in float, on every parallel decoder at once. 40 megapixels is a large
# camera photo; a 30000x30000 PNG of a few hundred bytes is a decompression bomb.
MAX_IMAGE_PIXELS = 40_000_000
# data.image_size: a batch of decoded float32 images must fit in this.
MAX_BATCH_BYTES = 4 * 2**30


def shown(items: list, total: int | None = None) -> str:
    """'a, b, c' with ' and N more' past SHOWN items."""
    total = len(items) if total is None else total
    more = f" and {total - SHOWN} more" if total > SHOWN else ""
    return ", ".join(map(str, items[:SHOWN])) + more


def name(path) -> str:
    """A file name from disk, safe for one line: no newline, ESC or other control character."""
    return clean(path, newlines=False)


def _memory_available() -> int | None:
    """Bytes of memory the kernel says are available (Linux), else None."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def gib(size: float) -> str:
    return f"{size / 2**30:,.1f} GiB" if size >= 2**30 else f"{size / 2**20:,.0f} MiB"


# --- csv ---------------------------------------------------------------------------------------


def csv_header(spec: Spec, path: Path) -> None:
    """A header naming a column twice is refused: pandas would rename the copy `label.1` and a
    copy of the answer would train as a feature."""
    try:
        with open(path, newline="", encoding="utf-8") as file:
            header = next(csv.reader(file), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return  # pandas says what is wrong with the file
    counts = Counter(header)
    twice = [column for column, count in counts.items() if count > 1]
    if twice:
        where = []
        for column in twice:
            places = [str(i + 1) for i, c in enumerate(header) if c == column]
            where.append(f"{column!r} (columns {', '.join(places)})")
        raise spec.error(
            ("data", "path"),
            f"{name(path)}: the header names {name(', '.join(where))} more than once; every "
            "column needs its own name (a copy of the label would train as a feature)",
        )


def csv_frame(spec: Spec, path: Path, frame, column: str) -> None:
    """The label column has a value in every row, and there are features besides it."""
    if len(frame.columns) < 2:
        raise spec.error(
            ("data", "path"),
            f"{name(path)} has only the label column {name(column)!r}; it needs at least one "
            "feature column besides it",
        )
    blank = np.flatnonzero(frame[column].isna().to_numpy())
    if len(blank):
        lines = [int(row) + 2 for row in blank]  # the header is line 1
        raise spec.error(
            ("data", "label_column"),
            f"{name(path)}: column {name(column)!r} has no value on line(s) "
            f"{shown(lines)} ({len(blank)} of {len(frame)} rows); fill in the labels "
            "or remove those rows (data.missing: drop leaves them out)",
        )


def bad_values(x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The one check of feature values, for training, evaluate, features, attack and predict
    alike: (rows, features) that are NaN, infinite, or beyond float32 (1e300 becomes inf in
    the cast the model sees, so the check runs after the cast); None when all are fine.
    Complex numbers are refused by dtype before this (NUMERIC_KINDS)."""
    if x.dtype.kind not in "fc" or x.size == 0:
        return None  # integers and booleans always fit float32
    with np.errstate(over="ignore", invalid="ignore"):
        flat = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    bad = ~np.isfinite(flat)
    if not bad.any():
        return None
    return np.flatnonzero(bad.any(axis=1)), np.flatnonzero(bad.any(axis=0))


def finite_features(spec: Spec, path: Path, x: np.ndarray, key: str = "", columns=None) -> None:
    """No NaN, infinity or value beyond float32 in the features: a run would only diverge."""
    found = bad_values(x)
    if found is None:
        return
    rows, cells = found
    if columns is not None:  # a csv: its column names and the lines of the file
        named = shown([f"'{name(columns[c])}'" for c in cells], len(cells))
        problem = f"column(s) {named} hold missing (NaN) or infinite values on line(s) "
        problem += shown([int(r) + 2 for r in rows], len(rows))
    else:
        problem = f"{key} has missing (NaN) or infinite values in feature(s) "
        problem += f"{shown(cells.tolist())}, row(s) {shown(rows.tolist())}"
    missing = " (or set data.missing: drop or fill)" if columns is not None else ""
    raise spec.error(
        ("data", "path"), f"{name(path)}: {problem}; fill them in or remove those rows{missing}"
    )


def blank_text(spec: Spec, path: Path, frame, columns: list[str]) -> None:
    """A blank cell in a text column is refused (data.missing: refuse), never a category of
    its own."""
    for column in columns:
        rows = np.flatnonzero(frame[column].isna().to_numpy())
        if len(rows):
            raise spec.error(
                ("data", "missing"),
                f"{name(path)}: column {name(column)!r} is blank on line(s) "
                f"{shown([int(r) + 2 for r in rows], len(rows))}; fill them in, or set "
                "data.missing: drop (leave those rows out) or fill (the most frequent value)",
            )


# --- npz ---------------------------------------------------------------------------------------


def x_keys(spec: Spec, split: str) -> list[str]:
    """A split's feature keys: x_<split>, or x_<split>_<input> for each of several inputs."""
    names = spec.model.several_inputs
    return [f"x_{split}_{name}" for name in names] if names else [f"x_{split}"]


def y_keys(spec: Spec, split: str) -> list[str]:
    """A split's target keys: y_<split>, or y_<split>_<output> for each of several outputs."""
    names = spec.model.several_outputs
    return [f"y_{split}_{name}" for name in names] if names else [f"y_{split}"]


SPLITS = ("train", "val", "test")


def npz_keys(spec: Spec, path: Path, files: list[str]) -> list[str]:
    """The keys to read: x_train and y_train (x_train alone for an autoencoder), and x_val with
    y_val, x_test with y_test, each group whole or absent (several inputs: x_train_<input>...)."""
    x_train = x_keys(spec, "train")
    needed = x_train if spec.data.targets == "inputs" else [*x_train, *y_keys(spec, "train")]
    missing = [key for key in needed if key not in files]
    if missing:
        listed = {split: ", ".join(x_keys(spec, split) + y_keys(spec, split)) for split in SPLITS}
        raise spec.error(
            ("data", "path"),
            f"{name(path)} has no {' or '.join(missing)}; expected keys {listed['train']} "
            f"[, {listed['val']}, {listed['test']}], "
            f"found {name(', '.join(sorted(files))) or 'none'}",
        )
    keys = [key for key in needed if key in files]
    for split, what, otherwise in (
        ("test", "test", "then the test split is cut from the training data"),
        ("val", "validation", "then training.validation_split holds out part of x_train"),
    ):
        group = [*x_keys(spec, split), *y_keys(spec, split)]
        found = [key for key in group if key in files]
        if spec.data.targets == "inputs" and found == group[:1]:
            found = []  # an autoencoder's x alone: its own targets
            keys.append(group[0])
        if found and len(found) < len(group):
            absent = [key for key in group if key not in found]
            raise spec.error(
                ("data", "path"),
                f"{name(path)} has {found[0]} but no {', '.join(absent)}; give "
                f"{'both' if len(group) == 2 else 'all'} {what} keys or "
                f"{'neither' if len(group) == 2 else 'none'} ({otherwise})",
            )
        keys += found
    return keys


def npz_entry(spec: Spec, path: Path, archive, key: str) -> None:
    """A key's uncompressed size, bounded before it is read: by what its header says it holds,
    and by the memory available."""
    try:
        info = archive.zip.getinfo(f"{key}.npy")
        with archive.zip.open(info) as entry:
            version = np.lib.format.read_magic(entry)
            header = {
                (1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0,
            }[version]
            shape, _, dtype = header(entry)
    except Exception:  # noqa: BLE001  numpy and zipfile raise many kinds; np.load says what
        return
    needs = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if info.file_size > needs + 64 * 1024:
        raise spec.error(
            ("data", "path"),
            f"{name(path)}: {key} expands to {gib(info.file_size)} though its header says "
            f"{gib(needs)} ({dtype} {tuple(shape)}); not a file numpy wrote, refused unread",
        )
    available = _memory_available()
    if available is not None and needs > available:
        raise spec.error(
            ("data", "path"),
            f"{name(path)}: {key} needs {gib(needs)} of memory ({dtype} {tuple(shape)}) and "
            f"{gib(available)} is available; refused unread",
        )


def npz_arrays(spec: Spec, path: Path, arrays: dict) -> None:
    """Features are numbers with one row per sample; test features are shaped like training's;
    the inputs of a split (several inputs) have as many samples as each other."""
    splits = {split: x_keys(spec, split) for split in SPLITS}
    for key in [key for keys in splits.values() for key in keys]:
        if key not in arrays:
            continue
        x = arrays[key]
        if x.dtype.kind not in NUMERIC_KINDS:
            raise spec.error(
                ("data", "path"),
                f"{name(path)}: {key} holds {x.dtype} values, not numbers; features must be "
                "numeric (encode strings as numbers first)",
            )
        if x.ndim == 0:
            raise spec.error(
                ("data", "path"),
                f"{name(path)}: {key} is a single value (shape ()); expected one row per sample",
            )
    targets = [key for split in SPLITS for key in y_keys(spec, split)]
    for key in targets:
        if key in arrays and arrays[key].ndim == 0:
            raise spec.error(
                ("data", "path"),
                f"{name(path)}: {key} is a single value (shape ()); expected one label per sample",
            )
    for split in ("val", "test"):
        for key, train in zip(splits[split], splits["train"], strict=True):
            if key in arrays and arrays[key].shape[1:] != arrays[train].shape[1:]:
                raise spec.error(
                    ("data", "path"),
                    f"{name(path)}: {key} has samples of shape {arrays[key].shape[1:]} but "
                    f"{train} {arrays[train].shape[1:]}; every split needs the same features",
                )
    for split, keys in splits.items():
        for what, group in (("inputs", keys), ("targets", y_keys(spec, split))):
            present = [key for key in group if key in arrays]
            if len({len(arrays[key]) for key in present}) > 1:
                listed = ", ".join(f"{key} {len(arrays[key])}" for key in present)
                raise spec.error(
                    ("data", "path"),
                    f"{name(path)}: the {what} of a split need one row per sample each; found "
                    f"{listed} samples",
                )
        labelled = [key for key in y_keys(spec, split) if key in arrays]
        inputs = [key for key in keys if key in arrays]
        if labelled and inputs and len(arrays[labelled[0]]) != len(arrays[inputs[0]]):
            raise spec.error(
                ("data", "path"),
                f"{name(path)}: {inputs[0]} has {len(arrays[inputs[0]])} samples but "
                f"{labelled[0]} has {len(arrays[labelled[0]])} labels; one label per sample",
            )
        for key in keys:
            if key in arrays:
                finite_features(spec, path, arrays[key], key)
    for key in targets:
        y = arrays.get(key)
        if y is not None and y.dtype.kind == "f" and not np.isfinite(y).all():
            rows = np.flatnonzero(~np.isfinite(y.reshape(len(y), -1)).all(axis=1))
            raise spec.error(
                ("data", "path"),
                f"{name(path)}: {key} has missing (NaN) or infinite labels in row(s) "
                f"{shown(rows.tolist())}; fill them in or remove those rows",
            )


# --- any array data ----------------------------------------------------------------------------


def two_classes(spec: Spec, y: np.ndarray) -> None:
    """Classification needs two classes at least: with one, the loss is 0 from the start."""
    values = np.unique(np.ravel(y).astype(str))
    if len(values) < 2:
        found = f" ({name(values[0])!r})" if len(values) else ""
        raise spec.error(
            ("data",),
            f"the labels hold {len(values)} class{found}; classification needs at least two "
            "(or set data.task: regression for numeric targets)",
        )


# --- image folders -----------------------------------------------------------------------------


def image_size(spec: Spec) -> None:
    """data.image_size bounded before anything is built: a batch of decoded float32 images
    must fit in MAX_BATCH_BYTES."""
    height, width = spec.data.image_size
    channels = 1 if spec.data.color_mode == "grayscale" else 3
    one = height * width * channels * 4
    batch = one * spec.training.batch_size
    if batch > MAX_BATCH_BYTES:
        raise spec.error(
            ("data", "image_size"),
            f"[{height}, {width}] decodes to {gib(one)} an image ({channels} channel(s), "
            f"float32), {gib(batch)} a batch of {spec.training.batch_size}; at most "
            f"{gib(MAX_BATCH_BYTES)} a batch: use a smaller image_size or batch_size",
        )


def regular_files(paths: list[str]) -> None:
    """Files named like images that are not regular files (a FIFO would block the reader, a
    device never end) are refused, named. A symlink to an image is an image."""
    odd = []
    for path in paths:
        try:
            mode = os.stat(path).st_mode
        except OSError:
            odd.append(f"{name(path)} (missing)")
            continue
        if not stat.S_ISREG(mode):
            odd.append(f"{name(path)} (not a regular file)")
    if odd:
        raise DataError(
            f"data.path: {len(odd)} file(s) named like images are not regular files: "
            f"{shown(odd)}; remove them"
        )


def open_image(path: str):
    """PIL's Image of a regular file, opened without blocking (a FIFO swapped in is refused)."""
    from PIL import Image

    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    file = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        file.close()
        raise OSError("not a regular file")
    try:
        return Image.open(file)
    except BaseException:
        file.close()
        raise


def image_problem(path: str, formats: set[str]) -> str | None:
    """Why an image file cannot be used, or None: it must be a regular file of an image format
    TensorFlow decodes, of at most MAX_IMAGE_PIXELS, and decode to its end (a truncated JPEG
    passes PIL's verify())."""
    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        # PIL warns from 89 megapixels (and refuses from twice that); the bound here is ours.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with open_image(path) as image:
                kind = image.format
                width, height = image.size
                if kind not in formats:
                    return f"{name(path)} ({kind})"
                if width * height > MAX_IMAGE_PIXELS:
                    return f"{name(path)} ({width}x{height} pixels, more than {MAX_IMAGE_PIXELS:,})"
                if kind in ("JPEG", "MPO"):
                    image.draft("RGB", (64, 64))  # decoded at 1/8 scale: cheap, yet to the end
                    image.load()
                else:
                    image.verify()  # reads the file through, checking its structure and CRCs
        except Image.DecompressionBombError:
            return f"{name(path)} (more than {MAX_IMAGE_PIXELS:,} pixels)"
        except (OSError, SyntaxError, ValueError, Image.UnidentifiedImageError, EOFError) as exc:
            return f"{name(path)} ({type(exc).__name__}: {name(str(exc))[:80]})"
    return None
