"""Issue 34, a first user's day: tabular data as it comes (blanks, extra columns, another file
to score), image folders of their own size, paths, sweeps you can follow, results you can read.
Every case goes through the CLI on data shaped like a new user's: a penguins-like csv with
blanks in a text column and an extra column, a folder of 28x28 grey PNGs, a pruned sweep."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dlrun.cli import app
from tests.conftest import run_dirs

runner = CliRunner()
SPECIES = ("Adelie", "Gentoo", "Chinstrap")


def penguins(path: Path, rows: int = 150, seed: int = 0, blanks: bool = True) -> Path:
    """A palmerpenguins-like csv: species (the label), island and sex (text, sex with blanks),
    four measurements (one blank), and year, a column no model should learn from."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    kind = rng.integers(0, 3, rows)
    frame = pd.DataFrame(
        {
            "species": [SPECIES[k] for k in kind],
            "island": np.where(kind == 1, "Biscoe", rng.choice(["Dream", "Torgersen"], rows)),
            "bill_length_mm": 38 + 5 * kind + rng.normal(0, 1, rows),
            "bill_depth_mm": 18 - 2 * (kind == 1) + rng.normal(0, 0.5, rows),
            "flipper_length_mm": 190 + 15 * (kind == 1) + rng.normal(0, 3, rows),
            "body_mass_g": 3700 + 1300 * (kind == 1) + rng.normal(0, 200, rows),
            "sex": rng.choice(["male", "female"], rows),
            "year": rng.choice([2007, 2008, 2009], rows),
        }
    )
    if blanks:
        frame.loc[[3, 8, rows - 1], "sex"] = None
        frame.loc[[5], "bill_length_mm"] = None
    frame.to_csv(path, index=False)
    return path


def penguin_spec(folder: Path, data: str = "", name: str = "penguins") -> Path:
    spec = folder / f"{name}.yaml"
    spec.write_text(
        f"""\
name: {name}
data:
  dataset: csv
  path: {folder / "penguins.csv"}
  label_column: species
  categorical: [island, sex]
  scale: 100
{data}model:
  layers:
    - {{type: Dense, units: 16, activation: relu}}
    - {{type: Dense, units: 3, activation: softmax}}
training:
  epochs: 1
  batch_size: 32
"""
    )
    return spec


def train(spec: Path, runs: Path, *args: str):
    result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(runs), *args])
    return result


def deterministic(spec: Path) -> Path:
    """Two epochs, deterministic: what its exported script must give again (section 6)."""
    spec.write_text(spec.read_text().replace("epochs: 1", "epochs: 2\n  deterministic: true"))
    return spec


@pytest.fixture(scope="module")
def filled_run(tmp_path_factory) -> Path:
    """A run on the penguins csv with data.missing: fill and year dropped (two epochs,
    deterministic: section 6 exports it as a script)."""
    folder = tmp_path_factory.mktemp("penguins")
    penguins(folder / "penguins.csv")
    spec = deterministic(penguin_spec(folder, "  missing: fill\n  drop: [year]\n"))
    result = train(spec, folder / "runs")
    assert result.exit_code == 0, result.output
    (run,) = run_dirs(folder / "runs")
    return run


# --- 1. missing values ------------------------------------------------------------------------


def test_a_blank_text_cell_is_refused_by_default(tmp_path):
    penguins(tmp_path / "penguins.csv")
    result = train(penguin_spec(tmp_path, "  drop: [year]\n"), tmp_path / "runs")
    assert result.exit_code == 2, result.output
    assert "column 'sex' is blank on line(s) 5, 10, 151" in result.output
    assert "data.missing: drop" in result.output
    assert run_dirs(tmp_path / "runs") == []


def test_a_blank_number_is_refused_naming_data_missing(tmp_path):
    penguins(tmp_path / "penguins.csv")
    spec = penguin_spec(tmp_path, "  drop: [year]\n")
    result = train(
        spec,
        tmp_path / "runs",
        "--set",
        "data.categorical=[island]",
        "--set",
        "data.drop=[year, sex]",
    )
    assert result.exit_code == 2, result.output
    assert "'bill_length_mm'" in result.output and "data.missing: drop or fill" in result.output


@pytest.fixture(scope="module")
def dropped_run(tmp_path_factory) -> tuple[Path, str]:
    """(a run on the penguins csv with data.missing: drop and year dropped, train's output):
    two epochs, deterministic, as filled_run."""
    folder = tmp_path_factory.mktemp("dropped")
    penguins(folder / "penguins.csv")
    spec = deterministic(penguin_spec(folder, "  missing: drop\n  drop: [year]\n"))
    result = train(spec, folder / "runs")
    assert result.exit_code == 0, result.output
    (run,) = run_dirs(folder / "runs")
    return run, result.output


def test_drop_leaves_out_the_rows_with_blanks_and_says_how_many(dropped_run):
    run, output = dropped_run
    assert "dropped 4 of 150 rows with a blank cell (data.missing: drop)" in output
    meta = json.loads((run / "meta.json").read_text())
    assert meta["data_encoding"]["categorical"]["sex"] == ["female", "male"]  # no 'nan'


def test_a_blank_in_a_dropped_column_drops_no_row(tmp_path):
    import pandas as pd

    penguins(tmp_path / "penguins.csv", blanks=False)
    frame = pd.read_csv(tmp_path / "penguins.csv")
    frame.loc[[2, 4], "year"] = None
    frame.to_csv(tmp_path / "penguins.csv", index=False)
    result = train(penguin_spec(tmp_path, "  missing: drop\n  drop: [year]\n"), tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert "rows with a blank cell" not in result.output


def test_fill_records_the_training_values_and_predict_fills_with_them(filled_run, tmp_path):
    meta = json.loads((filled_run / "meta.json").read_text())
    fill = meta["data_encoding"]["fill"]
    assert fill["sex"] in ("male", "female")
    assert 40 < fill["bill_length_mm"] < 50
    assert "year" not in fill and "year" not in meta["feature_columns"]
    assert "nan" not in meta["data_encoding"]["categorical"]["sex"]
    new = penguins(tmp_path / "new.csv", rows=12, seed=3)
    result = runner.invoke(app, ["predict", str(filled_run), str(new), "--format", "csv"])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if line and line[0].isdigit()]
    assert len(rows) == 12
    # the blank sex in row 4 is filled: its prediction is that of the row with the value filled
    import pandas as pd

    frame = pd.read_csv(new)
    frame.loc[3, "sex"] = fill["sex"]
    frame.to_csv(tmp_path / "by_hand.csv", index=False)
    again = runner.invoke(
        app, ["predict", str(filled_run), str(tmp_path / "by_hand.csv"), "--format", "csv"]
    )
    assert again.exit_code == 0, again.output
    by_hand = [line for line in again.stdout.splitlines() if line and line[0].isdigit()]
    assert by_hand[3] == rows[3]


def test_predict_refuses_a_blank_for_a_run_that_fills_none(dropped_run, tmp_path):
    run, _ = dropped_run
    new = penguins(tmp_path / "new.csv", rows=12, seed=3)
    result = runner.invoke(app, ["predict", str(run), str(new)])
    assert result.exit_code != 0
    assert "row 4: column 'sex' is blank" in result.output


# --- 2. choosing columns ----------------------------------------------------------------------


def test_data_columns_picks_the_features_in_order(tmp_path):
    penguins(tmp_path / "penguins.csv", blanks=False)
    spec = penguin_spec(tmp_path, "  columns: [flipper_length_mm, island, bill_length_mm]\n")
    result = train(spec, tmp_path / "runs", "--set", "data.categorical=[island]")
    assert result.exit_code == 0, result.output
    (run,) = run_dirs(tmp_path / "runs")
    meta = json.loads((run / "meta.json").read_text())
    assert meta["feature_columns"] == ["flipper_length_mm", "island", "bill_length_mm"]
    assert "columns:" in (run / "config.yaml").read_text()
    result = runner.invoke(app, ["evaluate", str(run)])
    assert result.exit_code == 0, result.output


def test_an_unknown_column_is_named_with_the_ones_there(tmp_path):
    penguins(tmp_path / "penguins.csv", blanks=False)
    result = train(penguin_spec(tmp_path, "  drop: [yaer]\n"), tmp_path / "runs")
    assert result.exit_code == 2, result.output
    assert "no column 'yaer'" in result.output and "did you mean 'year'" in result.output


# --- 3. another csv to score -------------------------------------------------------------------


def test_evaluate_scores_all_of_another_csv_even_of_one_class(filled_run, tmp_path):
    import pandas as pd

    other = penguins(tmp_path / "other.csv", rows=30, seed=5)
    frame = pd.read_csv(other)
    frame["species"] = "Gentoo"
    frame.to_csv(other, index=False)
    result = runner.invoke(
        app, ["evaluate", str(filled_run), "--set", f"data.path={other}", "--no-save"]
    )
    assert result.exit_code == 0, result.output
    assert f"(30 samples (every row of {other})" in result.output


def test_a_csv_brings_its_own_test_file(tmp_path):
    penguins(tmp_path / "penguins.csv", blanks=False)
    test = penguins(tmp_path / "test.csv", rows=25, seed=9, blanks=False)
    spec = penguin_spec(tmp_path, f"  test_path: {test}\n  test_split: 0\n")
    result = train(spec, tmp_path / "runs")
    assert result.exit_code == 0, result.output
    (run,) = run_dirs(tmp_path / "runs")
    result = runner.invoke(app, ["evaluate", str(run), "--no-save"])
    assert result.exit_code == 0, result.output
    assert "(25 samples, best checkpoint" in result.output


# --- 4. image folders of their own size --------------------------------------------------------


def grey_digits(folder: Path, per_class: int = 12, size: int = 28) -> Path:
    """A folder of 28x28 grey PNGs, one subfolder per class, written here."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("0", "1", "2"):
        (folder / label).mkdir(parents=True)
        for index in range(per_class):
            pixels = rng.integers(0, 60, (size, size), dtype=np.uint8)
            pixels[:, int(label) * 8 : int(label) * 8 + 8] = 250
            Image.fromarray(pixels, mode="L").save(folder / label / f"{index}.png")
    return folder


def image_spec(folder: Path, data: str = "") -> Path:
    spec = folder / "images.yaml"
    spec.write_text(
        f"""\
name: pngs
data:
  dataset: directory
  path: {folder / "pngs"}
{data}model:
  layers:
    - Flatten
    - {{type: Dense, units: 3, activation: softmax}}
training: {{epochs: 1, batch_size: 8}}
"""
    )
    return spec


def test_an_image_folder_takes_the_images_own_size_and_colour(tmp_path):
    grey_digits(tmp_path / "pngs")
    spec = image_spec(tmp_path)
    result = runner.invoke(app, ["validate", str(spec)])
    assert result.exit_code == 0, result.output
    assert "input shape (28, 28, 1)" in result.output
    assert "2,355 parameters" in result.output  # 784 * 3 + 3, not 224 * 224 * 3 inputs
    result = train(spec, tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert "input shape (28, 28, 1)" in result.output
    (run,) = run_dirs(tmp_path / "runs")
    config = (run / "config.yaml").read_text()
    assert "image_size:\n  - 28\n  - 28" in config and "color_mode: grayscale" in config
    new = tmp_path / "pngs" / "1" / "0.png"
    result = runner.invoke(app, ["predict", str(run), str(new)])
    assert result.exit_code == 0, result.output


def test_images_of_several_sizes_ask_for_image_size(tmp_path):
    from PIL import Image

    grey_digits(tmp_path / "pngs")
    Image.new("L", (32, 30)).save(tmp_path / "pngs" / "2" / "big.png")
    result = runner.invoke(app, ["validate", str(image_spec(tmp_path))])
    assert result.exit_code == 2, result.output
    assert "data.image_size" in result.output and "2 sizes" in result.output
    result = runner.invoke(app, ["validate", str(image_spec(tmp_path, "  image_size: [20, 20]\n"))])
    assert result.exit_code == 0, result.output
    assert "input shape (20, 20, 1)" in result.output


# --- 5. paths relative to the spec ---------------------------------------------------------------


def test_a_data_path_is_relative_to_the_spec_file_and_recorded_absolute(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    penguins(project / "data" / "penguins.csv", blanks=False)
    spec = penguin_spec(project, "  drop: [year]\n")
    spec.write_text(spec.read_text().replace(str(project / "penguins.csv"), "data/penguins.csv"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = train(spec, tmp_path / "runs")
    assert result.exit_code == 0, result.output
    (run,) = run_dirs(tmp_path / "runs")
    assert f"path: {project / 'data' / 'penguins.csv'}\n" in (run / "config.yaml").read_text()
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(app, ["evaluate", str(run), "--no-save"]).exit_code == 0


def test_a_missing_file_says_what_it_was_resolved_against(tmp_path):
    spec = penguin_spec(tmp_path)
    spec.write_text(spec.read_text().replace(str(tmp_path / "penguins.csv"), "data/p.csv"))
    result = train(spec, tmp_path / "runs")
    assert result.exit_code == 2, result.output
    assert f"no such file: {tmp_path / 'data' / 'p.csv'}" in result.output
    assert f"('data/p.csv' is relative to the folder of {spec})" in result.output


def test_the_shipped_csv_config_trains_from_any_folder(tmp_path, monkeypatch):
    from tests.conftest import CONFIGS

    monkeypatch.chdir(tmp_path)
    result = runner.invoke(
        app,
        ["validate", str(CONFIGS / "cancer_callbacks.yaml")],
    )
    assert result.exit_code == 0, result.output


# --- sweeps you can follow, results you can read -----------------------------------------------

SWEEP = """\
base: penguins.yaml
name: penguin-sweep
grid:
  model.layers.0.units: [8, 16]
cv: 2
"""


@pytest.fixture(scope="module")
def csv_sweep(tmp_path_factory) -> tuple[Path, Path, str]:
    """A grid sweep with folds on the penguins csv: (its folder, the runs folder, output)."""
    folder = tmp_path_factory.mktemp("sweep")
    penguins(folder / "penguins.csv")
    penguin_spec(folder, "  drop: [year]\n  missing: fill\n")
    (folder / "sweep.yaml").write_text(SWEEP)
    runs = folder / "runs"
    result = runner.invoke(app, ["sweep", str(folder / "sweep.yaml"), "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    (sweep_dir,) = run_dirs(runs)
    return sweep_dir, runs, result.output


def test_validate_checks_a_sweep_file_and_builds_every_setting(tmp_path):
    penguins(tmp_path / "penguins.csv")
    penguin_spec(tmp_path, "  drop: [year]\n  missing: fill\n")
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    result = runner.invoke(app, ["validate", str(tmp_path / "sweep.yaml")])
    assert result.exit_code == 0, result.output
    assert "a valid grid sweep of base penguins.yaml: 2 settings built (107 to 211" in result.output
    assert "up to 4 fits, 2-fold cross-validation, scored on accuracy" in result.output
    assert "unknown key" not in result.output
    # a setting whose model cannot be built is named
    (tmp_path / "sweep.yaml").write_text(SWEEP.replace("[8, 16]", "[8, 0]"))
    result = runner.invoke(app, ["validate", str(tmp_path / "sweep.yaml")])
    assert result.exit_code == 2, result.output
    assert "model.layers.0.units" in result.output


def test_evaluate_a_sweep_folder_evaluates_its_refit_run(csv_sweep):
    sweep_dir, _, _ = csv_sweep
    result = runner.invoke(app, ["evaluate", str(sweep_dir), "--no-save"])
    assert result.exit_code == 0, result.output
    assert (
        f"{sweep_dir} is a sweep; evaluating its refit run {sweep_dir / 'refit'}" in result.output
    )
    assert "Test accuracy: " in result.output


def test_compare_shows_a_sweep_as_its_refit_and_trials_on_request(csv_sweep):
    sweep_dir, runs, _ = csv_sweep
    result = runner.invoke(app, ["compare", str(runs), "--format", "csv"])
    assert result.exit_code == 0, result.output
    rows = [line.split(",")[0] for line in result.stdout.splitlines()[1:] if line]
    assert rows == [f"{sweep_dir.name}/refit"]
    assert "4 sweep trial runs not compared: --trials adds them" in result.output
    result = runner.invoke(app, ["compare", str(runs), "--trials", "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert len([line for line in result.stdout.splitlines()[1:] if line]) == 5


def test_best_yaml_writes_only_the_data_keys_that_apply(csv_sweep):
    import yaml

    sweep_dir, _, _ = csv_sweep
    best = yaml.safe_load((sweep_dir / "best.yaml").read_text())
    for key in ("image_size", "color_mode", "cache"):
        assert key not in best["data"]
    assert best["data"]["missing"] == "fill" and best["data"]["drop"] == ["year"]
    config = yaml.safe_load((sweep_dir / "refit" / "config.yaml").read_text())
    assert set(best["data"]) == set(config["data"])


def test_a_sweep_prints_each_fit_counted(csv_sweep):
    _, _, output = csv_sweep
    assert "fit 1/4 (setting 1/2, fold 1/2) val_accuracy " in output
    assert "fit 4/4 (setting 2/2, fold 2/2) val_accuracy " in output
    assert "· best so far " in output


# --- 17. a Ray address with nothing there ----------------------------------------------------


def test_a_ray_address_with_nothing_listening_is_one_error_line(tmp_path):
    import socket
    import subprocess
    import sys

    pytest.importorskip("ray")
    with socket.socket() as probe:  # a free loopback port: bound, then released
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    penguins(tmp_path / "penguins.csv")
    penguin_spec(tmp_path, "  drop: [year]\n  missing: fill\n")
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    command = [sys.executable, "-m", "dlrun", "sweep", "sweep.yaml", "--executor", "ray"]
    command += ["--address", f"127.0.0.1:{port}", "--runs-dir", "runs"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: --address 127.0.0.1:"), result.stderr
    assert "no Ray cluster answers there" in lines[0]
    assert f"ray start --head --port {port}" in lines[0]
    assert not (tmp_path / "runs").exists() or run_dirs(tmp_path / "runs") == []


# --- 11. numbers that read -----------------------------------------------------------------------


def test_compare_shows_four_significant_digits_and_small_rates_in_e_notation(tmp_path):
    penguins(tmp_path / "penguins.csv", blanks=False)
    spec = penguin_spec(tmp_path, "  drop: [year]\n")
    for rate in ("0.000115", "0.0001150000001"):  # differ in the tenth decimal
        rates = ["--set", f"compile.optimizer={{type: adam, learning_rate: {rate}}}"]
        assert train(spec, tmp_path / "runs", *rates, "--set", "seed=1").exit_code == 0
    result = runner.invoke(app, ["compare", str(tmp_path / "runs"), "--format", "markdown"])
    assert result.exit_code == 0, result.output
    assert "| 1.15e-04 |" in result.stdout
    numbers = [cell.strip() for line in result.stdout.splitlines()[2:] for cell in line.split("|")]
    decimals = [len(n.split(".")[1]) for n in numbers if n.replace(".", "").isdigit() and "." in n]
    assert decimals and max(decimals) <= 6, result.stdout  # 4 significant digits, at most 6
    grouped = runner.invoke(
        app, ["compare", str(tmp_path / "runs"), "--group", "seed", "--format", "markdown"]
    )
    assert grouped.exit_code == 0, grouped.output
    header, _, *rows = grouped.stdout.splitlines()
    epochs = header.split("|").index(" epochs_done ")
    assert rows and all(row.split("|")[epochs].strip() == "1 ± 0" for row in rows), grouped.stdout


def test_compare_spells_a_null_and_an_absent_key_alike(tmp_path):
    penguins(tmp_path / "penguins.csv", blanks=False)
    spec = penguin_spec(tmp_path, "  drop: [year]\n")
    assert train(spec, tmp_path / "runs").exit_code == 0  # training.early_stopping: null
    stopping = ["--set", "training.early_stopping={patience: 1}"]
    assert train(spec, tmp_path / "runs", *stopping).exit_code == 0
    result = runner.invoke(app, ["compare", str(tmp_path / "runs"), "--format", "markdown"])
    assert result.exit_code == 0, result.output
    header, _, *rows = result.stdout.splitlines()
    names = [cell.strip() for cell in header.split("|")]
    table = [dict(zip(names, (c.strip() for c in row.split("|")), strict=True)) for row in rows]
    (without,) = [row for row in table if row["patience"] != "1"]
    # a null (early_stopping) and an absent key (patience) read alike
    assert without["early_stopping"] == without["patience"] == "\u2014", result.stdout
    assert "null" not in result.stdout and "||" not in result.stdout.replace(" ", "")
    raw = runner.invoke(app, ["compare", str(tmp_path / "runs"), "--format", "json"])
    records = json.loads(raw.stdout)  # csv and json keep the raw forms
    assert sorted(r["training.early_stopping.patience"] or 0 for r in records) == [0, 1]
    assert all(r["training.early_stopping"] is None for r in records)
    assert "\u2014" not in raw.stdout


# --- 6. the script form of a csv with text columns and blanks ---------------------------------


# Both scripts run in one fresh interpreter, one after the other, each as `python SCRIPT` runs
# it (run_path as __main__, in its own folder, a namespace of its own): one TensorFlow import
# instead of two. Each sets its own seeds and environment before importing Keras, as it must.
RUN_SCRIPTS = """\
import os, runpy, sys, traceback
for script in sys.argv[1:]:
    print(f"=== {script}", flush=True)
    os.chdir(os.path.dirname(script))
    try:
        runpy.run_path(script, run_name="__main__")
    except BaseException:
        traceback.print_exc()
        print(f"=== failed {script}", flush=True)
"""


@pytest.fixture(scope="module")
def exported_scripts(filled_run, dropped_run, tmp_path_factory) -> dict:
    """{missing: (run, its exported script's text, what the script printed, the process)} for
    the two runs of a csv with text and blanks, data.missing fill and drop."""
    import subprocess
    import sys

    runs = {"fill": filled_run, "drop": dropped_run[0]}
    scripts = {}
    for missing, run in runs.items():
        out = tmp_path_factory.mktemp(f"script-{missing}") / "plain.py"
        result = runner.invoke(app, ["export", str(run), "--format", "script", "--out", str(out)])
        assert result.exit_code == 0, result.output
        scripts[missing] = out
    ran = subprocess.run(
        [sys.executable, "-c", RUN_SCRIPTS, *map(str, scripts.values())],
        capture_output=True,
        text=True,
        timeout=600,
    )
    printed, script = {}, None
    for line in ran.stdout.splitlines():
        if line.startswith("=== failed "):
            printed[line.removeprefix("=== failed ")] += "(failed)\n"
        elif line.startswith("=== "):
            script = line.removeprefix("=== ")
            printed[script] = ""
        elif script is not None:
            printed[script] += line + "\n"
    return {
        missing: (runs[missing], out.read_text(), printed.get(str(out)), ran)
        for missing, out in scripts.items()
    }


@pytest.mark.parametrize("missing", ["fill", "drop"])
def test_a_csv_with_text_and_blanks_exports_as_a_script_that_trains_alike(
    exported_scripts, missing
):
    import re

    run, text, printed, ran = exported_scripts[missing]
    assert "OneHotEncoder(" in text
    assert ("SimpleImputer(" in text) == (missing == "fill")
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert printed is not None and "(failed)" not in printed, ran.stderr[-3000:]
    loss = float(re.search(r"^test loss: (\S+)$", printed, re.M)[1])
    metrics = json.loads((run / "metrics.json").read_text())
    assert loss == pytest.approx(metrics["test"]["loss"], abs=1e-3)


# --- 13. attack's picture of an image folder ----------------------------------------------------


def test_attack_on_an_image_folder_pictures_several_classes(tmp_path):
    import shutil

    grey_digits(tmp_path / "pngs", per_class=10)
    for label in ("0", "1", "2"):  # a test/ folder, listed class by class
        (tmp_path / "pngs" / "test" / label).mkdir(parents=True)
        for index in range(6):
            shutil.move(
                tmp_path / "pngs" / label / f"{index}.png", tmp_path / "pngs" / "test" / label
            )
        shutil.move(tmp_path / "pngs" / label, tmp_path / "pngs" / "train" / label)
    assert train(image_spec(tmp_path), tmp_path / "runs").exit_code == 0
    (run,) = run_dirs(tmp_path / "runs")
    result = runner.invoke(app, ["attack", str(run), "--method", "fgsm", "--eps", "0,0.1"])
    assert result.exit_code == 0, result.output
    (record,) = (run / "attacks").glob("*.json")
    pictured = json.loads(record.read_text())["plotted_classes"]
    assert len(pictured) == 6 and len(set(pictured)) == 3, pictured
    assert list((run / "plots").glob("adversarial-*.png"))


# --- 12. compare --plot names each curve's run --------------------------------------------------


def test_compare_plot_has_a_legend_naming_each_run(filled_run, tmp_path):
    from dlrun import store
    from dlrun.report.compare import compare_table
    from dlrun.report.curves import curves_plot

    out = tmp_path / "curves.png"
    result = runner.invoke(app, ["compare", str(filled_run.parent), "--plot", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(b"\x89PNG")
    runs, _ = store.list_runs([filled_run.parent])
    figure = curves_plot(runs, compare_table(runs), tmp_path / "again.png")
    legend = figure.axes[0].get_legend()
    assert [text.get_text() for text in legend.get_texts()] == [filled_run.name]


# --- 14. dlrun tensorboard without TensorFlow's C++ log lines -----------------------------------


def test_tensorboard_passes_no_cpp_log_lines(filled_run, tmp_path):
    import os
    import re
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    from tests.conftest import default_sigint

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's
    process = subprocess.Popen(
        [sys.executable, "-m", "dlrun", "tensorboard", str(filled_run.parent), "--port", str(port)],
        preexec_fn=default_sigint,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=2).read()
                break
            except OSError:
                time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert "TensorBoard" in err, err  # its own line: where it serves
    assert not re.search(r"^[IWEF]\d{4} \d\d:\d\d:\d\d|absl::InitializeLog", err, re.M), err
