"""Sweeps: grid and random search with k-fold cross-validation, every fit a run folder.

Owns: the sweep file (schema), the plan of fits (plan), running them on local worker processes
(workers) or Ray tasks (ray) with Ctrl-C and SIGTERM handled (execute), and cv_results, the
pivot and the refit (results).
May import: train, report, model, data, store, spec. Nothing below imports a sweep.

The names below are the sweep's interface for the CLI and the Python API.
"""

from dlrun.sweep.execute import SweepStopped, lock, pool, ray_pool, run_sweep  # noqa: F401
from dlrun.sweep.plan import Sweep, load_sweep, reopen, start  # noqa: F401
from dlrun.sweep.results import pivot, results_table  # noqa: F401
from dlrun.sweep.schema import BEST_SPEC, RESULTS, SWEEP_FILE, TRIALS  # noqa: F401
