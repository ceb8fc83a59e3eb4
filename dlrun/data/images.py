"""`data.dataset: directory`: a folder of images, one subfolder per class, streamed from disk.

The folder is listed (file paths and class names), never loaded: train, validation and test
hold file paths, and tf.data reads, decodes and resizes each image as its batch is needed.
Splits are fixed and stratified over the file list, as for the other data sets.

A file with an image extension that is not a readable image fails the run before anything is
written, naming the files: a silently skipped file would change the splits and the counts a
run reports. Files with other extensions (notes, .DS_Store) are ignored, as Keras'
image_dataset_from_directory does. A folder or image file whose name starts with a dot
(`.hid`, `..dots`, `._photo.jpg`) is skipped, at training as at predict, and never silently:
a note names what was skipped (the run records it in meta.json's data_notes).
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
from dlrun.textsafe import escaped

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
# What TensorFlow's decode_image reads (MPO is the JPEG variant some cameras write).
FORMATS = {"JPEG", "MPO", "PNG", "BMP", "GIF"}
# Cached decoded images are shuffled through a buffer of this many (the file list itself is
# permuted whole when nothing is cached).
SHUFFLE_BUFFER = 2048
SHOWN = 5  # bad files named in an error before "and N more"
# Folders that name a split, not a class: data.path may hold train/ with val/ (or
# validation/) and test/ beside it, each with one subfolder per class, as downloads and
# keras.io's examples lay them out.
SPLIT_FOLDERS = {"train": "train", "val": "val", "validation": "val", "test": "test"}


def _subfolders(folder: Path, hidden: list[str] | None = None) -> list[str]:
    """The names of `folder`'s subfolders; those whose names start with a dot are skipped,
    and added (as paths) to `hidden` for the note that says so."""
    names = []
    for path in folder.iterdir():
        if path.is_dir():
            if not path.name.startswith("."):
                names.append(path.name)
            elif hidden is not None:
                hidden.append(str(path))
    return sorted(names)


def hidden_note(hidden: list[str]) -> list[str]:
    """[] or the one note that names the hidden folders and image files skipped."""
    if not hidden:
        return []
    hidden = sorted(dict.fromkeys(hidden))  # a folder listed twice is named once
    shown = ", ".join(escaped(path) for path in hidden[:SHOWN])
    more = f" and {len(hidden) - SHOWN} more" if len(hidden) > SHOWN else ""
    return [
        f"skipped {len(hidden)} hidden folder(s) or image file(s), whose names start with a "
        f"dot: {shown}{more}; rename them to use them"
    ]


def split_folders(spec: Spec, need_train: bool = True) -> dict[str, Path]:
    """data.path's folders by split: {"train": data.path} when it holds class folders; its
    train/, val/ (or validation/) and test/ when it holds split folders; data.test_path as
    "test" when given."""
    root = Path(spec.data.path)
    if not root.is_dir():
        raise spec.missing(("data", "path"), root, "folder")
    names = _subfolders(root)
    splits = [name for name in names if name in SPLIT_FOLDERS]
    folders = {"train": root}
    if splits:
        classes = [name for name in names if name not in SPLIT_FOLDERS]
        if classes:
            raise spec.error(
                ("data", "path"),
                f"{root} mixes split folders ({', '.join(splits)}) with class folders "
                f"({', '.join(classes)}); expected one subfolder per class, or train/ "
                "[val/] [test/] each holding one subfolder per class",
            )
        if "val" in splits and "validation" in splits:
            raise spec.error(
                ("data", "path"), f"{root} has both val/ and validation/; keep one of them"
            )
        if need_train and "train" not in splits:
            raise spec.error(
                ("data", "path"),
                f"{root} has split folders ({', '.join(splits)}) but no train/; add train/ "
                "with one subfolder per class",
            )
        folders = {SPLIT_FOLDERS[name]: root / name for name in splits}
    if spec.data.test_path:
        test = Path(spec.data.test_path)
        if not test.is_dir():
            raise spec.missing(("data", "test_path"), test, "folder")
        folders["test"] = test
    return folders


def _class_names(
    spec: Spec, folder: Path, loc: tuple, least: int = 2, hidden: list[str] | None = None
) -> list[str]:
    names = _subfolders(folder, hidden)
    if len(names) < least:
        found = f" ({', '.join(names)})" if names else ""
        raise spec.error(
            loc,
            f"{folder} has {len(names)} class folder(s){found}; expected one subfolder of "
            f"images per class, at least {'two' if least == 2 else 'one'}",
        )
    return names


def _listed(
    spec: Spec,
    folder: Path,
    loc: tuple,
    known: list[str] | None = None,
    least: int = 2,
    hidden: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(file paths, their class names, the sorted class names) of a folder of class folders.

    With `known` (the training classes), a val or test folder may hold some of them only,
    and none that training has not. What was skipped as hidden is added to `hidden`.
    """
    names = _class_names(spec, folder, loc, least, hidden)
    unknown = [name for name in names if known is not None and name not in known]
    if unknown:
        raise spec.error(
            loc,
            f"{folder} has class folder(s) {', '.join(unknown)} that the training data has "
            f"not; its classes are {', '.join(known)}",
        )
    paths, labels = [], []
    for name in names:
        files = _images(folder / name, hidden)
        if not files:
            raise spec.error(
                loc,
                f"class folder {folder / name} holds no images "
                f"({', '.join(e.lstrip('.') for e in EXTENSIONS)}); add some or remove it",
            )
        paths += files
        labels += [name] * len(files)
    return np.array(paths), np.array(labels), names


def _images(folder: Path, hidden: list[str] | None = None) -> list[str]:
    """The image files below `folder`, in order; hidden folders and image files (a name that
    starts with a dot) are skipped and added to `hidden`."""
    found = []
    for parent, dirs, files in os.walk(folder):
        dirs.sort()
        if hidden is not None:
            hidden += [os.path.join(parent, name) for name in dirs if name.startswith(".")]
            hidden += [
                os.path.join(parent, name)
                for name in sorted(files)
                if name.startswith(".") and name.lower().endswith(EXTENSIONS)
            ]
        dirs[:] = [name for name in dirs if not name.startswith(".")]
        found += [
            os.path.join(parent, name)
            for name in sorted(files)
            if name.lower().endswith(EXTENSIONS) and not name.startswith(".")
        ]
    return found


def check_images(paths: np.ndarray, what: str = "data.path") -> None:
    """Every file is an image TensorFlow can decode; else a DataError naming the bad files."""
    checks.regular_files(paths)
    bad = [problem for path in paths if (problem := checks.image_problem(path, FORMATS))]
    if bad:
        more = f" and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
        raise DataError(
            f"{what}: {len(bad)} file(s) are not readable jpg/png/bmp/gif images: "
            f"{', '.join(bad[:SHOWN])}{more}; remove or replace them"
        )


def list_images(
    sources: list[Path], hidden: list[str] | None = None
) -> tuple[list[str], list[str | None]]:
    """Image files given one by one or found in folders (any nesting), in order, and the class
    folder of each: the first folder below the given one (None for a file given by itself or
    lying in the given folder itself), as training reads a folder of class subfolders. Hidden
    folders and files inside a given folder are skipped, as training skips them, and added to
    `hidden`."""
    paths: list[str] = []
    classes: list[str | None] = []
    for source in sources:
        if source.is_dir():
            for path in _images(source, hidden):
                parts = Path(path).relative_to(source).parts
                paths.append(path)
                classes.append(parts[0] if len(parts) > 1 else None)
        else:
            paths.append(str(source))
            classes.append(None)
    return paths, classes


# Without data.image_size, a pretrained base takes what keras.applications' models take.
BASE_GEOMETRY = ((224, 224), "rgb")
# PIL's modes of one channel: such images decode as grayscale.
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


def own_geometry(spec: Spec, paths, notes: list[str] | None = None) -> None:
    """data.image_size and data.color_mode when the spec leaves them unset: the images' own
    size and colour when they all agree (a pretrained base: 224x224 rgb), written into the
    spec so that the run records them; else one line asking for them. Reads image headers."""
    data = spec.data
    if data.image_size is not None and data.color_mode is not None:
        return
    if spec.model.base is not None:
        size, colour = BASE_GEOMETRY
    else:
        sizes, colours = _headers(paths)
        size = sizes.pop() if len(sizes) == 1 else None
        colour = colours.pop() if len(colours) == 1 else None
        if data.image_size is None and size is None:
            shown = ", ".join(f"{w}x{h}" for w, h in sorted(sizes)[:3])
            raise spec.error(
                ("data", "image_size"),
                f"the images are of {len(sizes)} sizes ({shown}...); give data.image_size: "
                "[height, width] to resize them all to",
            )
        if data.color_mode is None and colour is None:
            raise spec.error(
                ("data", "color_mode"),
                "the images are grey and colour mixed; give data.color_mode: rgb or grayscale",
            )
    data.image_size = data.image_size or (size[1], size[0]) if size else data.image_size
    data.color_mode = data.color_mode or colour
    if notes is not None:
        shape = (*data.image_size, 1 if data.color_mode == "grayscale" else 3)
        origin = "a pretrained base's default" if spec.model.base else "the images' own"
        notes.append(
            f"input shape {shape}: {origin} size and colour (data.image_size "
            f"{list(data.image_size)}, data.color_mode {data.color_mode})"
        )


def _headers(paths) -> tuple[set, set]:
    """The (width, height) sizes and colour modes the image files hold: headers only."""
    from PIL import Image

    sizes, colours = set(), set()
    for path in paths:
        try:
            with checks.open_image(str(path)) as image:
                sizes.add(image.size)
                colours.add("grayscale" if image.mode in GREY_MODES else "rgb")
        except (OSError, SyntaxError, ValueError, Image.UnidentifiedImageError, EOFError):
            continue  # check_images names it
    return sizes, colours


def folder_signature(spec: Spec, notes: list[str] | None = None) -> tuple[tuple[int, ...], int]:
    """(input shape, number of classes) from the folder's listing; images are read only for
    their size and colour, when the spec leaves them unset."""
    folders = split_folders(spec)
    _check_validation(spec, folders)
    hidden: list[str] = []
    paths, _, names = _listed(spec, folders["train"], ("data", "path"), hidden=hidden)
    if notes is not None:
        notes += hidden_note(hidden)
    if spec.data.image_size is None or spec.data.color_mode is None:
        own_geometry(spec, paths, notes)
    checks.image_size(spec)
    classes = len(spec.data.classes) if spec.data.classes else len(names)
    return FolderSource(spec).input_shape, classes


def _check_validation(spec: Spec, folders: dict[str, Path]) -> None:
    """A val/ folder is the run's validation data: no validation_split or cv beside it
    (checked when the folder is listed, so `dlrun validate` finds it too)."""
    if "val" not in folders:
        return
    if spec.data.cv:
        raise spec.error(
            ("data", "cv"),
            f"{folders['val']} is validation data of its own, and cv folds the training "
            "split into validation data; remove one of them",
        )
    if spec.training.validation_split:
        raise spec.error(
            ("training", "validation_split"),
            f"{spec.training.validation_split} asks for a share of the training images, but "
            f"{folders['val']} is validation data of its own; remove validation_split (or set "
            "it to 0)",
        )


def load_folder(spec: Spec):
    """The folder as a data.Data of file paths with fixed, stratified splits.

    train/, val/ and test/ folders are the splits as given; without val/, validation is the
    last validation_split share of the training images, and without test/ (or
    data.test_path), the test split is a fixed, stratified test_split share.
    """
    from sklearn.model_selection import train_test_split

    from dlrun.data import subsets
    from dlrun.data.splits import SPLIT_SEED, Data, fold_indices, validation_share

    folders = split_folders(spec)
    _check_validation(spec, folders)
    hidden: list[str] = []
    paths, labels, names = _listed(spec, folders["train"], ("data", "path"), hidden=hidden)
    listed = {"train": (paths, labels)}
    for split, loc in (("val", ("data", "path")), ("test", _test_loc(spec))):
        if split in folders:
            listed[split] = _listed(spec, folders[split], loc, names, 1, hidden)[:2]
    every = np.concatenate([found[0] for found in listed.values()])
    check_images(every)
    notes: list[str] = hidden_note(hidden)
    own_geometry(spec, every, notes)
    checks.image_size(spec)
    if "test" in listed:  # the test folder is the test split; the training images are shuffled
        order = np.random.default_rng(SPLIT_SEED).permutation(len(paths))
        x_train, y_train = paths[order], labels[order]
        x_test, y_test = listed["test"]
    else:
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
    own = "val" in listed
    split = validation_share(spec, own=own)
    validation = "own" if own else "split"
    if own:
        x_val, y_val = listed["val"]
        inside = np.isin(y_val, names)  # data.classes may keep only some
        x_val, y_val = x_val[inside], subsets.recode(y_val[inside], names)
    elif spec.data.cv:
        train_index, val_index = fold_indices(y_train, spec.data.cv.folds, spec)[spec.data.cv.index]
        x_train, x_val = x_train[train_index], x_train[val_index]
        y_train, y_val = y_train[train_index], y_train[val_index]
        validation = "cv"
    elif split:  # the last part of the (already shuffled) training split, as for arrays
        cut = int(len(x_train) * (1 - split))
        if cut == 0 or cut == len(x_train):
            raise spec.error(
                ("training", "validation_split"),
                f"{split} of {len(x_train)} training images leaves an empty split",
            )
        x_train, x_val = x_train[:cut], x_train[cut:]
        y_train, y_val = y_train[:cut], y_train[cut:]
    else:
        validation = "none"
    if spec.data.one_hot:
        eye = np.eye(len(names), dtype=np.float32)
        y_train, y_test = eye[y_train], eye[y_test]
        y_val = eye[y_val] if y_val is not None else None
    source = FolderSource(spec)
    data = Data(x_train, y_train, x_val, y_val, x_test, y_test, len(names), names, source)
    data.validation, data.notes = validation, notes
    return data


def _test_loc(spec: Spec) -> tuple:
    return ("data", "test_path") if spec.data.test_path else ("data", "path")


def load_scored_folder(spec: Spec, classes: list[str]):
    """Another folder to score a run on, all of it: its test/ (or data.test_path) where it
    has one, else every image under it. Labels are numbered in the run's class order, and
    only the run's data.classes are kept when it chose some. -> (Data, what was scored)."""
    from dlrun.data import subsets
    from dlrun.data.splits import Data

    folders = split_folders(spec, need_train=False)
    chosen = [folders["test"]] if "test" in folders else list(folders.values())
    known = None if spec.data.classes else classes
    parts = [_listed(spec, folder, _test_loc(spec), known, least=1)[:2] for folder in chosen]
    x = np.concatenate([part[0] for part in parts])
    y = np.concatenate([part[1] for part in parts])
    keep = np.isin(y, classes)
    if not keep.any():
        raise spec.error(
            _test_loc(spec),
            f"{', '.join(map(str, chosen))} holds none of the run's classes ({', '.join(classes)})",
        )
    check_images(x[keep])
    x, y = x[keep], subsets.recode(y[keep], classes)
    if spec.data.one_hot:
        y = np.eye(len(classes), dtype=np.float32)[y]
    none = x[:0]
    data = Data(none, y[:0], None, None, x, y, len(classes), list(classes), FolderSource(spec))
    return data, " and ".join(map(str, chosen))


class FolderSource:
    """Turns arrays of file paths into tf.data pipelines of decoded, resized images."""

    def __init__(self, spec: Spec):
        data = spec.data
        channels = 1 if data.color_mode == "grayscale" else 3
        self._set(tuple(data.image_size), channels, data.scale, data.flatten, data.cache)

    @classmethod
    def shaped(cls, size: tuple[int, int], channels: int, scale: float, flatten: bool):
        """Images decoded for a model trained on image arrays (mnist, cifar10, an npz): the
        same steps, to that size and colour mode."""
        source = cls.__new__(cls)
        source._set(tuple(size), channels, scale, flatten, "none")
        return source

    def _set(self, size, channels: int, scale: float, flatten: bool, cache: str) -> None:
        self.size, self.channels, self.scale, self.flatten = size, channels, scale, flatten
        self.cache = cache
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

    def batches(self, paths: list[str], batch_size: int):
        """The images of `paths`, decoded as in training, `batch_size` at a time as NumPy
        arrays: streamed, never all in memory, and never cached. A file that does not decode
        is a DataError naming it."""
        import tensorflow as tf

        dataset = tf.data.Dataset.from_tensor_slices((paths, np.zeros(len(paths), np.int32)))
        dataset = dataset.map(self._decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        options = tf.data.Options()
        options.autotune.enabled = False  # no autotuning thread to wait for (data.feed._untuned)
        dataset = dataset.batch(batch_size).prefetch(2).with_options(options)
        iterator = iter(dataset)
        for start in range(0, len(paths), batch_size):
            try:
                images, _ = next(iterator)
            except tf.errors.OpError:
                chunk = paths[start : start + batch_size]
                check_images(np.array(chunk), "input")  # names the files PIL cannot read
                raise DataError(
                    f"input: TensorFlow could not decode one of {chunk[0]} ... {chunk[-1]}"
                ) from None
            yield images.numpy()

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

        def one_epoch(epoch):  # the epoch's seed is a tensor: one graph node for any epochs
            # This function's own graph seed: the order then depends only on (seed, epoch), and
            # TensorFlow's seed check never meets a tensor (it cannot when the run's seed is 0).
            tf.compat.v1.set_random_seed(1)
            order = (tf.constant(seed, tf.int64) * 1_000_003 + epoch) % 2**31
            one = decoded.shuffle(buffer, seed=order, reshuffle_each_iteration=False)
            return one.batch(batch_size)

        if first >= epochs:  # nothing left to train
            dataset = decoded.batch(batch_size)
        else:
            dataset = tf.data.Dataset.range(first, epochs).flat_map(one_epoch)
        return dataset.prefetch(tf.data.AUTOTUNE)
