"""Which way is better for a logged metric: decided here, from Keras' own metric objects.

Keras marks every metric class with `_direction` ("up" or "down"); its MonitorCallback
(EarlyStopping, ModelCheckpoint) reads it for `mode: auto`. dlrun reads the same attribute
from the compiled model at train time and records the result in the run's metrics.json
(`directions`), so checkpoints, early stopping, runs/compare and sweeps all agree, and
reading runs later needs no Keras. Importing this module imports no TensorFlow.
"""

from __future__ import annotations

from typing import Any

MAX, MIN = "max", "min"
# Names compile() resolves itself to an accuracy variant chosen by the loss.
ACCURACY_ALIASES = ("accuracy", "acc")
# Metrics dlrun's own callbacks log (no compiled Keras metric carries their direction).
OWN = {"adversarial_accuracy": MAX}
# The prefix of the fitted model's scores on its training split after an epoch (a sweep's train
# scores, as GridSearchCV's), logged beside the running means Keras logs during the epoch.
FITTED = "fitted_"


def of_metric(metric: Any) -> str | None:
    """max/min for one Keras metric object, as MonitorCallback reads it (None: unmarked)."""
    return {"up": MAX, "down": MIN}.get(getattr(metric, "_direction", None))


def compiled(model: Any) -> dict[str, str]:
    """{logged name: max|min} for the loss and every compiled metric, with their val_ twins.

    The model must be compiled and built (Keras builds the compile metrics as fit() starts).
    """
    found = {"loss": MIN, **OWN}
    for container in model.metrics:
        if container.name.endswith("_loss"):  # several outputs: <output>_loss, a Mean
            found[container.name] = MIN
        outputs = getattr(container, "output_names", None) or []
        per_output = getattr(container, "_flat_metrics", None)  # Keras' CompileMetrics
        if len(outputs) > 1 and per_output is not None:
            # Several outputs: Keras logs each output's metrics as <output>_<metric>; its
            # per-output lists are in output order (a private list; tests/test_rough_edges.py
            # fails loudly if it goes).
            for output, listed in zip(outputs, per_output, strict=True):
                for metric in listed.metrics if listed is not None else []:
                    if of_metric(metric):
                        found[f"{output}_{metric.name}"] = of_metric(metric)
            continue
        if of_metric(container):  # a subclassed model's own metric (its `metrics` property)
            found[container.name] = of_metric(container)
        # compile()'s metrics sit in one container metric that lists them (Keras'
        # CompileMetrics); the loss tracker beside it lists none.
        inner = getattr(container, "metrics", None)
        if isinstance(inner, (list, tuple)):
            for metric in inner:
                direction = of_metric(metric)
                if direction:
                    found[metric.name] = direction
    return {**found, **{f"val_{name}": value for name, value in found.items()}}


def given(metrics: Any) -> dict[str, str]:
    """`direction: max|min` written beside compile.metrics entries (a code file's metric that
    Keras cannot tell the direction of), by logged name, with their val_ twins."""
    from dlrun.spec.names import entry_name

    entries = [e for es in metrics.values() for e in es] if isinstance(metrics, dict) else metrics
    found = {
        entry_name(entry): entry["direction"]
        for entry in entries
        if isinstance(entry, dict) and entry.get("direction") in (MAX, MIN)
    }
    return {**found, **{f"val_{name}": value for name, value in found.items()}}


def mode(monitor: str, requested: str, directions: dict[str, str]) -> str:
    """`auto` resolved to max or min for `monitor`; an explicit min or max is kept."""
    if requested in (MAX, MIN):
        return requested
    base = monitor.removeprefix("val_").removeprefix(FITTED)
    return directions.get(monitor) or directions.get(base) or _unrecorded(base)


def higher_is_better(name: str, directions: dict[str, str] | None) -> bool:
    """For reading runs and sweeps: the direction recorded at train time."""
    return mode(name, "auto", directions or {}) == MAX


def _unrecorded(name: str) -> str:
    # Only runs recorded before directions were kept land here, and metrics Keras leaves
    # unmarked (a custom function); those are treated like losses.
    return MAX if name in ACCURACY_ALIASES else MIN


def better(requested: str, monitor: str, directions: dict[str, str]):
    """A comparison function new-better-than-old for the monitor."""
    if mode(monitor, requested, directions) == MAX:
        return lambda new, old: new > old
    return lambda new, old: new < old
