"""The run store: every run is a folder that describes itself.

Owns: the folder's layout and file names (layout), atomic writes and the one guarded reader
(files), the training lock and held signals (lock), reading runs back (reading), creating and
writing a run (folder), a result file at a path the user gives (output), TensorBoard event
files (events) and launching TensorBoard (board).
May import: dlrun.spec.names, dlrun.errors. No TensorFlow, pandas or pydantic: `dlrun runs`
and `dlrun show` read runs through this package alone.

The names below are the store's public interface, used as `store.BEST`, `store.open_run(...)`;
events and board are imported by name where they are needed.
"""

from dlrun.store import output  # noqa: F401  (a result file at a user-given path)
from dlrun.store.files import (  # noqa: F401
    atomic_path,
    config_of,
    history_text,
    inside,
    jsonable,
    read_bytes,
    read_history,
    read_json,
    read_text,
    safe_file,
    safe_folder,
    saving,
    sha256,
    within,
    write_json,
    write_new_json,
    write_text,
)
from dlrun.store.folder import (  # noqa: F401
    RunFolder,
    create_run_dir,
    remove_partial_files,
    remove_unstarted,
)
from dlrun.store.layout import (  # noqa: F401
    ATTACKS,
    BEST,
    CHECKPOINTS,
    CODE,
    COMPLETED,
    CONFIG,
    CONFUSION_PLOT,
    CRASHED,
    DIVERGED,
    EVALUATIONS,
    EXPORTS,
    FAILED,
    GRAPH,
    HISTORY,
    HISTORY_PLOT,
    INTERRUPTED,
    LAST,
    LOCK,
    MAX_READ_BYTES,
    META,
    METRICS,
    MODEL_PNG,
    PLOTS,
    PREDICTED_PLOT,
    PRUNED,
    RUNNING,
    SIGTERM_EXIT,
    SUMMARY,
    SWEEP_STATE,
    TENSORBOARD,
    TIMESTAMP,
    UMASK,
    WRITTEN_FOLDERS,
    Status,
    adversarial_plot,
    check_name,
    check_runs_root,
    onnx_export,
    onnx_record,
    runs_root,
)
from dlrun.store.lock import (  # noqa: F401
    lock_held,
    signals_held,
    take_lock,
)
from dlrun.store.reading import (  # noqa: F401
    Run,
    find_runs,
    list_runs,
    open_run,
    run_files,
)
