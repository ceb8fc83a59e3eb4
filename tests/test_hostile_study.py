"""Issue 30, pattern 1: the search's study.db is a file dlrun did not necessarily write.

sweep.study opens it only as a regular file of the sweep folder, never through a link, only
when it is an SQLite file holding dlrun's Optuna study of this very sweep (its identity), and
turns Optuna's and SQLAlchemy's exceptions into one line. A fit folder reused by number is
scored only when its config.yaml is the setting the sweep gives it.
"""

import os
import sqlite3
from pathlib import Path

import pytest
import yaml
from test_hostile import assert_one_clean_error, no_hang  # noqa: F401  (autouse)
from typer.testing import CliRunner

from conftest import TINY_SPEC
from dlrun.cli import app

optuna = pytest.importorskip("optuna")

from dlrun.sweep import plan as planning  # noqa: E402
from dlrun.sweep.study import Study, StudyError, fit_mismatch  # noqa: E402

runner = CliRunner()
SPACE = {"model.layers.0.units": {"randint": [4, 32]}}


def study(path: Path, identity: str | None = "this", **kwargs) -> Study:
    return Study("tpe", SPACE, 0, path=path, sweep_identity=identity, **kwargs)


def made(path: Path, identity: str = "this", trials: int = 2) -> Path:
    """A real study.db of `trials` finished trials."""
    found = study(path, identity)
    for number in range(trials):
        trial, _ = found.ask()
        found.tell(trial, 0.1 * number)
    del found
    with sqlite3.connect(path) as connection:  # everything into the file itself, none in -wal
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    return path


# --- the file ------------------------------------------------------------------------------


def test_a_symlinked_study_is_never_followed(tmp_path):
    outside = tmp_path / "outside.db"
    outside.write_bytes(b"")
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "study.db").symlink_to(outside)
    with pytest.raises(StudyError, match="is a symlink"):
        study(sweep / "study.db")
    assert outside.read_bytes() == b""  # Optuna wrote nothing through the link


def test_a_dangling_symlink_makes_nothing_where_it_points(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "study.db").symlink_to(tmp_path / "made-elsewhere.db")
    with pytest.raises(StudyError, match="is a symlink"):
        study(sweep / "study.db")
    assert not (tmp_path / "made-elsewhere.db").exists()


@pytest.mark.parametrize("side", ["-wal", "-shm", "-journal"])
def test_a_symlinked_sqlite_side_file_is_refused(tmp_path, side):
    outside = tmp_path / "outside"
    outside.write_bytes(b"")
    (tmp_path / f"study.db{side}").symlink_to(outside)
    with pytest.raises(StudyError, match="symlink"):
        study(tmp_path / "study.db")
    assert outside.read_bytes() == b""


def test_a_folder_at_the_study_is_one_line(tmp_path):
    (tmp_path / "study.db").mkdir()
    with pytest.raises(StudyError, match="not a regular file"):
        study(tmp_path / "study.db")


def test_a_fifo_at_the_study_does_not_hang(tmp_path):
    os.mkfifo(tmp_path / "study.db")
    with pytest.raises(StudyError, match="not a regular file"):
        study(tmp_path / "study.db")


def test_another_programs_sqlite_is_left_as_it_was(tmp_path):
    path = tmp_path / "study.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE notes (text TEXT)")
        connection.execute("INSERT INTO notes VALUES ('mine')")
    connection.close()
    before = path.read_bytes()
    with pytest.raises(StudyError, match="another program"):
        study(path)
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "content", [b"not a database at all", b"\x00" * 4096, b"SQLite format 3\x00" + b"\xff" * 200]
)
def test_a_file_that_is_not_a_study_is_one_line(tmp_path, content):
    path = tmp_path / "study.db"
    path.write_bytes(content)
    with pytest.raises(StudyError):
        study(path)
    assert path.read_bytes() == content


@pytest.mark.parametrize("keep", [4096, 8192, 20000])
def test_a_truncated_study_is_one_line(tmp_path, keep):
    path = made(tmp_path / "study.db")
    data = path.read_bytes()
    assert len(data) > keep
    for side in ("-wal", "-shm"):
        (tmp_path / f"study.db{side}").unlink(missing_ok=True)
    path.write_bytes(data[:keep])
    with pytest.raises(StudyError):
        found = study(path)
        found.trials()  # a damaged page may show only when the trials are read


def test_an_empty_file_is_a_new_study(tmp_path):
    path = tmp_path / "study.db"
    path.write_bytes(b"")
    assert study(path).trials() == []


# --- whose study -----------------------------------------------------------------------------


def test_the_same_sweep_reopens_its_study(tmp_path):
    path = made(tmp_path / "study.db")
    assert len(study(path).trials()) == 2


def test_the_study_of_another_sweep_is_refused(tmp_path):
    path = made(tmp_path / "study.db", identity="another")
    with pytest.raises(StudyError, match="the study of another sweep"):
        study(path, identity="this")


def test_a_study_with_trials_and_no_identity_is_refused(tmp_path):
    path = tmp_path / "study.db"
    found = study(path, identity=None)
    trial, _ = found.ask()
    found.tell(trial, 1.0)
    with pytest.raises(StudyError, match="no sweep identity"):
        study(path, identity="this")


def test_a_study_that_minimises_is_refused(tmp_path):
    path = tmp_path / "study.db"
    optuna.create_study(storage=f"sqlite:///{path}", study_name="dlrun", direction="minimize")
    with pytest.raises(StudyError):
        study(path)


def test_a_database_of_other_studies_is_refused(tmp_path):
    path = tmp_path / "study.db"
    optuna.create_study(storage=f"sqlite:///{path}", study_name="someone-else")
    with pytest.raises(StudyError, match="studies dlrun did not make"):
        study(path)


# --- fits reused by number ---------------------------------------------------------------------


def fit_folder(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "fit000"
    folder.mkdir()
    (folder / "config.yaml").write_text(text)
    return folder


def test_a_fit_whose_config_is_its_setting_is_scored(tmp_path):
    spec = yaml.safe_dump({"model": {"layers": [{"units": 8}]}, "name": "a"})
    assert fit_mismatch(fit_folder(tmp_path, spec), spec) is None


def test_a_fit_folder_of_another_setting_is_named(tmp_path):
    ours = yaml.safe_dump({"model": {"layers": [{"units": 8}]}})
    theirs = yaml.safe_dump({"model": {"layers": [{"units": 64}]}})
    message = fit_mismatch(fit_folder(tmp_path, theirs), ours)
    assert "model.layers.0.units: 64 there, 8 here" in message and "not scored" in message


def test_a_fit_folder_whose_config_is_a_symlink_is_named(tmp_path):
    folder = tmp_path / "fit000"
    folder.mkdir()
    (tmp_path / "elsewhere.yaml").write_text("a: 1\n")
    (folder / "config.yaml").symlink_to(tmp_path / "elsewhere.yaml")
    assert "symlink" in fit_mismatch(folder, "a: 1\n")


def test_a_fit_folder_with_a_damaged_config_is_named(tmp_path):
    assert "damaged" in fit_mismatch(fit_folder(tmp_path, "a: [1,\n"), "a: 1\n")


def test_a_fit_folder_without_config_is_new(tmp_path):
    (tmp_path / "fit000").mkdir()
    assert fit_mismatch(tmp_path / "fit000", "a: 1\n") is None


# --- through `dlrun sweep --resume` -------------------------------------------------------------

SWEEP = """\
base: tiny.yaml
name: s
tpe:
  n_iter: 2
  seed: 0
  space:
    model.layers.0.units: {randint: [4, 32]}
cv: 0
refit: false
"""


def started(tmp_path: Path, sweep: str = SWEEP) -> Path:
    (tmp_path / "tiny.yaml").write_text(TINY_SPEC.replace("epochs: 2", "epochs: 1"))
    (tmp_path / "sweep.yaml").write_text(sweep)
    _, sweep_dir = planning.start(tmp_path / "sweep.yaml", tmp_path / "runs")
    return sweep_dir


def test_resume_through_a_symlinked_study_is_one_line(tmp_path):
    sweep_dir = started(tmp_path)
    outside = tmp_path / "outside.db"
    outside.write_bytes(b"")
    (sweep_dir / "study.db").symlink_to(outside)
    result = runner.invoke(app, ["sweep", "--resume", str(sweep_dir)])
    assert_one_clean_error(result, "is a symlink")
    assert outside.read_bytes() == b""
    assert not (sweep_dir / "trials").exists() or not any((sweep_dir / "trials").iterdir())


def test_resume_with_another_sweeps_study_is_one_line(tmp_path):
    sweep_dir = started(tmp_path)
    made(sweep_dir / "study.db", identity="another")
    before = (sweep_dir / "study.db").read_bytes()
    result = runner.invoke(app, ["sweep", "--resume", str(sweep_dir)])
    assert_one_clean_error(result, "the study of another sweep")
    assert not (sweep_dir / "trials").exists() or not any((sweep_dir / "trials").iterdir())
    assert (sweep_dir / "study.db").read_bytes() == before


def test_resume_with_another_programs_database_is_one_line(tmp_path):
    sweep_dir = started(tmp_path)
    with sqlite3.connect(sweep_dir / "study.db") as connection:
        connection.execute("CREATE TABLE notes (text TEXT)")
    connection.close()
    result = runner.invoke(app, ["sweep", "--resume", str(sweep_dir)])
    assert_one_clean_error(result, "another program")


GRID = """\
base: tiny.yaml
name: g
grid:
  model.layers.0.units: [8]
cv: 0
refit: false
"""


def test_a_fit_folder_of_another_setting_is_not_scored(tmp_path):
    """A grid sweep resumed with trials/fit000 trained on units 64 (another sweep's): the
    fit is recorded failed, naming the difference; its score is never paired with units 8."""
    sweep_dir = started(tmp_path, GRID)
    fit = sweep_dir / "trials" / "fit000"
    fit.mkdir(parents=True)
    sweep = planning.reopen(sweep_dir)
    (row,) = sweep.fits()
    spec = yaml.safe_load(sweep.fit_spec(row).dump())
    spec["model"]["layers"][0]["units"] = 64
    (fit / "config.yaml").write_text(yaml.safe_dump(spec))
    (fit / "meta.json").write_text('{"status": "completed", "name": "g-trial"}\n')
    result = runner.invoke(app, ["sweep", "--resume", str(sweep_dir)])
    assert "Traceback" not in result.output
    assert "fit000: its config.yaml is not the setting this sweep gives it" in result.output
    assert "model.layers.0.units: 64 there, 8 here" in result.output
    rows = (sweep_dir / "cv_results.csv").read_text().splitlines()
    assert rows[1].startswith("8,,,") and rows[1].endswith(",failed"), rows
    assert result.stderr.splitlines()[-1] == (
        "Error: no fit finished with a score; see the trials' meta.json"
    )
    assert (fit / "config.yaml").read_text() == yaml.safe_dump(spec)  # left as it was
