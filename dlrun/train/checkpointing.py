"""last.keras written from a copy of the variables, in a background thread.      [TensorFlow]

Keras' `model.save` walks every attribute of the model and its optimizer and builds the
weights file with h5py, on the training thread: 45 ms an epoch for the lecture's dense net on
JAX, more than its epoch (docs/performance.md). After one such save, the weights file's layout
is known: every variable's values lie, uncompressed and contiguous, at a fixed place in it. From
then on a checkpoint is that file with the values copied in: the training thread only copies
the variables to host memory (microseconds for these nets) and hands the bytes to a thread that
writes the same .keras archive (metadata.json, config.json, model.weights.h5) and moves it
into place.

`Layout.learn` returns None where the file is not that simple (assets, a compressed or chunked
dataset, a value that is not one of the variables, bfloat16): such a model keeps Keras' save.
"""

from __future__ import annotations

import _thread
import datetime
import io
import json
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

WEIGHTS = "model.weights.h5"
METADATA = "metadata.json"
CONFIG = "config.json"


@dataclass
class Layout:
    """Where each variable's values lie in model.weights.h5, as Keras wrote it once."""

    template: bytes  # model.weights.h5 as Keras wrote it
    variables: list  # the variables, in the order of `places`
    places: list[tuple[int, int]]  # (offset, bytes) of each variable's values
    dtypes: list[np.dtype] = field(default_factory=list)
    buffer: bytearray = field(default_factory=bytearray)  # the file, rewritten in place
    _config: str = ""  # config.json, for the optimizer's config _optimizer
    _optimizer: str | None = None

    def __post_init__(self):
        self.buffer = bytearray(self.template)

    @classmethod
    def learn(cls, model, path: Path) -> Layout | None:
        """Save `model` to `path` with Keras, noting which variable each dataset holds;
        the layout, or None where a checkpoint cannot be written from copies."""
        from keras.src.saving import saving_lib

        written: list[tuple[str, object]] = []
        store_class = saving_lib.H5IOStore
        setitem = store_class.__setitem__

        def noting(store, key, value):
            setitem(store, key, value)
            try:  # a Keras whose writer differs: no layout, never a failed save
                written.append((store._h5_entry_group[key].name, value))
            except Exception:
                written.append((None, value))

        store_class.__setitem__ = noting
        try:
            model.save(path)
        finally:
            store_class.__setitem__ = setitem
        try:
            return cls._read(model, path, written)
        except Exception:  # an unexpected layout: Keras' save every epoch, as before
            return None

    @classmethod
    def _read(cls, model, path: Path, written: list) -> Layout | None:
        import h5py

        with zipfile.ZipFile(path) as archive:
            if sorted(archive.namelist()) != sorted([METADATA, CONFIG, WEIGHTS]):
                return None
            template = archive.read(WEIGHTS)
        optimizer = list(getattr(model.optimizer, "variables", None) or [])
        variables, places, dtypes = [], [], []
        with h5py.File(io.BytesIO(template), "r") as weights:
            datasets: list[str] = []
            weights.visititems(
                lambda name, item: datasets.append(name) if isinstance(item, h5py.Dataset) else None
            )
            if len(datasets) != len(written):
                return None
            if any(name is None for name, _ in written):
                return None
            for name, value in written:
                variable = value if isinstance(value, keras.Variable) else None
                if variable is None:  # the optimizer writes its variables' values, in order
                    parts = name.split("/")
                    if parts[:-1] != ["", "optimizer", "vars"] or not parts[-1].isdigit():
                        return None
                    index = int(parts[-1])
                    variable = optimizer[index] if index < len(optimizer) else None
                if variable is None:
                    return None
                dataset = weights[name]
                dtype = np.dtype(keras.backend.standardize_dtype(variable.dtype))
                offset = dataset.id.get_offset()
                size = int(np.prod(variable.shape, dtype=np.int64)) * dtype.itemsize
                if (
                    offset is None
                    or dataset.chunks is not None
                    or dataset.compression is not None
                    or dataset.dtype != dtype
                    or tuple(dataset.shape) != tuple(variable.shape)
                    or dataset.id.get_storage_size() != size
                    or "dtype" in dataset.attrs  # bfloat16
                ):
                    return None
                variables.append(variable)
                places.append((int(offset), size))
                dtypes.append(dtype)
        return cls(template, variables, places, dtypes)

    def current(self, model) -> bool:
        """Whether the model still has these variables (a recompile makes new ones)."""
        now = {id(v) for v in model.variables} | {
            id(v) for v in getattr(model.optimizer, "variables", None) or []
        }
        return all(id(v) in now for v in self.variables)

    def copy(self, model) -> Snapshot:
        """The variables' values and the model's config now, on the training thread."""
        from keras.src.saving import saving_lib

        # On JAX, np.array of the variable's jax.Array: one copy fewer than through
        # keras.ops.convert_to_numpy (docs/performance.md). Elsewhere Keras' conversion, which
        # knows the backend's tensors (torch's need detaching from autograd, TensorFlow's
        # __array__ takes no copy argument).
        read = _jax_value if keras.backend.backend() == "jax" else keras.ops.convert_to_numpy
        values = [
            np.array(read(variable), dtype=dtype, copy=True)
            for variable, dtype in zip(self.variables, self.dtypes, strict=True)
        ]
        # The model's config changes between epochs only with the optimizer's (its learning
        # rate): serialised again only then.
        optimizer = repr(model.optimizer.get_config())
        if optimizer != self._optimizer:
            self._config = saving_lib._serialize_model_as_json(model)[0]
            self._optimizer = optimizer
        saved = datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S")  # as Keras writes it
        metadata = json.dumps({"keras_version": keras.__version__, "date_saved": saved})
        return Snapshot(self, values, self._config, metadata)


def _jax_value(variable):
    return variable.value


@dataclass
class Snapshot:
    """One epoch's checkpoint, as bytes to write: no reference to the live model."""

    layout: Layout
    values: list[np.ndarray]
    config: str
    metadata: str

    def by_variable(self) -> dict[int, np.ndarray]:
        """The copies by id(variable): each is this epoch's own array, never changed after."""
        return {id(v): value for v, value in zip(self.layout.variables, self.values, strict=True)}

    def write(self, path: Path) -> None:
        """The .keras archive Keras would write, at `path` (a temporary name)."""
        # One buffer for every epoch's file (the writer runs one job at a time), its variables'
        # places overwritten: no copy of the whole file, little work that holds the GIL.
        weights = self.layout.buffer
        for (offset, size), value in zip(self.layout.places, self.values, strict=True):
            weights[offset : offset + size] = memoryview(value.reshape(-1).view(np.uint8))
        with open(path, "wb") as file, zipfile.ZipFile(file, "w") as archive:
            archive.writestr(METADATA, self.metadata)
            archive.writestr(CONFIG, self.config)
            archive.writestr(WEIGHTS, weights)


class Writer:
    """One job at a time in a background thread; its error comes back at `wait`.

    The thread is started without waiting for it to run (threading.Thread.start waits until
    the new thread has taken the GIL: 0.5 ms an epoch on a quiet machine, several on a busy
    one); `wait` waits for the job's end instead.
    """

    def __init__(self):
        self._done: threading.Event | None = None
        self._error: BaseException | None = None

    @property
    def busy(self) -> bool:
        return self._done is not None

    def start(self, job) -> None:
        self.wait()
        done = self._done = threading.Event()

        def run():
            try:
                job()
            except BaseException as exc:  # handed to the training thread at wait()
                self._error = exc
            finally:
                done.set()

        _thread.start_new_thread(run, ())

    def wait(self) -> None:
        """Until the job is done; raises what it raised."""
        done = self._done
        if done is not None:
            done.wait()  # still owed if an interrupt ends the wait: a later wait() waits again
            self._done = None
        error, self._error = self._error, None
        if error is not None:
            raise error
