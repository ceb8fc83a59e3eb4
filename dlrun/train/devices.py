"""Where and how a model trains: device, mixed precision, data parallelism over local devices.

`placement(spec)` is entered around building and compiling the model: it sets Keras' dtype
policy and distribution for exactly that span, so nothing leaks into the next run in the same
process. `{processes: N}` spreads one model over several processes (train.cluster): the same
DataParallel over the devices of them all, each process feeding its own shard.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from dlrun import backend
from dlrun.errors import BackendError
from dlrun.spec.schema import Spec


def policy_name(spec: Spec) -> str:
    """Keras' dtype policy: mixed_float16 on a GPU, mixed_bfloat16 on a CPU, else float32."""
    if not spec.training.mixed_precision:
        return "float32"
    return "mixed_float16" if backend.used_devices(spec)[0].startswith("GPU") else "mixed_bfloat16"


def _strategy(devices: list[str]):
    tf = backend.tensorflow()
    names = [f"/{d.split(':')[0].lower()}:{d.split(':')[1]}" for d in devices]
    return tf.distribute.MirroredStrategy(devices=names)


def _data_parallel(spec: Spec, devices: list[str]):
    """The context that makes variables replicated over `devices` (None: one device)."""
    name = backend.current()
    if spec.training.distribute is None:
        return None
    if spec.training.distribute != "data_parallel":
        return _processes(spec)
    if name == "torch":
        raise BackendError(
            "training.distribute: data_parallel is supported on the tensorflow and jax "
            "backends, not torch; remove it or set backend: jax"
        )
    if len(devices) < 2:
        raise BackendError(
            f"training.distribute: data_parallel needs two or more devices; the {name} backend "
            f"sees {', '.join(devices)}; remove it to train on one device"
        )
    if spec.training.batch_size % len(devices):
        raise BackendError(
            f"training.batch_size: {spec.training.batch_size} does not split evenly over "
            f"{len(devices)} devices; use a multiple of {len(devices)}"
        )
    if name == "tensorflow":
        return _strategy(devices).scope()
    import jax
    import keras

    # Only the devices chosen: `device: cpu` with a GPU visible keeps to the CPUs.
    platform = "cpu" if devices[0].startswith("CPU") else "gpu"
    chosen = [d for d in jax.devices() if (d.platform == "cpu") == (platform == "cpu")]
    return _jax_distribution(keras.distribution.DataParallel(devices=chosen))


def _processes(spec: Spec):
    """{processes: N} in a process that joined the others: every process' devices; read back
    on one process (evaluate, predict, a sweep's fit), the model sits on one device."""
    import jax
    import keras

    if jax.process_count() == 1:
        return None
    devices = _global_devices(spec)
    if spec.training.batch_size % len(devices):
        raise BackendError(
            f"training.batch_size: {spec.training.batch_size} does not split evenly over the "
            f"{len(devices)} devices of {jax.process_count()} processes; use a multiple of "
            f"{len(devices)}"
        )
    # Each process feeds its own rows of a batch (cluster.local): Keras must not shard again.
    return _jax_distribution(
        keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False)
    )


def _global_devices(spec: Spec) -> list:
    """The devices of every process of the run, of the kind this spec trains on."""
    import jax

    local = backend.used_devices(spec)
    cpu = local[0].startswith("CPU")
    return [d for d in jax.devices() if (d.platform == "cpu") == cpu]


@contextlib.contextmanager
def _jax_distribution(distribution) -> Iterator[None]:
    import keras

    # Kept for the whole process: fit, evaluate and predict shard their batches through it.
    keras.distribution.set_distribution(distribution)
    yield


@contextlib.contextmanager
def placement(spec: Spec) -> Iterator[list[str]]:
    """Build and compile the model inside this; yields the devices it will train on."""
    import keras

    devices = backend.used_devices(spec)
    scope = _data_parallel(spec, devices)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy_name(spec))
    try:
        with scope if scope is not None else contextlib.nullcontext():
            yield devices
    finally:
        keras.config.set_dtype_policy(previous)


def check_batches(spec: Spec, sizes: dict[str, int], devices: list[str]) -> None:
    """JAX's DataParallel shards every batch over the devices and refuses an uneven last one
    (an IndivisibleError in the middle of fit); say so before anything is trained."""
    if spec.training.distribute is None or backend.current() != "jax":
        return
    batch, count = spec.training.batch_size, len(devices)
    if spec.training.distribute != "data_parallel":
        import jax

        if jax.process_count() == 1:
            return
        count = len(_global_devices(spec))
    uneven = {name: size % batch for name, size in sizes.items() if size % batch % count}
    if uneven:
        found = ", ".join(
            f"{name} {sizes[name]} ({rest} left over)" for name, rest in uneven.items()
        )
        raise BackendError(
            f"training.distribute: {_named(spec)} on jax needs every batch to split evenly over "
            f"{count} devices, but the last batch of a split does not: {found} with batch_size "
            f"{batch}; choose batch_size, validation_split and data.test_split so that each "
            "split's last batch divides evenly"
            + (
                ", or use backend: tensorflow"
                if spec.training.distribute == "data_parallel"
                else ""
            )
        )


def _named(spec: Spec) -> str:
    distribute = spec.training.distribute
    return distribute if isinstance(distribute, str) else f"{{processes: {distribute.processes}}}"
