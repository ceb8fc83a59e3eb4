"""Preprocessing layers that learn from the data before training.               [TensorFlow]

Normalization, Discretization, TextVectorization, StringLookup and IntegerLookup do nothing
useful until `adapt()` has seen data; fit() never calls it. dlrun adapts them on the training
split (never validation or test data), each on what reaches it through the layers before it.
"""

from __future__ import annotations

import numpy as np

ADAPTED = ("Normalization", "Discretization", "TextVectorization", "StringLookup", "IntegerLookup")


def _given(layer) -> bool:
    """The spec fixed the statistics itself (mean and variance, bin boundaries, a vocabulary)."""
    fixed = ("input_mean", "bin_boundaries", "vocabulary")
    return any(getattr(layer, name, None) is not None for name in fixed)


def adapt_layers(model, x_train: np.ndarray, batch_size: int) -> list[str]:
    """Adapt every such layer of a Sequential model on the training split; one line each."""
    import keras

    notes = []
    for index, layer in enumerate(model.layers):
        if type(layer).__name__ not in ADAPTED or _given(layer):
            continue
        inputs = x_train
        if index:  # what this layer sees: the training split through the layers before it
            before = keras.Sequential([keras.Input(model.input_shape[1:]), *model.layers[:index]])
            inputs = before.predict(x_train, batch_size=batch_size, verbose=0)
        layer.adapt(inputs)
        notes.append(
            f"{layer.name} ({type(layer).__name__}): adapted on the training split "
            f"({len(x_train)} samples) before fit"
        )
    return notes
