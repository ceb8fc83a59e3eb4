import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# A suite started under nohup inherits SIGHUP ignored, and dlrun rightly leaves an ignored
# SIGHUP ignored: the tests of what SIGHUP does need its default, in here and in subprocesses.
signal.signal(signal.SIGHUP, signal.SIG_DFL)
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# pytest-xdist's workers inherit COLUMNS=80. Output that is not a terminal is 200 columns wide
# unless COLUMNS says otherwise (cli.common.make_console); width tests set COLUMNS themselves.
os.environ.pop("COLUMNS", None)
# A developer's own MLflow server is never sent the suite's runs; tests/test_tracking.py starts
# its own and sets the variable where it means to.
os.environ.pop("MLFLOW_TRACKING_URI", None)

# The JAX processes of one suite run share one compilation cache (dlrun.backend.compile_cache),
# as a user's runs do; the developer's own ~/.cache/dlrun is never touched.
os.environ.setdefault(
    "DLRUN_CACHE_DIR",
    os.path.join(
        tempfile.gettempdir(),
        f"dlrun-suite-{os.environ.get('PYTEST_XDIST_TESTRUNUID', os.getpid())}",
    ),
)

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"


def docs_pages() -> list[Path]:
    """The documentation site's pages in mkdocs.yml's order: what the docs tests read."""
    nav = re.findall(r"^  - [^:]+: (\S+\.md)$", (ROOT / "mkdocs.yml").read_text(), re.M)
    return [ROOT / "docs" / name for name in nav]


def docs_text() -> str:
    """The README and every page of the site, one after the other."""
    return "\n".join(path.read_text() for path in [ROOT / "README.md", *docs_pages()])


# A tiny, fast spec on the offline digits data: the default subject of the tests.
TINY_SPEC = """\
name: tiny
seed: 0
data:
  dataset: digits
  scale: 16
  flatten: true
model:
  layers:
    - {type: Dense, units: 16, activation: relu}
    - {type: Dense, units: 10, activation: softmax}
training:
  batch_size: 64
  epochs: 2
  validation_split: 0.2
"""


@pytest.fixture
def tiny_spec(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_SPEC)
    return path


@pytest.fixture(scope="session")
def trained_template(tmp_path_factory) -> Path:
    """One real run (two epochs) of TINY_SPEC, trained once per test process; never handed
    to a test itself (see `trained`)."""
    from typer.testing import CliRunner

    from dlrun.cli import app

    root = tmp_path_factory.mktemp("template")
    spec = root / "tiny.yaml"
    spec.write_text(TINY_SPEC)
    result = CliRunner().invoke(app, ["train", str(spec), "--runs-dir", str(root / "runs")])
    assert result.exit_code == 0, result.output
    (run,) = run_dirs(root / "runs")
    return run


@pytest.fixture(scope="module")
def trained(trained_template, tmp_path_factory) -> Path:
    """A module's own copy of the session's trained TINY_SPEC run (as a run folder someone
    sent them): what a module writes into it or damages stays in that module. The copy sits
    beside a copy of the spec, in a runs folder of its own, as the training left it."""
    import shutil

    root = tmp_path_factory.mktemp("template")
    shutil.copy2(trained_template.parent.parent / "tiny.yaml", root / "tiny.yaml")
    run = root / "runs" / trained_template.name
    shutil.copytree(trained_template, run, symlinks=True)
    return run


def run_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []


def default_sigint() -> None:
    """For subprocesses that tests stop with Ctrl-C: a shell running CI in the background
    starts its children with SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# The environment of dlrun subprocesses started by tests.
DLRUN_ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def start_dlrun(*args, env: dict | None = None, **kwargs) -> subprocess.Popen:
    """`python -m dlrun ARGS` as a real process that tests can signal, output captured."""
    return subprocess.Popen(
        [sys.executable, "-m", "dlrun", *map(str, args)],
        preexec_fn=default_sigint,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=DLRUN_ENV if env is None else env,
        **kwargs,
    )


def wait_until(predicate, process=None, timeout=120):
    """predicate()'s first true value, polled; fails if `process` exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        if process is not None:
            assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError("timed out")


def epochs_in(run: Path) -> int:
    """The epochs a run's history.csv holds so far."""
    try:
        return len((run / "history.csv").read_text().splitlines()) - 1
    except FileNotFoundError:
        return 0


def gone(pid: int) -> bool:
    """The process has exited (or is a zombie nobody has reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state == "Z"


# --- sfx-procs: shared runs ---
RAY_HEAD = """\
import time
import ray
ray.init(num_cpus=2, include_dashboard=False)
print(ray.get_runtime_context().gcs_address, flush=True)
time.sleep(24 * 3600)
"""


@pytest.fixture(scope="module")
def ray_head():
    """The address of one running Ray cluster (2 CPUs) per test module, for the tests that
    send work to a cluster with --address (a relative --runs-dir included: the cluster's
    workers run in another folder). Stopped at the module's end: idle, its processes still
    use CPU. The tests of dlrun starting and stopping its own Ray do not use it. RAY_AUTH_MODE is
    disabled in the head: a client gives the same environment (one token fewer to pass)."""
    pytest.importorskip("ray")
    head = subprocess.Popen(
        [sys.executable, "-c", RAY_HEAD],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "RAY_AUTH_MODE": "disabled"},
        start_new_session=True,  # the head's own group: Ray's processes stop with it
    )
    try:
        address = head.stdout.readline().strip()
        assert address, "the Ray head did not start"
        yield address
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)


# --- sfx2-train: one pretrained base per process ---
# The base of tests/test_transfer.py and tests/test_graph_base.py: a tiny CNN with batch
# normalization on digits.
PRETRAIN = """\
name: pretrain
data: {dataset: digits, scale: 16}
model:
  layers:
    - {type: Conv2D, filters: 4, kernel_size: 3, activation: relu, name: conv}
    - {type: BatchNormalization, name: norm}
    - {type: Flatten, name: flatten}
    - {type: Dense, units: 10, activation: softmax, name: out}
training: {epochs: 1, batch_size: 64, tensorboard: null}
"""


@pytest.fixture(scope="session")
def pretrained_template(tmp_path_factory) -> Path:
    """One completed run of PRETRAIN, trained once per test process; never handed to a test
    itself (see `pretrained_copy`)."""
    from dlrun import api

    tmp = tmp_path_factory.mktemp("pretrained")
    (tmp / "pretrain.yaml").write_text(PRETRAIN)
    outcome = api.train(tmp / "pretrain.yaml", runs_dir=tmp / "runs", verbose=False)
    assert outcome.status == "completed"
    return outcome.run_dir


def pretrained_copy(template: Path, tmp_path_factory) -> Path:
    """A module's own copy of the pretrained run, in a runs folder of its own (as `trained`)."""
    import shutil

    run = tmp_path_factory.mktemp("pretrained") / "runs" / template.name
    shutil.copytree(template, run, symlinks=True)
    return run
