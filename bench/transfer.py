"""The README's transfer table: pretrain on mnist_5k, adapt to digits with few labels.

    python bench/transfer.py                  # the real runs (about 15 minutes on 2 cores)
    python bench/transfer.py --quick          # a few samples and one epoch: the test's check

Every number comes from a run this script makes with configs/transfer_*.yaml: from scratch,
frozen features + logistic regression (`dlrun features` on the head run's frozen base), the
head only, and the head then finetuning. It writes bench/transfer_results.md (or --out).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
LIMITS = {"10 per class": 100, "50 per class": 500, "all (1437)": None}
QUICK = {"3 per class": 30}


def table(rows: list[dict]) -> str:
    lines = [
        "| labels | from scratch | frozen features + logistic regression | head only | "
        "head then finetune |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [row[k] for k in ("scratch", "features", "head", "finetune")]
        lines.append(f"| {row['labels']} | " + " | ".join(f"{c:.4f}" for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few samples, one epoch")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "transfer_results.md")
    args = parser.parse_args()

    from dlrun import api
    from dlrun.report.features import extract

    quick = ["training.epochs=1"] if args.quick else []
    started = time.perf_counter()
    pretrain_set = quick + (["data.limit=200"] if args.quick else [])
    pretrain = api.train(CONFIGS / "transfer_pretrain.yaml", pretrain_set, args.runs_dir, False)
    assert pretrain.status == "completed", pretrain.message
    print(f"pretrained on mnist_5k: test accuracy {pretrain.metrics['test']['accuracy']:.4f}")
    base = [f"model.base.run={pretrain.run_dir}"]
    rows = []
    for labels, limit in (QUICK if args.quick else LIMITS).items():
        subset = quick + [f"data.limit={'null' if limit is None else limit}"]
        finetune_set = ["training.finetune.epochs=1"] if args.quick else []
        runs = {
            "scratch": api.train(CONFIGS / "transfer_scratch.yaml", subset, args.runs_dir, False),
            "head": api.train(CONFIGS / "transfer_head.yaml", subset + base, args.runs_dir, False),
            "finetune": api.train(
                CONFIGS / "transfer_finetune.yaml",
                subset + base + finetune_set,
                args.runs_dir,
                False,
            ),
        }
        row = {"labels": labels}
        for name, outcome in runs.items():
            assert outcome.status == "completed", (name, outcome.message)
            row[name] = outcome.metrics["test"]["accuracy"]
        out = args.runs_dir / f"features-{limit or 'all'}.npz"
        row["features"] = extract(runs["head"].run_dir, "base", out, classifier="logistic")[
            "accuracy"
        ]
        rows.append(row)
        print(table(rows), flush=True)
    text = (
        "Test accuracy on digits' fixed test split (360 images), by training labels used.\n"
        f"Command: python bench/transfer.py{' --quick' if args.quick else ''}; "
        f"{time.perf_counter() - started:.0f} s in all.\n"
        f"Pretrained CNN on mnist_5k: test accuracy {pretrain.metrics['test']['accuracy']:.4f}.\n\n"
        + table(rows)
    )
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
