"""The base of a transfer model, always in inference mode.  [TensorFlow]

Keras 3 passes the outer model's `training` flag into a nested model whatever the nested call
said, so `base(x, training=False)` alone leaves the base's Dropout (and stochastic depth)
active while the head trains. FrozenBase is a functional model whose call ignores the flag it
is given. It is a Keras class of dlrun's: model files holding one load through
model.checkpoints.load_model, which names it to Keras.
"""

from __future__ import annotations

import functools

REGISTERED_NAME = "dlrun>FrozenBase"


@functools.cache
def frozen_base_class() -> type:
    """The class, made (and registered with Keras) on first use: Keras is imported lazily."""
    import keras

    @keras.saving.register_keras_serializable(package="dlrun", name="FrozenBase")
    class FrozenBase(keras.Model):
        """A functional model that runs in inference mode (training=False) whatever its caller
        says; built like keras.Model(inputs, outputs, name=...)."""

        def call(self, inputs, training=None, mask=None, **kwargs):
            return super().call(inputs, training=False, mask=mask, **kwargs)

    return FrozenBase


def custom_objects() -> dict:
    """The Keras classes of dlrun that a model file may name."""
    return {REGISTERED_NAME: frozen_base_class()}


def standalone(model):
    """The model with each FrozenBase as a plain functional model: for a file that loads
    without dlrun (`export --format keras`), where inference passes training=False anyway.
    The weights and the compile settings are copied; the model itself if it has no FrozenBase."""
    import keras

    config = keras.saving.serialize_keras_object(model)
    found = []

    def plain(node):
        if isinstance(node, list):
            return [plain(item) for item in node]
        if not isinstance(node, dict):
            return node
        if node.get("registered_name") == REGISTERED_NAME:
            found.append(node)
            node = {
                **node,
                "module": "keras.src.models.functional",
                "class_name": "Functional",
                "registered_name": "Functional",
            }
        return {key: plain(value) for key, value in node.items()}

    config = plain(config)
    if not found:
        return model
    copy = keras.saving.deserialize_keras_object(config)
    copy.set_weights(model.get_weights())
    compiled = model.get_compile_config() if model.compiled else None
    if compiled:
        copy.compile_from_config(compiled)
    return copy
