"""Preprocessing layers that learn from the data before training.               [TensorFlow]

Normalization, Discretization, TextVectorization, StringLookup and IntegerLookup do nothing
useful until `adapt()` has seen data; fit() never calls it. dlrun adapts them on the training
split (never validation or test data), each on what reaches it through the layers before it.
"""

from __future__ import annotations

ADAPTED = ("Normalization", "Discretization", "TextVectorization", "StringLookup", "IntegerLookup")


def _given(layer) -> bool:
    """The spec fixed the statistics itself (mean and variance, bin boundaries, a vocabulary)."""
    fixed = ("input_mean", "bin_boundaries", "vocabulary")
    return any(getattr(layer, name, None) is not None for name in fixed)


def adapt_layers(model, x_train, batch_size: int) -> list[str]:
    """Adapt every such layer of the model on the training split; one line each. x_train: an
    array, or {input name: array} for a graph of several inputs."""
    import keras

    from dlrun.data.splits import count

    notes = []
    for index, layer in enumerate(model.layers):
        if type(layer).__name__ not in ADAPTED or _given(layer):
            continue
        inputs = x_train
        # What this layer sees: the training split through the layers before it.
        several = isinstance(x_train, dict)
        graph = several or not isinstance(model, keras.Sequential)
        if graph and (several or layer.input is not model.inputs[0]):
            # a graph (a functional model lists its InputLayer among its layers, so the
            # layers before this one are no stack): up to what the layer reads
            before = keras.Model(model.input, layer.input)
            inputs = before.predict(x_train, batch_size=batch_size, verbose=0)
        elif not graph and index:
            before = keras.Sequential([keras.Input(model.input_shape[1:]), *model.layers[:index]])
            inputs = before.predict(x_train, batch_size=batch_size, verbose=0)
        layer.adapt(inputs)
        notes.append(
            f"{layer.name} ({type(layer).__name__}): adapted on the training split "
            f"({count(x_train)} samples) before fit"
        )
    return notes
