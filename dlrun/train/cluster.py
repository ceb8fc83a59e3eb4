"""One model trained by several processes: `training.distribute: {processes: N}` (JAX only).

Every process runs the same training code in step: Keras' DataParallel over the devices of all
processes, on JAX's distributed runtime (gloo collectives on CPUs, NCCL on GPUs). Each process
feeds exactly the rows of every batch that its devices would get if one process held them all
(`feed.shard_rows`), so N processes with one device train as one process with N devices.

Who is who comes from Keras' own variables, KERAS_DISTRIBUTION_JOB_ADDRESSES (the coordinator,
process 0, first), KERAS_DISTRIBUTION_NUM_PROCESSES and KERAS_DISTRIBUTION_PROCESS_ID, set by
`train.launch` or by a cluster's scheduler. Process 0 writes the run folder; the others train
into a scratch folder of their own, removed at the end, so that every process takes exactly the
same steps (the collectives of checkpoints' and test scores' evaluations included).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlrun import store
from dlrun.errors import DlrunError, UsageError

ADDRESSES = "KERAS_DISTRIBUTION_JOB_ADDRESSES"
COUNT = "KERAS_DISTRIBUTION_NUM_PROCESSES"
PROCESS = "KERAS_DISTRIBUTION_PROCESS_ID"
# A process that stops sending heartbeats this long is lost. JAX's default is 100 s; a killed
# process is usually noticed at once (its sockets close), a vanished host only by this.
HEARTBEAT_SECONDS = 15
# How long the processes wait for each other to start (JAX's default: 300 s).
START_SECONDS = 120
# How long process 0 outlives the others at the end (they exit at once after the last barrier).
LEAVE_SECONDS = 3
_KEY = "dlrun/process/"
# Set by the local launcher: this process' rank on its host, so that each takes its own GPU.
LOCAL_RANK = "DLRUN_LOCAL_RANK"


class ProcessLost(DlrunError):
    """Another process of the run died or its host went away: this one stopped too."""


@dataclass(frozen=True)
class Role:
    process: int  # 0 is the coordinator and writes the run folder
    count: int
    coordinator: str  # host:port of process 0

    @property
    def leader(self) -> bool:
        return self.process == 0


_role: Role | None = None  # set by join(): a process trains one run over processes, then ends


def role_from_env(environ=os.environ) -> Role | None:
    """This process' part, from Keras' KERAS_DISTRIBUTION_* variables (None: not set)."""
    if COUNT not in environ and PROCESS not in environ:
        return None
    values = {}
    for name in (COUNT, PROCESS):
        text = environ.get(name, "")
        if not text.isdigit():
            raise UsageError(f"{name}: expected a whole number, got {text!r}")
        values[name] = int(text)
    count, process = values[COUNT], values[PROCESS]
    if not 0 <= process < count:
        raise UsageError(f"{PROCESS}: expected 0 to {count - 1}, got {process}")
    addresses = environ.get(ADDRESSES, "").split(",")
    if not addresses[0] or ":" not in addresses[0]:
        raise UsageError(
            f"{ADDRESSES}: expected host:port of process 0 first, got {addresses[0]!r}"
        )
    return Role(process, count, addresses[0].strip())


def join(processes: int) -> Role | None:
    """Meet the other processes of a run before anything JAX computes (the model is built).

    None for a run on one process; UsageError when the spec wants several and this process was
    not started as one of them (the launcher, a scheduler) or their count disagrees.
    """
    global _role
    found = role_from_env()
    if found is None:
        if processes > 1:
            raise UsageError(
                f"training.distribute: {{processes: {processes}}}: this process was not started "
                f"as one of them; run `dlrun train` (it starts them), or set {ADDRESSES}, "
                f"{COUNT} and {PROCESS} on every host"
            )
        return None
    if found.count != processes:
        raise UsageError(
            f"{COUNT} is {found.count} but the spec's training.distribute.processes is "
            f"{processes}; a run continues on the processes it started with"
        )
    if _role is not None:
        return _role
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # A lost process becomes an error in the others' next collective, recorded in the run,
    # instead of JAX terminating them from a background thread.
    jax.config.update("jax_enable_recoverability", True)
    rank = os.environ.get(LOCAL_RANK, "")
    # keras.distribution.initialize makes this same call, without a way to set the timeouts.
    jax.distributed.initialize(
        coordinator_address=found.coordinator,
        num_processes=found.count,
        process_id=found.process,
        # One GPU per process started here (CPUs ignore it); a scheduler or Ray gives each
        # process its own GPU through CUDA_VISIBLE_DEVICES instead.
        local_device_ids=[int(rank)] if rank.isdigit() else None,
        initialization_timeout=START_SECONDS,
        heartbeat_timeout_seconds=HEARTBEAT_SECONDS,
        shutdown_timeout_seconds=HEARTBEAT_SECONDS,
    )
    _role = found
    about = {
        "process": found.process,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "devices": [str(d) for d in jax.local_devices()],
    }
    _client().key_value_set(f"{_KEY}{found.process}", json.dumps(about))
    return found


def _client():
    from jax._src import distributed

    return distributed.global_state.client


def members() -> list[dict]:
    """Every process of the run: its number, host, pid and devices (meta.json's processes)."""
    if _role is None:
        return []
    found = []
    for process in range(_role.count):
        text = _client().blocking_key_value_get(f"{_KEY}{process}", START_SECONDS * 1000)
        found.append(json.loads(text))
    return found


def local_batch(batch: int) -> int:
    """This process' share of a batch of `batch` rows."""
    return batch if _role is None else batch // _role.count


def local_rows(size: int, batch: int) -> np.ndarray | None:
    """The rows of a split of `size` rows this process feeds (None: all of them)."""
    if _role is None:
        return None
    from dlrun.data.feed import shard_rows

    return shard_rows(size, batch, _role.process, _role.count)


def local(x, batch: int):
    """This process' rows of `x` (an array, or {name: array}) fed in batches of `batch`."""
    if _role is None or x is None:
        return x
    from dlrun.data.splits import count, each

    rows = local_rows(count(x), batch)
    return each(x, lambda array: np.take(array, rows, axis=0))


def explained(exc: BaseException, run_dir: Path) -> BaseException:
    """A failed collective as one line that names the lost process, once the runtime knows
    which one it was (within HEARTBEAT_SECONDS); else the exception as it was."""
    if _role is None or isinstance(exc, (DlrunError, KeyboardInterrupt)):
        return exc
    everyone = list(range(_role.count))
    deadline = time.monotonic() + HEARTBEAT_SECONDS + 5
    while time.monotonic() < deadline:
        try:
            alive = set(_client().get_live_nodes(everyone))
        except Exception:  # the coordinator itself is gone
            alive = {_role.process}
        lost = [p for p in everyone if p not in alive]
        if lost:
            names = ", ".join(str(p) for p in lost)
            return ProcessLost(
                f"process {names} of {_role.count} was lost (killed, or its host went away) and "
                f"the others stopped; resume it on {_role.count} processes with "
                f"dlrun train --resume {run_dir}"
            )
        time.sleep(1)
    return exc


def leave(ok: bool, exit_code: int = 0) -> None:
    """The end of a process of a run: all meet once more, then each exits at once.

    Process 0 holds the coordination service, and JAX terminates a process that still talks
    to it once it is gone: the others exit first, and process 0 outlives them. After a fault
    nobody waits for processes that will never arrive.
    """
    if _role is None:
        return
    if ok:
        client = _client()
        try:
            client.wait_at_barrier("dlrun/end", START_SECONDS * 1000)
            # The others exit right after the barrier without a word to the service: a
            # shutdown() still talking to it when process 0 had seen them leave and gone was
            # aborted by JAX under load. Process 0 outlives them by LEAVE_SECONDS, far below
            # the heartbeat timeout after which the service would call them lost.
            if _role.leader:
                time.sleep(LEAVE_SECONDS)
        except Exception:  # another process is gone: nothing left to wait for
            pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)


def scratch_root() -> Path:
    """Where a process other than 0 writes its own copy of the run, removed at the end."""
    return Path(tempfile.mkdtemp(prefix="dlrun-process-"))


def scratch_copy(run_path: Path) -> Path:
    """A copy of a run to resume (processes other than 0), taken before process 0 changes
    anything: it waits in join() until every process has joined."""
    root = scratch_root()
    copy = root / Path(run_path).name
    shutil.copytree(
        run_path, copy, symlinks=True, ignore=shutil.ignore_patterns(store.LOCK, "tensorboard")
    )
    meta = json.loads((copy / store.META).read_text())
    if meta.get("status") == str(store.RUNNING):  # process 0 resumes it right now
        meta["status"] = str(store.INTERRUPTED)
        (copy / store.META).write_text(json.dumps(meta))
    return copy


def remove_scratch(run_dir: Path) -> None:
    """A scratch run folder (and its temporary root) after a process other than 0 ends."""
    root = Path(run_dir).parent
    if root.name.startswith("dlrun-process-") and Path(tempfile.gettempdir()) in root.parents:
        shutil.rmtree(root, ignore_errors=True)
