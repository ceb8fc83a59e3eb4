"""Model outputs -> classes: the one rule evaluate, attack and adversarial validation share.

A softmax (or any vector per sample) gives its argmax; one sigmoid unit is thresholded at 0.5;
a regression has no classes.
"""

from __future__ import annotations

import numpy as np


def predicted_classes(outputs: np.ndarray) -> np.ndarray:
    """Class indices from the model's outputs: one sigmoid unit is thresholded at 0.5."""
    outputs = np.asarray(outputs)
    if outputs.ndim == 1 or outputs.shape[-1] == 1:
        return (np.ravel(outputs) > 0.5).astype(int)
    return np.argmax(outputs, axis=-1)


def true_classes(y: np.ndarray) -> np.ndarray:
    """Class indices from labels as the data holds them: one-hot rows or class numbers."""
    y = np.asarray(y)
    if y.ndim > 1 and y.shape[-1] > 1:
        return np.argmax(y, axis=-1)
    return np.ravel(y).astype(int)
