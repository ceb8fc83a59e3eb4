"""Issue 30: every number in a spec, a sweep file and `--set` has a bound a test names, and a
search space's values and ends are put into the base spec and checked before any fit.

The bounds live in the schemas (spec.schema, sweep.schema): a structural test walks their
models for an int or float without both bounds, and a hostile test feeds each field a value
past its bound through a spec file and through `--set`, expecting one `Error:` line that names
the field. A search space's grid values, choices and distribution ends are checked in the
sweep's plan (sweep.plan.load_sweep) before the sweep folder exists.
"""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import yaml
from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel
from test_hostile import assert_one_clean_error, no_hang  # noqa: F401  (autouse)
from typer.testing import CliRunner

from conftest import TINY_SPEC
from dlrun.cli import app
from dlrun.spec.overrides import apply_override
from dlrun.spec.schema import Spec
from dlrun.sweep.schema import SweepSpec

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [*map(str, args)])


# --- every numeric field has both bounds ---------------------------------------------------------

# Fields whose bounds a validator checks (a union with a word such as `auto`, where a Field
# constraint would report one error per form): each is fed an out-of-bound value below.
BOUNDED_IN_A_VALIDATOR = {
    "data.image_size",  # DataSpec._size: each side from 1 to MAX_IMAGE_SIDE
    "model.base.until",  # BaseSpec._index: a layer's index within +-MAX_LAYERS
    "compile.steps_per_execution",  # CompileSpec._positive: auto or 1..MAX_STEPS_PER_EXECUTION
    "training.finetune.unfreeze",  # FinetuneSpec._positive: all or 1..MAX_LAYERS
    "training.class_weight",  # TrainingSpec._weights: each weight from 0 to MAX_WEIGHT
}
# Where a bound makes no sense (the one exemption list); the floats among them are still
# finite (allow_inf_nan=False on every model, checked below).
UNBOUNDED = {
    # label values, compared with the data's labels: never counted, looped over or allocated
    # (the list's length is bounded by spec.safeyaml's node budget)
    ("data.classes", "both"),
    # a change of the monitored metric, whose scale is the data's (an mse in dollars): >= 0
    # and finite, with no upper bound a dlrun could know
    ("training.early_stopping.min_delta", "upper"),
}


def _models(annotation) -> list[type[BaseModel]]:
    found = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        found.append(annotation)
    for arg in typing.get_args(annotation):
        found += _models(arg)
    return found


def _numbers(annotation, bounds: tuple = ()) -> list[tuple]:
    """Each int or float in a field's annotation with the constraints of the Annotated around
    it (None: inside a container, with no Annotated of its own)."""
    if annotation in (int, float):
        return [(annotation, bounds)]
    if typing.get_origin(annotation) is typing.Annotated:
        inner, *extra = typing.get_args(annotation)
        metadata = [m for info in extra for m in getattr(info, "metadata", [info])]
        return _numbers(inner, tuple(metadata))
    container = typing.get_origin(annotation) in (list, dict, tuple)
    found = []
    for arg in typing.get_args(annotation):
        if arg is not Ellipsis:
            found += _numbers(arg, None if container else bounds)
    return found


def numeric_fields(root: type[BaseModel], prefix: str = "") -> dict[str, list[tuple]]:
    """{dotted field: [(type, lower, upper), ...]} for every int or float of a model tree."""
    found: dict[str, list[tuple]] = {}
    for name, field in root.model_fields.items():
        key = f"{prefix}{name}"
        for kind, metadata in _numbers(field.annotation, tuple(field.metadata)):
            metadata = metadata or ()
            lower = any(isinstance(m, (Ge, Gt)) for m in metadata)
            upper = any(isinstance(m, (Le, Lt)) for m in metadata)
            found.setdefault(key, []).append((kind, lower, upper))
        for model in _models(field.annotation):
            found.update(numeric_fields(model, f"{key}."))
    return found


def all_models(root: type[BaseModel]) -> set[type[BaseModel]]:
    found = {root}
    for field in root.model_fields.values():
        for model in _models(field.annotation):
            found |= all_models(model)
    return found


FIELDS = {**numeric_fields(Spec), **{f"sweep:{k}": v for k, v in numeric_fields(SweepSpec).items()}}


def test_every_number_of_a_spec_and_a_sweep_file_has_both_bounds():
    assert len(FIELDS) > 30  # the walk reaches the nested sections
    unbounded = []
    for key, numbers in FIELDS.items():
        if key in BOUNDED_IN_A_VALIDATOR or (key, "both") in UNBOUNDED:
            continue
        for kind, lower, upper in numbers:
            if not lower:
                unbounded.append(f"{key} ({kind.__name__}): no lower bound")
            if not upper and (key, "upper") not in UNBOUNDED:
                unbounded.append(f"{key} ({kind.__name__}): no upper bound")
    assert not unbounded, "\n".join(unbounded)


def test_every_float_of_a_spec_and_a_sweep_file_is_finite():
    models = all_models(Spec) | all_models(SweepSpec)
    typed = [m for m in models if any(numeric_fields(m).values())]
    assert typed and all(m.model_config.get("allow_inf_nan") is False for m in typed), [
        m.__name__ for m in typed if m.model_config.get("allow_inf_nan") is not False
    ]


def test_the_lists_name_fields_that_exist():
    named = BOUNDED_IN_A_VALIDATOR | {key for key, _ in UNBOUNDED}
    assert named <= set(FIELDS), named - set(FIELDS)


# --- each field refuses a value past its bound, from a file and from --set ------------------------

# (the --set assignment, the dotted field the one error line names). Every field of the walk
# above is here at least once (test_every_bounded_field_is_fed_a_value_past_its_bound).
SPEC_CASES = [
    ("seed=4294967296", "seed"),
    ("seed=-1", "seed"),
    ("seed=true", "seed"),
    ("data.scale=.inf", "data.scale"),
    ("data.scale=1.0e+12", "data.scale"),
    ("data.scale=0", "data.scale"),
    ("data.test_split=1.0", "data.test_split"),
    ("data.test_split=.nan", "data.test_split"),
    ("data.limit=0", "data.limit"),
    ("data.limit=100000000000000000000", "data.limit"),
    ("data.limit=true", "data.limit"),
    ("data.image_size=[40000, 8]", "data.image_size"),
    ("data.image_size=[0, 8]", "data.image_size"),
    ("data.image_size=[true, 8]", "data.image_size"),
    ("data.cv={folds: 100000, index: 0}", "data.cv.folds"),
    ("data.cv={folds: 2, index: -1}", "data.cv.index"),
    ("data.cv={folds: 2, index: 100000}", "data.cv.index"),
    ("model.inputs={input: {shape: [0]}}", "model.inputs.input.shape.0"),
    ("model.inputs={input: {shape: [4294967296]}}", "model.inputs.input.shape.0"),
    ("model.base={application: MobileNetV2, until: 1000000}", "model.base.until"),
    ("model.base={application: MobileNetV2, until: -1000000}", "model.base.until"),
    ("model.base={application: MobileNetV2, until: true}", "model.base.until"),
    ("compile.loss_weights={a: -1}", "compile.loss_weights.a"),
    ("compile.loss_weights={a: .nan}", "compile.loss_weights.a"),
    ("compile.loss_weights={a: 1.0e+7}", "compile.loss_weights.a"),
    ("compile.steps_per_execution=0", "compile.steps_per_execution"),
    ("compile.steps_per_execution=1000000000", "compile.steps_per_execution"),
    ("compile.steps_per_execution=true", "compile.steps_per_execution"),
    ("compile.steps_per_execution=fast", "compile.steps_per_execution"),
    ("training.batch_size=0", "training.batch_size"),
    ("training.batch_size=4294967296", "training.batch_size"),
    ("training.batch_size=true", "training.batch_size"),
    ("training.epochs=0", "training.epochs"),
    ("training.epochs=1000000000", "training.epochs"),
    ("training.validation_split=1.0", "training.validation_split"),
    ("training.validation_split=-.inf", "training.validation_split"),
    ("training.early_stopping.patience=-1", "training.early_stopping.patience"),
    ("training.early_stopping.patience=1000000000", "training.early_stopping.patience"),
    ("training.early_stopping.min_delta=-1.0", "training.early_stopping.min_delta"),
    ("training.early_stopping.min_delta=.inf", "training.early_stopping.min_delta"),
    ("training.tensorboard.histogram_freq=-1", "training.tensorboard.histogram_freq"),
    ("training.tensorboard.histogram_freq=1000000000", "training.tensorboard.histogram_freq"),
    ("training.distribute={processes: 0}", "training.distribute.processes"),
    ("training.distribute={processes: 100000}", "training.distribute.processes"),
    (
        "training.distribute={processes: 2, resources: {cpu: 0}}",
        "training.distribute.resources.cpu",
    ),
    (
        "training.distribute={processes: 2, resources: {cpu: 100000.0}}",
        "training.distribute.resources.cpu",
    ),
    (
        "training.distribute={processes: 2, resources: {gpu: -1}}",
        "training.distribute.resources.gpu",
    ),
    (
        "training.distribute={processes: 2, resources: {gpu: 1000}}",
        "training.distribute.resources.gpu",
    ),
    ("training.adversarial={eps: 1.5}", "training.adversarial.eps"),
    ("training.adversarial={eps: -0.1}", "training.adversarial.eps"),
    ("training.adversarial={ratio: 0}", "training.adversarial.ratio"),
    ("training.adversarial={ratio: 1.5}", "training.adversarial.ratio"),
    ("training.adversarial={steps: 0}", "training.adversarial.steps"),
    ("training.adversarial={steps: 1000000000}", "training.adversarial.steps"),
    ("training.finetune={epochs: 0}", "training.finetune.epochs"),
    ("training.finetune={epochs: 1000000000}", "training.finetune.epochs"),
    ("training.finetune={epochs: 1, unfreeze: 0}", "training.finetune.unfreeze"),
    ("training.finetune={epochs: 1, unfreeze: 1000000000}", "training.finetune.unfreeze"),
    ("training.finetune={epochs: 1, unfreeze: true}", "training.finetune.unfreeze"),
    ("training.finetune={epochs: 1, learning_rate: 0}", "training.finetune.learning_rate"),
    ("training.finetune={epochs: 1, learning_rate: 10.0}", "training.finetune.learning_rate"),
    ("training.class_weight={0: -1}", "training.class_weight"),
    ("training.class_weight={0: .inf}", "training.class_weight"),
    ("training.class_weight={0: 1.0e+9}", "training.class_weight"),
    ("training.class_weight={0: true}", "training.class_weight"),
]
SPEC_IDS = [assignment for assignment, _ in SPEC_CASES]


@pytest.mark.parametrize(("assignment", "field"), SPEC_CASES, ids=SPEC_IDS)
def test_a_number_past_its_bound_in_set_is_one_line_naming_it(tiny_spec, assignment, field):
    result = invoke("validate", tiny_spec, "--set", assignment)
    assert_one_clean_error(result, f" {field}: ")


@pytest.mark.parametrize(("assignment", "field"), SPEC_CASES, ids=SPEC_IDS)
def test_a_number_past_its_bound_in_a_spec_file_is_one_line_naming_it(tmp_path, assignment, field):
    raw = yaml.safe_load(TINY_SPEC)
    apply_override(raw, assignment)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = invoke("train", path, "--runs-dir", tmp_path / "runs")
    assert_one_clean_error(result, "spec.yaml:")
    assert f" {field}: " in result.stderr
    assert not (tmp_path / "runs").exists()


SWEEP = """\
base: tiny.yaml
random:
  n_iter: 2
  space:
    model.layers.0.units: [8, 16]
cv: 0
"""
# (a change to the sweep file above, the dotted field the error line names)
SWEEP_CASES = [
    ("random.n_iter=0", "random.n_iter"),
    ("random.n_iter=1000000", "random.n_iter"),
    ("random.n_iter=true", "random.n_iter"),
    ("random.seed=-1", "random.seed"),
    ("random.seed=4294967296", "random.seed"),
    ("prune={method: asha, min_epochs: 0}", "prune.min_epochs"),
    ("prune={method: asha, min_epochs: 1000000000}", "prune.min_epochs"),
    ("prune={method: asha, reduction_factor: 1}", "prune.reduction_factor"),
    ("prune={method: asha, reduction_factor: 1000}", "prune.reduction_factor"),
    ("repeats=0", "repeats"),
    ("repeats=1000", "repeats"),
    ("cv=-1", "cv"),
    ("cv=100000", "cv"),
    ("cv=true", "cv"),
    ("workers=0", "workers"),
    ("workers=1000000", "workers"),
    ("resources={cpu: 0}", "resources.cpu"),
    ("resources={cpu: 100000.0}", "resources.cpu"),
    ("resources={gpu: -1}", "resources.gpu"),
    ("resources={gpu: .inf}", "resources.gpu"),
]


@pytest.mark.parametrize(("change", "field"), SWEEP_CASES, ids=[c for c, _ in SWEEP_CASES])
def test_a_number_past_its_bound_in_a_sweep_file_is_one_line_naming_it(tmp_path, change, field):
    (tmp_path / "tiny.yaml").write_text(TINY_SPEC)
    raw = yaml.safe_load(SWEEP)
    apply_override(raw, change)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = invoke("sweep", path, "--runs-dir", tmp_path / "runs")
    assert_one_clean_error(result, f" {field}: ")
    assert not (tmp_path / "runs").exists()


def test_every_bounded_field_is_fed_a_value_past_its_bound():
    fed = {field for _, field in SPEC_CASES} | {f"sweep:{f}" for _, f in SWEEP_CASES}
    fed |= {"sweep:tpe.n_iter", "sweep:tpe.seed", "sweep:cmaes.n_iter", "sweep:cmaes.seed"}
    fed |= {"model.inputs.shape", "compile.loss_weights"}  # fed by output and axis
    missed = [key for key in FIELDS if key not in fed and (key, "both") not in UNBOUNDED]
    assert not missed, missed


# --- a search space's values and ends, checked against the base spec before any fit -------------


def sweep_with(tmp_path: Path, search: str, key: str, rule: str, n_iter: int = 2) -> Path:
    (tmp_path / "tiny.yaml").write_text(TINY_SPEC.replace("epochs: 2", "epochs: 1"))
    if search == "grid":
        body = f"  {key}: {rule}\n"
    else:
        body = f"  n_iter: {n_iter}\n  space:\n    {key}: {rule}\n"
    path = tmp_path / "sweep.yaml"
    path.write_text(f"base: tiny.yaml\nname: hostile\n{search}:\n{body}cv: 0\nrefit: false\n")
    return path


def refused(tmp_path: Path, path: Path, *fragments: str) -> str:
    result = invoke("sweep", path, "--runs-dir", tmp_path / "runs")
    line = assert_one_clean_error(result, fragments[0])
    for fragment in fragments[1:]:
        assert fragment in line, line
    assert not (tmp_path / "runs").exists(), "no sweep folder for a sweep refused"
    return line


UNITS = "model.layers.0.units"
HUGE = "100000000000000000000"  # 1e20, past int64


@pytest.mark.parametrize("search", ["random", "tpe", "cmaes"])
def test_a_randint_end_past_any_count_is_refused_before_the_sweep(tmp_path, search):
    if search != "random":
        pytest.importorskip("optuna")
    path = sweep_with(tmp_path, search, UNITS, f"{{randint: [1, {HUGE}]}}")
    refused(tmp_path, path, f"space.{UNITS}: ", HUGE, "2,147,483,647")


def test_a_grid_value_past_any_count_is_refused_before_the_sweep(tmp_path):
    path = sweep_with(tmp_path, "grid", UNITS, f"[16, {HUGE}]")
    refused(tmp_path, path, f"grid.{UNITS}: ", HUGE)


@pytest.mark.parametrize(
    ("search", "rule"),
    [
        ("tpe", "{choice: [1, true, 1.0]}"),
        ("random", "{choice: [16, true]}"),
        ("grid", "[16, false]"),
        ("grid", "[1, 1.0]"),
        ("random", "{choice: [8, 8.0]}"),
    ],
)
def test_a_choice_mixing_kinds_of_one_value_is_refused(tmp_path, search, rule):
    if search == "tpe":
        pytest.importorskip("optuna")
    path = sweep_with(tmp_path, search, UNITS, rule)
    line = refused(tmp_path, path, f"{UNITS}: ")
    assert "true/false with numbers" in line or "as a whole number and as a float" in line


@pytest.mark.parametrize("rule", ["{choice: [true]}", "[true, false]"])
def test_a_bool_where_the_base_has_a_number_is_refused(tmp_path, rule):
    search = "random" if "choice" in rule else "grid"
    path = sweep_with(tmp_path, search, UNITS, rule)
    refused(tmp_path, path, f"{UNITS}: value true: the base spec's {UNITS} is a number (16)")


@pytest.mark.parametrize(
    ("key", "rule", "said"),
    [
        ("model.layers.0.rate", "{uniform: [0.1, .inf]}", "inf is no setting"),
        ("compile.optimizer.learning_rate", "{loguniform: [0.001, .inf]}", "inf"),
        ("compile.optimizer.learning_rate", "[0.001, .nan]", "nan is no setting"),
    ],
)
def test_a_space_number_that_is_not_finite_is_refused(tmp_path, key, rule, said):
    path = sweep_with(tmp_path, "random", key, rule)
    refused(tmp_path, path, f"space.{key}: ", said)


@pytest.mark.parametrize(
    ("key", "rule", "value", "said"),
    [
        # a random search draws inside the ends: its draws were checked, never the ends
        ("training.validation_split", "{uniform: [0.5, 1.0]}", "1.0", "expected a number < 1"),
        ("training.tensorboard.histogram_freq", "{randint: [0, 2000000]}", "2000000", "<= 1000000"),
        ("training.epochs", "{randint: [1, 1000001]}", "1000001", "<= 1000000"),
        ("data.limit", "{randint: [0, 100]}", "0", ">= 1"),
    ],
)
def test_a_random_searchs_ends_are_put_into_the_base_spec_first(tmp_path, key, rule, value, said):
    path = sweep_with(tmp_path, "random", key, rule, n_iter=1)
    refused(tmp_path, path, f"random.space.{key}: value {value}: ", said)


def test_a_sane_space_still_plans(tmp_path):
    """The control: ends at the bound plan, and a draw lies between them."""
    path = sweep_with(tmp_path, "random", UNITS, "{randint: [4, 2147483647]}", n_iter=1)
    from dlrun.sweep.plan import load_sweep

    sweep = load_sweep(path)
    assert 4 <= sweep.settings[0][UNITS] <= 2**31 - 1


def test_overrides_of_the_base_are_bounded_in_a_sweep_too(tmp_path):
    path = sweep_with(tmp_path, "grid", UNITS, "[8, 16]")
    result = invoke("sweep", path, "--set", "data.scale=.inf", "--runs-dir", tmp_path / "runs")
    assert_one_clean_error(result, "data.scale: expected a finite number, got inf")
    assert not (tmp_path / "runs").exists()
