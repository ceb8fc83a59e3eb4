"""Starting the N processes of a run over several (train.cluster): here, or on a Ray cluster.

`dlrun train SPEC` with `processes: N > 1` and no KERAS_DISTRIBUTION_* variables starts the same
command N times with them set (process 0 the coordinator, on a free loopback port) and watches
them: process 0's output is the run's one display; when one process dies the others are given
the time to record the fault and then stopped; Ctrl-C or SIGTERM stops process 0 (which records
`interrupted`) and then the rest. Under a scheduler (SLURM, Kubernetes) nothing here runs: the
scheduler starts the command on every host with the variables set.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dlrun.train import cluster

# After a process other than 0 dies, process 0 notices at its next collective, or within the
# heartbeat timeout, and records the run: this long, then it is stopped.
RECORD_SECONDS = cluster.HEARTBEAT_SECONDS + 45
# Once process 0 has ended, the others finish together or are stopped after this long.
FOLLOW_SECONDS = 30
# A stopped process that does not end in this long is killed.
KILL_SECONDS = 10


def free_port() -> int:
    """A loopback port nobody listens on now (the coordinator's)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment(process: int, count: int, coordinator: str) -> dict[str, str]:
    """Keras' variables that make a process one of the run's."""
    return {
        cluster.ADDRESSES: coordinator,
        cluster.COUNT: str(count),
        cluster.PROCESS: str(process),
    }


def dlrun_command(arguments: list[str]) -> list[str]:
    """This dlrun, run again with `arguments` (-P: not the current folder's dlrun)."""
    return [sys.executable, "-P", "-m", "dlrun", *arguments]


def _added_env(extra: dict[str, str]) -> dict[str, str]:
    """What a child's environment adds: Keras' variables, and this dlrun on its path."""
    import dlrun

    # The children import the dlrun this process runs, wherever it comes from.
    root = str(Path(dlrun.__file__).resolve().parent.parent)
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    return {**extra, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    return dict(os.environ, **_added_env(extra))


class _Stopped(Exception):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_stopped(signum, frame):
    raise _Stopped(signum)


def _default_sigint() -> None:
    # A launcher started with Ctrl-C ignored (a background job) must still stop process 0 by it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_local(arguments: list[str], count: int) -> int:
    """Start `dlrun ARGUMENTS` as processes 0..count-1 here and wait; process 0's exit code."""
    coordinator = f"127.0.0.1:{free_port()}"
    logs = [tempfile.TemporaryFile() for _ in range(count)]
    # The other processes' scratch copies of the run go in here, removed at the end even
    # when a process was killed before it could remove its own.
    scratch = tempfile.mkdtemp(prefix="dlrun-launch-")
    children: list[subprocess.Popen] = []
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    for signum in previous:
        signal.signal(signum, _raise_stopped)
    try:
        for process in range(count):
            leader = process == 0
            children.append(
                subprocess.Popen(
                    dlrun_command(arguments),
                    env=_child_env(
                        {
                            **environment(process, count, coordinator),
                            cluster.LOCAL_RANK: str(process),
                            **({} if leader else {"TMPDIR": scratch}),
                        }
                    ),
                    stdout=None if leader else subprocess.DEVNULL,
                    stderr=None if leader else logs[process],
                    # Their own process group: a terminal's Ctrl-C reaches only this launcher,
                    # which stops process 0 first so that it records the run as interrupted.
                    start_new_session=True,
                    preexec_fn=_default_sigint,
                )
            )
        return _watch(children, logs)
    except (_Stopped, KeyboardInterrupt) as exc:
        signum = exc.signum if isinstance(exc, _Stopped) else signal.SIGINT
        _stop(children, signum)
        code = children[0].returncode if children else None
        return code if code and code > 0 else 128 + signum
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
        for log in logs:
            log.close()
        shutil.rmtree(scratch, ignore_errors=True)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _watch(children: list[subprocess.Popen], logs) -> int:
    """Wait for the processes; a dead one gives the others a bounded time to end."""
    leader = children[0]
    others = children[1:]
    lost_since = None
    while leader.poll() is None:
        dead = [c for c in others if c.poll() not in (None, 0)]
        if dead and lost_since is None:
            lost_since = time.monotonic()
        if lost_since is not None and time.monotonic() - lost_since > RECORD_SECONDS:
            _end(leader, signal.SIGTERM)
            break
        time.sleep(0.2)
    deadline = time.monotonic() + (FOLLOW_SECONDS if leader.returncode == 0 else 0)
    for child in others:
        while child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        _end(child, signal.SIGTERM)
    for process, child in enumerate(others, start=1):
        if child.returncode not in (0, None) and leader.returncode == 0:
            how = _ended(child.returncode, logs[process])
            sys.stderr.write(f"Error: process {process} {how}\n")
            return child.returncode if child.returncode > 0 else 128 - child.returncode
    code = leader.returncode
    if code < 0:  # it could record nothing: the run shows as crashed, and resumes
        sys.stderr.write(f"Error: process 0 {_ended(code, logs[0])}; the others were stopped\n")
    return code if code >= 0 else 128 - code


def _ended(code: int, log) -> str:
    """How a process ended, with its own last Error: line if it printed one."""
    how = f"ended with exit code {code}"
    if code < 0:
        how = f"was ended by {signal.Signals(-code).name}"
    log.seek(0)
    lines = log.read().decode(errors="replace").splitlines()
    said = [line for line in lines if line.startswith("Error: ")]
    return how + (f" ({said[-1][7:307]})" if said else "")


def _end(child: subprocess.Popen, signum: int) -> None:
    """Stop a process with `signum`; SIGKILL if it has not ended in KILL_SECONDS."""
    if child.poll() is not None:
        return
    try:
        child.send_signal(signum)
        child.wait(KILL_SECONDS)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _stop(children: list[subprocess.Popen], signum: int) -> None:
    """Ctrl-C, SIGTERM, SIGHUP: process 0 first, so that it records `interrupted`, then the
    rest."""
    for stopping in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(stopping, signal.SIG_IGN)  # one stop is enough
    if children:
        leader = children[0]
        if leader.poll() is None:
            leader.send_signal(signum)
            try:
                leader.wait(RECORD_SECONDS)
            except subprocess.TimeoutExpired:
                _end(leader, signal.SIGTERM)
        for child in children[1:]:
            _end(child, signal.SIGTERM)


def _ray_address() -> str:
    """On process 0's node: its address and a port free there, for the coordinator."""
    import socket

    import ray

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return f"{ray.util.get_node_ip_address()}:{sock.getsockname()[1]}"


def _ray_process(command: list[str], extra: dict[str, str]) -> int:
    """One process of the run, in its bundle: the command with Keras' variables set. Cancelled
    (the driver's Ctrl-C), it stops the command as Ctrl-C would, and kills it if it lingers."""
    import os
    import signal
    import subprocess

    def default_sigint() -> None:  # Ray's workers ignore Ctrl-C; the command must not
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    child = subprocess.Popen(command, env=dict(os.environ, **extra), preexec_fn=default_sigint)
    try:
        while True:  # in short waits: Ray's cancel arrives between them, as KeyboardInterrupt
            try:
                return child.wait(0.5)
            except subprocess.TimeoutExpired:
                continue
    except KeyboardInterrupt:
        child.send_signal(signal.SIGINT)
        try:
            return child.wait(60)
        except subprocess.TimeoutExpired:
            child.kill()
            return child.wait()


def run_ray(arguments: list[str], count: int, resources, address: str | None) -> int:
    """Start `dlrun ARGUMENTS` as processes 0..count-1 in a Ray placement group (one bundle
    each, `resources` per process), process 0's node the coordinator; its exit code."""
    from dlrun.errors import BackendError, RunError

    try:
        import ray
    except ImportError:
        raise BackendError(
            '--executor ray needs Ray, which is not installed: pip install "dlrun[ray]"'
        ) from None
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    address = address or os.environ.get("RAY_ADDRESS") or None
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=True)
    except ConnectionError as exc:
        raise RunError(f"--address {address}: no Ray cluster there ({exc})") from None
    bundle = {"CPU": resources.cpu, **({"GPU": resources.gpu} if resources.gpu else {})}
    group = placement_group([dict(bundle) for _ in range(count)], strategy="PACK")
    try:
        ray.get(group.ready(), timeout=300)

        def placed(function, index: int, **options):
            strategy = PlacementGroupSchedulingStrategy(
                placement_group=group, placement_group_bundle_index=index
            )
            return ray.remote(function).options(
                num_cpus=resources.cpu if options else 0,
                num_gpus=resources.gpu if options else 0,
                scheduling_strategy=strategy,
                max_retries=0,
            )

        coordinator = ray.get(placed(_ray_address, 0).remote())
        runs = [
            placed(_ray_process, index, process=True).remote(
                dlrun_command(arguments), _added_env(environment(index, count, coordinator))
            )
            for index in range(count)
        ]
        try:
            codes = ray.get(runs)
        # Process 0 first, so that it can record `interrupted`; where Ray's cancel does not
        # reach it, removing the placement group below ends it and the run shows as crashed.
        except KeyboardInterrupt:
            ray.cancel(runs[0])
            ray.wait(runs[:1], timeout=RECORD_SECONDS)
            for ref in runs[1:]:
                ray.cancel(ref)
            ray.wait(runs[1:], num_returns=len(runs) - 1, timeout=KILL_SECONDS)
            return 130
        return codes[0] or next((code for code in codes if code), 0)
    finally:
        remove_placement_group(group)
        ray.shutdown()
