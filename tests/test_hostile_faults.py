"""Issue 30: real faults on every command that writes, beyond test_hostile_writes; and
hidden class folders and odd paths on their way to a terminal (pattern 6).

The ext4 image of test_hostile_disk fills up for real and is remounted read-only; `ulimit -f`
(RLIMIT_FSIZE) caps the files of dlrun commands in a subprocess (EFBIG); SIGTERM and SIGHUP
reach a real process while its result is being written. Commands: export in every format,
evaluate --out, sweep (its study.db, state.json and results), train --resume, sync mlflow,
predict --out.
Every case: one `Error:` line, the command's documented exit code, no traceback, nothing
half-written (no temporary file), and nothing that was already there lost.
"""

import json
import os
import shutil
import signal
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_hostile import assert_one_clean_error, no_hang  # noqa: F401  (autouse)
from test_hostile_disk import Disk, dlrun_limited_each, meta_of
from test_hostile_output import leftovers, with_input
from test_images import folder_spec, write_folder
from typer.testing import CliRunner

from conftest import TINY_SPEC, run_dirs, start_dlrun, wait_until
from dlrun import store
from dlrun.cli import app

runner = CliRunner()
# The export formats test_hostile_writes does not run (keras and script are there).
FORMATS = ["savedmodel", "onnx", "litert"]


@pytest.fixture(scope="module")
def placed(trained) -> Path:
    return with_input(trained)


@pytest.fixture
def disk(tmp_path):
    made = Disk(tmp_path)
    yield made
    made.close()


def invoke(*args):
    return runner.invoke(app, [*map(str, args)])


def nothing_left(out: Path) -> None:
    assert not os.path.lexists(out)
    assert leftovers(out.parent) == []


def one_error_line(stderr: str, fragment: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and fragment in lines[0], stderr[-3000:]
    return lines[0]


# --- export in every format -----------------------------------------------------------------


@pytest.mark.parametrize("free_kib", [0, 3])
@pytest.mark.parametrize("fmt", [*FORMATS, "keras"])
def test_export_on_a_full_disk_is_one_line_and_leaves_nothing(placed, disk, fmt, free_kib):
    """0 KiB: the temporary folder cannot be made; 3 KiB: it is, and the model's files fill
    the disk while they are written."""
    out = disk.mount / "out" / fmt
    out.parent.mkdir()
    disk.leave_free(free_kib)
    result = invoke("export", placed, "--format", fmt, "--out", out)
    line = assert_one_clean_error(result, "No space left on device", code=1)
    assert str(out) in line
    nothing_left(out)


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_to_a_read_only_folder_is_one_line(placed, disk, fmt):
    out = disk.mount / "out" / fmt
    out.parent.mkdir()
    disk.read_only()
    result = invoke("export", placed, "--format", fmt, "--out", out)
    line = assert_one_clean_error(result, "Read-only file system", code=1)
    assert str(out) in line
    nothing_left(out)


@pytest.fixture(scope="module")
def limited(placed, trained, tmp_path_factory) -> dict:
    """Every command of this file under a file size cap (ulimit -f), each with its own cap,
    all in one real process: {name: (what it wrote to, its returncode, stdout and stderr)}."""
    root = tmp_path_factory.mktemp("limited")
    where, jobs = {}, {}
    for fmt in [*FORMATS, "script"]:
        out = root / fmt / "out" / (fmt + (".py" if fmt == "script" else ""))
        out.parent.mkdir(parents=True)
        where[fmt], jobs[fmt] = out, (300, ["export", placed, "--format", fmt, "--out", out])
    out = root / "evaluate" / "out" / "metrics.json"
    out.parent.mkdir(parents=True)
    where["evaluate"] = out
    jobs["evaluate"] = (100, ["evaluate", placed, "--out", out, "--no-save"])
    (root / "sweep").mkdir()
    runs = root / "sweep" / "runs"
    where["sweep"] = runs
    jobs["sweep"] = (20_000, ["sweep", sweep_file(root / "sweep"), "--runs-dir", runs])
    (root / "resume").mkdir()
    run, kept = run_copy(trained, root / "resume")
    where["resume"] = (run, kept)
    jobs["resume"] = (1400, ["train", "--resume", run, "--epochs", "4"])
    done = dlrun_limited_each(jobs)
    return {name: (where[name], done[name]) for name in jobs}


@pytest.mark.parametrize("fmt", [*FORMATS, "script"])
def test_export_under_a_file_size_limit_is_one_line(limited, fmt):
    out, done = limited[fmt]
    assert done.returncode == 1, done.stderr[-3000:]
    line = one_error_line(done.stderr, "File too large")
    assert str(out) in line
    nothing_left(out)


def test_evaluate_out_under_a_file_size_limit_is_one_line(limited):
    out, done = limited["evaluate"]
    assert done.returncode == 1, done.stderr[-3000:]
    one_error_line(done.stderr, "File too large")
    nothing_left(out)


def test_a_full_disk_keeps_an_earlier_export_whole(placed, disk):
    """--force over an earlier export on a full disk: the new one does not fit, the old one
    is still there, every file of it."""
    out = disk.mount / "model"
    first = invoke("export", placed, "--format", "keras", "--out", out)
    assert first.exit_code == 0, first.output
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    disk.leave_free(0)
    result = invoke("export", placed, "--format", "keras", "--out", out, "--force")
    assert_one_clean_error(result, "No space left on device", code=1)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert leftovers(out.parent) == []


# --- hidden class folders and files: skipped, and said so ---------------------------------------

HIDDEN = [".hid", "..dots", ".a\nb"]  # the last one's name holds a newline


def with_hidden(root: Path) -> Path:
    """Two classes, three hidden class folders full of images, a hidden image in a class."""
    folder = write_folder(root, classes=("cat", "dog"), per_class=8)
    for name in HIDDEN:
        write_folder(folder / name, classes=("x",), per_class=2)
    shutil.copy(folder / "cat" / "000.png", folder / "cat" / "._000.png")
    return folder


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> tuple[Path, str]:
    tmp = tmp_path_factory.mktemp("hidden")
    spec = folder_spec(tmp, with_hidden(tmp / "animals"), classes=2)
    spec.write_text(spec.read_text().replace("epochs: 2", "epochs: 1"))
    result = invoke("train", spec, "--runs-dir", tmp / "runs")
    assert result.exit_code == 0, result.output
    (run,) = run_dirs(tmp / "runs")
    return run, result.stdout


def hidden_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "hidden folder(s)" in line]


def test_training_names_the_hidden_folders_it_skips_on_one_line(image_run):
    run, stdout = image_run
    (line,) = hidden_lines(stdout)
    assert line.startswith("skipped 4 hidden folder(s) or image file(s)"), line
    for name in [".hid", "..dots", ".a\\nb", "._000.png"]:
        assert name in line, line
    assert meta_of(run)["class_names"] == ["cat", "dog"]


def test_the_run_records_what_was_skipped(image_run):
    run, stdout = image_run
    (note,) = [n for n in meta_of(run)["data_notes"] if "hidden folder(s)" in n]
    assert note == hidden_lines(stdout)[0]


def test_validate_names_the_hidden_folders_too(tmp_path):
    spec = folder_spec(tmp_path, with_hidden(tmp_path / "animals"), classes=2)
    result = invoke("validate", spec)
    assert result.exit_code == 0, result.output
    (line,) = hidden_lines(result.stdout)
    assert ".hid" in line and "..dots" in line and ".a\\nb" in line


def test_a_folder_without_hidden_entries_has_no_note(tmp_path):
    spec = folder_spec(tmp_path, write_folder(tmp_path / "animals", ("cat", "dog"), 4), "", 2)
    result = invoke("validate", spec)
    assert result.exit_code == 0 and hidden_lines(result.stdout) == [], result.output


def test_predict_over_a_folder_names_the_hidden_entries_it_skips(image_run, tmp_path):
    run, _ = image_run
    folder = with_hidden(tmp_path / "new")
    result = invoke("predict", run, folder, "--format", "csv")
    assert result.exit_code == 0, result.output
    (note,) = hidden_lines(result.stderr)
    assert note.startswith("Note: skipped 4 hidden") and "..dots" in note
    rows = result.stdout.splitlines()[1:]
    assert len(rows) == 16 and not any("/." in row for row in rows)


# --- predict's rows: a path with a newline or a control character ---------------------------

ODD = {
    "a\nb.png": "a\\nb.png",
    "\x1b[2Jc.png": "\\x1b[2Jc.png",
    "d\u202egnp.png": "d\\u202egnp.png",
}


@pytest.fixture
def odd_paths(image_run, tmp_path) -> Path:
    folder = tmp_path / "odd"
    folder.mkdir()
    source = image_run[0].parent.parent / "animals" / "cat" / "000.png"
    for name in ODD:
        shutil.copy(source, folder / name)
    shutil.copy(source, folder / "a b.png")  # the path a newline must not be confused with
    return folder


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_predict_escapes_odd_paths_in_every_format_on_a_terminal(image_run, odd_paths, fmt):
    args = [] if fmt == "table" else ["--format", fmt]
    result = invoke("predict", image_run[0], odd_paths, *args)
    assert result.exit_code == 0, result.output
    assert not any(c in result.stdout for c in "\x1b\u202e"), result.stdout
    text = result.stdout if fmt != "json" else result.stdout.replace("\\\\", "\\")
    for shown in ODD.values():
        assert shown in text, (shown, result.stdout)
    rows = [r for r in result.stdout.splitlines() if "png" in r]
    assert len(rows) == 4, result.stdout  # one line each: a newline forged no row


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_predict_out_keeps_odd_paths_exact_and_readable_back(image_run, odd_paths, tmp_path, fmt):
    import csv
    import json

    out = tmp_path / f"rows.{fmt}"
    result = invoke("predict", image_run[0], odd_paths, "--out", out)
    assert result.exit_code == 0, result.output
    with open(out, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file)) if fmt == "csv" else json.load(file)
    names = sorted(Path(row["path"]).name for row in rows)
    assert names == sorted([*ODD, "a b.png"])


# --- sweep: its study.db, its trials and its results ----------------------------------------

SWEEP = """\
base: tiny.yaml
name: s
tpe:
  n_iter: 1
  seed: 0
  space:
    model.layers.0.units: {randint: [4, 8]}
cv: 0
refit: false
"""


def sweep_file(tmp_path: Path) -> Path:
    (tmp_path / "tiny.yaml").write_text(TINY_SPEC.replace("epochs: 2", "epochs: 1"))
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    return tmp_path / "sweep.yaml"


@pytest.mark.parametrize("free_kib", [0, 4, 40])
def test_a_sweep_on_a_full_disk_is_one_line(disk, tmp_path, free_kib):
    """0 KiB: no sweep folder can be made; 4 KiB: its base.yaml or study.db does not fit;
    40 KiB: the study fills the disk. One line, never SQLAlchemy's statement; a sweep folder
    that was made says failed in its state.json, which is whole."""
    pytest.importorskip("optuna")
    runs = disk.mount / "runs"
    runs.mkdir()
    disk.leave_free(free_kib)
    result = invoke("sweep", sweep_file(tmp_path), "--runs-dir", runs)
    line = assert_one_clean_error(
        result, "No space left on device" if free_kib == 0 else "", 2 if free_kib == 0 else 1
    )
    assert "SQL" not in line and "sqlalche.me" not in line
    if free_kib:
        assert "could not be written" in line or "cannot start the sweep" in line, line
    for sweep_dir in run_dirs(runs):  # state.json, where it fitted, is whole
        if (sweep_dir / "state.json").exists():
            assert json.loads((sweep_dir / "state.json").read_text())["status"]
        assert [n for n in leftovers(sweep_dir) if n != ".lock"] == []


def test_a_sweep_under_a_file_size_limit_is_one_line(limited):
    pytest.importorskip("optuna")
    runs, done = limited["sweep"]
    assert done.returncode == 1, done.stderr[-3000:]
    line = one_error_line(done.stderr, "study.db: the sweep's study could not be written")
    assert "SQL" not in line and "sqlalche.me" not in line
    (sweep_dir,) = run_dirs(runs)
    state = json.loads((sweep_dir / "state.json").read_text())
    assert state["status"] == "failed", state


# --- train --resume: what the run had stays --------------------------------------------------


def run_copy(trained: Path, root: Path) -> tuple[Path, dict]:
    """A copy of the trained run under root, and what must survive a failed resume."""
    run = root / "runs" / trained.name
    shutil.copytree(trained, run)
    kept = {name: (run / name).read_bytes() for name in (store.HISTORY,)}
    return run, kept


def still_whole(run: Path, kept: dict) -> None:
    assert meta_of(run)["status"]  # valid JSON
    assert yaml.safe_load((run / store.CONFIG).read_text())["training"]  # whole
    assert (run / store.HISTORY).read_bytes().startswith(kept[store.HISTORY])
    for checkpoint in (run / "checkpoints").iterdir():
        with zipfile.ZipFile(checkpoint) as archive:  # a whole .keras file, never half of one
            assert archive.testzip() is None, checkpoint
    for folder in (run, run / "checkpoints"):
        assert [n for n in leftovers(folder) if n != ".lock"] == []


@pytest.mark.parametrize("free_kib", [0, 40])
def test_resume_on_a_full_disk_loses_nothing_and_resumes_later(trained, disk, free_kib):
    """0 KiB: not even the new attempt fits in meta.json; 40 KiB: the checkpoints of the new
    epochs fill the disk. One Error line; the run is as it was (or records the failure in a
    whole meta.json), and once there is room it trains on."""
    run, kept = run_copy(trained, disk.mount)
    disk.leave_free(free_kib)
    result = invoke("train", "--resume", run, "--epochs", "4")
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exc_info  # no traceback
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0], result.stderr
    still_whole(run, kept)
    disk.free_up()
    again = invoke("train", "--resume", run, "--epochs", "4")
    assert again.exit_code == 0, again.output
    assert meta_of(run)["epochs_done"] == 4


def test_resume_under_a_file_size_limit_loses_nothing(limited):
    (run, kept), done = limited["resume"]
    assert done.returncode == 1, done.stderr[-3000:]
    line = one_error_line(done.stderr, "File too large")
    still_whole(run, kept)
    if "cannot resume the run" in line:  # meta.json does not fit: the run is as it was
        assert meta_of(run)["status"] == "completed" and meta_of(run)["epochs_done"] == 2
    else:
        assert "File too large" in meta_of(run)["message"]


# --- SIGTERM and SIGHUP while a result is being written -------------------------------------


def stopped_while_writing(args: list, folder: Path, temporary: str, signum: int) -> str:
    """Run dlrun ARGS, send `signum` once its temporary file or folder appears in `folder`;
    returns stderr after checking the exit code (128 + signum) and the last line."""
    process = start_dlrun(*args)
    wait_until(lambda: [n for n in leftovers(folder) if n.startswith(temporary)], process)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, err[-3000:]
    assert "Traceback" not in err
    name = signal.Signals(signum).name
    assert err.strip().splitlines()[-1].startswith(f"Error: stopped by {name}"), err[-3000:]
    return err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_during_an_export_keeps_the_earlier_export(placed, tmp_path, signum):
    """--force over an earlier export, stopped while the new one is written and checked:
    the earlier export is there, every file of it, and no temporary folder is left."""
    out = tmp_path / "model"
    first = invoke("export", placed, "--format", "keras", "--out", out)
    assert first.exit_code == 0, first.output
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    args = ["export", placed, "--format", "savedmodel", "--out", out, "--force"]
    stopped_while_writing(args, tmp_path, ".model.", signum)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert leftovers(tmp_path) == []


def test_sighup_during_predict_leaves_no_temporary_file(placed, tmp_path):
    from sklearn import datasets

    images = np.tile(datasets.load_digits().images.astype(np.uint8), (120, 1, 1))
    np.savez(tmp_path / "many.npz", x=images)
    out = tmp_path / "rows.json"
    args = ["predict", placed, tmp_path / "many.npz", "--out", out]
    stopped_while_writing(args, tmp_path, ".rows.json.", signal.SIGHUP)
    assert not out.exists() and leftovers(tmp_path) == []


# --- sync mlflow: the run's meta.json keeps the MLflow run id ---------------------------------


def test_sync_to_a_full_disk_is_one_error_line_and_keeps_meta_json(
    trained, disk, tmp_path, monkeypatch
):
    """The runs on a full disk, MLflow's file store elsewhere: the run id cannot be kept in
    meta.json. The run's line says so, one Error line counts it, meta.json is as it was."""
    pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)  # MLflow puts a sqlite store's artifacts in ./mlruns
    run, _ = run_copy(trained, disk.mount)
    before = (run / store.META).read_bytes()
    disk.leave_free(0)
    result = invoke("sync", "mlflow", run.parent, "--uri", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exc_info
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert errors == ["Error: 1 of 1 not sent in full; see above"]  # MLflow logs its own
    assert "No space left on device" in result.stdout, result.stdout
    assert (run / store.META).read_bytes() == before
    assert [n for n in leftovers(run) if n != ".lock"] == []  # the run's lock is its own


def test_a_signal_in_the_block_stops_it_at_a_safe_point_not_inside(tmp_path):
    """SIGHUP inside library code (Keras' predict) came out as a TypeError or a SystemError
    from an import, a traceback; the stop now waits for the end of the block (or a
    stop_point between batches), and still leaves nothing."""
    from dlrun.store import output

    out, reached = tmp_path / "out.csv", []
    with pytest.raises(output.StoppedError, match="stopped by SIGHUP") as caught:  # noqa: PT012
        with output.writing(out) as tmp:
            tmp.write_text("half")
            os.kill(os.getpid(), signal.SIGHUP)
            reached.append("the library call went on to its end")
            output.stop_point()
            reached.append("never: the stop point raised")
    assert reached == ["the library call went on to its end"]
    assert caught.value.exit_code == 129
    assert not out.exists() and leftovers(tmp_path) == []
