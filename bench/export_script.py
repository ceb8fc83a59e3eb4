"""`dlrun export --format script` against the run it came from, on longer trainings than the
suite can afford: the quickstart (5 epochs), the lecture's CNN on all of mnist_5k and the
residual graph of configs/mnist_resnet.yaml.

For each: `dlrun train` with training.deterministic: true, `dlrun export --format script`,
then the script in a fresh process; prints both parameter counts and test accuracies.
tests/test_export.py does the same on 2 epochs of the quickstart, one epoch of the CNN on
1,000 images and a small dense graph on digits. Usage: python bench/export_script.py
[--cnn-epochs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def dlrun(*args: str, cwd: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "dlrun", *args], cwd=cwd, env=ENV, capture_output=True, text=True
    )
    if result.returncode:
        sys.exit(result.stderr)
    return result.stdout


def compare(name: str, config: str, overrides: list[str], folder: Path) -> None:
    folder.mkdir(parents=True)
    sets = [arg for o in ["training.deterministic=true", *overrides] for arg in ("--set", o)]
    started = time.perf_counter()
    dlrun("train", str(ROOT / "configs" / config), "--runs-dir", "runs", *sets, cwd=folder)
    trained = time.perf_counter() - started
    (run,) = sorted((folder / "runs").iterdir())
    metrics = json.loads((run / "metrics.json").read_text())
    script = folder / f"{name}.py"
    dlrun("export", str(run), "--format", "script", "--out", str(script), cwd=folder)
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(script)], cwd=folder, env=ENV, capture_output=True, text=True
    )
    ran = time.perf_counter() - started
    if result.returncode:
        sys.exit(result.stderr[-3000:])
    found = dict(re.findall(r"^(parameters|test accuracy): (\S+)$", result.stdout, re.M))
    print(
        f"{name}: dlrun {metrics['params']} parameters, test accuracy "
        f"{metrics['test']['accuracy']:.4f} ({trained:.0f} s) | script {found['parameters']} "
        f"parameters, test accuracy {found['test accuracy']} ({ran:.0f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cnn-epochs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        compare("quickstart", "quickstart.yaml", [], Path(tmp) / "quickstart")
    with tempfile.TemporaryDirectory() as tmp:
        cnn = [
            "data.dataset=mnist_5k",
            f"training.epochs={args.cnn_epochs}",
            "training.tensorboard=null",
        ]
        compare("cnn", "mnist_cnn.yaml", cnn, Path(tmp) / "cnn")
    with tempfile.TemporaryDirectory() as tmp:
        resnet = [f"training.epochs={args.cnn_epochs}", "training.tensorboard=null"]
        compare("resnet", "mnist_resnet.yaml", resnet, Path(tmp) / "resnet")


if __name__ == "__main__":
    main()
