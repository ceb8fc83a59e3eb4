"""MLflow tracking against a real `mlflow server` (SQLite store, artifacts in a temporary
folder): runs and sweeps read back with MlflowClient, `dlrun sync mlflow`, and a server that
goes away in the middle of a run."""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import TINY_SPEC, run_dirs
from dlrun import store
from dlrun.cli import app
from dlrun.spec.keys import flatten
from dlrun.spec.uris import without_credentials

pytest.importorskip("mlflow", reason='the mlflow extra: pip install "dlrun[mlflow]"')
runner = CliRunner()
PASSWORD = "s3cret-pw"  # in the URI the spec names: never written into a run nor printed
DEAD = "http://127.0.0.1:9"  # nothing listens there: a spec's own URI wins over this


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`mlflow server` on a free loopback port; stopped and started again on the same port and
    store by the test of a server that goes away."""

    def __init__(self, root: Path):
        self.root, self.port = root, _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self) -> None:
        command = [
            *(sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1"),
            *("--port", str(self.port), "--workers", "1"),
            *("--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}"),
            *("--artifacts-destination", str(self.root / "artifacts")),
        ]
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - the server's for its life
        # no job runner (its worker pool is for GenAI jobs); its own process group, so that
        # stop() ends the uvicorn process under it too
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.process = subprocess.Popen(
            command, stdout=log, stderr=log, cwd=self.root, env=env, start_new_session=True
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.root / "server.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise AssertionError("mlflow server did not start in 180 s")

    def stop(self) -> None:
        """The server and the processes it started (its group), gone: nothing answers."""
        if self.process is None:
            return
        group = self.process.pid  # start_new_session: the group is the server's own
        os.killpg(group, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
        self.process.wait()
        self.process = None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = Server(tmp_path_factory.mktemp("mlflow"))
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server):
    from mlflow.tracking import MlflowClient

    return MlflowClient(server.uri)


def _with_password(uri: str) -> str:
    return uri.replace("http://", f"http://alice:{PASSWORD}@")


def _spec(tmp_path: Path, extra: str = "", name: str = "tiny") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(TINY_SPEC.replace("name: tiny", f"name: {name}") + extra)
    return path


def _mlflow_run(client, run_dir: Path):
    record = store.open_run(run_dir).meta["mlflow"]
    return client.get_run(record["run_id"])


def _history_equal(client, run_id: str, run_dir: Path) -> None:
    rows = store.read_history(run_dir)
    assert rows
    for key in rows[0]:
        if key == "epoch":
            continue
        points = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        assert points == [(row["epoch"], pytest.approx(row[key])) for row in rows], key


def _artifacts(client, run_id: str, folder: str | None = None) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, folder)}


def _runs_of(client, run_dir: Path) -> list:
    """Every MLflow run, in any experiment, whose dlrun.path is this run folder."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    path = str(run_dir.resolve())
    return [
        run
        for run in client.search_runs(experiments, max_results=1000)
        if run.data.tags.get("dlrun.path") == path
    ]


@pytest.fixture(scope="module")
def tracked(server, tmp_path_factory):
    """A run whose spec names the server (with a password in its URI) and an experiment,
    trained while $MLFLOW_TRACKING_URI points at nothing: the spec wins."""
    root = tmp_path_factory.mktemp("tracked")
    extra = f"tracking:\n  mlflow: {{uri: '{_with_password(server.uri)}', experiment: team-exp}}\n"
    spec = _spec(root, extra)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", DEAD)
        result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(root / "runs")])
    assert result.exit_code == 0, result.output
    (run_dir,) = run_dirs(root / "runs")
    return run_dir, result.output


def test_a_tracked_run_is_in_mlflow_as_it_is_on_disk(tracked, client):
    run_dir, _ = tracked
    found = _mlflow_run(client, run_dir)
    assert client.get_experiment(found.info.experiment_id).name == "team-exp"
    assert found.info.status == "FINISHED"
    assert found.info.run_name == run_dir.name
    run = store.open_run(run_dir)
    # the same dotted keys compare shows, every one of them, strings as they are
    expected = {
        k: v if isinstance(v, str) else json.dumps(v) for k, v in flatten(run.config).items()
    }
    assert found.data.params == expected
    assert found.data.params["model.layers.0.units"] == "16"
    _history_equal(client, found.info.run_id, run_dir)
    test = run.metrics["test"]
    assert {f"test_{k}": pytest.approx(v) for k, v in test.items()} == {
        k: v for k, v in found.data.metrics.items() if k.startswith("test_")
    }
    tags = found.data.tags
    assert tags["dlrun.run"] == run_dir.name
    assert tags["dlrun.status"] == "completed"
    assert tags["dlrun.backend"] == "tensorflow"
    assert tags["dlrun.seed"] == "0"
    assert tags["dlrun.path"] == str(run_dir.resolve())
    assert tags["dlrun.git_commit"] == (run.meta.get("git_commit") or "")
    files = _artifacts(client, found.info.run_id)
    assert {"config.yaml", "summary.txt", "plots"} <= files
    assert "plots/history.png" in _artifacts(client, found.info.run_id, "plots")


def test_the_uris_password_is_never_written_or_printed(tracked, server):
    run_dir, output = tracked
    assert PASSWORD not in output
    for path in store.run_files(run_dir):
        assert PASSWORD.encode() not in path.read_bytes(), path
    config = yaml.safe_load((run_dir / store.CONFIG).read_text())
    assert config["tracking"]["mlflow"]["uri"] == server.uri
    assert store.open_run(run_dir).meta["mlflow"]["uri"] == server.uri


def test_without_credentials():
    assert without_credentials("http://u:p@host:5000/x?token=abc") == "http://host:5000/x"
    assert without_credentials("https://host/mlflow") == "https://host/mlflow"
    assert without_credentials("databricks") == "databricks"


def test_a_resumed_run_goes_on_in_the_same_mlflow_run(server, client, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    spec = _spec(tmp_path, name="resumed")
    runs = tmp_path / "runs"
    first = runner.invoke(
        app, ["train", str(spec), "--runs-dir", str(runs), "--set", "training.epochs=1"]
    )
    assert first.exit_code == 0, first.output
    (run_dir,) = run_dirs(runs)
    before = _mlflow_run(client, run_dir)
    again = runner.invoke(app, ["train", "--resume", str(run_dir), "--epochs", "2"])
    assert again.exit_code == 0, again.output
    after = _mlflow_run(client, run_dir)
    assert after.info.run_id == before.info.run_id
    assert after.info.status == "FINISHED"
    _history_equal(client, after.info.run_id, run_dir)
    assert len(_runs_of(client, run_dir)) == 1


SWEEP = """\
base: tiny.yaml
name: tracked-sweep
grid:
  model.layers.0.units: [8, 16]
cv: 2
workers: 1
"""


def test_a_sweep_is_a_parent_run_with_a_child_per_fit(server, client, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", DEAD)  # the base spec's own server wins
    tracking = f"tracking:\n  mlflow: {{uri: '{_with_password(server.uri)}'}}\n"
    _spec(tmp_path, "", "tiny").write_text(
        TINY_SPEC.replace("name: tiny", "name: swept").replace("epochs: 2", "epochs: 1") + tracking
    )
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["sweep", str(tmp_path / "sweep.yaml"), "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    (sweep_dir,) = run_dirs(runs)
    assert PASSWORD not in result.output
    for path in store.run_files(sweep_dir):  # base.yaml, best.yaml, every fit's files
        assert PASSWORD.encode() not in path.read_bytes(), path
    state = store.read_json(sweep_dir / store.SWEEP_STATE)
    parent = client.get_run(state["mlflow"]["run_id"])
    assert client.get_experiment(parent.info.experiment_id).name == "swept"
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == sweep_dir.name
    assert {"cv_results.csv", "best.yaml"} <= _artifacts(client, parent.info.run_id)
    fits = sorted(p for p in (sweep_dir / "trials").iterdir() if p.is_dir())
    assert len(fits) == 4
    experiment = parent.info.experiment_id
    children = client.search_runs(
        [experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'", max_results=100
    )
    assert sorted(c.info.run_name for c in children) == sorted([p.name for p in fits] + ["refit"])
    for fit in [*fits, sweep_dir / "refit"]:
        child = _mlflow_run(client, fit)
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == "FINISHED"
        _history_equal(client, child.info.run_id, fit)
    # the fits trained with tracking off: no MLflow run of their own beside their child run
    assert len(client.search_runs([experiment], max_results=100)) == 1 + 4 + 1
    # syncing the sweep again updates it: still one parent and five children
    synced = runner.invoke(app, ["sync", "mlflow", str(runs)])
    assert synced.exit_code == 0, synced.output
    assert "updated" in synced.output
    assert len(client.search_runs([experiment], max_results=100)) == 1 + 4 + 1
    # and so does resuming it: the same parent run
    resumed = runner.invoke(app, ["sweep", "--resume", str(sweep_dir)])
    assert resumed.exit_code == 0, resumed.output
    assert store.read_json(sweep_dir / store.SWEEP_STATE)["mlflow"] == state["mlflow"]
    assert len(client.search_runs([experiment], max_results=100)) == 1 + 4 + 1


def test_sync_sends_existing_runs_once(server, client, trained, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    runs = tmp_path / "runs"
    shutil.copytree(trained, runs / trained.name)
    run_dir = runs / trained.name
    assert "mlflow" not in store.open_run(run_dir).meta
    first = runner.invoke(app, ["sync", "mlflow", str(runs), "--uri", server.uri])
    assert first.exit_code == 0, first.output
    assert f"{run_dir.name}: created MLflow run" in first.output
    second = runner.invoke(app, ["sync", "mlflow", str(runs), "--uri", server.uri])
    assert second.exit_code == 0, second.output
    assert f"{run_dir.name}: updated MLflow run" in second.output
    (found,) = _runs_of(client, run_dir)
    assert found.info.run_id == store.open_run(run_dir).meta["mlflow"]["run_id"]
    assert found.info.status == "FINISHED"
    _history_equal(client, found.info.run_id, run_dir)  # no step sent twice


def test_sync_without_a_server_is_one_error_line(trained, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    runs = tmp_path / "runs"
    shutil.copytree(trained, runs / trained.name)
    result = runner.invoke(app, ["sync", "mlflow", str(runs)])
    assert result.exit_code == 1
    assert "not sent: no server (give --uri or set MLFLOW_TRACKING_URI)" in result.output


def test_a_tracking_section_without_a_uri_is_refused_before_any_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec = _spec(tmp_path, "tracking:\n  mlflow: {experiment: x}\n")
    result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "Error: tracking.mlflow: no server to send the run to" in result.output
    assert not (tmp_path / "runs").exists()


def test_a_missing_extra_is_one_line_naming_it(tmp_path):
    spec = _spec(tmp_path)
    code = (
        "import sys; sys.modules['mlflow'] = None\n"
        "from dlrun.cli import main\n"
        f"sys.argv = ['dlrun', 'train', {str(spec)!r}, '--runs-dir', {str(tmp_path / 'runs')!r}]\n"
        "main()\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": DEAD}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        'Error: MLflow tracking needs the mlflow extra: pip install "dlrun[mlflow]"'
    )
    assert not (tmp_path / "runs").exists()


def test_an_interrupted_run_is_killed_in_mlflow(server, client, tmp_path, monkeypatch):
    import keras
    from rich.console import Console

    from dlrun.spec.loading import load_spec
    from dlrun.train import runner as training

    class CtrlC(keras.callbacks.Callback):  # as Ctrl-C lands after the first epoch
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    spec = load_spec(_spec(tmp_path, name="stopped"))
    outcome = training.train(
        spec, tmp_path / "runs", Console(quiet=True), extra_callbacks=(CtrlC(),)
    )
    assert outcome.status == store.INTERRUPTED
    found = _mlflow_run(client, outcome.run_dir)
    assert found.info.status == "KILLED"
    assert found.data.tags["dlrun.status"] == "interrupted"
    _history_equal(client, found.info.run_id, outcome.run_dir)


def test_a_server_that_never_answers_costs_one_warning(tmp_path, monkeypatch):
    """A socket that takes connections and never answers: each request ends at MLflow's
    timeout (1 s here; dlrun's default is 10 s), once, and the run trains on."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{silent.getsockname()[1]}")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        spec = _spec(tmp_path)
        result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("Warning: MLflow")]
    assert len(warnings) == 1, result.output
    (run_dir,) = run_dirs(tmp_path / "runs")
    assert store.open_run(run_dir).status == store.COMPLETED
    assert "mlflow" not in store.open_run(run_dir).meta  # no MLflow run was made


def test_a_server_gone_mid_run_costs_one_warning_and_sync_catches_up(
    server, client, tmp_path, monkeypatch, capsys
):
    """Last in this module: it stops the server and starts it again."""
    import keras
    from rich.console import Console

    from dlrun.spec.loading import load_spec
    from dlrun.train import runner as training

    class StopServer(keras.callbacks.Callback):  # after the first epoch was sent
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                server.stop()

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    spec = load_spec(_spec(tmp_path, name="gone"))
    spec.training.epochs = 3
    try:
        outcome = training.train(
            spec, tmp_path / "runs", Console(quiet=True), extra_callbacks=(StopServer(),)
        )
    finally:
        server.start()  # on the same port and store
    assert outcome.status == store.COMPLETED
    run_dir = outcome.run_dir
    assert len(store.read_history(run_dir)) == 3
    assert (run_dir / store.HISTORY_PLOT).exists()
    warnings = [line for line in capsys.readouterr().err.splitlines() if "MLflow" in line]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"Warning: MLflow at {server.uri}: ")
    assert warnings[0].endswith(f"send it later with: dlrun sync mlflow {tmp_path / 'runs'}")
    record = store.open_run(run_dir).meta["mlflow"]
    assert client.get_run(record["run_id"]).info.status == "RUNNING"  # it never heard the end
    assert len(client.get_metric_history(record["run_id"], "loss")) == 1

    synced = runner.invoke(app, ["sync", "mlflow", str(tmp_path / "runs")])
    assert synced.exit_code == 0, synced.output
    (found,) = _runs_of(client, run_dir)
    assert found.info.run_id == record["run_id"]
    assert found.info.status == "FINISHED"
    _history_equal(client, found.info.run_id, run_dir)
