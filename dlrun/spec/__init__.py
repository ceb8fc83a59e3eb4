"""The YAML spec: what a run is, before anything is built.

Owns: the pydantic schema (schema), loading a file with line numbers for every key (yamlfile,
safeyaml: bounded regular files, an alias budget), `--set` overrides (overrides), validation
and cross-section checks (loading), the one shape of a spec problem (problems), dotted config
keys (keys), the names other parts read without pydantic (names), a tracking URI without its
credentials (uris) and `backend: auto` resolved from the model (backends).
May import: dlrun.errors (and dlrun's root, for the environment's KERAS_BACKEND) only. No
TensorFlow: validating a spec must be instant.
"""
