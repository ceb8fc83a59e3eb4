"""The YAML spec: pydantic models, loading, `--set` overrides and readable errors.

No TensorFlow here: checking a spec's structure must be instant. Whether a layer name or an
optimizer exists is Keras' business and is checked in builder.py, with the same error format.
"""

from __future__ import annotations

import difflib
import re
import sys
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from dlrun.errors import SpecError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
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

Loc = tuple[str | int, ...]
Model = TypeVar("Model", bound=BaseModel)
OVERRIDDEN = 0  # the "line" of a value given with --set


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
        from dlrun.metrics import entry_name

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

    epochs: int = Field(ge=1)
    unfreeze: Literal["all"] | int = "all"  # or how many of the base's top layers
    learning_rate: float = Field(1e-5, gt=0)  # small: large steps wreck the pretrained weights

    @field_validator("unfreeze")
    @classmethod
    def _positive(cls, unfreeze: str | int) -> str | int:
        if isinstance(unfreeze, int) and unfreeze < 1:
            raise ValueError(f"expected all or a number of layers >= 1, got {unfreeze}")
        return unfreeze


class TrainingSpec(_Section):
    batch_size: int = Field(128, ge=1)
    epochs: int = Field(12, ge=1)
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
    name: str = Field("run", pattern=NAME_PATTERN)  # run folder prefix
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


def did_you_mean(word: str, candidates: list[str] | tuple[str, ...]) -> str:
    lowered = {c.lower(): c for c in candidates}
    if word.lower() in lowered:
        return f"; did you mean {lowered[word.lower()]!r}?"
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


# --- reading YAML with line numbers ---------------------------------------------------------


def _walk(node: yaml.Node, loc: Loc, lines: dict[Loc, int], source: str) -> None:
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                where = ".".join(map(str, (*loc, key)))
                raise SpecError(
                    f"{source}:{line}: {where}: key {key!r} appears twice "
                    f"(first on line {seen[key]}); keep one"
                )
            seen[key] = line
            _walk(value_node, (*loc, key), lines, source)
            lines[(*loc, key)] = line
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*loc, index), lines, source)


def parse_yaml(text: str, source: str) -> tuple[Any, dict[Loc, int]]:
    """Safe-load YAML, refusing duplicate keys; also return the line of every dotted path."""
    from dlrun import safeyaml

    safeyaml.check(text, source)  # before anything is built: an alias bomb stops here
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # its reader refuses NUL, ESC... right here
        node = loader.get_single_node()
        if node is None:
            return None, {}
        lines: dict[Loc, int] = {}
        _walk(node, (), lines, source)
        return loader.construct_document(node), lines
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        tag = (exc.problem or "").split("'")[1] if "'" in (exc.problem or "") else "?"
        tag = tag.replace("tag:yaml.org,2002:", "!!")
        raise SpecError(
            f"{source}:{mark.line + 1}: YAML tag {tag} is not allowed; a spec holds plain values"
        ) from None
    except yaml.reader.ReaderError as exc:  # NUL, ESC and other bytes YAML does not allow
        raise SpecError(
            f"{source}: character #x{exc.character:04x} at position {exc.position} is not "
            "allowed in YAML; remove it"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc)
        problem = " ".join(str(problem).split())
        raise SpecError(f"{where}: YAML syntax error: {problem}") from None
    except RecursionError:
        raise SpecError(f"{source}: nested too deeply to read") from None
    except ValueError as exc:  # e.g. an integer of thousands of digits
        if "digits" not in str(exc):
            raise
        raise SpecError(
            f"{source}: a number longer than {sys.get_int_max_str_digits()} digits; "
            "write a smaller one"
        ) from None
    finally:
        if loader is not None:
            loader.dispose()


# --- overrides --------------------------------------------------------------------------------


def apply_override(raw: dict, assignment: str) -> None:
    """Apply one `--set dotted.path=value` to the raw spec; the value parses as a YAML scalar."""
    key, sep, text = assignment.partition("=")
    if not sep or not key:
        raise SpecError(f"--set {assignment}: expected KEY=VALUE, e.g. training.epochs=3")
    try:
        value = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        raise SpecError(f"--set {assignment}: the value is not valid YAML") from None
    parts = key.split(".")
    node: Any = raw
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise SpecError(
                    f"--set {key}: {'.'.join(parts[:depth]) or 'spec'} has {len(node)} items "
                    f"(0-{len(node) - 1}); got index {part!r}"
                )
            index = int(part)
            if last:
                node[index] = value
            else:
                if isinstance(node[index], str):  # a bare layer name gains arguments
                    node[index] = {"type": node[index]}
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                elif isinstance(node[part], str):  # `optimizer: adam` gains arguments
                    node[part] = {"type": node[part]}
                node = node[part]
        else:
            parent = ".".join(parts[:depth])
            raise SpecError(f"--set {key}: {parent} is not a mapping or a list")


# --- loading ----------------------------------------------------------------------------------


def _fields_at(loc: Loc, root: type[BaseModel]) -> list[str]:
    """The keys a section accepts, for 'did you mean' on an unknown key."""
    model: Any = root
    for part in loc:
        if isinstance(part, int) or model is None:
            return []
        field = model.model_fields.get(part)
        if field is None:
            return []
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        model = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
    return list(model.model_fields) if model else []


def _describe(error: dict) -> str:
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    found = f"got {value!r}"
    if isinstance(value, bool):
        found = f"got {str(value).lower()} (YAML reads yes/no/on/off as true/false)"
    messages = {
        "missing": "required key is missing",
        "int_type": f"expected a whole number, {found}",
        "float_type": f"expected a number, {found}",
        "bool_type": f"expected true or false, {found}",
        "string_type": f"expected a string, {found}",
        "list_type": f"expected a list, {found}",
        "model_type": f"expected a mapping, {found}",
        "dict_type": f"expected a mapping, {found}",
        "greater_than": f"expected a number > {ctx.get('gt')}, {found}",
        "greater_than_equal": f"expected a number >= {ctx.get('ge')}, {found}",
        "less_than": f"expected a number < {ctx.get('lt')}, {found}",
        "less_than_equal": f"expected a number <= {ctx.get('le')}, {found}",
        "too_short": f"expected at least {ctx.get('min_length')} item(s), {found}",
        "string_pattern_mismatch": f"expected letters, digits, '.', '_' or '-' only, {found}",
        "literal_error": f"expected one of {ctx.get('expected')}, {found}",
    }
    if kind in messages:
        message = messages[kind]
    else:
        message = error["msg"].removeprefix("Value error, ")
    if kind == "literal_error" and isinstance(value, str):
        message += did_you_mean(value, re.findall(r"'([^']+)'", str(ctx.get("expected"))))
    return message


def format_problem(source: str, lines: dict[Loc, int], loc: Loc, message: str) -> str:
    """`file:line: dotted.path: message`, the one shape of every spec error."""
    line = None
    for cut in range(len(loc), 0, -1):  # the closest enclosing key that is in the file
        if loc[:cut] in lines:
            line = lines[loc[:cut]]
            break
    if line == OVERRIDDEN:
        source, message = "--set", f"{message} (given on the command line)"
    where = f"{source}:{line}" if line else source
    path = ".".join(map(str, loc))
    return f"{where}: {path}: {message}" if path else f"{where}: {message}"


def validate_model(model: type[Model], raw: dict, source: str, lines: dict[Loc, int]) -> Model:
    """pydantic validation with every problem as one `file:line: dotted.path: message` line."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            if error["type"] == "extra_forbidden":
                key = str(loc[-1])
                known = _fields_at(loc[:-1], model)
                message = f"unknown key {key!r}" + did_you_mean(key, known)
            else:
                message = _describe(error)
            problems.append(format_problem(source, lines, loc, message))
        raise SpecError(problems) from None


def validate(raw: Any, source: str, lines: dict[Loc, int] | None = None) -> Spec:
    """Raw mapping -> Spec, or a SpecError listing every problem found."""
    lines = lines or {}
    if not isinstance(raw, dict):
        raise SpecError(
            f"{source}: expected a mapping with data, model, compile and training; "
            f"got {type(raw).__name__ if raw is not None else 'an empty file'}"
        )
    spec = validate_model(Spec, raw, source, lines)
    spec._source, spec._lines = source, lines
    problems = _cross_checks(spec)
    if problems:
        raise SpecError([line for error in problems for line in error.problems])
    return spec


def _cross_checks(spec: Spec) -> list[SpecError]:
    """Checks that span sections: a monitored metric must be logged."""
    problems = []
    if spec.training.finetune:
        if spec.model.base is None:
            message = "finetune needs a model.base to unfreeze; add one or remove finetune"
            problems.append(spec.error(("training", "finetune"), message))
        elif spec.model.base.trainable:
            message = "finetune needs model.base.trainable: false (the base already trains)"
            problems.append(spec.error(("training", "finetune"), message))
    logged = ["loss", *spec.compile.metric_names]
    names = logged + [f"val_{m}" for m in logged]
    if spec.training.adversarial:  # recorded by the adversarial validation, see attack.py
        logged.append("adversarial_accuracy")
        names.append("val_adversarial_accuracy")
    watched = [(("training", "checkpoint", "monitor"), spec.training.checkpoint.monitor)]
    if spec.training.early_stopping:
        watched.append(
            (("training", "early_stopping", "monitor"), spec.training.early_stopping.monitor)
        )
    for loc, monitor in watched:
        base = monitor.removeprefix("val_")
        if base not in logged or monitor == "adversarial_accuracy":  # validation only
            message = f"{monitor!r} is not logged; expected one of {', '.join(names)}"
            problems.append(spec.error(loc, message + did_you_mean(monitor, names)))
        elif monitor.startswith("val_") and not spec.has_validation:
            message = (
                f"{monitor!r} needs a validation split; "
                f"set training.validation_split above 0 or monitor {base!r}"
            )
            problems.append(spec.error(loc, message))
    return problems


def load_raw(
    path: str | Path, overrides: list[str] | tuple[str, ...] = ()
) -> tuple[Any, dict[Loc, int]]:
    """A spec file's raw YAML with `--set` overrides applied, and the line of every key."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot be read ({exc.__class__.__name__})") from None
    raw, lines = parse_yaml(text, str(path))
    for assignment in overrides:
        if not isinstance(raw, dict):
            break
        apply_override(raw, assignment)
        key = tuple(int(p) if p.isdigit() else p for p in assignment.partition("=")[0].split("."))
        lines[key] = OVERRIDDEN
    return raw, lines


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    """Read a spec file, apply `--set` overrides and validate it."""
    raw, lines = load_raw(path, overrides)
    return validate(raw, str(Path(path)), lines)


def valid_sections(raw: Any, source: str, lines: dict[Loc, int]) -> Spec | None:
    """A spec of the model and compile sections alone when they are valid, for finding the
    Keras-level problems of a spec whose other sections are not (None: nothing to check)."""
    if not isinstance(raw, dict):
        return None
    try:
        model = ModelSpec.model_validate(raw.get("model"))
        compile_ = CompileSpec.model_validate(raw.get("compile") or {})
    except ValidationError:
        return None
    spec = Spec.model_construct(
        name="check", seed=0, data=DataSpec.model_construct(), model=model, compile=compile_
    )
    spec._source, spec._lines = source, lines
    return spec
