"""Generate N realistic run folders (meta, config, metrics, history; no weights) for speed tests."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import yaml

from dlrun.spec.schema import Spec


def make_runs(root: Path, count: int = 200, seed: int = 0) -> Path:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    base = yaml.safe_load(Path("configs/mnist_cnn.yaml").read_text())
    for index in range(count):
        config = json.loads(json.dumps(base))
        config["model"]["layers"][5]["units"] = rng.choice([32, 64, 128, 256])
        config["training"]["epochs"] = rng.choice([1, 5, 10])
        config["compile"]["optimizer"] = rng.choice(["adam", "sgd", "rmsprop"])
        spec = Spec.model_validate(config)
        run = root / f"mnist-cnn-20261124-{index:06d}"
        (run / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run / "config.yaml").write_text(spec.dump())
        epochs = config["training"]["epochs"]
        rows = ["epoch,loss,accuracy,val_loss,val_accuracy,learning_rate,epoch_seconds"]
        for epoch in range(1, epochs + 1):
            loss = 1 / (epoch + rng.random())
            rows.append(f"{epoch},{loss},{1 - loss / 3},{loss * 1.1},{1 - loss / 2.8},0.001,1.5")
        (run / "history.csv").write_text("\n".join(rows) + "\n")
        meta = {
            "name": "mnist-cnn",
            "status": rng.choice(["completed"] * 8 + ["failed", "interrupted"]),
            "pid": 1,
            "host": "bench",
            "started": f"2026-11-24T10:{index // 60 % 60:02d}:{index % 60:02d}+00:00",
            "ended": f"2026-11-24T11:{index // 60 % 60:02d}:{index % 60:02d}+00:00",
            "epochs_planned": epochs,
            "epochs_done": epochs,
            "seed": 0,
        }
        (run / "meta.json").write_text(json.dumps(meta, indent=2))
        metrics = {
            "params": 61482,
            "epochs_done": epochs,
            "monitor": "val_loss",
            "best_epoch": epochs,
            "best_value": rng.random(),
            "final": {"loss": rng.random(), "accuracy": rng.random()},
            "test": {"loss": rng.random(), "accuracy": rng.random()},
            "train_seconds": rng.random() * 100,
        }
        (run / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return root


if __name__ == "__main__":
    make_runs(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 200)
