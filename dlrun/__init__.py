"""dlrun: one YAML file in, one fully recorded Keras run out."""

import os

__version__ = "0.1.0"

# KERAS_BACKEND as the environment gave it, before dlrun.backend fills in its default:
# `backend: auto` honours it (spec.backends).
KERAS_BACKEND_GIVEN = os.environ.get("KERAS_BACKEND")
