"""Hostile data files and image folders: each refused by `dlrun train` before a run folder
exists, as one `Error:` line naming the file, the key or column and the rows.

Issue 23, items 1-8, and cases of our own in the same categories. Nothing here trains: every
case fails while the data is read, in well under a second once Keras is imported.
"""

import io
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_hostile import assert_one_clean_error, no_hang  # noqa: F401  (an autouse fixture)
from typer.testing import CliRunner

from dlrun.cli import app

runner = CliRunner()

SPEC = """\
name: hostile
data: {{dataset: {dataset}, path: {path}, scale: 1{extra}}}
model:
  layers:
    - {{type: Dense, units: 8, activation: relu}}
    - {{type: Dense, units: {units}, activation: softmax}}
training: {{epochs: 1, batch_size: 8, validation_split: 0.2}}
"""


def spec_file(tmp_path: Path, dataset: str, path: Path, extra: str = "") -> Path:
    """A spec of a small dense net on the data (2 classes for image folders, else 3)."""
    spec = tmp_path / "spec.yaml"
    units = 2 if dataset == "directory" else 3
    extra += ", flatten: true" if dataset == "directory" else ""
    spec.write_text(SPEC.format(dataset=dataset, path=path, extra=extra, units=units))
    return spec


def refused(tmp_path: Path, dataset: str, path: Path, fragment: str, extra: str = "") -> str:
    """`dlrun train` on the data: one Error line holding `fragment`, exit 2, no run folder."""
    spec = spec_file(tmp_path, dataset, path, extra)
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(runs)])
    line = assert_one_clean_error(result, fragment)
    assert not runs.exists(), "nothing may be written for bad data"
    return line


def rows(n: int = 30, classes: int = 3) -> list[str]:
    """n csv rows 'a,b,label' with every class present."""
    return [f"{i % 7},{i % 5},{'abc'[i % classes]}" for i in range(n)]


# --- csv: name -> (file text, fragment of the Error line) ------------------------------------

CSV = {
    # issue 23 item 1: pandas would rename the copy label.1 and train on the answer
    "label-twice": (
        "a,label,b,label\n" + "\n".join(f"{i},{i % 3},{i},{i % 3}" for i in range(30)),
        "the header names 'label' (columns 2, 4) more than once",
    ),
    "feature-twice": (
        "a,a,label\n" + "\n".join(r for r in rows()),
        "'a' (columns 1, 2) more than once",
    ),
    # item 2: a blank label cell
    "blank-string-label": (
        "a,b,label\n" + "\n".join(rows()) + "\n1,2,\n",
        "column 'label' has no value on line(s) 32 (1 of 31 rows)",
    ),
    "blank-numeric-label": (
        "a,b,label\n" + "\n".join(f"{i},{i},{i % 3}" for i in range(30)) + "\n4,5,\n",
        "column 'label' has no value on line(s) 32",
    ),
    "na-label": (
        "a,b,label\n1,2,NA\n" + "\n".join(rows()),
        "column 'label' has no value on line(s) 2 (1 of 31 rows)",
    ),
    "many-blank-labels": (
        "a,b,label\n" + "\n".join(f"{i},{i}," for i in range(8)) + "\n" + "\n".join(rows()),
        "line(s) 2, 3, 4, 5, 6 and 3 more (8 of 38 rows)",
    ),
    # item 3: NaN or inf in features
    "empty-feature-cell": (
        "a,b,label\n" + "\n".join(rows()) + "\n,3,a\n",
        "column(s) 'a' hold missing (NaN) or infinite values on line(s) 32",
    ),
    "inf-feature": (
        "a,b,label\n1,inf,a\n" + "\n".join(rows()),
        "column(s) 'b' hold missing (NaN) or infinite values on line(s) 2",
    ),
    "minus-inf-feature": (
        "a,b,label\n" + "\n".join(rows()) + "\n-inf,2,b\n",
        "column(s) 'a' hold missing (NaN) or infinite values on line(s) 32",
    ),
    "nan-word-feature": (
        "a,b,label\nNaN,NaN,a\n" + "\n".join(rows()),
        "column(s) 'a', 'b' hold missing (NaN)",
    ),
    "overflows-float32": (
        "a,b,label\n1e300,1,a\n" + "\n".join(rows()),
        "column(s) 'a' hold missing (NaN) or infinite values on line(s) 2",
    ),
    # item 5: only the label column; one class
    "only-label": (
        "label\n" + "\n".join("abc"[i % 3] for i in range(30)),
        "has only the label column 'label'",
    ),
    "one-class": (
        "a,b,label\n" + "\n".join(f"{i},{i % 4},a" for i in range(30)),
        "the labels hold 1 class ('a'); classification needs at least two",
    ),
    "one-numeric-class": (
        "a,b,label\n" + "\n".join(f"{i},{i % 4},7" for i in range(30)),
        "the labels hold 1 class ('7')",
    ),
    # ours: names from disk in the message are one clean line
    "escape-in-column": ("a\x1b[2J,b,label\n,1,a\n" + "\n".join(rows()), "column(s) 'a?[2J' hold"),
    "label-twice-blank-first": (
        "label,label,a\n" + "\n".join(f"{i % 3},{i % 3},{i}" for i in range(30)),
        "'label' (columns 1, 2) more than once",
    ),
}


@pytest.mark.parametrize("case", sorted(CSV))
def test_hostile_csv(case, tmp_path):
    text, fragment = CSV[case]
    path = tmp_path / "data.csv"
    path.write_text(text)
    refused(tmp_path, "csv", path, fragment)


def test_a_blank_label_is_refused_for_regression_too(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("a,b,label\n" + "\n".join(f"{i},{i},{i * 0.5}" for i in range(30)) + "\n1,1,\n")
    refused(tmp_path, "csv", path, "no value on line(s) 32", ", task: regression")


# --- npz: name -> (arrays, fragment) ----------------------------------------------------------

X = np.arange(60, dtype=np.float32).reshape(30, 2)
Y = np.arange(30) % 3
NAN_X = X.copy()
NAN_X[[4, 9], 1] = np.nan
INF_X = X.copy()
INF_X[2, 0] = np.inf

NPZ = {
    # item 4
    "x-test-without-y-test": (
        {"x_train": X, "y_train": Y, "x_test": X},
        "has x_test but no y_test; give both test keys or neither",
    ),
    "y-test-without-x-test": (
        {"x_train": X, "y_train": Y, "y_test": Y},
        "has y_test but no x_test",
    ),
    "string-features": (
        {"x_train": X.astype(str), "y_train": Y},
        "x_train holds <U32 values, not numbers",
    ),
    "bytes-features": ({"x_train": X.astype(bytes), "y_train": Y}, "x_train holds |S32 values"),
    "0-d-x-train": ({"x_train": np.float32(3), "y_train": Y}, "x_train is a single value"),
    "0-d-y-train": ({"x_train": X, "y_train": np.int64(1)}, "y_train is a single value"),
    "narrow-x-test": (
        {"x_train": X, "y_train": Y, "x_test": X[:, :1], "y_test": Y},
        "x_test has samples of shape (1,) but x_train (2,)",
    ),
    "string-x-test": (
        {"x_train": X, "y_train": Y, "x_test": X.astype(str), "y_test": Y},
        "x_test holds <U32 values",
    ),
    # item 3
    "nan-features": (
        {"x_train": NAN_X, "y_train": Y},
        "x_train has missing (NaN) or infinite values in feature(s) 1, row(s) 4, 9",
    ),
    "inf-test-features": (
        {"x_train": X, "y_train": Y, "x_test": INF_X, "y_test": Y},
        "x_test has missing (NaN) or infinite values in feature(s) 0, row(s) 2",
    ),
    "nan-labels": (
        {"x_train": X, "y_train": np.where(Y == 1, np.nan, Y)},
        "y_train has missing (NaN) or infinite labels in row(s) 1, 4, 7, 10, 13 and",
    ),
    # item 5 for npz: one class
    "one-class": ({"x_train": X, "y_train": np.zeros(30)}, "the labels hold 1 class ('0.0')"),
    "no-x-train": ({"y_train": Y}, "has no x_train"),
}


@pytest.mark.parametrize("case", sorted(NPZ))
def test_hostile_npz(case, tmp_path):
    arrays, fragment = NPZ[case]
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    line = refused(tmp_path, "npz", path, fragment)
    assert "is not a readable npz file" not in line


def npy_entry(archive: zipfile.ZipFile, key: str, header_shape: tuple, size: int) -> None:
    """An .npy entry whose header says float64 `header_shape` and whose body is `size` zeros."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": header_shape}
    )
    with archive.open(f"{key}.npy", "w") as entry:
        entry.write(header.getvalue())  # the magic string, then the header
        block = bytes(1 << 20)
        for _ in range(size >> 20):
            entry.write(block)


def test_an_unused_key_is_never_decompressed(tmp_path):
    """A 200 MiB bomb under a key dlrun does not use costs nothing: only used keys are read."""
    path = tmp_path / "data.npz"
    np.savez(path, x_train=NAN_X, y_train=Y)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive:
        npy_entry(archive, "unused", (200 << 17,), 200 << 20)
    assert path.stat().st_size < 1 << 20
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    refused(tmp_path, "npz", path, "x_train has missing (NaN)")  # the real problem, found
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown < 100 << 10, f"peak memory grew by {grown} KiB"


def test_a_key_that_expands_beyond_its_header_is_refused_unread(tmp_path):
    path = tmp_path / "data.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        npy_entry(archive, "x_train", (30, 2), 64 << 20)
        buffer = io.BytesIO()
        np.save(buffer, Y)
        archive.writestr("y_train.npy", buffer.getvalue())
    refused(tmp_path, "npz", path, "x_train expands to 64 MiB though its header says 0 MiB")


def test_a_key_larger_than_memory_is_refused_unread(tmp_path):
    """A header claiming a petabyte: refused by the memory it would need, before reading."""
    path = tmp_path / "data.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        npy_entry(archive, "x_train", (1 << 47,), 0)
        buffer = io.BytesIO()
        np.save(buffer, Y)
        archive.writestr("y_train.npy", buffer.getvalue())
    refused(tmp_path, "npz", path, "x_train needs 1,048,576.0 GiB of memory")


def test_validate_refuses_bad_data_too(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text(CSV["label-twice"][0])
    spec = spec_file(tmp_path, "csv", path)
    result = runner.invoke(app, ["validate", str(spec)])
    assert_one_clean_error(result, "more than once")


# --- image folders ------------------------------------------------------------------------------


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height and holds one tiny (wrong) IDAT: PIL reads the
    size from the header alone."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture
def folder(tmp_path) -> Path:
    """Two classes of four small real PNGs and JPEGs each."""
    root = tmp_path / "images"
    for label, shade in (("cat", 40), ("dog", 200)):
        (root / label).mkdir(parents=True)
        for i in range(4):
            image = Image.new("RGB", (12, 10), (shade, i * 30, 0))
            image.save(root / label / f"{i}.png")
            image.save(root / label / f"{i}.jpg", quality=90)
    return root


def refused_folder(tmp_path: Path, root: Path, fragment: str, extra: str = "") -> str:
    return refused(tmp_path, "directory", root, fragment, ", image_size: [8, 8]" + extra)


def truncated_jpeg(path: Path) -> None:
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 80).convert("RGB").save(buffer, "JPEG", quality=95)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


IMAGES = {
    # item 6: a FIFO named like an image blocked the check forever
    "fifo-png": (lambda r: os.mkfifo(r / "cat" / "stuck.png"), "stuck.png (not a regular file)"),
    # item 7
    "truncated-jpeg": (
        lambda r: truncated_jpeg(r / "dog" / "cut.jpg"),
        "cut.jpg (OSError: image file is truncated",
    ),
    "bomb-png": (
        lambda r: (r / "cat" / "bomb.png").write_bytes(png_header(30000, 30000)),
        "bomb.png (more than 40,000,000 pixels)",
    ),
    "large-png": (
        lambda r: (r / "cat" / "large.png").write_bytes(png_header(12000, 12000)),
        "large.png (12000x12000 pixels, more than 40,000,000)",
    ),
    "just-over-bound": (
        lambda r: (r / "cat" / "big.png").write_bytes(png_header(8000, 5001)),
        "big.png (8000x5001 pixels, more than 40,000,000)",
    ),
    # item 8: a newline and ESC in a file name forged a second Error line
    "newline-in-name": (
        lambda r: (r / "cat" / "x\nError: forged\x1b[2J.png").write_bytes(b"no"),
        "x Error: forged?[2J.png (UnidentifiedImageError",
    ),
    # ours
    "symlink-to-a-fifo": (
        lambda r: (os.mkfifo(r / "pipe"), (r / "dog" / "p.png").symlink_to(r / "pipe")),
        "p.png (not a regular file)",
    ),
    "socket-png": (
        lambda r: __import__("socket").socket(1).bind(str(r / "dog" / "s.png")),
        "s.png (not a regular file)",
    ),
    "truncated-png": (
        lambda r: (r / "cat" / "cut.png").write_bytes((r / "cat" / "0.png").read_bytes()[:60]),
        "cut.png (",
    ),
    "zero-byte-jpeg": (
        lambda r: (r / "dog" / "empty.jpg").write_bytes(b""),
        "empty.jpg (UnidentifiedImageError",
    ),
    "text-named-png": (
        lambda r: (r / "dog" / "notes.png").write_text("hello"),
        "notes.png (UnidentifiedImageError",
    ),
    "tiff-named-jpg": (
        lambda r: Image.new("RGB", (4, 4)).save(r / "dog" / "t.jpg", "TIFF"),
        "t.jpg (TIFF)",
    ),
    "bomb-in-subfolder": (
        lambda r: (
            (r / "dog" / "deep").mkdir(),
            (r / "dog" / "deep" / "b.png").write_bytes(png_header(40000, 40000)),
        ),
        "b.png (more than 40,000,000 pixels)",
    ),
}


@pytest.mark.parametrize("case", sorted(IMAGES))
def test_hostile_image_folder(case, folder, tmp_path):
    IMAGES[case][0](folder)
    refused_folder(tmp_path, folder, IMAGES[case][1])


def test_the_good_folder_passes_the_check(folder, tmp_path):
    """The control: the same folder, undamaged, gets past the data checks; a symlink to an
    image is an image (datasets are often linked into place)."""
    (folder / "cat" / "linked.png").symlink_to(folder / "dog" / "0.png")
    spec = spec_file(tmp_path, "directory", folder, ", image_size: [8, 8]")
    result = runner.invoke(app, ["validate", str(spec)])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "size, extra, fragment",
    [
        # item 8: 9 GB allocated in 28 s before
        ("[20000, 20000]", "", "decodes to 4.5 GiB an image (3 channel(s), float32), 35.8 GiB"),
        ("[8000, 8000]", "", "decodes to 732 MiB an image (3 channel(s), float32), 5.7 GiB"),
        ("[20000, 20000]", ", color_mode: grayscale", "decodes to 1.5 GiB an image (1 channel"),
    ],
    ids=["huge", "large-for-the-batch", "huge-grayscale"],
)
def test_an_image_size_beyond_memory_is_refused_before_building(
    size, extra, fragment, folder, tmp_path
):
    spec = spec_file(tmp_path, "directory", folder, f", image_size: {size}{extra}")
    for command in ("validate", "train"):
        result = runner.invoke(
            app,
            [command, str(spec), "--runs-dir", str(tmp_path / "runs")]
            if command == "train"
            else [command, str(spec)],
        )
        line = assert_one_clean_error(result, fragment)
        assert "data.image_size" in line
    assert not (tmp_path / "runs").exists()
