"""Learning curves and confusion matrices as PNG files (matplotlib, no TensorFlow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlrun import store


def pyplot():
    import logging

    # Font-cache and cache-folder notes are matplotlib's business, not the user's terminal's.
    logging.getLogger("matplotlib").setLevel(logging.ERROR)
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


# history.csv columns that are not metrics: the epoch, its time, the learning rate, the stage.
NOT_METRICS = ("epoch", "learning_rate", "epoch_seconds", "stage")


def history_panels(columns: list[str]) -> list[tuple[str, str | None, str | None]]:
    """history.png's panels from history.csv's columns: (title, train column, validation
    column), one panel per metric. A metric logged on validation only
    (val_adversarial_accuracy) gets a panel of its own."""
    metrics = [c for c in columns if c not in NOT_METRICS]
    panels = []
    for name in metrics:
        if not name.startswith("val_"):
            panels.append((name, name, f"val_{name}" if f"val_{name}" in metrics else None))
        elif name.removeprefix("val_") not in metrics:
            panels.append((name.removeprefix("val_"), None, name))
    return panels


def history_plot(rows: list[dict], path: Path) -> None:
    """The lecture's `pd.DataFrame(history).plot()`: one panel per metric, train vs validation."""
    plt = pyplot()
    panels = history_panels(list(rows[0]))
    epochs = [row["epoch"] for row in rows]
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    for axis, (title, train, validation) in zip(axes[0], panels, strict=True):
        for column, label in ((train, "train"), (validation, "validation")):
            if column is not None:
                values = [row.get(column) for row in rows]
                axis.plot(epochs, values, marker="o", label=f"{label} {title}")
        axis.set_xlabel("epoch")
        axis.set_title(title)
        axis.grid(alpha=0.3)
        axis.legend()
    # Margins in inches for panels of a fixed size: tight_layout's extra draw of every text
    # doubled the time this plot took at the end of each run.
    width = 5 * len(panels)
    figure.subplots_adjust(left=0.7 / width, right=1 - 0.2 / width, bottom=0.15, top=0.9)
    figure.subplots_adjust(wspace=0.25)
    _save(figure, path, layout=False)


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
    _save(figure, path)


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
    _save(figure, path)


def reconstruction_plot(
    inputs: np.ndarray, targets: np.ndarray, outputs: np.ndarray, path: Path, count: int = 6
) -> None:
    """Image-shaped targets (an autoencoder, denoising): a few inputs, targets and outputs,
    one column each, side by side."""
    plt = pyplot()
    count = min(count, len(targets))
    figure, axes = plt.subplots(count, 3, figsize=(6, 2 * count), squeeze=False)
    for row in range(count):
        for column, (title, images) in enumerate(
            (("input", inputs), ("target", targets), ("output", outputs))
        ):
            axis = axes[row][column]
            axis.imshow(_as_image(np.asarray(images[row])), cmap="gray")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(title)
    _save(figure, path)


def _as_image(sample: np.ndarray) -> np.ndarray:
    """One input as something imshow can draw: (H, W), (H, W, 3), or a square from a vector."""
    if sample.ndim == 3 and sample.shape[-1] == 1:
        return sample[..., 0]
    if sample.ndim == 3 and sample.shape[-1] == 3:
        return sample
    flat = sample.reshape(-1)
    side = int(round(np.sqrt(flat.size)))
    if side * side == flat.size:  # a flattened grayscale image (mnist's 784, digits' 64)
        return flat.reshape(side, side)
    return flat[np.newaxis, :]  # any other vector: one row


def adversarial_plot(
    originals,
    adversarials,
    clean_scores,
    adversarial_scores,
    *,
    eps: float,
    low: float,
    high: float,
    names: list[str],
    path: Path,
    title: str = "",
) -> None:
    """Rows of samples: original, perturbation (scaled to be visible), adversarial image,
    under `title` (the attack: method, eps, target).

    Each with the predicted class and its confidence; the perturbation is drawn on
    [-eps, +eps] of the input range, blue below zero and red above.
    """
    plt = pyplot()
    rows = max(len(originals), 1)
    figure, axes = plt.subplots(rows, 3, figsize=(7.5, 2.4 * rows), squeeze=False)
    width = high - low

    def shown(scores) -> str:  # `$` would start matplotlib's mathtext in a class name
        return f"{names[int(np.argmax(scores))]} ({np.max(scores):.0%})".replace("$", r"\$")

    for row, axis_row in enumerate(axes):
        if row >= len(originals):
            break
        original, adversarial = originals[row], adversarials[row]
        before, after = clean_scores[row], adversarial_scores[row]

        def scaled(image):
            image = (_as_image(image) - low) / width
            return np.clip(image, 0, 1)

        change = _as_image(adversarial - original) / max(eps * width, 1e-12)
        grey = {"cmap": "gray", "vmin": 0, "vmax": 1}
        axis_row[0].imshow(scaled(original), **grey)
        axis_row[0].set_title(f"original: {shown(before)}", fontsize=9)
        change = np.clip(change, -1, 1)
        if change.ndim == 3:  # colour: each channel's change around mid-grey
            axis_row[1].imshow((change + 1) / 2)
        else:
            axis_row[1].imshow(change, cmap="bwr", vmin=-1, vmax=1)
        axis_row[1].set_title(f"perturbation (eps {eps:g})", fontsize=9)
        axis_row[2].imshow(scaled(adversarial), **grey)
        axis_row[2].set_title(f"adversarial: {shown(after)}", fontsize=9)
        for axis in axis_row:
            axis.set_xticks([])
            axis.set_yticks([])
    if title:
        figure.suptitle(title.replace("$", r"\$"), fontsize=10)
    _save(figure, path)


def _save(figure, path: Path, layout: bool = True) -> None:
    """Lay out (unless the figure's margins are set), write atomically as PNG, and free it."""
    if layout:
        figure.tight_layout()
    with store.atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    pyplot().close(figure)


def search_plot(frame, scoring: str, higher: bool, path: Path, search: str = "") -> Path:
    """A sweep's score against its setting number (cv_results.csv's rows, in order): the
    settings that trained in full as dots, pruned ones as crosses at their last score, and
    the best so far as a line. With several fits a setting, the bars are their std."""
    plt = pyplot()
    numbers = np.arange(len(frame))
    scores = frame["mean_test_score"].to_numpy(dtype=float)
    spread = frame["std_test_score"].to_numpy(dtype=float)
    pruned = frame["status"].str.contains("pruned", regex=False).to_numpy()
    full = ~pruned & np.isfinite(scores)
    figure, axis = plt.subplots(figsize=(7, 4))
    if full.any():
        axis.errorbar(
            numbers[full], scores[full], yerr=spread[full], fmt="o", capsize=2, label="trained"
        )
        best, running = [], None
        for number in numbers:
            if full[number]:
                value = scores[number]
                if running is None or (value > running if higher else value < running):
                    running = value
            best.append(np.nan if running is None else running)
        axis.step(numbers, best, where="post", color="black", alpha=0.6, label="best so far")
    shown = pruned & np.isfinite(scores)
    if shown.any():
        axis.plot(numbers[shown], scores[shown], "x", color="grey", label="pruned (last score)")
    axis.set_xlabel("setting (fit number)")
    axis.set_ylabel(f"mean validation {scoring}")
    axis.set_title(f"{search} search" if search else "search")
    axis.grid(alpha=0.3)
    axis.legend()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    _save(figure, path)
    return path
