"""The function a Ray task runs, sent by value: it imports dlrun only once it has put the
driver's dlrun first on sys.path.

Ray puts the driver's current folder first on every worker's sys.path, and a function sent by
reference is imported before it runs: started from a folder that holds a `dlrun/` checkout,
the workers would import that checkout instead of the dlrun the sweep runs. So this module
imports nothing of dlrun, RayWorkers registers it with cloudpickle to go by value, and the fit
function goes by name. A worker that cannot import the driver's dlrun answers IMPORT_FAILED
with the import error, which the sweep shows as it is.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

IMPORT_FAILED = "dlrun-import-failed"


def call(root: str, module: str, name: str, args: tuple, backend: str) -> Any:
    """In a Ray worker: dlrun from `root` (the driver's), Keras' backend fixed before Keras
    loads, then `module.name(*args)`; (IMPORT_FAILED, message) when dlrun cannot be imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path[:] = [root, *(path for path in sys.path if path != root)]
    try:
        package = importlib.import_module("dlrun")
        where = os.path.dirname(os.path.dirname(os.path.realpath(package.__file__ or "")))
        if where != os.path.realpath(root):
            return IMPORT_FAILED, f"imported dlrun from {where}, not from {root}"
        function = getattr(importlib.import_module(module), name)
        backends = importlib.import_module("dlrun.backend")
    except Exception as exc:  # noqa: BLE001 - an import error of any kind is the answer
        return IMPORT_FAILED, f"{type(exc).__name__}: {exc}"
    backends.use(backend)
    return function(*args)
