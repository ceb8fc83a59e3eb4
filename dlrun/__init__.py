"""dlrun: one YAML file in, one fully recorded Keras run out."""

__version__ = "0.1.0"
