"""A real TensorBoard process over two real runs, checked through its HTTP API."""

import json
import signal
import socket
import subprocess
import time
import urllib.request

import pytest
import yaml
from typer.testing import CliRunner

from conftest import TINY_SPEC, start_dlrun
from dlrun.cli import app
from dlrun.spec.keys import flatten
from dlrun.store.board import exposed

runner = CliRunner()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fetch(url: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_tensorboard_serves_both_runs_scalars_and_hparams(tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_SPEC)
    runs = tmp_path / "runs"
    for units in (8, 16):
        args = ["train", str(spec), "--set", f"model.layers.0.units={units}"]
        result = runner.invoke(app, [*args, "--runs-dir", str(runs)])
        assert result.exit_code == 0, result.output
    names = sorted(p.name for p in runs.iterdir())

    port = free_port()
    process = start_dlrun("tensorboard", runs, "--port", port)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline, served = time.monotonic() + 90, []
        while time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            try:
                served = fetch(f"{base}/data/runs")
            except OSError:
                served = []
            if len([r for r in served if r.endswith("validation")]) == 2:
                break
            time.sleep(0.5)
        # Each run's curves under its own name, never RUN/tensorboard/train (issue 22).
        expected = {f"{name}{part}" for name in names for part in ("", "/train", "/validation")}
        assert set(served) == expected
        tags = fetch(f"{base}/data/plugin/scalars/tags")
        for name in names:
            assert {"epoch_loss", "epoch_accuracy"} <= set(tags[f"{name}/train"])
            assert {"epoch_loss", "epoch_accuracy"} <= set(tags[f"{name}/validation"])
        histograms = fetch(f"{base}/data/plugin/histograms/tags")
        for name in names:
            assert any(t.endswith("kernel/histogram") for t in histograms[f"{name}/train"])
        experiment = fetch(f"{base}/data/plugin/hparams/experiment", {"experimentName": ""})
        hparams = {h["name"] for h in experiment["hparamInfos"]}
        assert hparams == {"model.layers.0.units"}  # the one key the two runs differ in (issue 34)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
    assert process.returncode == 0


@pytest.mark.parametrize(
    "host, expected",
    [("127.0.0.1", False), ("localhost", False), ("::1", False), ("0.0.0.0", True), ("::", True)],
)
def test_listening_beyond_localhost_is_flagged(host, expected):
    assert exposed(host) is expected


def test_tensorboard_on_a_missing_folder(tmp_path):
    result = runner.invoke(app, ["tensorboard", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert result.stderr == f"Error: {tmp_path / 'none'}: no such runs folder\n"


@pytest.mark.parametrize("value", [8.0, 1.0e6, 3.0e9])
def test_a_constant_weight_of_large_values_has_a_histogram(value):
    """A float32 constant such as a Normalization's sample count (1e6 pixels of a few hundred
    images) or a seed generator's state: np.histogram's own float32 bins were too narrow to
    exist ("Too many bins for data range") and failed the run at its first epoch."""
    import numpy as np
    from tensorboard.util import tensor_util

    from dlrun.store.events import histograms

    summary = histograms({"count": np.full((1,), value, np.float32)})
    (entry,) = summary.value
    table = tensor_util.make_ndarray(entry.tensor)  # rows of [left, right, count]
    assert table.shape == (30, 3) and table[:, 2].sum() == 1
    (bucket,) = table[table[:, 2] == 1]
    assert bucket[0] <= value <= bucket[1]


def serve(runs, until) -> tuple[subprocess.Popen, str]:
    """`dlrun tensorboard runs` on a free port, once until(base url) holds (at most 90 s)."""
    port = free_port()
    process = start_dlrun("tensorboard", runs, "--port", port)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            if until(base):
                break
        except OSError:
            pass
        time.sleep(0.5)
    return process, base


def test_a_sweeps_trials_show_by_setting_with_only_the_keys_that_vary(tmp_path):
    """Issue 34: SWEEP/units=8,learning_rate=0.01/fold0 (not fit000-fold0), HParams columns
    only for the keys that vary (not the 80-odd keys of every config), 8 as 8 (not 8.0)."""
    (tmp_path / "tiny.yaml").write_text(TINY_SPEC.replace("epochs: 2", "epochs: 1"))
    (tmp_path / "sweep.yaml").write_text(
        "base: tiny.yaml\nname: sw\ngrid:\n  model.layers.0.units: [8, 16]\n"
        "  compile.optimizer.learning_rate: [0.01]\ncv: 2\n"
    )
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["sweep", str(tmp_path / "sweep.yaml"), "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    (sweep,) = (p.name for p in runs.iterdir())
    process, base = serve(
        runs, lambda base: len([r for r in fetch(f"{base}/data/runs") if "valid" in r]) == 5
    )
    try:
        served = set(fetch(f"{base}/data/runs"))
        settings = [
            f"{sweep}/units={u},learning_rate=0.01/fold{f}" for u in (8, 16) for f in (0, 1)
        ]
        expected = {
            f"{name}{part}"
            for name in [*settings, f"{sweep}/refit"]
            for part in ("", "/train", "/validation")
        }
        assert served == expected
        experiment = fetch(f"{base}/data/plugin/hparams/experiment", {"experimentName": ""})
        columns = {h["name"] for h in experiment["hparamInfos"]}
        configs = [flatten(yaml.safe_load(path.read_text())) for path in runs.rglob("config.yaml")]
        differ = {k for c in configs for k in c if len({repr(d.get(k)) for d in configs}) > 1}
        assert len(configs) == 5 and "model.layers.0.units" in columns
        assert columns == differ and len(columns) < 10, columns  # refit vs trials: cv, name...
        assert not columns & {"training.batch_size", "compile.loss", "seed"}
        groups = fetch(
            f"{base}/data/plugin/hparams/session_groups",
            {
                "experimentName": "",
                "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS"],
                "colParams": [],
                "startIndex": 0,
                "sliceSize": 20,
            },
        )["sessionGroups"]
        units = {g["name"]: g["hparams"]["model.layers.0.units"] for g in groups}
        assert units[settings[0]] == "8" and units[settings[2]] == "16", units
        assert all(any(m for m in g["metricValues"]) for g in groups)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
    assert process.returncode == 0


def test_each_epochs_histogram_is_of_that_epochs_weights(trained):
    """Each epoch's histograms are of the weights its records see: the last epoch's must be
    last.keras's weights, counted as np.histogram counts them, and differ from the first's."""
    import keras
    import numpy as np
    from tensorboard.util import tensor_util
    from tensorflow.compat.v1.train import summary_iterator

    tables = {}
    for path in (trained / "tensorboard" / "train").glob("events.out.tfevents.*"):
        for event in summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag.endswith("dense/kernel/histogram"):
                    tables[event.step] = tensor_util.make_ndarray(value.tensor)
    assert sorted(tables) == [0, 1]  # both epochs: the first saved by Keras, the second copied
    model = keras.models.load_model(trained / "checkpoints" / "last.keras", compile=False)
    kernel = model.layers[0].kernel.numpy().ravel()
    counts, edges = np.histogram(kernel, bins=30)
    assert np.allclose(tables[1][:, 0], edges[:-1]) and np.allclose(tables[1][:, 1], edges[1:])
    assert list(tables[1][:, 2]) == list(counts)
    assert not np.array_equal(tables[0], tables[1])


@pytest.mark.parametrize("size", [0, 1, 9, 4096, 100_003])
def test_event_records_are_framed_as_tensorboards_own_writer_frames_them(tmp_path, size):
    """dlrun frames records with google-crc32c's checksums; tensorboard's RecordWriter (its
    own pure-Python CRC-32C) must write the very same bytes, and its reader must accept them."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.summary.writer.record_writer import RecordWriter

    from dlrun.store.events import record

    data = bytes((i * 7 + size) % 256 for i in range(size))
    theirs = tmp_path / "theirs"
    with theirs.open("wb") as file:
        RecordWriter(file).write(data)
    assert record(data) == theirs.read_bytes()
    ours = tmp_path / "ours"
    ours.write_bytes(record(data) + record(b"second"))
    assert list(RawEventFileLoader(str(ours)).Load()) == [data, b"second"]
