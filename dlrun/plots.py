"""Learning curves and confusion matrices as PNG files (matplotlib, no TensorFlow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlrun import store


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def history_plot(rows: list[dict], path: Path) -> None:
    """The lecture's `pd.DataFrame(history).plot()`: one panel per metric, train vs validation."""
    plt = pyplot()
    names = [k for k in rows[0] if k not in ("epoch", "learning_rate", "epoch_seconds")]
    names = [k for k in names if not k.startswith("val_")]
    epochs = [row["epoch"] for row in rows]
    figure, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.5), squeeze=False)
    for axis, name in zip(axes[0], names, strict=True):
        axis.plot(epochs, [row.get(name) for row in rows], marker="o", label=f"train {name}")
        if f"val_{name}" in rows[0]:
            values = [row.get(f"val_{name}") for row in rows]
            axis.plot(epochs, values, marker="o", label=f"validation {name}")
        axis.set_xlabel("epoch")
        axis.set_title(name)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    with store.atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)


def confusion_plot(matrix, labels: list[str], path: Path) -> None:
    plt = pyplot()
    size = max(4, 0.5 * len(labels) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    image = axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(len(labels)), labels)
    axis.set_yticks(range(len(labels)), labels)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    for (i, j), value in np.ndenumerate(matrix):
        color = "white" if value > matrix.max() / 2 else "black"
        axis.text(j, i, str(value), ha="center", va="center", color=color, fontsize=8)
    figure.colorbar(image)
    figure.tight_layout()
    with store.atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)


def predicted_plot(truth: np.ndarray, predicted: np.ndarray, path: Path) -> None:
    """Regression: predicted against true values, with the line where they are equal."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5, 5))
    axis.scatter(truth, predicted, s=10, alpha=0.6)
    low, high = float(min(truth.min(), predicted.min())), float(max(truth.max(), predicted.max()))
    axis.plot([low, high], [low, high], color="grey", linestyle="--", label="predicted = true")
    axis.set_xlabel("true")
    axis.set_ylabel("predicted")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    with store.atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)
