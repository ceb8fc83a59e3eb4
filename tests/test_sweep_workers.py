"""A sweep's worker pool (dlrun.sweep.workers) starts a worker only when a task needs one."""

import multiprocessing
import os

from dlrun.sweep.workers import Workers


def _started(before: set[int]) -> set[int]:
    return {child.pid for child in multiprocessing.active_children()} - before


def test_a_pool_starts_no_more_workers_than_it_has_tasks():
    before = {child.pid for child in multiprocessing.active_children()}
    with Workers(3) as workers:
        assert list(workers.run([])) == []  # nothing to do (a completed sweep, resumed)
        assert _started(before) == set()
        results = list(workers.run([("a", os.getpid, ())]))
        assert _started(before) == {results[0][2]}  # one task, one worker: the one it ran in
        results += workers.run([("b", os.getpid, ()), ("c", os.getpid, ())])
        assert [(key, kind) for key, kind, _ in results] == [("a", "ok"), ("b", "ok"), ("c", "ok")]
        pids = {pid for _, _, pid in results}
        assert pids <= _started(before) and len(_started(before)) <= 3
    assert _started(before) == set()  # none left behind
