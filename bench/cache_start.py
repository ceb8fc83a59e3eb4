"""How long `data.cache: memory` takes to give the first batch, by the number of epochs.

dlrun's pipeline (one flat_map over the epochs) against the one it replaced (one shuffled copy
of the cache per epoch, concatenated), side by side in one process on the same image folder.
Run: python bench/cache_start.py
"""

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from test_images import folder_spec, write_folder  # noqa: E402

from dlrun.data.arrays import load_data  # noqa: E402
from dlrun.data.images import SHUFFLE_BUFFER  # noqa: E402
from dlrun.spec.loading import load_spec  # noqa: E402


def concatenated(source, x, y, batch_size, seed, epochs):
    """The replaced pipeline: a Python loop of per-epoch shuffles, concatenated."""
    decoded = source._decoded(x, y)
    dataset = None
    for epoch in range(epochs):
        one = decoded.shuffle(min(len(x), SHUFFLE_BUFFER), seed=(seed * 1_000_003 + epoch) % 2**31)
        one = one.batch(batch_size)
        dataset = one if dataset is None else dataset.concatenate(one)
    return dataset


def first_batch_seconds(make, *args) -> float:
    start = time.perf_counter()
    next(iter(make(*args)))
    return time.perf_counter() - start


def main() -> None:
    folder = Path(tempfile.mkdtemp())
    data = load_data(
        load_spec(folder_spec(folder, write_folder(folder / "images")), ["data.cache=memory"])
    )
    source, x, y = data.source, data.x_train, data.y_train
    print("| epochs | dlrun s | concatenated s | ratio |\n|---|---|---|---|")
    for epochs in (10, 300, 1000):
        ours = first_batch_seconds(source.shuffled_epochs, x, y, 4, 0, 0, epochs)
        theirs = first_batch_seconds(concatenated, source, x, y, 4, 0, epochs)
        print(f"| {epochs} | {ours:.2f} | {theirs:.2f} | {theirs / ours:.1f}x |")


if __name__ == "__main__":
    main()
