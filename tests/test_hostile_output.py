"""Issue 30, pattern 2: every result file at a user-given path goes through one owner
(dlrun.store.output): predict --out, evaluate --out, features --out, compare --plot and every
export format.

The owner's rules are checked on the owner itself (fast, no Keras) and then through each
command that writes, on a real trained run: whatever is at the path (a FIFO, a device node, a
folder, a symlink, the command's own input, a file of a run) is left as it was, and the
refusal is one `Error:` line with exit 2.
"""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_hostile import assert_one_clean_error, no_hang  # noqa: F401  (autouse)
from typer.testing import CliRunner

from conftest import DLRUN_ENV, default_sigint, wait_until
from dlrun import store
from dlrun.cli import app
from dlrun.errors import DlrunError
from dlrun.store import output

runner = CliRunner()


def leftovers(folder: Path) -> list[str]:
    """Hidden temporary files or folders the owner made and did not remove."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def write(out: Path, text: str = "new\n", **rules) -> None:
    with output.writing(out, **rules) as tmp:
        tmp.write_text(text)


# --- the owner: what is at the path --------------------------------------------------------


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _device(path: Path) -> None:
    try:
        os.mknod(path, 0o600 | 0o020000, os.makedev(1, 7))  # a character device, as /dev/full
    except (PermissionError, OSError):
        pytest.skip("cannot make a device node here")


def _folder(path: Path) -> None:
    path.mkdir()
    (path / "inside.txt").write_text("mine\n")


def _link_to_file(path: Path) -> None:
    target = path.parent / "target.txt"
    target.write_text("mine\n")
    path.symlink_to(target)


def _link_to_folder(path: Path) -> None:
    target = path.parent / "target"
    target.mkdir()
    path.symlink_to(target)


def _dangling_link(path: Path) -> None:
    path.symlink_to(path.parent / "nowhere.txt")


def _socket(path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()


THINGS = {
    "fifo": (_fifo, "a FIFO"),
    "device": (_device, "a device"),
    "folder": (_folder, "a folder"),
    "symlink to a file": (_link_to_file, "a symlink"),
    "symlink to a folder": (_link_to_folder, "a symlink"),
    "dangling symlink": (_dangling_link, "a symlink"),
    "socket": (_socket, "a socket"),
}


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
@pytest.mark.parametrize("thing", sorted(THINGS))
def test_only_a_regular_file_is_ever_replaced(tmp_path, thing, force):
    make, said = THINGS[thing]
    out = tmp_path / "out.csv"
    make(out)
    before = os.lstat(out)
    with pytest.raises(output.OutputError, match=said):
        write(out, force=force)
    after = os.lstat(out)
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)
    assert not [n for n in leftovers(tmp_path) if ".out.csv." in n]
    if thing == "symlink to a file":
        assert (tmp_path / "target.txt").read_text() == "mine\n"


def test_an_existing_file_needs_force(tmp_path):
    out = tmp_path / "out.csv"
    out.write_text("mine\n")
    with pytest.raises(output.OutputError, match="already exists; pass --force"):
        write(out)
    assert out.read_text() == "mine\n"
    write(out, force=True)
    assert out.read_text() == "new\n"
    assert leftovers(tmp_path) == []


def test_a_new_file_is_written_whole_with_the_usual_mode(tmp_path):
    out = tmp_path / "sub" / "out.csv"
    write(out)
    assert out.read_text() == "new\n"
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~store.UMASK)
    assert leftovers(out.parent) == []


def test_the_commands_input_is_never_replaced_even_with_force(tmp_path):
    given = tmp_path / "inputs.npz"
    given.write_bytes(b"input")
    with pytest.raises(output.OutputError, match="one of this command's inputs"):
        write(given, force=True, inputs=[given])
    assert given.read_bytes() == b"input"


def test_a_hard_link_to_an_input_is_the_input(tmp_path):
    given = tmp_path / "inputs.npz"
    given.write_bytes(b"input")
    alias = tmp_path / "alias.npz"
    os.link(given, alias)
    with pytest.raises(output.OutputError, match="inputs"):
        write(alias, force=True, inputs=[given])
    assert given.read_bytes() == b"input"


def test_a_file_inside_an_input_folder_is_never_replaced(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.csv").write_text("pixels\n")
    with pytest.raises(output.OutputError, match="inputs"):
        write(images / "a.csv", force=True, inputs=[images])
    assert (images / "a.csv").read_text() == "pixels\n"


@pytest.mark.parametrize(
    "relative", ["config.yaml", "meta.json", "checkpoints/best.keras", "plots/history.png"]
)
def test_nothing_of_a_run_is_replaced_even_with_force(tmp_path, relative):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "plots").mkdir()
    for name in ("config.yaml", "meta.json", "checkpoints/best.keras", "plots/history.png"):
        (run / name).write_text("the run's\n")
    with pytest.raises(output.OutputError, match="inside the run"):
        write(run / relative, force=True)
    assert (run / relative).read_text() == "the run's\n"


def test_nothing_of_a_run_is_replaced_through_a_symlinked_folder(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "meta.json").write_text("{}\n")
    (run / "config.yaml").write_text("the run's\n")
    (tmp_path / "alias").symlink_to(run)
    with pytest.raises(output.OutputError, match="inside the run"):
        write(tmp_path / "alias" / "config.yaml", force=True)
    assert (run / "config.yaml").read_text() == "the run's\n"


def test_nothing_of_a_sweep_folder_is_replaced(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "state.json").write_text("{}\n")
    (sweep / "best.yaml").write_text("the sweep's\n")
    with pytest.raises(output.OutputError, match="inside the sweep"):
        write(sweep / "best.yaml", force=True)
    assert (sweep / "best.yaml").read_text() == "the sweep's\n"


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("x.npz", "csv"),
        ("x.csv", "npz"),
        ("x.json", "csv"),
        ("x.CSV", "json"),
        ("x.png", "json"),
        ("model.py", "onnx"),
        ("model.onnx", "script"),
        ("model.keras", "litert"),
        ("model.tflite", "savedmodel"),
        ("plot.csv", "png"),
    ],
)
def test_a_suffix_naming_another_format_is_refused(tmp_path, name, fmt):
    with pytest.raises(output.OutputError, match="its suffix"):
        output.check_suffix(tmp_path / name, fmt)


@pytest.mark.parametrize(
    ("name", "fmt"), [("x.csv", "csv"), ("x.txt", "csv"), ("model", "onnx"), ("m.keras", "keras")]
)
def test_a_suffix_that_agrees_or_says_nothing_passes(tmp_path, name, fmt):
    output.check_suffix(tmp_path / name, fmt)


def test_a_name_too_long_for_the_file_system_is_one_line(tmp_path):
    with pytest.raises(output.OutputError, match="this file system takes at most"):
        write(tmp_path / ("n" * 300 + ".csv"))
    assert leftovers(tmp_path) == []


def test_a_name_at_the_file_systems_limit_is_written(tmp_path):
    out = tmp_path / ("n" * 251 + ".csv")  # 255 bytes: the temporary name must still fit
    write(out)
    assert out.read_text() == "new\n" and leftovers(tmp_path) == []


def test_a_parent_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(output.OutputError, match="is not a folder"):
        write(tmp_path / "file" / "out.csv")


# --- re-checked at the moment of the move ---------------------------------------------------


def test_two_writers_of_one_path_cannot_both_succeed(tmp_path):
    out = tmp_path / "out.csv"
    first, second = output.writing(out), output.writing(out)
    tmp_first, tmp_second = first.__enter__(), second.__enter__()  # both checked: nothing there
    tmp_first.write_text("first\n")
    tmp_second.write_text("second\n")
    first.__exit__(None, None, None)
    with pytest.raises(output.OutputError, match="appeared while this command ran"):
        second.__exit__(None, None, None)
    assert out.read_text() == "first\n"
    assert leftovers(tmp_path) == []


def test_two_exports_of_one_folder_cannot_both_succeed(tmp_path):
    out = tmp_path / "export"
    first, second = output.writing(out, folder=True), output.writing(out, folder=True)
    one, two = first.__enter__(), second.__enter__()
    (one / "preprocessing.json").write_text("{}\n")
    (two / "preprocessing.json").write_text('{"second": 1}\n')
    first.__exit__(None, None, None)
    with pytest.raises(output.OutputError, match="appeared while this command ran"):
        second.__exit__(None, None, None)
    assert (out / "preprocessing.json").read_text() == "{}\n"
    assert leftovers(tmp_path) == []


def test_a_fifo_that_appears_during_the_work_is_not_replaced_even_with_force(tmp_path):
    out = tmp_path / "out.csv"
    with pytest.raises(output.OutputError, match="a FIFO"):  # noqa: PT012
        with output.writing(out, force=True) as tmp:
            tmp.write_text("rows\n")
            os.mkfifo(out)
    assert os.path.exists(out) and not out.is_file()
    assert leftovers(tmp_path) == []


def test_an_earlier_export_is_swapped_whole_and_anything_else_refused(tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    (out / "preprocessing.json").write_text("old\n")

    def earlier(path):
        return (path / "preprocessing.json").is_file()

    with output.writing(out, folder=True, force=True, earlier=earlier) as folder:
        (folder / "preprocessing.json").write_text("new\n")
    assert (out / "preprocessing.json").read_text() == "new\n"
    assert leftovers(tmp_path) == []
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years\n")
    with pytest.raises(output.OutputError, match="not an earlier export"):
        write_folder = output.writing(mine, folder=True, force=True, earlier=earlier)
        write_folder.__enter__()
    assert (mine / "thesis.tex").read_text() == "years\n"


# --- failures and signals inside the block -----------------------------------------------------


def test_an_exception_in_the_block_leaves_nothing(tmp_path):
    out = tmp_path / "out.csv"
    with pytest.raises(ValueError, match="boom"):  # noqa: PT012
        with output.writing(out) as tmp:
            tmp.write_text("half")
            raise ValueError("boom")
    assert not out.exists() and leftovers(tmp_path) == []


def test_ctrl_c_in_the_block_leaves_nothing(tmp_path):
    out = tmp_path / "out.csv"
    with pytest.raises(KeyboardInterrupt):  # noqa: PT012
        with output.writing(out) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_in_the_block_leave_nothing(tmp_path, signum):
    out = tmp_path / "out.csv"
    with pytest.raises(output.StoppedError, match="stopped by SIG") as caught:  # noqa: PT012
        with output.writing(out) as tmp:
            tmp.write_text("half")
            os.kill(os.getpid(), signum)
    assert caught.value.exit_code == 128 + signum
    assert not out.exists() and leftovers(tmp_path) == []
    assert signal.getsignal(signum) == signal.SIG_DFL  # the handler is put back


def test_an_os_error_in_the_block_is_one_line_naming_the_path(tmp_path):
    out = tmp_path / "out.csv"
    with pytest.raises(output.NotWritten, match=r"--out .*out.csv: not written \(No space"):  # noqa: PT012
        with output.writing(out):
            raise OSError(28, "No space left on device")
    assert leftovers(tmp_path) == []


def test_a_read_only_folder_is_one_line(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    os.chmod(folder, 0o500)
    try:
        if os.access(folder, os.W_OK):  # root ignores the mode: a read-only mount is in _disk
            pytest.skip("root writes anywhere")
        with pytest.raises(output.NotWritten, match="not written"):
            write(folder / "out.csv")
    finally:
        os.chmod(folder, 0o700)


# --- the commands, on a real run ----------------------------------------------------------------


def invoke(*args):
    return runner.invoke(app, [*map(str, args)])


def commands(trained: Path, out: Path) -> dict[str, list]:
    """Each command that writes a result file, aimed at `out`."""
    return {
        "predict": ["predict", trained, trained.parent.parent / "digits.npz", "--out", out],
        "evaluate": ["evaluate", trained, "--out", out],
        "features": ["features", trained, "--layer", "-2", "--out", out],
        "compare": ["compare", trained, "--plot", out],
        "export script": ["export", trained, "--format", "script", "--out", out],
        "export keras": ["export", trained, "--format", "keras", "--out", out],
    }


SUFFIX = {
    "predict": ".csv",
    "evaluate": ".json",
    "features": ".npz",
    "compare": ".png",
    "export script": ".py",
    "export keras": "",
}
COMMANDS = sorted(SUFFIX)


def with_input(trained: Path) -> Path:
    """The trained run, with the kind of input it takes beside its runs folder (where
    commands() looks for it): an npz of 8x8 digits, as a user hands them over."""
    from sklearn import datasets

    target = trained.parent.parent / "digits.npz"
    if not target.exists():
        np.savez(target, x=datasets.load_digits().images[:50].astype(np.uint8))
    return trained


@pytest.fixture(scope="module")
def placed(trained) -> Path:
    return with_input(trained)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_refuses_a_fifo_at_its_output(placed, tmp_path, command):
    out = tmp_path / f"out{SUFFIX[command]}"
    os.mkfifo(out)
    result = invoke(*commands(placed, out)[command])
    assert_one_clean_error(result, "FIFO")
    assert not out.is_file() and os.path.exists(out)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_refuses_an_existing_output_without_force(placed, tmp_path, command):
    out = tmp_path / f"out{SUFFIX[command]}"
    if command == "export keras":
        out.mkdir()
        (out / "preprocessing.json").write_text("mine\n")
        mine = out / "preprocessing.json"
    else:
        out.write_text("mine\n")
        mine = out
    result = invoke(*commands(placed, out)[command])
    assert_one_clean_error(result, "already exists; pass --force")
    assert mine.read_text() == "mine\n"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_refuses_a_symlink_at_its_output(placed, tmp_path, command):
    target = tmp_path / "elsewhere"
    target.write_text("mine\n")
    out = tmp_path / f"out{SUFFIX[command]}"
    out.symlink_to(target)
    result = invoke(*commands(placed, out)[command], "--force")
    assert_one_clean_error(result, "symlink")
    assert target.read_text() == "mine\n"


@pytest.mark.parametrize("command", ["predict", "evaluate", "features", "compare"])
def test_no_command_replaces_a_file_of_the_run_even_with_force(placed, command):
    target = {
        "predict": placed / "predictions.csv",
        "evaluate": placed / "metrics.json",
        "features": placed / "features.npz",
        "compare": store.HISTORY_PLOT,
    }[command]
    target = placed / target if isinstance(target, str) else target
    if not target.exists():
        target.write_bytes(b"the run's")
    before = target.read_bytes()
    result = invoke(*commands(placed, target)[command], "--force")
    assert_one_clean_error(result, "inside the run")
    assert target.read_bytes() == before


def test_export_script_never_replaces_the_runs_checkpoint(placed):
    best = placed / store.BEST
    before = best.read_bytes()
    result = invoke("export", placed, "--format", "script", "--out", best, "--force")
    assert_one_clean_error(result, "suffix .keras")
    renamed = placed / "checkpoints" / "best.py"
    renamed.write_text("the run's")
    try:
        result = invoke("export", placed, "--format", "script", "--out", renamed, "--force")
        assert_one_clean_error(result, "inside the run")
        assert renamed.read_text() == "the run's"
    finally:
        renamed.unlink()
    assert best.read_bytes() == before


def test_predict_never_replaces_its_own_input(placed, tmp_path):
    given = tmp_path / "mine.npz"
    given.write_bytes((placed.parent.parent / "digits.npz").read_bytes())
    before = given.read_bytes()
    result = invoke("predict", placed, given, "--out", given, "--format", "npz", "--force")
    assert_one_clean_error(result, "one of this command's inputs")
    assert given.read_bytes() == before


def test_predict_refuses_a_suffix_contradicting_its_format(placed, tmp_path):
    out = tmp_path / "x.npz"
    result = invoke("predict", placed, placed.parent.parent / "digits.npz", "--format", "csv",
                    "--out", out)  # fmt: skip
    assert_one_clean_error(result, "its suffix .npz says npz, but csv is written")
    assert not out.exists()


def test_export_refuses_a_suffix_contradicting_its_format(placed, tmp_path):
    out = tmp_path / "x.onnx"
    result = invoke("export", placed, "--format", "script", "--out", out)
    assert_one_clean_error(result, "its suffix .onnx says onnx")
    assert not out.exists()


@pytest.mark.parametrize("command", ["predict", "evaluate", "compare", "export script"])
def test_force_replaces_a_users_own_file(placed, tmp_path, command):
    out = tmp_path / f"out{SUFFIX[command]}"
    out.write_text("old\n")
    result = invoke(*commands(placed, out)[command], "--force")
    assert result.exit_code == 0, result.output
    assert out.read_bytes() != b"old\n"
    assert leftovers(tmp_path) == []


def test_sigterm_during_predict_leaves_no_temporary_file(placed, tmp_path):
    """A real signal to a real process: the rows' temporary file is removed, exit 143."""
    from sklearn import datasets

    images = np.tile(datasets.load_digits().images.astype(np.uint8), (120, 1, 1))
    many = tmp_path / "many.npz"
    np.savez(many, x=images)
    out = tmp_path / "rows.csv"
    process = subprocess.Popen(
        [sys.executable, "-m", "dlrun", "predict", str(placed), str(many), "--out", str(out)],
        preexec_fn=default_sigint,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=DLRUN_ENV,
    )
    wait_until(lambda: [n for n in leftovers(tmp_path) if n.startswith(".rows.csv.")], process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("Error: stopped by SIGTERM")
    assert "Traceback" not in err
    assert not out.exists() and leftovers(tmp_path) == []


def test_errors_of_the_owner_are_dlrun_errors():
    assert issubclass(output.OutputError, DlrunError) and output.OutputError.exit_code == 2
    assert issubclass(output.NotWritten, DlrunError) and output.NotWritten.exit_code == 1
