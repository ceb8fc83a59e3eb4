"""The spec: defaults, overrides, line numbers, round trip. No TensorFlow involved."""

import pytest
import yaml

from dlrun.errors import SpecError
from dlrun.spec.loading import load_spec, validate
from dlrun.spec.overrides import apply_override


def test_defaults_are_filled_and_dump_round_trips(tiny_spec):
    spec = load_spec(tiny_spec)
    assert spec.compile.optimizer == "adam"
    assert spec.training.checkpoint.monitor == "val_loss"
    dumped = yaml.safe_load(spec.dump())
    assert dumped["model"]["layers"][0] == {"type": "Dense", "units": 16, "activation": "relu"}
    assert validate(dumped, "dump").model_dump() == spec.model_dump()


def test_bare_layer_name_is_a_layer_without_arguments(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "data: {dataset: digits}\nmodel: {layers: [Flatten, {type: Dense, units: 10}]}\n"
    )
    spec = load_spec(path)
    assert spec.model.layers[0].type == "Flatten"
    assert spec.model.layers[0].kwargs() == {}


def test_overrides_reach_nested_keys_and_list_items(tiny_spec):
    spec = load_spec(
        tiny_spec,
        [
            "training.epochs=7",
            "model.layers.0.units=64",
            "compile.optimizer.type=sgd",
            "training.early_stopping.patience=2",
            "data.flatten=no",
        ],
    )
    assert spec.training.epochs == 7
    assert spec.model.layers[0].kwargs()["units"] == 64
    assert spec.compile.optimizer == {"type": "sgd"}
    assert spec.training.early_stopping.patience == 2
    assert spec.data.flatten is False


def test_override_gives_arguments_to_a_bare_layer_name():
    raw = {"model": {"layers": ["Flatten"]}}
    apply_override(raw, "model.layers.0.name=flat")
    assert raw["model"]["layers"][0] == {"type": "Flatten", "name": "flat"}


@pytest.mark.parametrize(
    "assignment, expected",
    [
        ("training.epochs", "--set training.epochs: expected KEY=VALUE, e.g. training.epochs=3"),
        (
            "model.layers.5.units=3",
            "--set model.layers.5.units: model.layers has 2 items (0-1); got index '5'",
        ),
        ("seed.x=1", "--set seed.x: seed is not a mapping or a list"),
    ],
)
def test_bad_overrides(tiny_spec, assignment, expected):
    with pytest.raises(SpecError) as caught:
        load_spec(tiny_spec, [assignment])
    assert caught.value.problems == [expected]


def test_override_errors_are_validated_like_the_file(tiny_spec):
    with pytest.raises(SpecError) as caught:
        load_spec(tiny_spec, ["training.epochs=0"])
    assert caught.value.problems == [
        "--set: training.epochs: expected a number >= 1, got 0 (given on the command line)"
    ]


def test_every_problem_is_reported_at_once(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "data: {dataset: digits, scael: 3}\nmodel: {layers: [Flatten]}\ntraining: {epochs: 0}\n"
    )
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert caught.value.problems == [
        f"{path}:1: data.scael: unknown key 'scael'; did you mean 'scale'?",
        f"{path}:3: training.epochs: expected a number >= 1, got 0",
    ]
