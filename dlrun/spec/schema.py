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
# Layers that run code named in the file: a spec is data, never a program.
BACKENDS = ("tensorflow", "jax", "torch")
# compile.steps_per_execution: auto is this on a GPU with JAX or torch, 1 elsewhere. The CPU
# (bench/steps_per_execution.md) gained on the dense net but lost on the CNN; the H200 gained on
# both (shared/GPU.md). TensorFlow keeps 1: its shuffled epochs are one stream that a group must
# not straddle (data.check_steps_per_execution).
STEPS_PER_EXECUTION_GPU = 8
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


class LayerSpec(BaseModel):
    """One `keras.layers` class by name; every other key is passed to it as a keyword."""

    model_config = ConfigDict(strict=True, extra="allow")
    type: str

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, value: Any) -> Any:
        if isinstance(value, str):  # `- Flatten` is `- {type: Flatten}`
            return {"type": value}
        if isinstance(value, dict) and "type" not in value:
            raise ValueError("a layer needs a type, e.g. {type: Dense, units: 10}")
        return value

    @field_validator("type")
    @classmethod
    def _known_shape(cls, name: str) -> str:
        if name in REFUSED_LAYERS:
            raise ValueError(f"{name} layers run code from the file and are refused")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"expected a keras.layers class name such as Dense, got {name!r}")
        return name

    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


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
    base: BaseSpec | None = None  # a trained network below the layers, which become its head
    layers: list[LayerSpec] = Field(min_length=1)  # the input shape comes from the data


def _named(value: Any) -> Any:
    """Optimizers and losses: a name, or {type: name, ...its arguments}."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("type"), str):
        return value
    raise ValueError(f"expected a name or a mapping with a type, got {value!r}")


class CompileSpec(_Section):
    optimizer: Any = "adam"  # resolved by keras.optimizers.get
    loss: Any = "categorical_crossentropy"  # resolved by keras.losses.get
    metrics: list[Any] = ["accuracy"]  # names or {type: F1Score, average: macro}
    # XLA compilation: Keras' "auto" compiles where the backend supports it.
    jit_compile: Literal["auto"] | bool = "auto"
    # Batches per compiled call: fewer Python round trips per step; auto: see above.
    steps_per_execution: Literal["auto"] | int = "auto"

    _check_optimizer = field_validator("optimizer", "loss")(_named)

    @field_validator("metrics")
    @classmethod
    def _check_metrics(cls, metrics: list[Any]) -> list[Any]:
        return [_named(entry) for entry in metrics]

    @property
    def metric_names(self) -> list[str]:
        """The names the metrics are logged under (history.csv columns)."""
        return [entry_name(entry) for entry in self.metrics]

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


class TrainingSpec(_Section):
    batch_size: int = Field(128, ge=1, le=MAX_BATCH)
    epochs: int = Field(12, ge=1, le=MAX_EPOCHS)
    validation_split: float = Field(0.1, ge=0, lt=1)  # the last part of the training split
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


class Spec(_Section):
    # run folder prefix; its folder adds -YYYYMMDD-HHMMSS[-N] and must fit in 255 bytes
    name: str = Field("run", pattern=NAME_PATTERN, max_length=NAME_MAX)
    backend: Literal[BACKENDS] = "tensorflow"  # Keras' backend, fixed before Keras is imported
    seed: int = Field(0, ge=0, lt=2**32)  # initial weights, shuffling, the validation split
    data: DataSpec
    model: ModelSpec
    compile: CompileSpec = CompileSpec()
    training: TrainingSpec = TrainingSpec()
    # Where the spec came from, so that problems Keras finds later still name file and line.
    _source: str = PrivateAttr("spec")
    _lines: dict = PrivateAttr(default_factory=dict)

    @property
    def has_validation(self) -> bool:
        return self.data.cv is not None or self.training.validation_split > 0

    @property
    def task(self) -> str:
        """classification or regression: data.task, else what the loss implies."""
        if self.data.task:
            return self.data.task
        loss = self.compile.loss
        name = (loss if isinstance(loss, str) else loss["type"]).lower().replace("_", "")
        return "regression" if name in REGRESSION_LOSSES else "classification"

    def steps_per_execution(self, on_gpu: bool = False) -> int:
        """compile.steps_per_execution, with auto resolved for the backend and device."""
        value = self.compile.steps_per_execution
        if value != "auto":
            return value
        return STEPS_PER_EXECUTION_GPU if on_gpu and self.backend != "tensorflow" else 1

    def error(self, loc: Loc, message: str) -> SpecError:
        """A SpecError for a problem found after validation (by Keras, or in the data)."""
        return SpecError(format_problem(self._source, self._lines, loc, message))

    def dump(self) -> str:
        """The resolved spec as YAML: `dlrun train` on it alone reproduces the run."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)
