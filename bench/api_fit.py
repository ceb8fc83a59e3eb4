"""dlrun's Python API on one of the lecture's configs; prints its measurements as JSON.

Usage: python bench/api_fit.py CONFIG EPOCHS RUNS_DIR
"""

import csv
import json
import os
import resource
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from dlrun import api

config, epochs, runs_dir = sys.argv[1], sys.argv[2], sys.argv[3]
overrides = ["data.dataset=mnist_5k", f"training.epochs={epochs}", "training.early_stopping=null"]
outcome = api.train(config, overrides, runs_dir=runs_dir, verbose=False)
metrics = outcome.metrics
print(
    "BENCH "
    + json.dumps(
        {
            "fit_seconds": metrics["train_seconds"],
            "epochs_seconds": sum(
                float(row["epoch_seconds"])
                for row in csv.DictReader((outcome.run_dir / "history.csv").open())
            ),
            "test_accuracy": metrics["test"]["accuracy"],
            "samples_per_second": metrics["samples_per_second"],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    )
)
