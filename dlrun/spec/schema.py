"""The spec's pydantic models: every section, its keys, their defaults and checks.

No TensorFlow here: checking a spec's structure must be instant. Whether a layer name or an
optimizer exists is Keras' business and is checked in model/, with the same error format.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from dlrun.errors import SpecError
from dlrun.spec.names import NAME_MAX, NAME_PATTERN, entry_name
from dlrun.spec.problems import OVERRIDDEN, Loc, format_problem  # noqa: F401

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
    "test_path": FOLDER_DATASETS,
    "image_size": FOLDER_DATASETS,
    "color_mode": FOLDER_DATASETS,
    "cache": FOLDER_DATASETS,
    "label_column": ("csv",),
    "validation_path": ("csv",),
    "categorical": ("csv",),
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

# Bounds far beyond any real run, so that 2**63 is refused here and not by Keras after a run
# folder exists.
MAX_EPOCHS = 1_000_000
MAX_BATCH = 2**31 - 1


class _Section(BaseModel):
    # strict: `yes` (a YAML boolean) is not a number and "3" is not an integer;
    # forbid: a misspelt key is an error, never silently dropped.
    model_config = ConfigDict(strict=True, extra="forbid")


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
    ] = "mnist"
    path: str | None = Field(None, validate_default=True)  # the file (npz, csv) or folder
    # directory only: a folder of class folders to test on instead of a test_split share
    test_path: str | None = None
    label_column: str = "label"  # csv only
    flatten: bool = False  # true: images -> vectors for dense nets; false: keep (H, W, C)
    scale: float = Field(255.0, gt=0)  # inputs are divided by this: pixels 0..255 -> 0..1
    one_hot: bool = True  # labels through keras.utils.to_categorical
    test_split: float = Field(0.2, gt=0, lt=1)  # only for data without a test split of its own
    # classification: labels are classes (encoded, stratified splits); regression: numbers.
    # Unset: regression when the loss is a regression loss (mse, mae, huber, ...).
    task: Literal["classification", "regression"] | None = None
    cv: FoldSpec | None = None  # validate on a k-fold split instead of validation_split
    # directory only: every image is decoded and resized to this, as rgb or grayscale
    image_size: tuple[int, int] = Field((224, 224), validate_default=True)
    color_mode: Literal["rgb", "grayscale"] = "rgb"
    cache: Literal["none", "memory", "disk"] = "none"  # decoded images: streamed by default
    classes: list[int | str] | None = Field(None, min_length=2)  # keep these labels, in order
    limit: int | None = Field(None, ge=1)  # keep this many training samples, stratified
    # A 3-D array (samples, a, b) gets a channel axis only when it is images: auto adds one
    # for Keras' and the offline image sets and uint8 npz pixels, and keeps float arrays as
    # sequences (samples, steps, features); add: always; none: never.
    channels: Literal["auto", "add", "none"] = "auto"
    # csv only: a second csv with the same columns, the run's validation data
    validation_path: str | None = None
    # csv only: text columns one-hot encoded (categories from the training split)
    categorical: list[str] | None = Field(None, min_length=1)
    # labels: learn the label column (or y); inputs: reproduce x itself (an autoencoder)
    targets: Literal["labels", "inputs"] = "labels"

    @model_validator(mode="after")
    def _csv_only(self) -> DataSpec:
        for key in ("validation_path", "categorical"):
            if getattr(self, key) is not None and self.dataset != "csv":
                raise ValueError(f"{key} is only used with dataset csv, not '{self.dataset}'")
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
        if path is not None and info.data.get("dataset") not in FOLDER_DATASETS:
            raise ValueError("test_path is only used with dataset directory (a test folder)")
        return path

    @field_validator("image_size", mode="before")
    @classmethod
    def _size(cls, size: Any) -> Any:
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
        return size

    @field_validator("classes")
    @classmethod
    def _distinct(cls, classes: list | None) -> list | None:
        if classes is not None and len({str(c) for c in classes}) != len(classes):
            raise ValueError(f"a class is named twice in {classes!r}")
        return classes


class FoldSpec(_Section):
    """One cross-validation fold (what `dlrun sweep` writes into each trial's spec)."""

    folds: int = Field(ge=2)  # stratified k-fold on the training split
    index: int = Field(ge=0)  # validate on this fold, train on the others

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
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"expected a keras.layers class name such as Dense, got {name!r}")
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
        if self.type is not None:
            for key in ("repeat", "with"):
                if key in extra:
                    raise ValueError(f"{key} goes with a block, not with a layer type")
        else:
            block = extra.get("block")
            if not isinstance(block, str):
                raise ValueError(f"block: expected the name of a block, got {block!r}")
            repeat = extra.get("repeat", 1)
            if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 1:
                raise ValueError(f"repeat: expected a whole number >= 1, got {repeat!r}")
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
    shape: list[int | None] | None = Field(None, min_length=1)
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
    until: str | int | None = None  # keep the base up to this layer (name or index)
    trainable: bool = False  # false: frozen and in inference mode while the head trains
    preprocess: Literal["auto", "none"] = "auto"  # auto: the application's preprocess_input

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
    layers: list[LayerSpec] = Field(min_length=1)  # the input shape comes from the data
    outputs: list[str] | str | None = None  # default: the last entry's output

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
        return (
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
    name = (loss if isinstance(loss, str) else loss["type"]).lower().replace("_", "")
    return "regression" if name in REGRESSION_LOSSES else "classification"


class CompileSpec(_Section):
    optimizer: Any = "adam"  # resolved by keras.optimizers.get
    # resolved by keras.losses.get; several outputs: one per output, {digit: ..., odd: ...}
    loss: Any = "categorical_crossentropy"
    # names or {type: F1Score, average: macro}; several outputs: a list per output name
    metrics: Any = ["accuracy"]
    loss_weights: dict[str, float] | None = None  # several outputs: each one's share of the loss
    # XLA compilation: Keras' "auto" compiles where the backend supports it.
    jit_compile: Literal["auto"] | bool = "auto"
    # Batches per compiled call: fewer Python round trips per step; auto: see above.
    steps_per_execution: Literal["auto"] | int = "auto"

    _check_optimizer = field_validator("optimizer")(_named)

    @field_validator("loss")
    @classmethod
    def _check_loss(cls, loss: Any) -> Any:
        if by_output(loss):
            return {output: _named(entry) for output, entry in loss.items()}
        return _named(loss)

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

    @field_validator("steps_per_execution")
    @classmethod
    def _positive(cls, value: str | int) -> str | int:
        if isinstance(value, int) and value < 1:
            raise ValueError(f"expected auto or a whole number >= 1, got {value}")
        return value


class EarlyStoppingSpec(_Section):
    monitor: str = "val_loss"
    patience: int = Field(3, ge=0)
    min_delta: float = Field(0.0, ge=0)
    mode: Literal["auto", "min", "max"] = "auto"
    restore_best_weights: bool = True


class CheckpointSpec(_Section):
    monitor: str = "val_loss"  # best.keras holds the epoch best on this
    mode: Literal["auto", "min", "max"] = "auto"  # auto: the metric's own direction in Keras


class TensorBoardSpec(_Section):
    histogram_freq: int = Field(1, ge=0)  # weight histograms every N epochs; 0 = none
    write_graph: bool = True


class AdversarialSpec(_Section):
    """Adversarial training: part of each batch replaced by attacks on the current weights."""

    method: Literal["fgsm", "pgd"] = "pgd"  # pgd: stronger, `steps` gradients per batch
    eps: float = Field(0.1, ge=0, le=1)  # L-infinity radius, as a fraction of the input range
    ratio: float = Field(0.5, gt=0, le=1)  # share of each batch made adversarial
    steps: int = Field(3, ge=1)  # pgd steps (fgsm always takes one)


class FinetuneSpec(_Section):
    """A second stage once the head has trained: unfreeze the base, recompile, train on."""

    epochs: int = Field(ge=1, le=MAX_EPOCHS)
    unfreeze: Literal["all"] | int = "all"  # or how many of the base's top layers
    learning_rate: float = Field(1e-5, gt=0)  # small: large steps wreck the pretrained weights

    @field_validator("unfreeze")
    @classmethod
    def _positive(cls, unfreeze: str | int) -> str | int:
        if isinstance(unfreeze, int) and unfreeze < 1:
            raise ValueError(f"expected all or a number of layers >= 1, got {unfreeze}")
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
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"expected a keras.callbacks class name, got {name!r}")
        return name

    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


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
    distribute: Literal["data_parallel"] | None = None  # one model over every local device
    adversarial: AdversarialSpec | None = None  # train on a mix of clean and attacked inputs
    finetune: FinetuneSpec | None = None  # needs model.base with trainable: false
    # Keras callbacks by name, run before dlrun records each epoch, their state kept on resume
    callbacks: list[CallbackSpec] = []
    # balanced (scikit-learn's, on the training split) or {class name: weight}; classification
    class_weight: Literal["balanced"] | dict[str | int, float | int] | None = None


class Spec(_Section):
    # run folder prefix; its folder adds -YYYYMMDD-HHMMSS[-N] and must fit in 255 bytes
    name: str = Field("run", pattern=NAME_PATTERN, max_length=NAME_MAX)
    # Keras' backend, fixed before Keras is imported. auto: chosen from the model when the
    # spec is read (spec.backends: JAX for dense nets on the CPU, else TensorFlow), and
    # recorded as the backend the run's config.yaml names.
    backend: Literal[BACKEND_CHOICES] = "auto"
    seed: int = Field(0, ge=0, lt=2**32)  # initial weights, shuffling, the validation split
    data: DataSpec
    model: ModelSpec
    compile: CompileSpec = CompileSpec()
    training: TrainingSpec = TrainingSpec()
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

    @property
    def has_validation(self) -> bool:
        """Whether the run can have validation data (what the data holds is known later)."""
        split = self.training.validation_split
        return (
            self.data.cv is not None
            or split is None
            or split > 0
            or self.data.validation_path is not None
            or self.data.dataset in ("npz", "directory")  # x_val in the file, a val/ folder
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

    def resolved(self) -> dict:
        """The spec with every default, as a run records it: data keys that do not apply to
        the data source are left out (an npz run resizes no images to 224x224), so that show,
        compare and TensorBoard's HParams never present them as the run's settings."""
        config = self.model_dump(mode="json")
        for key, sources in DATA_KEYS_FOR.items():
            if self.data.dataset not in sources:
                config["data"].pop(key, None)
        return config

    def dump(self) -> str:
        """The resolved spec as YAML: `dlrun train` on it alone reproduces the run."""
        return yaml.safe_dump(self.resolved(), sort_keys=False)
