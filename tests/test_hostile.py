"""A hostile corpus: specs, sweep files and run folders someone else made, each with its outcome.

Specs and sweep files are real files under tests/hostile/. Run folders are copies of one real
trained run, each damaged in one way (FIFOs and device links cannot live in git), then read
by `runs`, `compare`, `show`, `evaluate` and `train --resume` as a user would.
"""

import json
import os
import shutil
import signal
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import TINY_SPEC
from dlrun.cli import app

runner = CliRunner()
HOSTILE = Path(__file__).parent / "hostile"
CONTROL = [chr(c) for c in (*range(0, 9), *range(11, 32), *range(0x7F, 0xA0))]

# spec file -> a fragment of its one Error line (exit 2, nothing written)
SPECS = {
    "billion_laughs.yaml": "aliases expand to more than 100,000 values; refused",
    "laughs_in_a_layer.yaml": "aliases expand to more than 100,000 values; refused",
    "deep_flow_nesting.yaml": "nested too deeply to read",
    "deep_block_nesting.yaml": "nested deeper than 64 levels",
    "nul_byte.yaml": "character #x0000 at position 8 is not allowed in YAML; remove it",
    "esc_byte.yaml": "character #x001b at position 6 is not allowed in YAML",
    "bel_in_comment.yaml": "character #x0007 at position 7 is not allowed in YAML",
    "esc_escape_in_name.yaml": "name: expected letters, digits, '.', '_' or '-' only",
    "markup_in_name.yaml": "got '[link=file:///etc/passwd]x[/link]'",
    "seed_too_big.yaml": "seed: expected a number < 4294967296, got 99999999999999999999999",
    "seed_negative.yaml": "seed: expected a number >= 0, got -1",
    "python_object_tag.yaml": "YAML tag !!python/object/apply:os.system is not allowed",
    "lambda_layer.yaml": "Lambda layers run code from the file and are refused",
    "name_escapes_runs_dir.yaml": "name: expected letters, digits, '.', '_' or '-' only",
    "not_utf8.yaml": "cannot be read",
    "empty_csv.yaml": "is not a readable csv (No columns to parse from file)",
    "header_only_csv.yaml": "has a header but no rows",
    "ragged_csv.yaml": "is not a readable csv (Error tokenizing data",
    "huge_epochs_string.yaml": "a number longer than",
    "top_level_list.yaml": "expected a mapping",
}
SWEEPS = {
    "billion_laughs.yaml": "aliases expand to more than 100,000 values; refused",
    "deep_nesting.yaml": "nested too deeply to read",
    "nul_byte.yaml": "character #x0000 at position",
    "grid_too_big.yaml": "1,000,000 fits (settings x folds) is more than the 10,000 allowed",
    "n_iter_too_big.yaml": "random.n_iter: expected a number <= 10000, got 1000000",
    "too_many_workers.yaml": f"workers: at most {os.cpu_count()} (the cores of this machine)",
    "random_seed_too_big.yaml": "random.seed: expected a number < 4294967296",
}


@pytest.fixture(autouse=True)
def no_hang():
    """A read that blocks (a FIFO) fails the test instead of hanging the suite."""

    def timeout(signum, frame):
        raise TimeoutError("dlrun hung on a hostile input")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def assert_one_clean_error(result, fragment: str, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert not any(c in result.output for c in CONTROL)
    return lines[0]


def test_the_corpus_is_large():
    assert len(SPECS) + len(SWEEPS) + len(RUN_CASES) + len(WHERE) >= 30
    assert sorted(SPECS) == sorted(p.name for p in (HOSTILE / "specs").iterdir())
    assert sorted(SWEEPS) == sorted(p.name for p in (HOSTILE / "sweeps").iterdir())


@pytest.mark.parametrize("name", sorted(SPECS))
def test_hostile_spec(name, tmp_path, monkeypatch):
    monkeypatch.chdir(HOSTILE.parent)  # the csv cases name hostile/data/...
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", str(HOSTILE / "specs" / name), "--runs-dir", str(runs)])
    assert_one_clean_error(result, SPECS[name])
    assert not runs.exists(), "nothing may be written for a bad spec"
    assert not Path("/tmp/dlrun-pwned").exists()


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_hostile_sweep_file(name, tmp_path):
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["sweep", str(HOSTILE / "sweeps" / name), "--runs-dir", str(runs)])
    assert_one_clean_error(result, SWEEPS[name])
    assert not runs.exists()


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda p: p.write_text("a file") and p, "not a folder"),
        (lambda p: p.write_text("a file") and p / "runs", "is not a folder"),
        # /proc refuses new folders, as a read-only file system does (no mount needed)
        (lambda p: Path("/proc/dlrun-runs"), "--runs-dir /proc/dlrun-runs: cannot be made"),
    ],
    ids=["a-file", "below-a-file", "unwritable-fs"],
)
def test_runs_dir_that_cannot_hold_runs(make, fragment, tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_SPEC)
    runs_dir = make(tmp_path / "taken")
    result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(runs_dir)])
    assert_one_clean_error(result, fragment)


# --- run folders from someone else ----------------------------------------------------------


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def replace_with_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def replace_with_link(path: Path, target: str) -> None:
    path.unlink()
    path.symlink_to(target)


def zip_bomb(path: Path) -> None:
    """A .keras file whose one entry inflates to 200 MiB: far more than 16 units need."""
    path.unlink()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("model.weights.h5", "w") as entry:
            block = bytes(1 << 20)
            for _ in range(200):
                entry.write(block)


def link_out(run: Path, folder: str, outside: Path) -> None:
    """run/folder becomes a symlink to a folder outside the run (a copy of its content)."""
    outside.mkdir()
    if (run / folder).exists():
        shutil.copytree(run / folder, outside, dirs_exist_ok=True)
        shutil.rmtree(run / folder)
    (run / folder).symlink_to(outside)


# case -> (damage(run, tmp_path), a fragment of its Warning line, or None when it is listed)
RUN_CASES = {
    "meta-fifo": (lambda r, t: replace_with_fifo(r / "meta.json"), "not a regular file"),
    "meta-dev-zero": (
        lambda r, t: replace_with_link(r / "meta.json", "/dev/zero"),
        "is a symlink; refusing to read it",
    ),
    "meta-huge": (
        lambda r, t: (r / "meta.json").write_text('{"a": "' + "x" * (17 << 20) + '"}'),
        "larger than 16 MiB",
    ),
    "meta-not-json": (lambda r, t: (r / "meta.json").write_text("{nope"), "not valid JSON"),
    "meta-a-list": (lambda r, t: (r / "meta.json").write_text("[1, 2]"), "expected a JSON object"),
    "meta-deep-json": (
        lambda r, t: (r / "meta.json").write_text("[" * 200_000 + "]" * 200_000),
        "not valid JSON",
    ),
    "meta-not-utf8": (lambda r, t: (r / "meta.json").write_bytes(b'{"a": "\xff"}'), "not UTF-8"),
    "status-a-number": (
        lambda r, t: edit_json(r / "meta.json", status=7),
        "status: expected str, got int",
    ),
    "epochs-a-string": (
        lambda r, t: edit_json(r / "meta.json", epochs_done="lots"),
        "epochs_done: expected int, got str",
    ),
    "best-value-a-string": (
        lambda r, t: edit_json(r / "metrics.json", best_value="[red]high"),
        "best_value: expected int/float/null, got str",
    ),
    "test-scores-not-numbers": (
        lambda r, t: edit_json(r / "metrics.json", test={"accuracy": "[blink]1"}),
        "test: expected dict, got dict",
    ),
    "status-link-markup": (
        lambda r, t: edit_json(r / "meta.json", status="[link=file:///etc/passwd]ok[/link]"),
        None,
    ),
    "status-closing-tag": (lambda r, t: edit_json(r / "meta.json", status="[/]"), None),
    "message-escapes": (
        lambda r, t: edit_json(
            r / "meta.json",
            status="failed\x1b[2J",
            message="\x1b]8;;http://evil\x1b\\click\x1b]8;;\x1b\\\x07\x9b31m [bold]x[/]",
        ),
        None,
    ),
    "lock-a-fifo": (
        lambda r, t: (edit_json(r / "meta.json", status="running"), replace_with_fifo(r / ".lock")),
        None,
    ),
}


@pytest.fixture
def received(trained, tmp_path):
    """root/good: an intact copy; root/bad: a copy to damage."""
    root = tmp_path / "received"
    root.mkdir()
    shutil.copytree(trained, root / "good")
    shutil.copytree(trained, root / "bad")
    return root


@pytest.mark.parametrize("case", sorted(RUN_CASES))
def test_received_run_folder(case, received, tmp_path):
    damage, warning = RUN_CASES[case]
    damage(received / "bad", tmp_path)
    listing = runner.invoke(app, ["runs", str(received)])
    assert listing.exit_code == 0, listing.output
    assert not any(c in listing.output for c in CONTROL)
    assert "Traceback" not in listing.output
    assert "good" in listing.stdout
    if warning is None:
        assert "bad" in listing.stdout
        assert listing.stderr == ""
    else:
        (line,) = listing.stderr.splitlines()
        assert line.startswith(f"Warning: skipped {received / 'bad'}") and warning in line, line
        assert "bad" not in listing.stdout
    for fmt in ("csv", "markdown", "table"):
        compared = runner.invoke(app, ["compare", str(received), "--format", fmt, "--all"])
        assert compared.exit_code == 0, compared.output
        assert not any(c in compared.output for c in CONTROL)
    shown = runner.invoke(app, ["show", str(received / "bad")])
    assert not any(c in shown.output for c in CONTROL)
    assert "Traceback" not in shown.output
    if warning is not None:
        assert_one_clean_error(shown, warning, code=1)


def test_markup_from_disk_is_printed_literally(received):
    edit_json(received / "bad" / "meta.json", status="[link=file:///etc/passwd]ok[/link]")
    listing = runner.invoke(app, ["runs", str(received)], color=True)
    assert "[link=file:///etc/passwd]ok[/link]" in listing.stdout
    assert "\x1b]8;" not in listing.stdout  # no live hyperlink
    edit_json(received / "bad" / "meta.json", status="failed", message="[/] and [bold]x[/bold]")
    shown = runner.invoke(app, ["show", str(received / "bad")], color=True)
    assert shown.exit_code == 0, shown.output
    assert "message: [/] and [bold]x[/bold]" in shown.stdout


def test_control_characters_in_config_values_and_names(received):
    config = received / "bad" / "config.yaml"
    config.write_text(config.read_text().replace("name: tiny", 'name: "ti\\e[31mny\\a"'))
    (received / "bad").rename(received / "b\x1b[2Jad\x07")
    for fmt in ("csv", "markdown", "json", "table"):
        result = runner.invoke(app, ["compare", str(received), "--format", fmt, "--all"])
        assert result.exit_code == 0, result.output
        assert not any(c in result.output for c in CONTROL), fmt
    csv = runner.invoke(app, ["compare", str(received), "--format", "csv", "--all"]).stdout
    assert "ti?[31mny?" in csv and "b?[2Jad?" in csv
    missing = runner.invoke(app, ["show", str(received / "b\x1b[2Jad\x07" / "nope")])
    assert_one_clean_error(missing, "b?[2Jad?", code=1)


@pytest.mark.parametrize("content", ["bomb", "fifo"])
def test_a_damaged_config_is_skipped_by_compare(received, content):
    config = received / "bad" / "config.yaml"
    if content == "fifo":
        replace_with_fifo(config)
    else:
        config.write_bytes((HOSTILE / "specs" / "billion_laughs.yaml").read_bytes())
    result = runner.invoke(app, ["compare", str(received), "--format", "csv"])
    assert result.exit_code == 0, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"Warning: skipped {received / 'bad'}")
    assert "good" in result.stdout and "bad" not in result.stdout


def test_find_runs_follows_no_folder_symlinks(received):
    (received / "sub").mkdir()
    (received / "sub" / "up").symlink_to("..")
    (received / "a").mkdir()
    (received / "b").mkdir()
    (received / "a" / "x").symlink_to("../b")
    (received / "b" / "y").symlink_to("../a")
    (received / "alias").symlink_to("good")
    result = runner.invoke(app, ["compare", str(received), "--format", "csv"])
    assert result.exit_code == 0, result.output
    runs = [line.split(",")[0] for line in result.stdout.splitlines()[1:]]
    assert sorted(runs) == ["bad", "good"]


# --- writes into a received run never leave it ----------------------------------------------


@pytest.mark.parametrize("folder", ["plots", "evaluations"])
def test_evaluate_never_writes_through_a_symlinked_folder(received, tmp_path, folder):
    outside = tmp_path / "outside"
    link_out(received / "bad", folder, outside)
    before = sorted(outside.rglob("*"))
    result = runner.invoke(app, ["evaluate", str(received / "bad")])
    if folder == "evaluations":
        assert_one_clean_error(result, "is a symlink; refusing to write out of the run bad", code=1)
    else:  # evaluate writes nothing under plots/: its confusion matrix goes to evaluations/
        assert result.exit_code == 0, result.output
    assert sorted(outside.rglob("*")) == before


def test_evaluate_reads_no_checkpoint_through_a_symlink(received, tmp_path):
    link_out(received / "bad", "checkpoints", tmp_path / "outside")
    result = runner.invoke(app, ["evaluate", str(received / "bad")])
    assert_one_clean_error(result, "checkpoints: is a symlink; refusing to read out", code=1)
    replace_with_link(received / "good" / "checkpoints" / "best.keras", "/dev/zero")
    result = runner.invoke(app, ["evaluate", str(received / "good")])
    assert_one_clean_error(result, "best.keras: is a symlink", code=1)


def test_a_checkpoint_that_expands_far_beyond_its_parameters_is_refused(received):
    zip_bomb(received / "bad" / "checkpoints" / "best.keras")
    result = runner.invoke(app, ["evaluate", str(received / "bad")])
    line = assert_one_clean_error(result, "expands to 200 MiB in 1 entries", code=1)
    assert "refused unloaded" in line


@pytest.mark.parametrize(
    "damage, fragment",
    [
        (lambda h: h.write_text("epoch,loss\n1,0.5\n2,lots\n"), "line 3: could not convert"),
        (lambda h: h.write_text("loss,accuracy\n0.5,0.1\n0.4,0.2\n"), "line 2: expected epoch 1"),
        (lambda h: h.write_text("epoch,loss\n1,0.5,7,8\n"), "line 2: more cells than columns"),
        (lambda h: replace_with_fifo(h), "not a regular file"),
    ],
    ids=["non-number", "no-epoch-column", "ragged", "fifo"],
)
def test_resume_with_a_damaged_history(received, damage, fragment):
    edit_json(received / "bad" / "meta.json", status="interrupted")
    damage(received / "bad" / "history.csv")
    result = runner.invoke(app, ["train", "--resume", str(received / "bad")])
    assert_one_clean_error(result, fragment, code=2)
    assert json.loads((received / "bad" / "meta.json").read_text())["status"] == "interrupted"


def test_resume_never_writes_through_a_symlinked_tensorboard(received, tmp_path):
    edit_json(received / "bad" / "meta.json", status="interrupted")
    link_out(received / "bad", "tensorboard", tmp_path / "outside")
    before = sorted((tmp_path / "outside").rglob("*"))
    result = runner.invoke(app, ["train", "--resume", str(received / "bad")])
    assert result.exit_code == 1
    assert "tensorboard: is a symlink; refusing to write out of the run bad" in result.stderr
    assert sorted((tmp_path / "outside").rglob("*")) == before


# --- compare --where reaches no code ---------------------------------------------------------

WHERE = {
    "@pd.io.common.os.system('touch PWNED')": "cannot read '@pd.io.common.os.sys'",
    "__import__('os').system('touch PWNED')": 'cannot read ".system(\'touch PWNED"',
    "0": "expected a comparison (==, !=, <, <=, >, >=)",
    "1 == 1": "a comparison needs a column on one side",
    "status": "expected a comparison",
    "status == 'completed' and": "the filter ends too early",
    "(" * 100 + "status == 'x'" + ")" * 100: "nested deeper than 50 levels",
    "training.epochs.__class__ == 1": "no column 'training.epochs.__class__'",
    "`name`.__class__ == 1": "cannot read '.__class__ == 1'",
}


@pytest.mark.parametrize("expression", list(WHERE), ids=range(len(WHERE)))
def test_where_reaches_no_code(received, expression, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["compare", str(received), "--where", expression])
    assert_one_clean_error(result, WHERE[expression])
    assert not (tmp_path / "PWNED").exists()


def test_where_filters_by_columns(received):
    edit_json(received / "bad" / "meta.json", status="failed")
    result = runner.invoke(
        app,
        [
            "compare",
            str(received),
            "--format",
            "csv",
            "--where",
            "status == 'completed' and (training.epochs >= 2 or not seed != 0)",
        ],
    )
    assert result.exit_code == 0, result.output
    assert [line.split(",")[0] for line in result.stdout.splitlines()[1:]] == ["good"]


@pytest.mark.parametrize(
    "damage, command, fragment",
    [
        (lambda r: replace_with_fifo(r / "config.yaml"), "evaluate", "not a regular file"),
        (lambda r: replace_with_fifo(r / "config.yaml"), "resume", "not a regular file"),
        (lambda r: replace_with_fifo(r / "config.yaml"), "features", "not a regular file"),
        (lambda r: replace_with_fifo(r / "config.yaml"), "attack", "not a regular file"),
        (lambda r: replace_with_link(r / "config.yaml", "/dev/zero"), "attack", "symlink"),
        (
            lambda r: replace_with_link(r / ".lock", "/dev/null"),
            "resume",
            "cannot make its .lock file",
        ),
    ],
    ids=[
        "evaluate-config-fifo",
        "resume-config-fifo",
        "features-config-fifo",
        "attack-config-fifo",
        "attack-config-dev-zero",
        "resume-lock-symlink",
    ],
)
def test_received_run_files_that_are_not_files(received, damage, command, fragment):
    edit_json(received / "bad" / "meta.json", status="interrupted")
    damage(received / "bad")
    args = {
        "resume": ["train", "--resume"],
        "evaluate": ["evaluate"],
        "attack": ["attack"],
        "features": ["features", "--layer", "0", "--out", str(received / "f.npz")],
    }[command]
    result = runner.invoke(app, [*args, str(received / "bad")])
    assert result.exit_code in (1, 2)
    assert_one_clean_error(result, fragment, code=result.exit_code)
