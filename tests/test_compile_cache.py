"""JAX's persistent compilation cache (dlrun.backend.compile_cache): a second process training
the same net on JAX compiles nothing the first compiled, and gets the same numbers;
a cache folder the user names is theirs; a cache folder that cannot be made costs nothing but
the cache. Real `dlrun` processes on JAX, with TensorFlow made unimportable (tests/blocker)."""

import csv
from pathlib import Path

from test_backend_auto import ONE_EPOCH, dlrun, environment

from conftest import run_dirs


def entries(folder: Path) -> set[str]:
    """The cache's compiled programs (JAX keeps an -atime file beside each)."""
    return {p.name for p in folder.glob("*-cache")} if folder.is_dir() else set()


def history(run: Path) -> list[dict]:
    with (run / "history.csv").open() as f:
        return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in csv.DictReader(f)]


def test_a_second_run_compiles_nothing_new_and_trains_to_the_same_numbers(tmp_path):
    (tmp_path / "tiny.yaml").write_text(ONE_EPOCH)
    cache = tmp_path / "cache"
    env = environment(block_tensorflow=True, KERAS_BACKEND="jax", DLRUN_CACHE_DIR=str(cache))
    first = dlrun("train", "tiny.yaml", "--runs-dir", "a", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    kept = entries(cache / "jax")
    assert len(kept) > 10  # the fit's steps and the small ops of building the model

    second = dlrun("train", "tiny.yaml", "--runs-dir", "b", env=env, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert entries(cache / "jax") == kept  # every compilation came from the cache
    (a,) = run_dirs(tmp_path / "a")
    (b,) = run_dirs(tmp_path / "b")
    assert history(a) == history(b)


def test_a_cache_folder_the_user_names_is_used_and_dlruns_is_not(tmp_path):
    (tmp_path / "tiny.yaml").write_text(ONE_EPOCH)
    theirs, ours = tmp_path / "theirs", tmp_path / "ours"
    env = environment(
        block_tensorflow=True,
        KERAS_BACKEND="jax",
        DLRUN_CACHE_DIR=str(ours),
        JAX_COMPILATION_CACHE_DIR=str(theirs),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    )
    # validate builds the model on JAX: its initializers compile
    result = dlrun("validate", "tiny.yaml", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert entries(theirs)
    assert not (ours / "jax").exists()


def test_a_cache_folder_that_cannot_be_made_only_costs_the_cache(tmp_path):
    (tmp_path / "tiny.yaml").write_text(ONE_EPOCH)
    (tmp_path / "file").write_text("not a folder")
    env = environment(
        block_tensorflow=True, KERAS_BACKEND="jax", DLRUN_CACHE_DIR=str(tmp_path / "file" / "c")
    )
    result = dlrun("train", "tiny.yaml", "--runs-dir", "runs", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "cache" not in result.stderr.lower()
    assert len(run_dirs(tmp_path / "runs")) == 1
