"""Sweep fits as Ray tasks: a local Ray instance, or a cluster at --address / $RAY_ADDRESS.

The same interface as workers.Workers (run, stop, close), so run_sweep treats both alike.
Each task reserves the sweep file's `resources` and trains one fit into the sweep folder,
which must be on storage that every node sees: the head reads back what each worker wrote,
and says so when it cannot. Ray is an optional extra: pip install "dlrun[ray]".
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import dlrun
from dlrun import store
from dlrun.errors import BackendError, RunError
from dlrun.sweep import raytask
from dlrun.sweep.workers import TICK, Result, Task

INSTALL = 'pip install "dlrun[ray]"'


def ray_module():
    """`import ray`, or the one line that says how to install it."""
    try:
        import ray
    except ImportError:
        raise BackendError(f"--executor ray needs Ray, which is not installed: {INSTALL}") from None
    return ray


# How long a cluster's address has to answer a TCP connection before the sweep says so (Ray's
# own reconnect loop retries for minutes, printing warnings).
CONNECT_SECONDS = 5


def check_address(address: str | None) -> None:
    """--address (or $RAY_ADDRESS) HOST:PORT answers, or one line naming it and how to start a
    cluster there; `auto`, `local` and no address are Ray's to resolve."""
    import socket

    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None or address in ("auto", "local"):
        return
    given = address.removeprefix("ray://")
    host, colon, port = given.rpartition(":")
    if not colon or not port.isdigit() or not host:
        raise RunError(
            f"--address {address}: expected HOST:PORT of a Ray cluster's head, e.g. "
            "10.0.0.5:6379 (or ray://HOST:10001 for Ray Client)"
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_SECONDS):
            return
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    raise RunError(
        f"--address {address}: no Ray cluster answers there ({reason}); start one with "
        f"`ray start --head --port {port}` on {host} (workers: `ray start --address "
        f"{host}:{port}`), or leave out --address for a Ray on this machine"
    )


class RayWorkers:
    """Fits as Ray tasks, each reserving `cpus` and `gpus` of a node."""

    def __init__(
        self,
        trials_dir: Path,
        backend: str,
        cpus: float = 1,
        gpus: float = 0,
        address: str | None = None,
    ):
        ray = self._ray = ray_module()
        address = address or os.environ.get("RAY_ADDRESS") or None
        check_address(address)
        try:
            ray.init(
                address=address,
                include_dashboard=False,
                log_to_driver=False,
                ignore_reinit_error=True,
            )
        except ConnectionError as exc:
            raise RunError(f"--address {address}: no Ray cluster there ({exc})") from None
        self.trials_dir, self.backend = trials_dir, backend
        # By value, so that a worker imports the driver's dlrun, not one in the current folder.
        ray.cloudpickle.register_pickle_by_value(raytask)
        self._root = str(Path(dlrun.__file__).resolve().parent.parent)
        self._remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(raytask.call)
        self._pending: dict[Any, str] = {}
        self.capacity = _capacity(ray.cluster_resources(), cpus, gpus)

    def run(self, tasks: Iterable[Task], tick: float | None = None) -> Iterator[Result]:
        """Submit tasks as the cluster can start them (as many as fit at once, read lazily:
        an adaptive search asks for the next setting only then); yield each result as it
        comes (an error: "error", its message), TICK when `tick` seconds pass without one."""
        ray = self._ray
        source = iter(tasks)

        def fill() -> None:
            while len(self._pending) < self.capacity:
                task = next(source, None)
                if task is None:
                    return
                key, function, args = task
                call = (self._root, function.__module__, function.__name__, args, self.backend)
                self._pending[self._remote.remote(*call)] = key

        fill()
        while self._pending:
            done, _ = ray.wait(list(self._pending), num_returns=1, timeout=tick)
            if not done:
                yield TICK
                continue
            for ref in done:
                key = self._pending.pop(ref)
                yield self._result(ref, key)
            fill()

    def _result(self, ref, key: str) -> Result:
        ray = self._ray
        try:
            value = ray.get(ref)
        except ray.exceptions.TaskCancelledError:  # the fit recorded how it stopped
            return key, "stopped", "stopped before it finished"
        except ray.exceptions.WorkerCrashedError:
            return key, "died", "its Ray worker died"
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            return key, "error", f"{type(cause).__name__}: {str(cause).splitlines()[-1][:300]}"
        if isinstance(value, tuple) and value[:1] == (raytask.IMPORT_FAILED,):
            raise RunError(
                f"a Ray worker cannot import the dlrun this sweep runs ({self._root}): "
                f"{value[1]}; install the same dlrun where the Ray workers run"
            )
        if not _refused_before_its_folder(value):
            self._check_shared(key)
        return key, "ok", value

    def _check_shared(self, key: str) -> None:
        """What a worker wrote must be readable here: the folder is on shared storage."""
        if not (self.trials_dir / key / store.META).is_file():
            raise RunError(
                f"{self.trials_dir / key}: a Ray worker trained this fit but its files are not "
                "here; put the sweep folder (--runs-dir) on storage every node mounts at the "
                "same path, such as NFS"
            )

    def stop(self, grace: float = 60.0, signum: int = 0) -> list[Result]:
        """Cancel every task: a running fit gets KeyboardInterrupt and records itself
        interrupted, one that has not started never does."""
        ray = self._ray
        for ref in self._pending:
            with contextlib.suppress(Exception):
                ray.cancel(ref)
        ready, _ = ray.wait(list(self._pending), num_returns=len(self._pending), timeout=grace)
        results = [self._result(ref, self._pending.pop(ref)) for ref in ready]
        # as with local workers, a fit that never started is not reported: it has no folder
        return [r for r in results if r[1] != "stopped" or (self.trials_dir / r[0]).is_dir()]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._ray.shutdown()


def _refused_before_its_folder(value: Any) -> bool:
    """A fit that failed before it had a folder (a setting Keras cannot build): there is
    nothing of it to look for here, and the sweep records it failed, as locally."""
    if not (isinstance(value, tuple) and len(value) == 3):
        return False
    status, rows, _ = value
    return status == store.FAILED and not rows


def _capacity(resources: dict, cpus: float, gpus: float) -> int:
    """How many fits the cluster runs at once: the most tasks its CPUs (and GPUs) hold."""
    fits = [resources.get("CPU", 1) / cpus]
    if gpus:
        fits.append(resources.get("GPU", 0) / gpus)
    return max(1, int(min(fits)))
