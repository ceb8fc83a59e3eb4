"""A run made ready to train: the spec's data loaded and its model built and compiled, found
before any run folder exists, so a bad spec never leaves a half-made run behind."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dlrun.spec.schema import Spec


@dataclass
class Prepared:
    spec: Spec
    data: object  # data.Data
    model: object  # keras.Model
    devices: list[str] = field(default_factory=list)  # what it trains on (devices.used)
    stage: int = 1  # 2 once training.finetune has unfrozen the base
    callbacks: list = field(default_factory=list)  # training.callbacks, as Keras objects
    class_weight: dict[int, float] | None = None  # training.class_weight, by class index


@dataclass
class Outcome:
    run_dir: Path
    status: str
    exit_code: int
    metrics: dict
    message: str | None = None


def prepare(spec: Spec) -> Prepared:
    """Seed, load the data, build and compile the model: every spec problem surfaces here."""
    from dlrun.backend import seed_everything, use
    from dlrun.data.arrays import load_data
    from dlrun.data.feed import check_feed
    from dlrun.data.splits import count
    from dlrun.model.builder import build_model
    from dlrun.model.compiling import compile_model
    from dlrun.train.devices import check_batches, placement
    from dlrun.train.knobs import class_weights, make_callbacks

    use(spec.backend, spec.training.device)
    seed_everything(spec.seed, spec.training.deterministic)
    data = load_data(spec)
    check_feed(spec, data)
    _check_validation(spec, data)
    weights = class_weights(spec, data)
    callbacks = make_callbacks(spec)
    with placement(spec) as devices:
        sizes = {"train": count(data.x_train), "test": count(data.x_test)}
        if data.x_val is not None:
            sizes["validation"] = count(data.x_val)
        check_batches(spec, sizes, devices)
        model = build_model(spec, data.input_shape)
        target_shape = None if spec.model.several_outputs else tuple(data.y_train.shape[1:])
        compile_model(model, spec, data.num_classes, target_shape)
    if spec.training.finetune:
        from dlrun.model.transfer import check_finetune

        check_finetune(model, spec)
    return Prepared(spec, data, model, devices, callbacks=callbacks, class_weight=weights)


def _check_validation(spec: Spec, data) -> None:
    """A monitor on val_ metrics needs validation data, which only the data can tell (an npz
    without x_val and validation_split: 0)."""
    if data.x_val is not None:
        return
    watched = [(("training", "checkpoint", "monitor"), spec.training.checkpoint.monitor)]
    if spec.training.early_stopping:
        watched.append(
            (("training", "early_stopping", "monitor"), spec.training.early_stopping.monitor)
        )
    for loc, monitor in watched:
        if monitor.startswith("val_"):
            raise spec.error(
                loc,
                f"{monitor!r} needs validation data, and the run has none; set "
                f"training.validation_split above 0, give validation data, or monitor "
                f"{monitor.removeprefix('val_')!r}",
            )


def adapt(prepared: Prepared) -> list[str]:
    """Preprocessing layers adapted on the training split (a resumed run reloads them)."""
    from dlrun.data.adapt import adapt_layers

    data, batch = prepared.data, prepared.spec.training.batch_size
    if data.source is not None:  # image files streamed from disk: not adapted here
        return []
    return adapt_layers(prepared.model, data.x_train, batch)


def total_epochs(spec: Spec) -> int:
    """Epochs of both stages together (history.csv numbers them on)."""
    finetune = spec.training.finetune
    return spec.training.epochs + (finetune.epochs if finetune else 0)


def start_finetune(prepared: Prepared) -> None:
    """Stage 2: unfreeze the base and recompile with the finetuning learning rate."""
    from dlrun.model.compiling import compile_model
    from dlrun.model.transfer import unfreeze

    spec, model = prepared.spec, prepared.model
    unfreeze(model, spec)
    rate = spec.training.finetune.learning_rate
    optimizer = spec.compile.optimizer
    if isinstance(optimizer, dict) and isinstance(optimizer.get("learning_rate"), dict):
        # Stage 1's schedule: Keras lets no plain rate be set on it; stage 2 is compiled
        # with finetune.learning_rate as its constant rate, the schedule left to stage 1.
        spec = spec.model_copy(deep=True)
        spec.compile.optimizer = {**optimizer, "learning_rate": rate}
    compile_model(model, spec, prepared.data.num_classes)
    model.optimizer.learning_rate = rate
    prepared.stage = 2
