"""Received runs, sweeps and checkpoints: what someone else's folder may hold, each with its
outcome. Issue 23, items 11 (a resume after the last epoch, a stopped refit), 12, 13 and 14.

One real run (two epochs) is trained once for the module; every case damages a copy of it.
A copy marked `interrupted` after its last epoch resumes with no epoch left to train, so the
cases that resume cost a model load, not a fit.
"""

import json
import os
import re
import shutil
import zipfile
from pathlib import Path

import pytest
import yaml
from PIL import Image
from test_hostile import (
    assert_one_clean_error,
    edit_json,
    no_hang,  # noqa: F401  (autouse: a FIFO fails the test instead of hanging it)
    replace_with_fifo,
    replace_with_link,
    zip_bomb,
)
from typer.testing import CliRunner

from conftest import ROOT, TINY_SPEC
from dlrun import store
from dlrun.cli import app

runner = CliRunner()


@pytest.fixture
def received(trained, tmp_path) -> Path:
    """root/bad, a copy to damage, and root/other, another run to point at."""
    root = tmp_path / "received"
    root.mkdir()
    shutil.copytree(trained, root / "bad")
    shutil.copytree(trained, root / "other")
    edit_json(root / "bad" / store.META, status="interrupted")
    return root


def many_entries(path: Path) -> None:
    """A .keras archive of 1,001 tiny entries: more than any model file holds."""
    path.unlink()
    with zipfile.ZipFile(path, "w") as archive:
        for index in range(1001):
            archive.writestr(f"e{index}", b"")


def link_checkpoints_to(run: Path, other: Path) -> None:
    shutil.rmtree(run / store.CHECKPOINTS)
    (run / store.CHECKPOINTS).symlink_to(other / store.CHECKPOINTS)


# --- item 12: every checkpoint read goes through the one guarded loader ----------------------

# case -> (damage(run, other), fragment of the one Error line)
CHECKPOINTS = {
    "best-fifo": (lambda r, o: replace_with_fifo(r / store.BEST), "best.keras: is not a regular"),
    "last-fifo": (lambda r, o: replace_with_fifo(r / store.LAST), "last.keras: is not a regular"),
    "best-links-to-another-run": (
        lambda r, o: replace_with_link(r / store.BEST, str(o / store.BEST)),
        "best.keras: is a symlink; refusing to read out of the run bad",
    ),
    "last-links-to-dev-zero": (
        lambda r, o: replace_with_link(r / store.LAST, "/dev/zero"),
        "last.keras: is a symlink",
    ),
    "checkpoints-folder-links-to-another-run": (
        link_checkpoints_to,
        "checkpoints: is a symlink; refusing to read out of the run bad",
    ),
    "best-inflates": (lambda r, o: zip_bomb(r / store.BEST), "expands to 200 MiB in 1 entries"),
    "last-inflates": (lambda r, o: zip_bomb(r / store.LAST), "expands to 200 MiB in 1 entries"),
    "best-many-entries": (lambda r, o: many_entries(r / store.BEST), "0 MiB in 1001 entries"),
    "best-a-folder": (
        lambda r, o: ((r / store.BEST).unlink(), (r / store.BEST).mkdir()),
        "best.keras: is not a regular file",
    ),
}


@pytest.mark.parametrize("case", sorted(CHECKPOINTS))
def test_resume_refuses_a_damaged_checkpoint_before_running(case, received):
    """Refused before meta.json says running again: the status stays interrupted."""
    damage, fragment = CHECKPOINTS[case]
    damage(received / "bad", received / "other")
    result = runner.invoke(app, ["train", "--resume", str(received / "bad")])
    assert_one_clean_error(result, fragment, code=1)
    assert json.loads((received / "bad" / store.META).read_text())["status"] == "interrupted"


@pytest.mark.parametrize("case", ["best-fifo", "best-inflates", "best-links-to-another-run"])
def test_features_reads_the_checkpoint_through_the_guarded_loader(case, received):
    damage, fragment = CHECKPOINTS[case]
    damage(received / "bad", received / "other")
    out = received / "f.npz"
    result = runner.invoke(
        app, ["features", str(received / "bad"), "--layer", "0", "--out", str(out)]
    )
    assert_one_clean_error(result, fragment.replace(" out of the run bad", ""), code=1)
    assert not out.exists()


def test_no_module_but_the_checkpoint_owner_calls_keras_load_model():
    """dlrun.model.checkpoints.load_model is the one way a model file is read."""
    callers = [
        path.relative_to(ROOT)
        for path in (ROOT / "dlrun").rglob("*.py")
        if re.search(r"(models|saving)\.load_model\(", path.read_text())
    ]
    assert callers == [Path("dlrun/model/checkpoints.py")]


# --- item 11: a resume after the last epoch's checkpoint -------------------------------------


def test_a_resume_after_the_last_epoch_keeps_the_best_epoch(received, trained):
    """Killed after the last checkpoint, before metrics.json: the resume trains no epoch,
    and its metrics.json still names the best epoch, its value and the metric directions."""
    before = json.loads((trained / store.METRICS).read_text())
    (received / "bad" / store.METRICS).unlink()
    result = runner.invoke(app, ["train", "--resume", str(received / "bad")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((received / "bad" / store.METRICS).read_text())
    for key in ("best_epoch", "best_value", "directions", "monitor", "test"):
        assert metrics[key] == before[key], key
    # Over both attempts (issue 22): the first trained 2 epochs of 1149 samples, this one none.
    assert metrics["train_seconds"] >= before["train_seconds"]
    assert metrics["samples_per_second"] == pytest.approx(1149 * 2 / metrics["train_seconds"], 1e-3)
    assert json.loads((received / "bad" / store.META).read_text())["status"] == "completed"


# --- item 13: sweeps never follow a symlinked trials/ nor delete what dlrun did not make -------

SWEEP = """\
base: tiny.yaml
name: small
grid:
  model.layers.0.units: [8]
cv: 0
workers: 1
"""


@pytest.fixture
def sweep_dir(tmp_path) -> Path:
    """A sweep folder as `dlrun sweep` makes it, before any fit."""
    from dlrun import sweep as sweeps

    (tmp_path / "tiny.yaml").write_text(TINY_SPEC)
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    _, folder = sweeps.start(tmp_path / "sweep.yaml", tmp_path / "runs")
    return folder


def test_sweep_resume_never_follows_a_symlinked_trials_folder(sweep_dir, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    (sweep_dir / "trials").symlink_to(outside)
    result = runner.invoke(app, ["sweep", "--resume", str(sweep_dir)])
    assert_one_clean_error(result, "trials: is a symlink; refusing to write out of the run", 1)
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]


def test_a_trial_folder_dlrun_did_not_make_is_never_deleted(sweep_dir):
    """A folder named like a planned fit, with no meta.json and files of someone else's:
    the fit fails with a message; the folder and its files stay."""
    from dlrun import sweep as sweeps
    from dlrun.sweep.execute import _run_fit

    sweep = sweeps.reopen(sweep_dir)
    fit = sweep.fits()[0]
    trial = sweep_dir / "trials" / fit.folder
    trial.mkdir(parents=True)
    (trial / "thesis.tex").write_text("years of work")
    spec = sweep.trial_spec(fit.params, fit.fold, fit.epochs).dump()
    status, rows, message = _run_fit(spec, str(sweep_dir / "trials"), fit.folder)
    assert status == "failed" and rows == []
    assert "holds thesis.tex; not a run dlrun started, so it is not deleted" in message
    assert (trial / "thesis.tex").read_text() == "years of work"


def test_a_symlinked_trial_is_not_trained_through(sweep_dir, received):
    from dlrun import sweep as sweeps
    from dlrun.sweep.execute import _run_fit

    sweep = sweeps.reopen(sweep_dir)
    fit = sweep.fits()[0]
    (sweep_dir / "trials").mkdir()
    (sweep_dir / "trials" / fit.folder).symlink_to(received / "bad")
    before = (received / "bad" / store.META).read_text()
    spec = sweep.trial_spec(fit.params, fit.fold, fit.epochs).dump()
    status, _, message = _run_fit(spec, str(sweep_dir / "trials"), fit.folder)
    assert status == "failed" and "is a symlink; refusing to train out of the sweep" in message
    assert (received / "bad" / store.META).read_text() == before


def test_a_symlinked_refit_is_neither_read_nor_deleted(sweep_dir, received):
    from rich.console import Console

    from dlrun.errors import RunError
    from dlrun.sweep.results import refit

    (sweep_dir / "refit").symlink_to(received / "other")  # a completed run: its scores
    best = yaml.safe_load((sweep_dir / "base.yaml").read_text())
    with pytest.raises(RunError, match="refit: is a symlink; refusing to read or write"):
        refit(best, sweep_dir, Console(quiet=True))
    assert (received / "other" / store.META).is_file()


def test_a_sweep_whose_refit_was_stopped_is_not_listed_completed(sweep_dir, received):
    (sweep_dir / "cv_results.csv").write_text("param_x,mean_test_score\n1,0.5\n")
    shutil.copytree(received / "bad", sweep_dir / "refit")  # interrupted
    listing = runner.invoke(app, ["runs", str(sweep_dir.parent)])
    assert listing.exit_code == 0, listing.output
    assert "sweep interrupted (refit)" in listing.stdout
    assert "sweep completed" not in listing.stdout


# --- item 14: compare's csv carries no formulas; --plot draws a bounded figure ---------------

# case -> (damage(run), the cell as the csv must hold it)
FORMULAS = {
    "equals-in-a-folder-name": (
        lambda r: r.rename(r.with_name("=HYPERLINK(x)")),
        "'=HYPERLINK(x)",
    ),
    "plus-in-a-status": (lambda r: edit_json(r / store.META, status="+SUM(1)"), "'+SUM(1)"),
    "minus-in-a-status": (lambda r: edit_json(r / store.META, status="-2+3"), "'-2+3"),
    "at-in-a-status": (lambda r: edit_json(r / store.META, status="@SUM(1)"), "'@SUM(1)"),
    "at-in-a-folder-name": (lambda r: r.rename(r.with_name("@cmd")), "'@cmd"),
    "equals-in-a-config-value": (
        lambda r: (r / store.CONFIG).write_text(
            (r / store.CONFIG).read_text().replace("name: tiny", "name: =cmd|calc")
        ),
        "'=cmd|calc",
    ),
}


@pytest.mark.parametrize("case", sorted(FORMULAS))
def test_compare_csv_quotes_formula_cells(case, received):
    damage, cell = FORMULAS[case]
    edit_json(received / "bad" / store.META, status="completed")
    damage(received / "bad")
    result = runner.invoke(app, ["compare", str(received), "--format", "csv", "--all"])
    assert result.exit_code == 0, result.output
    import csv
    import io

    cells = [c for row in csv.reader(io.StringIO(result.stdout)) for c in row]
    assert cell in cells, cells
    assert not any(c[:1] in ("=", "+", "@", "\t") for c in cells)


def test_compare_csv_leaves_negative_numbers_numbers(received):
    edit_json(received / "bad" / store.META, status="completed")
    edit_json(received / "bad" / store.METRICS, best_value=-0.5)
    result = runner.invoke(
        app, ["compare", str(received), "--format", "csv", "--columns", "run,best_val_loss"]
    )
    assert result.exit_code == 0, result.output
    assert "bad,-0.5" in result.stdout.splitlines()


def test_compare_plot_bounds_its_panels(received):
    """A history.csv of 400 val_ columns drew a 220000-pixel-wide figure in minutes."""
    edit_json(received / "bad" / store.META, status="completed")
    columns = [f"val_m{index}" for index in range(400)]
    rows = [",".join(["epoch", *columns])]
    rows += [",".join([str(epoch), *("0.5" for _ in columns)]) for epoch in (1, 2)]
    (received / "bad" / store.HISTORY).write_text("\n".join(rows) + "\n")
    plot = received / "curves.png"
    result = runner.invoke(app, ["compare", str(received), "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    with Image.open(plot) as image:
        assert image.width <= 8 * 550 + 100, image.size


def test_fifo_history_is_skipped_by_compare_plot(received):
    replace_with_fifo(received / "bad" / store.HISTORY)
    plot = received / "curves.png"
    result = runner.invoke(app, ["compare", str(received), "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert plot.is_file() and os.path.getsize(plot) > 0
