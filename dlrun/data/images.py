"""`data.dataset: directory`: a folder of images, one subfolder per class, streamed from disk.

The folder is listed (file paths and class names), never loaded: train, validation and test
hold file paths, and tf.data reads, decodes and resizes each image as its batch is needed.
Splits are fixed and stratified over the file list, as for the other data sets.

A file with an image extension that is not a readable image fails the run before anything is
written, naming the files: a silently skipped file would change the splits and the counts a
run reports. Files with other extensions (notes, .DS_Store) are ignored, as Keras'
image_dataset_from_directory does.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from dlrun.data import checks
from dlrun.errors import DataError
from dlrun.spec.schema import Spec

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
# What TensorFlow's decode_image reads (MPO is the JPEG variant some cameras write).
FORMATS = {"JPEG", "MPO", "PNG", "BMP", "GIF"}
# Cached decoded images are shuffled through a buffer of this many (the file list itself is
# permuted whole when nothing is cached).
SHUFFLE_BUFFER = 2048
SHOWN = 5  # bad files named in an error before "and N more"


def _classes(spec: Spec) -> tuple[Path, list[str]]:
    root = Path(spec.data.path)
    if not root.is_dir():
        raise spec.error(("data", "path"), f"no such folder: {root}")
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(names) < 2:
        found = f" ({', '.join(names)})" if names else ""
        raise spec.error(
            ("data", "path"),
            f"{root} has {len(names)} class folder(s){found}; expected one subfolder of "
            "images per class, at least two",
        )
    return root, names


def _images(folder: Path) -> list[str]:
    found = []
    for parent, dirs, files in os.walk(folder):
        dirs.sort()
        found += [
            os.path.join(parent, name)
            for name in sorted(files)
            if name.lower().endswith(EXTENSIONS) and not name.startswith(".")
        ]
    return found


def list_folder(spec: Spec) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(file paths, their class names, the sorted class names) of data.path."""
    root, names = _classes(spec)
    paths, labels = [], []
    for name in names:
        files = _images(root / name)
        if not files:
            raise spec.error(
                ("data", "path"),
                f"class folder {root / name} holds no images "
                f"({', '.join(e.lstrip('.') for e in EXTENSIONS)}); add some or remove it",
            )
        paths += files
        labels += [name] * len(files)
    return np.array(paths), np.array(labels), names


def check_images(paths: np.ndarray) -> None:
    """Every file is an image TensorFlow can decode; else a DataError naming the bad files."""
    checks.regular_files(paths)
    bad = [problem for path in paths if (problem := checks.image_problem(path, FORMATS))]
    if bad:
        more = f" and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
        raise DataError(
            f"data.path: {len(bad)} file(s) are not readable jpg/png/bmp/gif images: "
            f"{', '.join(bad[:SHOWN])}{more}; remove or replace them"
        )


def folder_signature(spec: Spec) -> tuple[tuple[int, ...], int]:
    """(input shape, number of classes) from the folder's listing; no image is read."""
    _, names = _classes(spec)
    checks.image_size(spec)
    classes = len(spec.data.classes) if spec.data.classes else len(names)
    return FolderSource(spec).input_shape, classes


def load_folder(spec: Spec):
    """The folder as a data.Data of file paths with fixed, stratified splits."""
    from sklearn.model_selection import train_test_split

    from dlrun.data import subsets
    from dlrun.data.splits import SPLIT_SEED, Data, fold_indices

    checks.image_size(spec)
    paths, labels, names = list_folder(spec)
    check_images(paths)
    try:
        x_train, x_test, y_train, y_test = train_test_split(
            paths,
            labels,
            test_size=spec.data.test_split,
            stratify=labels,
            random_state=SPLIT_SEED,
        )
    except ValueError as exc:
        raise spec.error(
            ("data", "test_split"),
            f"cannot split {len(paths)} images by class into train and test: {exc}",
        ) from None
    x_train, y_train, x_test, y_test, kept = subsets.select(spec, x_train, y_train, x_test, y_test)
    names = kept or names
    if not kept:
        y_train, y_test = subsets.recode(y_train, names), subsets.recode(y_test, names)

    x_val = y_val = None
    split = spec.training.validation_split
    if spec.data.cv:
        train_index, val_index = fold_indices(y_train, spec.data.cv.folds, spec)[spec.data.cv.index]
        x_train, x_val = x_train[train_index], x_train[val_index]
        y_train, y_val = y_train[train_index], y_train[val_index]
    elif split:  # the last part of the (already shuffled) training split, as for arrays
        cut = int(len(x_train) * (1 - split))
        if cut == 0 or cut == len(x_train):
            raise spec.error(
                ("training", "validation_split"),
                f"{split} of {len(x_train)} training images leaves an empty split",
            )
        x_train, x_val = x_train[:cut], x_train[cut:]
        y_train, y_val = y_train[:cut], y_train[cut:]
    if spec.data.one_hot:
        eye = np.eye(len(names), dtype=np.float32)
        y_train, y_test = eye[y_train], eye[y_test]
        y_val = eye[y_val] if y_val is not None else None
    source = FolderSource(spec)
    return Data(x_train, y_train, x_val, y_val, x_test, y_test, len(names), names, source)


class FolderSource:
    """Turns arrays of file paths into tf.data pipelines of decoded, resized images."""

    def __init__(self, spec: Spec):
        data = spec.data
        self.size = tuple(data.image_size)
        self.channels = 1 if data.color_mode == "grayscale" else 3
        self.scale = data.scale
        self.flatten = data.flatten
        self.cache = data.cache
        self._cache_dir: str | None = None
        self._caches = 0

    @property
    def input_shape(self) -> tuple[int, ...]:
        shape = (*self.size, self.channels)
        return (int(np.prod(shape)),) if self.flatten else shape

    def _decode(self, path, label):
        import tensorflow as tf

        raw = tf.io.read_file(path)
        # Three channels first: BMP decodes to gray only through this detour.
        image = tf.io.decode_image(raw, channels=3, expand_animations=False)
        if self.channels == 1:
            image = tf.image.rgb_to_grayscale(image)
        image.set_shape([None, None, self.channels])
        image = tf.image.resize(image, self.size) / self.scale
        if self.flatten:
            image = tf.reshape(image, [-1])
        return image, label

    def _decoded(self, x: np.ndarray, y: np.ndarray):
        """(image, label) in file order, decoded in parallel, cached if the spec says so."""
        import tensorflow as tf

        dataset = tf.data.Dataset.from_tensor_slices((x, y))
        dataset = dataset.map(self._decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if self.cache == "memory":
            dataset = dataset.cache()
        elif self.cache == "disk":
            dataset = dataset.cache(self._cache_file())
        return dataset

    def _cache_file(self) -> str:
        """A file in a temporary folder of this process, removed when it exits."""
        if self._cache_dir is None:
            self._cache_dir = tempfile.mkdtemp(prefix="dlrun-cache-")
            atexit.register(shutil.rmtree, self._cache_dir, ignore_errors=True)
        self._caches += 1
        return os.path.join(self._cache_dir, f"split-{self._caches}")

    def pipeline(self, x: np.ndarray, y: np.ndarray, batch_size: int):
        """In file order: decode, (cache,) batch, prefetch."""
        import tensorflow as tf

        return self._decoded(x, y).batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def shuffled_epochs(
        self, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, first: int, epochs: int
    ):
        """Epochs first..epochs-1, each in an order that depends only on (seed, epoch)."""
        import tensorflow as tf

        if self.cache == "none":  # permute the file list, then decode: a perfect shuffle
            paths, labels, count = tf.constant(x), tf.constant(y), len(x)

            def one_epoch(epoch):
                key = tf.stack([tf.constant(seed, tf.int64), epoch])
                order = tf.argsort(tf.random.stateless_uniform([count], seed=key))
                rows = (tf.gather(paths, order), tf.gather(labels, order))
                dataset = tf.data.Dataset.from_tensor_slices(rows)
                dataset = dataset.map(
                    self._decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
                )
                return dataset.batch(batch_size)

            dataset = tf.data.Dataset.range(first, epochs).flat_map(one_epoch)
            return dataset.prefetch(tf.data.AUTOTUNE)
        decoded = self._decoded(x, y)  # one cache, read again every epoch
        buffer = min(len(x), SHUFFLE_BUFFER)
        dataset = None
        for epoch in range(first, epochs):
            order = (seed * 1_000_003 + epoch) % 2**31
            one = decoded.shuffle(buffer, seed=order, reshuffle_each_iteration=False)
            one = one.batch(batch_size)
            dataset = one if dataset is None else dataset.concatenate(one)
        if dataset is None:  # nothing left to train
            dataset = decoded.batch(batch_size)
        return dataset.prefetch(tf.data.AUTOTUNE)
