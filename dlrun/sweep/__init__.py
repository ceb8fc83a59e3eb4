"""Sweeps: grid, random, TPE and CMA-ES search with k-fold cross-validation and repeats over
seeds, pruning, every fit a run folder.

Owns: the sweep file (schema), the plan of fits (plan), Optuna's study, asked and told in the
parent (search), the pruning verdicts between parent and fit (verdicts), running the fits on
local worker processes (workers) or Ray tasks (ray) with Ctrl-C and SIGTERM handled (execute),
and cv_results, the pivot and the refit (results).
May import: train, report, model, data, store, spec. Nothing below imports a sweep.

The names below are the sweep's interface for the CLI and the Python API.
"""

from dlrun.sweep.execute import (  # noqa: F401
    SweepStopped,
    lock,
    pool,
    ray_pool,
    recorded,
    run_sweep,
)
from dlrun.sweep.plan import Sweep, load_sweep, reopen, start  # noqa: F401
from dlrun.sweep.results import TOP, pivot, results_table  # noqa: F401
from dlrun.sweep.schema import (  # noqa: F401
    BEST_SPEC,
    IMPORTANCES,
    RESULTS,
    SEARCH_PLOT,
    STUDY,
    SWEEP_FILE,
    TRIALS,
)
