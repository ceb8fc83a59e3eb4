"""What GridSearchCV's train scores cost a dlrun sweep: the lecture's sweep (mnist_5k, hidden
units 32/64/256 x epochs 1/5/10, cv=3, 2 workers) with return_train_score true and false,
side by side, alternating. Each fit then scores its training folds after every epoch (one
inference pass over them).
Usage: python bench/train_scores_cost.py [--rounds 2] [--out bench/train_scores_cost.md]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep_vs_scikeras import ROOT, dlrun_sweep  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench" / "train_scores_cost.md"))
    args = parser.parse_args()
    walls: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.rounds):
        for scored in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                wall, _ = dlrun_sweep(Path(tmp), return_train_score=scored)
            walls[scored].append(wall)
    on, off = statistics.median(walls[True]), statistics.median(walls[False])
    lines = [
        "# The cost of train scores in a dlrun sweep",
        "",
        "The lecture's sweep (mnist_5k, units 32/64/256 x epochs 1/5/10, cv=3, 2 workers, no "
        "refit), whole process, alternating; produced by `python bench/train_scores_cost.py`.",
        "",
        f"- return_train_score: false: {', '.join(f'{w:.1f}' for w in walls[False])} s "
        f"(median {off:.1f} s)",
        f"- return_train_score: true: {', '.join(f'{w:.1f}' for w in walls[True])} s "
        f"(median {on:.1f} s)",
        f"- ratio true / false: medians {on / off:.2f}, fastest runs "
        f"{min(walls[True]) / min(walls[False]):.2f} (on a shared machine the fastest run is "
        "the least disturbed)",
    ]
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
