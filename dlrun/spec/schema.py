"""The spec's pydantic models: every section, its keys, their defaults and checks.

No TensorFlow here: checking a spec's structure must be instant. Whether a layer name or an
optimizer exists is Keras' business and is checked in model/, with the same error format.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from dlrun.errors import SpecError
from dlrun.spec.names import NAME_MAX, NAME_PATTERN, entry_name
from dlrun.spec.problems import OVERRIDDEN, Loc, format_problem  # noqa: F401
from dlrun.spec.uris import config_without_credentials

KERAS_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100")
OFFLINE_DATASETS = ("digits", "mnist_5k")
FILE_DATASETS = ("npz", "csv")
# Keras loss names (lower case, no underscores) that make a run a regression.
REGRESSION_LOSSES = {
    *("mse", "mae", "mape", "msle", "huber", "logcosh", "huberloss", "logcoshloss"),
    *("meansquarederror", "meanabsoluteerror", "meanabsolutepercentageerror"),
    "meansquaredlogarithmicerror",
}
FOLDER_DATASETS = ("directory",)  # one subfolder of images per class
# Data keys that mean something for these sources only: a run of another source neither
# records nor shows them (Spec.resolved).
DATA_KEYS_FOR = {
    "test_path": (*FOLDER_DATASETS, "csv"),
    "image_size": FOLDER_DATASETS,
    "color_mode": FOLDER_DATASETS,
    "cache": FOLDER_DATASETS,
    "label_column": ("csv",),
    "validation_path": ("csv",),
    "categorical": ("csv",),
    "function": ("function",),
    "args": ("function",),
    "columns": ("csv",),
    "drop": ("csv",),
    "missing": ("csv",),
}
# Layers that run code named in the file: a spec is data, never a program.
BACKENDS = ("tensorflow", "jax", "torch")
BACKEND_CHOICES = ("auto", *BACKENDS)
# compile.steps_per_execution: auto is this on a GPU with JAX or torch, 1 elsewhere. The CPU
# (bench/steps_per_execution.md) gained on the dense net but lost on the CNN; the H200 gained on
# both (shared/GPU.md). TensorFlow keeps 1: its shuffled epochs are one stream that a group must
# not straddle (data.check_steps_per_execution).
STEPS_PER_EXECUTION_GPU = 8
# And on JAX on the CPU for a dense-type net (spec.backends.FAST_ON_JAX) under SMALL_NET_PARAMS
# parameters, whose steps are mostly dispatch: 8 made dlrun's dense 784-32-10 (25k parameters)
# 1.7x faster there, the dropout and batch-norm nets (670k, 471k) no faster, and the CNN
# slower (bench/speed.py, bench/steps_per_execution.md, docs/performance.md).
SMALL_NET_PARAMS = 100_000
# Keras' augmentation layers that blend two samples and their labels: inside a model they would
# blend the images and keep the first image's label.
LABEL_MIXING_LAYERS = ("MixUp", "CutMix")
REFUSED_LAYERS = ("Lambda", "TFSMLayer", "JaxLayer", "FlaxLayer", "TorchModuleWrapper")
# A Keras name, or a code file's (spec `code:`) object by its name or as module.Name.
CODE_NAME = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?"

# Bounds far beyond any real run, so that 2**63 is refused here and not by Keras after a run
# folder exists.
MAX_EPOCHS = 1_000_000
MAX_BATCH = 2**31 - 1
LAYER_NAME = r"[!-.0-~]{1,100}"  # printable ASCII but '/' (Keras' separator); no space
MAX_BLOCK_REPEAT = 1000  # copies of a block in a graph; each copy is layers built in memory
MAX_PROCESSES = 4096  # training.distribute.processes: a large cluster, not a typo's 10**9
# Every other number of a spec, a sweep file or `--set` has its bounds here too (docs/spec.md
# "Bounds"; tests/test_hostile_numbers.py walks the models for a field without them).
MAX_SAMPLES = 2**31 - 1  # data.limit: more samples than any array held in memory
MAX_SCALE = 2.0**32  # data.scale: a uint32 sensor's range; the inputs are divided by it
# data.image_size, each side: a 32768 x 32768 grayscale float32 image is already the 4 GiB a
# batch may take (data.checks.MAX_BATCH_BYTES, checked with the batch size once data is read)
MAX_IMAGE_SIDE = 2**15
MAX_DIM = 2**31 - 1  # model.inputs.*.shape, each axis: what an int32 shape holds
MAX_FOLDS = 10_000  # data.cv.folds and a sweep's cv (a sweep's fits are MAX_FITS at most)
MAX_LAYERS = 100_000  # model.base.until, training.finetune.unfreeze: layers of a base
MAX_WEIGHT = 1e6  # compile.loss_weights and training.class_weight values
MAX_STEPS_PER_EXECUTION = 100_000  # batches in one compiled call: more than an epoch has
MAX_ATTACK_STEPS = 1000  # training.adversarial.steps: PGD gradients per batch
MAX_FINETUNE_RATE = 1.0  # training.finetune.learning_rate: small steps keep pretrained weights
MAX_CPUS = 1024  # resources.cpu of a process or a sweep's fit on a Ray node
MAX_GPUS = 64  # resources.gpu, likewise; Ray waits for ever on more than its nodes have


class _Section(BaseModel):
    # strict: `yes` (a YAML boolean) is not a number and "3" is not an integer;
    # forbid: a misspelt key is an error, never silently dropped.
    # allow_inf_nan=False: .inf and .nan are no setting; every float is finite.
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


class DataSpec(_Section):
    dataset: Literal[
        "mnist",
        "fashion_mnist",
        "cifar10",
        "cifar100",
        "digits",
        "mnist_5k",
        "npz",
        "csv",
        "directory",
        "function",
    ] = "mnist"
    path: str | None = Field(None, validate_default=True)  # the file (npz, csv) or folder
    # directory: a folder of class folders to test on instead of a test_split share; csv: a
    # second csv with the same columns, the test split (with test_split: 0)
    test_path: str | None = None
    label_column: str = "label"  # csv only
    flatten: bool = False  # true: images -> vectors for dense nets; false: keep (H, W, C)
    # inputs are divided by this: pixels 0..255 -> 0..1
    scale: float = Field(255.0, gt=0, le=MAX_SCALE)
    one_hot: bool = True  # labels through keras.utils.to_categorical
    # only for data without a test split of its own; 0: none cut (the test is data.test_path)
    test_split: float = Field(0.2, ge=0, lt=1)
    # classification: labels are classes (encoded, stratified splits); regression: numbers.
    # Unset: regression when the loss is a regression loss (mse, mae, huber, ...).
    task: Literal["classification", "regression"] | None = None
    cv: FoldSpec | None = None  # validate on a k-fold split instead of validation_split
    # directory only: every image is decoded and resized to this, as rgb or grayscale. Unset:
    # the images' own size and colour when they all agree (with a pretrained base: 224x224
    # rgb); the run records what was chosen.
    image_size: tuple[int, int] | None = Field(None, validate_default=True)
    color_mode: Literal["rgb", "grayscale"] | None = None
    cache: Literal["none", "memory", "disk"] = "none"  # decoded images: streamed by default
    classes: list[int | str] | None = Field(None, min_length=2)  # keep these labels, in order
    # keep this many training samples, stratified
    limit: int | None = Field(None, ge=1, le=MAX_SAMPLES)
    # A 3-D array (samples, a, b) gets a channel axis only when it is images: auto adds one
    # for Keras' and the offline image sets and uint8 npz pixels, and keeps float arrays as
    # sequences (samples, steps, features); add: always; none: never.
    channels: Literal["auto", "add", "none"] = "auto"
    # csv only: a second csv with the same columns, the run's validation data
    validation_path: str | None = None
    # csv only: text columns one-hot encoded (categories from the training split)
    categorical: list[str] | None = Field(None, min_length=1)
    # csv only: the feature columns, in this order (default: every column but the label)...
    columns: list[str] | None = Field(None, min_length=1)
    # ...or every column but the label and these
    drop: list[str] | None = Field(None, min_length=1)
    # csv only: a blank cell (text or number) is refused, its row dropped (the count is
    # reported), or filled with the training split's median (numbers) or most frequent value
    # (text), recorded in the run and filled in again by evaluate and predict
    missing: Literal["refuse", "drop", "fill"] = "refuse"
    # labels: learn the label column (or y); inputs: reproduce x itself (an autoencoder)
    targets: Literal["labels", "inputs"] = "labels"
    # A function of a code file (spec `code:`) returning the npz keys as a mapping of arrays;
    # dataset is then `function`.
    function: str | None = None
    args: dict[str, Any] = {}  # its keyword arguments

    @model_validator(mode="before")
    @classmethod
    def _function_source(cls, value: Any) -> Any:
        if isinstance(value, dict) and value.get("function") is not None:
            if value.get("dataset", "function") != "function":
                raise ValueError(
                    f"function loads the data itself; remove dataset: {value['dataset']}"
                )
            value = {**value, "dataset": "function"}
        return value

    @model_validator(mode="after")
    def _function_given(self) -> DataSpec:
        if self.dataset == "function" and not self.function:
            raise ValueError("dataset 'function' needs a function from a code file; add function")
        if self.function is not None and not re.fullmatch(CODE_NAME, self.function):
            raise ValueError(f"function: expected a function's name, got {self.function!r}")
        if self.args and self.function is None:
            raise ValueError("args are the arguments of data.function; add a function")
        return self

    @model_validator(mode="after")
    def _csv_only(self) -> DataSpec:
        for key in ("validation_path", "categorical", "columns", "drop"):
            if getattr(self, key) is not None and self.dataset != "csv":
                raise ValueError(f"{key} is only used with dataset csv, not '{self.dataset}'")
        if self.missing != "refuse" and self.dataset != "csv":
            raise ValueError(f"missing is only used with dataset csv, not '{self.dataset}'")
        if self.columns is not None and self.drop is not None:
            raise ValueError("give data.columns (the features to keep) or data.drop, not both")
        for key in ("columns", "drop"):
            picked = getattr(self, key) or []
            if self.label_column in picked:
                raise ValueError(
                    f"{key} names the label column {self.label_column!r}; list features only"
                )
            if len(set(picked)) != len(picked):
                raise ValueError(f"{key} names a column twice: {picked!r}")
        if self.test_split == 0 and not (self.test_path and self.dataset in ("csv", "directory")):
            raise ValueError(
                "test_split 0 leaves no test data; give data.test_path (a csv or a folder) "
                "or a test_split between 0 and 1"
            )
        return self

    @field_validator("path")
    @classmethod
    def _path_for_files(cls, path: str | None, info) -> str | None:
        dataset = info.data.get("dataset")
        takes_path = FILE_DATASETS + FOLDER_DATASETS
        if dataset in FILE_DATASETS and not path:
            raise ValueError(f"dataset '{dataset}' needs a path to the file; add data.path")
        if dataset in FOLDER_DATASETS and not path:
            raise ValueError("dataset 'directory' needs a path to the folder; add data.path")
        if dataset not in takes_path and path:
            raise ValueError(
                f"path is only used with dataset npz, csv or directory, not '{dataset}'"
            )
        return path

    @field_validator("test_path")
    @classmethod
    def _test_folder(cls, path: str | None, info) -> str | None:
        if path is not None and info.data.get("dataset") not in (*FOLDER_DATASETS, "csv"):
            raise ValueError(
                "test_path is only used with dataset directory (a test folder) or csv (a file)"
            )
        return path

    @field_validator("image_size", mode="before")
    @classmethod
    def _size(cls, size: Any) -> Any:
        if size is None:
            return size
        if isinstance(size, list):  # YAML has lists, not tuples
            size = tuple(size)
        if isinstance(size, int) and not isinstance(size, bool):
            size = (size, size)
        if not (
            isinstance(size, tuple)
            and len(size) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size)
        ):
            raise ValueError(f"expected [height, width] in pixels, got {size!r}")
        if max(size) > MAX_IMAGE_SIDE:
            raise ValueError(f"expected sides of at most {MAX_IMAGE_SIDE} pixels, got {size!r}")
        return size

    @field_validator("classes")
    @classmethod
    def _distinct(cls, classes: list | None) -> list | None:
        if classes is not None and len({str(c) for c in classes}) != len(classes):
            raise ValueError(f"a class is named twice in {classes!r}")
        return classes


class FoldSpec(_Section):
    """One cross-validation fold (what `dlrun sweep` writes into each trial's spec)."""

    folds: int = Field(ge=2, le=MAX_FOLDS)  # stratified k-fold on the training split
    index: int = Field(ge=0, le=MAX_FOLDS)  # validate on this fold, train on the others

    @model_validator(mode="after")
    def _index_in_range(self) -> FoldSpec:
        if self.index >= self.folds:
            raise ValueError(f"index must be below folds ({self.folds}), got {self.index}")
        return self


# Keys of a model.layers entry that wire the graph; every other key goes to the Keras layer.
GRAPH_KEYS = ("inputs", "block", "repeat", "with")


class LayerSpec(BaseModel):
    """One `keras.layers` class by name; every other key is passed to it as a keyword.

    Graph keys: `inputs` (a name, a list of names, or {keyword: name}; default: the previous
    entry's output), `name` (makes the output referable), or instead of `type` a `block` from
    model.blocks with `repeat` and `with` (its params).
    """

    model_config = ConfigDict(strict=True, extra="allow")
    type: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, value: Any) -> Any:
        if isinstance(value, str):  # `- Flatten` is `- {type: Flatten}`
            return {"type": value}
        if isinstance(value, dict) and "type" not in value and "block" not in value:
            raise ValueError("a layer needs a type, e.g. {type: Dense, units: 10}")
        if isinstance(value, dict) and value.get("type") is None and "block" in value:
            value = {k: v for k, v in value.items() if k != "type"}  # config.yaml's type: null
        if isinstance(value, dict) and "type" in value and "block" in value:
            raise ValueError("give a layer type or a block, not both")
        return value

    @field_validator("type")
    @classmethod
    def _known_shape(cls, name: str | None) -> str | None:
        if name is None:
            return name
        if name in REFUSED_LAYERS:
            raise ValueError(f"{name} layers run code from the file and are refused")
        if not re.fullmatch(CODE_NAME, name):
            raise ValueError(
                f"expected a keras.layers class name such as Dense (or a code file's layer, "
                f"module.Name), got {name!r}"
            )
        return name

    @model_validator(mode="after")
    def _graph_keys(self) -> LayerSpec:
        extra = self.model_extra or {}
        inputs = extra.get("inputs")
        if inputs is not None and not _is_reference(inputs):
            raise ValueError(
                "inputs: expected a name, a list of names or a mapping of keyword to name, "
                f"got {inputs!r}"
            )
        name = extra.get("name")
        if name is not None and not (isinstance(name, str) and name and name != "in"):
            raise ValueError(f"name: expected a name other than 'in', got {name!r}")
        if name is not None and not re.fullmatch(LAYER_NAME, name):
            # what Keras and TensorFlow take as a layer's name: refused here, not in a run
            raise ValueError(
                f"name: expected ASCII letters, digits and punctuation (no spaces, no '/'), "
                f"at most 100 characters; got {name[:60]!r}"
            )
        if self.type is not None:
            for key in ("repeat", "with"):
                if key in extra:
                    raise ValueError(f"{key} goes with a block, not with a layer type")
        else:
            block = extra.get("block")
            if not isinstance(block, str):
                raise ValueError(f"block: expected the name of a block, got {block!r}")
            repeat = extra.get("repeat", 1)
            bad = not isinstance(repeat, int) or isinstance(repeat, bool)
            if bad or not 1 <= repeat <= MAX_BLOCK_REPEAT:
                raise ValueError(
                    f"repeat: expected a whole number from 1 to {MAX_BLOCK_REPEAT}, got {repeat!r}"
                )
            if not isinstance(extra.get("with", {}), dict):
                raise ValueError("with: expected a mapping of param to value")
            unknown = set(extra) - {"block", "repeat", "with", "name", "inputs"}
            if unknown:
                raise ValueError(
                    f"a block entry takes block, repeat, with, name and inputs; "
                    f"got {', '.join(sorted(unknown))}"
                )
        return self

    @property
    def is_graph(self) -> bool:
        """Wires a graph: refers to inputs or is a block."""
        extra = self.model_extra or {}
        return self.type is None or "inputs" in extra

    def kwargs(self) -> dict[str, Any]:
        """The Keras layer's arguments: everything but the graph keys."""
        return {k: v for k, v in (self.model_extra or {}).items() if k not in GRAPH_KEYS}


def _is_reference(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value)
    if isinstance(value, list):
        return bool(value) and all(isinstance(v, str) and v for v in value)
    if isinstance(value, dict):
        return bool(value) and all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in value.items()
        )
    return False


class InputSpec(_Section):
    """One named input of a graph."""

    # Without the batch axis; default: the shape of the data's array for this input.
    shape: list[Annotated[int, Field(ge=1, le=MAX_DIM)] | None] | None = Field(None, min_length=1)
    # A csv's columns this input reads (several inputs); an npz has x_train_<input> instead.
    columns: list[str] | None = Field(None, min_length=1)


class BlockSpec(_Section):
    """A reusable sub-graph: `$param` in its layers is replaced by `with:` or these defaults;
    `in` is the block's input."""

    params: dict[str, Any] = {}
    layers: list[LayerSpec] = Field(min_length=1)


class BaseSpec(_Section):
    """A trained network to start from: a keras.applications model, a run's checkpoint or a file."""

    application: str | None = None  # any keras.applications model by name, e.g. MobileNetV2
    run: str | None = None  # a run folder: its checkpoint is the base
    checkpoint: Literal["best", "last"] = "best"  # run only
    file: str | None = None  # a .keras model file
    weights: str | None = "imagenet"  # applications only: imagenet | null | path to weights
    options: dict[str, Any] = {}  # applications only: keyword arguments, e.g. {alpha: 0.35}
    # keep the base up to this layer (name or index; -1 is the last)
    until: str | int | None = None
    trainable: bool = False  # false: frozen and in inference mode while the head trains
    preprocess: Literal["auto", "none"] = "auto"  # auto: the application's preprocess_input

    @field_validator("until", mode="before")
    @classmethod
    def _index(cls, until: Any) -> Any:
        # before the union: one line, not one per form until takes
        index = isinstance(until, int) and not isinstance(until, bool)
        if not (until is None or isinstance(until, str) or index) or (
            index and not -MAX_LAYERS <= until < MAX_LAYERS
        ):
            raise ValueError(
                f"expected a layer's name or index from {-MAX_LAYERS} to {MAX_LAYERS - 1}, "
                f"got {until!r}"
            )
        return until

    @model_validator(mode="after")
    def _one_source(self) -> BaseSpec:
        given = [k for k in ("application", "run", "file") if getattr(self, k) is not None]
        if len(given) != 1:
            found = ", ".join(given) if given else "none"
            raise ValueError(f"give exactly one of application, run or file; found {found}")
        # Checked on values, not on the keys given: config.yaml spells out every default.
        if not self.application and self.weights != "imagenet":
            raise ValueError("weights is only used with application; a run or file has its own")
        if not self.application and self.options:
            raise ValueError("options is only used with application")
        if self.run is None and self.checkpoint != "best":
            raise ValueError("checkpoint is only used with run")
        return self


class ModelSpec(_Section):
    # Layers on the input before everything else, the base included: augmentation such as
    # RandomFlip or RandAugment, which Keras runs in training only, so evaluate, features and
    # attack see the inputs as they are.
    augment: list[LayerSpec] = []
    base: BaseSpec | None = None  # a trained network below the layers, which become its head
    # The graph's input, named; default: one input shaped like the data, named `input`
    inputs: dict[str, InputSpec] | None = None
    blocks: dict[str, BlockSpec] = {}  # reusable sub-graphs, used as {block: NAME}
    # Instead of layers: a function of a code file (spec `code:`) returning a keras.Model,
    # called with args; built on the data's shape when it is not built yet.
    function: str | None = None
    args: dict[str, Any] = {}
    # the input shape comes from the data; required unless a function makes the model
    layers: list[LayerSpec] = Field(None, validate_default=True)
    outputs: list[str] | str | None = None  # default: the last entry's output

    @field_validator("layers", mode="before")
    @classmethod
    def _needed(cls, layers: Any, info) -> Any:
        if info.data.get("function") is not None:
            return [] if layers is None else layers
        if layers is None:
            raise PydanticCustomError("missing", "Field required")
        if isinstance(layers, list) and not layers:
            raise PydanticCustomError("too_short", "too short", {"min_length": 1})
        return layers

    @model_validator(mode="after")
    def _layers_or_function(self) -> ModelSpec:
        if self.function is None:
            if self.args:
                raise ValueError("args are the arguments of model.function; add a function")
            return self
        if not re.fullmatch(CODE_NAME, self.function):
            raise ValueError(f"function: expected a function's name, got {self.function!r}")
        given = [
            key
            for key in ("layers", "augment", "base", "inputs", "blocks", "outputs")
            if getattr(self, key)
        ]
        if given:
            raise ValueError(
                f"give layers or a function, not both: the function's model is the whole "
                f"model; remove {', '.join(given)}"
            )
        return self

    @property
    def several_outputs(self) -> list[str] | None:
        """The output names of a graph of more than one output (each its own targets)."""
        outputs = self.outputs
        return list(outputs) if isinstance(outputs, list) and len(outputs) > 1 else None

    @property
    def several_inputs(self) -> list[str] | None:
        """The input names of a graph of more than one input (each its own data array)."""
        return list(self.inputs) if self.inputs is not None and len(self.inputs) > 1 else None

    @property
    def is_graph(self) -> bool:
        """Anything beyond a plain stack: built with Keras' functional API."""
        return self.function is None and (
            self.inputs is not None
            or bool(self.blocks)
            or self.outputs is not None
            or any(entry.is_graph for entry in self.layers)
        )

    @field_validator("augment")
    @classmethod
    def _images_only(cls, layers: list[LayerSpec]) -> list[LayerSpec]:
        for layer in layers:
            if layer.type in LABEL_MIXING_LAYERS:
                raise ValueError(
                    f"{layer.type} mixes the labels as well as the images, and a layer of the "
                    "model sees only the images; remove it (dlrun has no label mixing yet)"
                )
        return layers


def _named(value: Any) -> Any:
    """Optimizers and losses: a name, or {type: name, ...its arguments}."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("type"), str):
        direction = value.get("direction", "max")
        if direction not in ("max", "min"):
            raise ValueError(f"direction: expected max or min, got {direction!r}")
        return value
    raise ValueError(f"expected a name or a mapping with a type, got {value!r}")


def _loss(value: Any) -> Any:
    """A loss: a name, {type: name, ...}, or null for a model whose train_step computes its own."""
    if value is None:
        return value
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("type"), str):
        return value
    raise ValueError(f"expected a name or a mapping with a type, got {value!r}")


def _metric_list(metrics: Any) -> list[Any]:
    if not isinstance(metrics, list):
        raise ValueError(f"expected a list, got {metrics!r}")
    return [_named(entry) for entry in metrics]


def by_output(value: Any) -> bool:
    """A compile setting given per output ({digit: ..., odd: ...}), not one {type: ...}."""
    return isinstance(value, dict) and "type" not in value


def loss_task(loss: Any) -> str:
    """regression for a regression loss (mse, mae, huber, ...), else classification."""
    if loss is None:  # the model's own train_step: classification unless data.task says
        return "classification"
    name = (loss if isinstance(loss, str) else loss["type"]).lower().replace("_", "")
    return "regression" if name in REGRESSION_LOSSES else "classification"


class CompileSpec(_Section):
    optimizer: Any = "adam"  # resolved by keras.optimizers.get
    # resolved by keras.losses.get; several outputs: one per output, {digit: ..., odd: ...}
    loss: Any = "categorical_crossentropy"
    # names or {type: F1Score, average: macro}; several outputs: a list per output name
    metrics: Any = ["accuracy"]
    # several outputs: each one's share of the loss
    loss_weights: dict[str, Annotated[float, Field(ge=0, le=MAX_WEIGHT)]] | None = None
    # XLA compilation: Keras' "auto" compiles where the backend supports it.
    jit_compile: Literal["auto"] | bool = "auto"
    # Batches per compiled call: fewer Python round trips per step; auto: see above.
    steps_per_execution: Literal["auto"] | int = "auto"

    _check_optimizer = field_validator("optimizer")(_named)

    @field_validator("loss")
    @classmethod
    def _check_loss(cls, loss: Any) -> Any:
        if by_output(loss):
            return {output: _loss(entry) for output, entry in loss.items()}
        return _loss(loss)

    @field_validator("metrics")
    @classmethod
    def _check_metrics(cls, metrics: Any) -> Any:
        if isinstance(metrics, dict):  # several outputs: a list per output
            return {out: _metric_list(entries) for out, entries in metrics.items()}
        return _metric_list(metrics)

    @property
    def metric_names(self) -> list[str]:
        """The names the metrics are logged under (history.csv columns); per output, Keras
        logs `<output>_<metric>` and `<output>_loss`."""
        if isinstance(self.metrics, dict):
            names = [f"{out}_{entry_name(e)}" for out, es in self.metrics.items() for e in es]
        else:
            names = [entry_name(entry) for entry in self.metrics]
        return names + [f"{output}_loss" for output in self.loss_names()]

    def loss_names(self) -> list[str]:
        """The outputs a per-output loss names (none for one loss)."""
        return list(self.loss) if by_output(self.loss) else []

    @field_validator("steps_per_execution", mode="before")
    @classmethod
    def _positive(cls, value: Any) -> Any:
        # before the union: one line, not one per form steps_per_execution takes
        whole = isinstance(value, int) and not isinstance(value, bool)
        if value != "auto" and not (whole and value >= 1):
            raise ValueError(f"expected auto or a whole number >= 1, got {value}")
        if value != "auto" and value > MAX_STEPS_PER_EXECUTION:
            raise ValueError(
                f"expected auto or a whole number <= {MAX_STEPS_PER_EXECUTION:,}, got {value}"
            )
        return value


class EarlyStoppingSpec(_Section):
    monitor: str = "val_loss"
    patience: int = Field(3, ge=0, le=MAX_EPOCHS)
    min_delta: float = Field(0.0, ge=0)
    mode: Literal["auto", "min", "max"] = "auto"
    restore_best_weights: bool = True


class CheckpointSpec(_Section):
    monitor: str = "val_loss"  # best.keras holds the epoch best on this
    mode: Literal["auto", "min", "max"] = "auto"  # auto: the metric's own direction in Keras


class TensorBoardSpec(_Section):
    # weight histograms every N epochs; 0 = none
    histogram_freq: int = Field(1, ge=0, le=MAX_EPOCHS)
    write_graph: bool = True


class AdversarialSpec(_Section):
    """Adversarial training: part of each batch replaced by attacks on the current weights."""

    method: Literal["fgsm", "pgd"] = "pgd"  # pgd: stronger, `steps` gradients per batch
    eps: float = Field(0.1, ge=0, le=1)  # L-infinity radius, as a fraction of the input range
    ratio: float = Field(0.5, gt=0, le=1)  # share of each batch made adversarial
    steps: int = Field(3, ge=1, le=MAX_ATTACK_STEPS)  # pgd steps (fgsm always takes one)


class FinetuneSpec(_Section):
    """A second stage once the head has trained: unfreeze the base, recompile, train on."""

    epochs: int = Field(ge=1, le=MAX_EPOCHS)
    unfreeze: Literal["all"] | int = "all"  # or how many of the base's top layers
    # small: large steps wreck the pretrained weights
    learning_rate: float = Field(1e-5, gt=0, le=MAX_FINETUNE_RATE)

    @field_validator("unfreeze", mode="before")
    @classmethod
    def _positive(cls, unfreeze: Any) -> Any:
        # before the union: one line, not one per form unfreeze takes
        whole = isinstance(unfreeze, int) and not isinstance(unfreeze, bool)
        if unfreeze != "all" and not (whole and unfreeze >= 1):
            raise ValueError(f"expected all or a number of layers >= 1, got {unfreeze}")
        if unfreeze != "all" and unfreeze > MAX_LAYERS:
            raise ValueError(f"expected all or at most {MAX_LAYERS:,} layers, got {unfreeze}")
        return unfreeze


# Callbacks dlrun runs itself, and those that would run code named in the file.
OWNED_CALLBACKS = {
    "ModelCheckpoint": "training.checkpoint (best.keras and last.keras are always saved)",
    "EarlyStopping": "training.early_stopping",
    "TensorBoard": "training.tensorboard",
    "BackupAndRestore": "dlrun train --resume RUN (every run can be resumed)",
    "CSVLogger": "history.csv, which every run writes",
    "ProgbarLogger": "dlrun's own progress bar",
    "History": "history.csv, which every run writes",
}
CODE_CALLBACKS = {
    "LambdaCallback": "it runs code from the file",
    "LearningRateScheduler": "it takes a function; give compile.optimizer.learning_rate a "
    "schedule instead, e.g. {type: ExponentialDecay, initial_learning_rate: 0.01, "
    "decay_steps: 1000, decay_rate: 0.9}",
}


class CallbackSpec(BaseModel):
    """One keras.callbacks class by name; every other key is passed to it as a keyword."""

    model_config = ConfigDict(strict=True, extra="allow")
    type: str

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, value: Any) -> Any:
        if isinstance(value, str):  # `- TerminateOnNaN` is `- {type: TerminateOnNaN}`
            return {"type": value}
        if isinstance(value, dict) and "type" not in value:
            raise ValueError("a callback needs a type, e.g. {type: ReduceLROnPlateau}")
        return value

    @field_validator("type")
    @classmethod
    def _allowed(cls, name: str) -> str:
        if name in OWNED_CALLBACKS:
            raise ValueError(f"{name} is dlrun's own: use {OWNED_CALLBACKS[name]}")
        if name in CODE_CALLBACKS:
            raise ValueError(f"{name} is refused: {CODE_CALLBACKS[name]}")
        if not re.fullmatch(CODE_NAME, name):
            raise ValueError(f"expected a keras.callbacks class name, got {name!r}")
        return name

    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ResourcesSpec(_Section):
    """What each process of a run reserves on a Ray node (--executor ray), as a sweep's fits."""

    cpu: float = Field(1, gt=0, le=MAX_CPUS)
    gpu: float = Field(0, ge=0, le=MAX_GPUS)


class ProcessesSpec(_Section):
    """training.distribute: {processes: N}: one model over N processes (JAX), each feeding its
    own shard of every batch to its local devices (train.cluster)."""

    processes: int = Field(ge=1, le=MAX_PROCESSES)
    resources: ResourcesSpec = ResourcesSpec()  # per process, with --executor ray


class TrainingSpec(_Section):
    batch_size: int = Field(128, ge=1, le=MAX_BATCH)
    epochs: int = Field(12, ge=1, le=MAX_EPOCHS)
    # The last part of the training split. Unset: 0.1, or none when the data brings its own
    # validation set (npz x_val/y_val, data.validation_path, an image folder's val/).
    validation_split: float | None = Field(None, ge=0, lt=1)
    shuffle: bool = True
    early_stopping: EarlyStoppingSpec | None = None
    checkpoint: CheckpointSpec = CheckpointSpec()
    tensorboard: TensorBoardSpec | None = TensorBoardSpec()
    deterministic: bool = False  # TensorFlow op determinism: identical runs, a little slower
    device: Literal["auto", "cpu", "gpu"] = "auto"  # auto: the backend's accelerator, else CPU
    mixed_precision: bool = False  # float16 (GPU) or bfloat16 (CPU) compute, float32 output
    # data_parallel: one model over every local device; {processes: N}: over N processes
    distribute: Literal["data_parallel"] | ProcessesSpec | None = None
    adversarial: AdversarialSpec | None = None  # train on a mix of clean and attacked inputs
    finetune: FinetuneSpec | None = None  # needs model.base with trainable: false
    # Keras callbacks by name, run before dlrun records each epoch, their state kept on resume
    callbacks: list[CallbackSpec] = []
    # balanced (scikit-learn's, on the training split) or {class name: weight}; classification
    class_weight: Literal["balanced"] | dict[str | int, float | int] | None = None

    @field_validator("class_weight", mode="before")
    @classmethod
    def _weights(cls, weights: Any) -> Any:
        # before the union: one line naming the class, not one per form class_weight takes
        for label, weight in weights.items() if isinstance(weights, dict) else ():
            number = isinstance(weight, (int, float)) and not isinstance(weight, bool)
            if not (number and math.isfinite(weight) and 0 <= weight <= MAX_WEIGHT):
                raise ValueError(
                    f"class {label!r}: expected a weight from 0 to {MAX_WEIGHT:g}, got {weight!r}"
                )
        return weights

    @field_validator("distribute", mode="wrap")
    @classmethod
    def _one_form(cls, value: Any, handler) -> Any:
        # A mapping is {processes: N}, anything else the name: one error line, not one per form.
        if isinstance(value, dict):
            return ProcessesSpec.model_validate(value)
        if value is not None and not isinstance(value, ProcessesSpec) and value != "data_parallel":
            raise ValueError(f"expected data_parallel or {{processes: N}}, got {value!r}")
        return handler(value)


class MlflowSpec(_Section):
    """An MLflow tracking server every epoch, score and file of the run is sent to."""

    # http(s)://host:port; none: $MLFLOW_TRACKING_URI. Credentials belong in
    # MLFLOW_TRACKING_USERNAME / _PASSWORD / _TOKEN: any in the URI are left out of config.yaml.
    uri: str | None = Field(None, min_length=1)
    experiment: str | None = Field(None, min_length=1)  # none: the spec's name


class TrackingSpec(_Section):
    mlflow: MlflowSpec | None = None


class Spec(_Section):
    # run folder prefix; its folder adds -YYYYMMDD-HHMMSS[-N] and must fit in 255 bytes
    name: str = Field("run", pattern=NAME_PATTERN, max_length=NAME_MAX)
    # Keras' backend, fixed before Keras is imported. auto: chosen from the model when the
    # spec is read (spec.backends: JAX for dense nets on the CPU, else TensorFlow), and
    # recorded as the backend the run's config.yaml names.
    backend: Literal[BACKEND_CHOICES] = "auto"
    seed: int = Field(0, ge=0, lt=2**32)  # initial weights, shuffling, the validation split
    # Python files whose layers, losses, metrics, callbacks, optimizers, schedules and model
    # or data functions the spec uses by name; relative to the spec file
    code: list[str] = []
    data: DataSpec
    model: ModelSpec
    compile: CompileSpec = CompileSpec()
    training: TrainingSpec = TrainingSpec()
    # A tracking server the run is also sent to (docs/tracking.md); none: $MLFLOW_TRACKING_URI
    tracking: TrackingSpec | None = None
    # Where the spec came from, so that problems Keras finds later still name file and line.
    _source: str = PrivateAttr("spec")
    _lines: dict = PrivateAttr(default_factory=dict)
    # backend: auto, resolved: why it is the one it is (meta.json's backend_auto)
    _backend_auto: str | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _choose_backend(self) -> Spec:
        if self.backend == "auto":
            from dlrun.spec.backends import choose

            self.backend, self._backend_auto = choose(self)
        return self

    @model_validator(mode="after")
    def _processes(self) -> Spec:
        distribute = self.training.distribute
        if not isinstance(distribute, ProcessesSpec):
            return self
        if self.backend != "jax":
            why = (
                "TensorFlow's MultiWorkerMirroredStrategy does not work under Keras 3"
                if self.backend == "tensorflow"
                else "Keras has no multi-process data parallelism on torch"
            )
            raise ValueError(
                f"training.distribute: {{processes: {distribute.processes}}} needs backend: jax "
                f"({why}); set backend: jax, or use distribute: data_parallel on one process"
            )
        if self.training.batch_size % distribute.processes:
            raise ValueError(
                f"training.batch_size: {self.training.batch_size} does not split evenly over "
                f"{distribute.processes} processes; use a multiple of {distribute.processes}"
            )
        if self.training.adversarial is not None:
            raise ValueError(
                "training.adversarial is not supported with distribute: {processes: N}; "
                "train it on one process"
            )
        return self

    @property
    def processes(self) -> int:
        """How many processes train this spec's model (training.distribute.processes)."""
        distribute = self.training.distribute
        return distribute.processes if isinstance(distribute, ProcessesSpec) else 1

    # {loc: (the path as written, what it is relative to)} of relative paths (spec.paths)
    _origins: dict = PrivateAttr(default_factory=dict)

    @property
    def has_validation(self) -> bool:
        """Whether the run can have validation data (what the data holds is known later)."""
        split = self.training.validation_split
        return (
            self.data.cv is not None
            or split is None
            or split > 0
            or self.data.validation_path is not None
            or self.data.dataset
            in ("npz", "directory", "function")  # x_val in the file, a val/ folder
        )

    @property
    def task(self) -> str:
        """classification or regression: data.task, else what the loss implies."""
        if self.data.task:
            return self.data.task
        losses = self.compile.loss
        if by_output(losses):  # several outputs: the first one's (see output_task)
            losses = next(iter(losses.values()))
        return loss_task(losses)

    def output_task(self, output: str) -> str:
        """classification or regression of one of several outputs: what its loss implies."""
        losses = self.compile.loss
        return loss_task(losses.get(output, "") if by_output(losses) else losses)

    def steps_per_execution(self, on_gpu: bool = False, params: int | None = None) -> int:
        """compile.steps_per_execution, with auto resolved for the backend, the device and
        (JAX on the CPU) the model's parameter count."""
        value = self.compile.steps_per_execution
        if value != "auto":
            return value
        if self.backend == "tensorflow":
            return 1
        if on_gpu:
            return STEPS_PER_EXECUTION_GPU
        from dlrun.spec.backends import slower_on_jax

        small = params is not None and params < SMALL_NET_PARAMS
        dense = self.backend == "jax" and small and not slower_on_jax(self)
        return STEPS_PER_EXECUTION_GPU if dense else 1

    def error(self, loc: Loc, message: str) -> SpecError:
        """A SpecError for a problem found after validation (by Keras, or in the data)."""
        return SpecError(format_problem(self._source, self._lines, loc, message))

    def missing(self, loc: Loc, path, what: str = "file") -> SpecError:
        """A path key naming nothing there: the absolute path, and what a relative one was
        resolved against."""
        from dlrun.spec.paths import missing

        return self.error(loc, missing(what, path, self._origins.get(tuple(loc))))

    def resolved(self) -> dict:
        """The spec with every default, as a run records it: data keys that do not apply to
        the data source are left out (an npz run resizes no images to 224x224), so that show,
        compare and TensorBoard's HParams never present them as the run's settings."""
        config = self.model_dump(mode="json")
        for key, sources in DATA_KEYS_FOR.items():
            if self.data.dataset not in sources:
                config["data"].pop(key, None)
        # A spec without code files records none of their keys (its config reads as before).
        if not self.code:
            config.pop("code")
        if self.model.function is None:
            config["model"].pop("function")
            config["model"].pop("args")
        else:  # the function's model is the whole model: no layer keys to show
            for key in ("augment", "base", "inputs", "blocks", "layers", "outputs"):
                config["model"].pop(key)
        # only a spec that names a tracking server records one, and never its password
        return config_without_credentials(config)

    def dump(self, code: list[str] | None = None) -> str:
        """The resolved spec as YAML: `dlrun train` on it alone reproduces the run. `code`:
        the run's copies of the code files, in place of the files the spec names."""
        config = self.resolved()
        if code is not None:
            config["code"] = code
        return yaml.safe_dump(config, sort_keys=False)
