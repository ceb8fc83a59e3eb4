"""A run's checkpoints: their names, and the one guarded way to load a model file.

Every model file dlrun reads (evaluate, attack, features, resume, a transfer base) comes through
`load_model`: the archive's expanded size is checked against the parameters it should hold
before Keras opens it, Keras' safe_mode stays on unless the user vouches for the file, and every
failure is one RunError line. `checkpoint_path` finds a checkpoint inside a run, never through a
symlink out of it.  [TensorFlow]
"""

from __future__ import annotations

import os
from pathlib import Path

from dlrun import store
from dlrun.backend import load
from dlrun.errors import RunError, first_line

CHECKPOINTS = {"best": store.BEST, "last": store.LAST}
# A .keras file holds float32 weights, up to two optimizer moments per weight, the step
# counter and a config: 16 bytes a parameter leaves room; the fixed part covers the config.
BYTES_PER_PARAM = 16
FIXED_BYTES = 64 * 1024 * 1024
MAX_ENTRIES = 1000


def check_archive(path: Path, params: int | None) -> None:
    """Refuse, before loading, a model file that expands far beyond what `params` need.

    A .keras file is a zip: a few kilobytes can claim gigabytes once uncompressed.
    """
    import zipfile

    try:
        with zipfile.ZipFile(store.safe_file(path)) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError):
        return  # not a zip: Keras says what is wrong with it
    limit = FIXED_BYTES + BYTES_PER_PARAM * (params or 0) if params is not None else 2**32
    size = sum(entry.file_size for entry in entries)
    if len(entries) > MAX_ENTRIES or size > limit:
        raise RunError(
            f"{path}: expands to {size / 2**20:,.0f} MiB in {len(entries)} entries, far more "
            f"than {params:,} parameters need ({limit / 2**20:,.0f} MiB); refused unloaded"
            if params is not None
            else f"{path}: expands to {size / 2**20:,.0f} MiB; refused unloaded"
        )


def check_run_checkpoints(run_dir: Path, params: int | None) -> None:
    """A received run's best.keras and last.keras, checked before a resume marks it running:
    no symlink (to another run's checkpoint) on the way, no FIFO or device, no archive that
    expands beyond the run's parameters."""
    for relative in CHECKPOINTS.values():
        path = store.within(run_dir, relative)
        if os.path.lexists(path):
            check_archive(path, params)


def load_model(
    path: Path, unsafe_load: bool = False, params: int | None = None, compile: bool = True
):
    """keras.models.load_model with safe_mode on, unless the user vouches for the file.

    `params`: the parameter count the run's config builds; a file expanding far beyond it
    is refused before Keras opens it.
    """
    check_archive(path, params)

    keras = load()
    from dlrun import usercode
    from dlrun.model.frozen import custom_objects

    # The run's code files are imported before (usercode.use_run): their classes and
    # functions are found by name; safe_mode still refuses a Lambda.
    known = {**usercode.custom_objects(), **custom_objects()}
    try:
        return keras.models.load_model(
            path, custom_objects=known, safe_mode=not unsafe_load, compile=compile
        )
    except ValueError as exc:
        reason = first_line(exc)
        if "safe_mode" in reason or "Lambda" in reason or "unsafe" in reason.lower():
            raise RunError(
                f"{path}: refused by Keras safe_mode ({reason}); pass --unsafe-load only if "
                "you trust where this file came from"
            ) from None
        raise RunError(f"{path}: cannot be loaded ({reason})") from None
    except (OSError, KeyError, EOFError) as exc:
        raise RunError(f"{path}: damaged model file ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # zipfile, h5py and Keras raise many kinds for a bad archive
        reason = f"{type(exc).__name__}: {first_line(exc)}"
        raise RunError(f"{path}: cannot be loaded ({reason})") from None


def functional(model, input_shape):
    """A subclassed model (a model.function's) wrapped as a functional one with inputs and
    outputs, for what reads its shapes (predict, export); any other model as it is."""
    if getattr(model, "inputs", None) or not isinstance(input_shape, (list, tuple)):
        return model
    keras = load()
    inputs = keras.Input(shape=tuple(input_shape))
    return keras.Model(inputs, model(inputs), name=model.name)


def checkpoint_path(run: store.Run, checkpoint: str, purpose: str = "", error=RunError) -> Path:
    """best or last of a run, inside the run (no symlink out of it); `error` when it is
    missing (`purpose` says what it was wanted for, e.g. " to attack")."""
    if checkpoint not in CHECKPOINTS:
        raise error(f"--checkpoint: expected best or last, got {checkpoint!r}")
    path = store.within(run.path, CHECKPOINTS[checkpoint])
    if os.path.lexists(path):
        store.safe_file(path)  # a FIFO or a device is refused, not taken for no checkpoint
    if not path.is_file():
        raise error(
            f"{run.path}: no {CHECKPOINTS[checkpoint]}{purpose}; the run saved no checkpoint "
            f"(status {run.status}, {run.meta.get('epochs_done', 0)} epochs done)"
        )
    return path
