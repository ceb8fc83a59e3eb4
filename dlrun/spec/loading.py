"""Loading a spec: file -> YAML -> `--set` overrides -> pydantic -> cross-section checks.

Every problem becomes one `file:line: dotted.path: message` line of a SpecError.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from dlrun.errors import SpecError
from dlrun.spec.overrides import apply_override
from dlrun.spec.paths import resolve_keys
from dlrun.spec.problems import OVERRIDDEN, Loc, did_you_mean, format_problem
from dlrun.spec.schema import CompileSpec, DataSpec, ModelSpec, Spec
from dlrun.spec.yamlfile import parse_yaml, read_spec_file

Model = TypeVar("Model", bound=BaseModel)


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
        "finite_number": f"expected a finite number, {found}",
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


def validate(
    raw: Any,
    source: str,
    lines: dict[Loc, int] | None = None,
    written_in: str | Path | None = None,
) -> Spec:
    """Raw mapping -> Spec, or a SpecError listing every problem found. `written_in`: the
    file the spec was read from; its relative paths are relative to that file's folder
    (paths.resolve), and without it to the working folder."""
    lines = lines or {}
    if not isinstance(raw, dict):
        raise SpecError(
            f"{source}: expected a mapping with data, model, compile and training; "
            f"got {type(raw).__name__ if raw is not None else 'an empty file'}"
        )
    origins = resolve_keys(raw, written_in, lines)
    spec = validate_model(Spec, raw, source, lines)
    spec._source, spec._lines, spec._origins = source, lines, origins
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
    if spec.training.class_weight is not None and spec.task == "regression":
        message = "class weights are for classes; this run is a regression (remove class_weight)"
        problems.append(spec.error(("training", "class_weight"), message))
    if spec.training.adversarial is not None and spec.task == "regression":
        message = (
            "adversarial training attacks classes and reports val_adversarial_accuracy; this "
            "run is a regression (remove adversarial)"
        )
        problems.append(spec.error(("training", "adversarial"), message))
    if spec.data.targets == "inputs" and spec.task != "regression":
        message = (
            "inputs as targets (an autoencoder) is a regression of x on itself: use a "
            "regression loss (mse, mae, ...) or data.task: regression"
        )
        problems.append(spec.error(("data", "targets"), message))
    problems += _dotted_names(spec)
    problems += _input_checks(spec)
    problems += _output_checks(spec)
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
    if spec.model.function is not None:  # its own steps may log any names: seen in training
        watched = []
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


def _dotted_names(spec: Spec) -> list[SpecError]:
    """`module.Name` names a code file's class: without code files it names nothing."""
    if spec.code:
        return []
    entries = [
        (("model", key, index), entry.type)
        for key in ("augment", "layers")
        for index, entry in enumerate(getattr(spec.model, key))
    ]
    entries += [
        (("model", "blocks", block, "layers", index), entry.type)
        for block, body in spec.model.blocks.items()
        for index, entry in enumerate(body.layers)
    ]
    what = "a keras.layers class name such as Dense"
    problems = [
        spec.error((*loc, "type"), f"expected {what}, got {name!r}")
        for loc, name in entries
        if name and "." in name
    ]
    problems += [
        spec.error(
            ("training", "callbacks", index, "type"),
            f"expected a keras.callbacks class name, got {entry.type!r}",
        )
        for index, entry in enumerate(spec.training.callbacks)
        if "." in entry.type
    ]
    return problems


# What several inputs cannot be combined with yet, and what to do instead.
SINGLE_INPUT_ONLY = {
    ("data", "targets"): (
        lambda spec: spec.data.targets == "inputs",
        "an autoencoder reproduces one input; declare one model input",
    ),
    ("data", "categorical"): (
        lambda spec: bool(spec.data.categorical),
        "text columns are not one-hot encoded per input yet; encode them as numbers in the csv",
    ),
    ("training", "adversarial"): (
        lambda spec: spec.training.adversarial is not None,
        "adversarial training attacks one input; remove training.adversarial",
    ),
    ("data", "missing"): (
        lambda spec: spec.data.missing == "fill",
        "blank cells are not filled per input yet; use data.missing: drop or refuse",
    ),
}


def _input_checks(spec: Spec) -> list[SpecError]:
    """Several inputs: where each one's data comes from, and what they cannot be used with."""
    inputs = spec.model.inputs or {}
    names = spec.model.several_inputs
    problems = []
    for name, declared in inputs.items():
        if declared.columns is not None and not (names and spec.data.dataset == "csv"):
            message = "columns picks a csv's columns for one of several inputs; remove it"
            problems.append(spec.error(("model", "inputs", name, "columns"), message))
    if not names:
        return problems
    if spec.data.dataset not in ("npz", "csv", "function"):
        message = (
            f"several inputs ({', '.join(names)}) read one array each: use dataset npz "
            "(keys x_train_<input>, ...) or csv (model.inputs.<input>.columns)"
        )
        problems.append(spec.error(("data", "dataset"), message))
    elif spec.data.dataset == "csv":
        missing = [name for name in names if inputs[name].columns is None]
        for name in missing:
            message = f"input {name!r} names no csv columns to read; add columns: [...]"
            problems.append(spec.error(("model", "inputs", name), message))
    for loc, (applies, what) in SINGLE_INPUT_ONLY.items():
        if applies(spec):
            problems.append(spec.error(loc, f"the model has several inputs; {what}"))
    return problems


# What several outputs cannot be combined with yet, and what to do instead.
SINGLE_OUTPUT_ONLY = {
    ("data", "one_hot"): (
        lambda spec: spec.data.one_hot,
        "their labels stay class numbers: set data.one_hot: false (a softmax head takes "
        "sparse_categorical_crossentropy)",
    ),
    ("data", "classes"): (
        lambda spec: bool(spec.data.classes),
        "data.classes picks the classes of one target; remove it",
    ),
    ("training", "class_weight"): (
        lambda spec: spec.training.class_weight is not None,
        "class weights weigh the classes of one target; use compile.loss_weights per output",
    ),
    ("data", "targets"): (
        SINGLE_INPUT_ONLY[("data", "targets")][0],
        "an autoencoder has one output; name one in model.outputs",
    ),
    ("training", "adversarial"): (
        SINGLE_INPUT_ONLY[("training", "adversarial")][0],
        "adversarial training attacks through one loss; remove training.adversarial",
    ),
}


def _output_checks(spec: Spec) -> list[SpecError]:
    """Several outputs: targets from an npz, a loss for each, metrics and weights by name."""
    outputs = spec.model.several_outputs
    compile_ = spec.compile
    if not outputs:
        if compile_.loss_weights is not None:
            message = "loss_weights weigh the losses of several outputs; remove it"
            return [spec.error(("compile", "loss_weights"), message)]
        if compile_.loss_names() or isinstance(compile_.metrics, dict):
            key = "loss" if compile_.loss_names() else "metrics"
            message = "given per output, but the model has one output (model.outputs)"
            return [spec.error(("compile", key), message)]
        return []
    problems = []
    shown = ", ".join(outputs)
    if spec.data.dataset not in ("npz", "function"):
        message = f"several outputs ({shown}) need one target array each: use dataset npz "
        problems.append(spec.error(("data", "dataset"), message + "(keys y_train_<output>, ...)"))
    if set(compile_.loss_names()) != set(outputs):
        message = f"several outputs need a loss each: {{{', '.join(f'{o}: ...' for o in outputs)}}}"
        problems.append(spec.error(("compile", "loss"), message))
    metrics = compile_.metrics
    if not isinstance(metrics, dict) and metrics:
        example = ", ".join(f"{output}: [accuracy]" for output in outputs)
        message = f"several outputs take metrics per output, e.g. {{{example}}}, or []"
        problems.append(spec.error(("compile", "metrics"), message))
    named = [*(metrics if isinstance(metrics, dict) else {})]
    for key, names in (("metrics", named), ("loss_weights", [*(compile_.loss_weights or {})])):
        for name in names:
            if name not in outputs:
                message = f"{name!r} is not an output; the outputs are {shown}"
                problems.append(spec.error(("compile", key, name), message))
    for loc, (applies, what) in SINGLE_OUTPUT_ONLY.items():
        told = loc in SINGLE_INPUT_ONLY and spec.model.several_inputs  # by _input_checks
        if applies(spec) and not told:
            problems.append(spec.error(loc, f"the model has several outputs; {what}"))
    return problems


def load_raw(
    path: str | Path, overrides: list[str] | tuple[str, ...] = ()
) -> tuple[Any, dict[Loc, int]]:
    """A spec file's raw YAML with `--set` overrides applied, and the line of every key."""
    path = Path(path)
    raw, lines = parse_yaml(read_spec_file(path), str(path))
    for assignment in overrides:
        if not isinstance(raw, dict):
            break
        apply_override(raw, assignment)
        key = tuple(
            int(p) if p.isascii() and p.isdigit() else p
            for p in assignment.partition("=")[0].split(".")
        )
        lines[key] = OVERRIDDEN
    return raw, lines


def load_spec(
    path: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    relative_to: str | Path | None = None,
) -> Spec:
    """Read a spec file, apply `--set` overrides and validate it; its relative paths are
    relative to its own folder (`relative_to`: to that folder instead, e.g. the working folder
    a run recorded for a config.yaml written before runs recorded absolute paths)."""
    raw, lines = load_raw(path, overrides)
    written_in = Path(relative_to) / "spec" if relative_to is not None else Path(path)
    return validate(raw, str(Path(path)), lines, written_in)


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
