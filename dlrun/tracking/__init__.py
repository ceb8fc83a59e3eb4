"""Tracking servers: dlrun's runs sent to MLflow, live while they train or later by `dlrun sync`.

Owns: where a run is sent (the spec's tracking section, else $MLFLOW_TRACKING_URI), the MLflow
run a dlrun run is (its id kept in meta.json), what is sent (params, per-epoch metrics, test
scores, tags, files) and the bounded, warn-once handling of a server that is down (mlflow_runs).
May import: dlrun.store, dlrun.spec, dlrun.errors, dlrun.textsafe. MLflow is imported only when
a run is tracked; no Keras, TensorFlow or pandas here.
"""
