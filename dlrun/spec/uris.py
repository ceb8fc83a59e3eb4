"""A tracking server's URI without its credentials: what a run folder, a log line or an error
may hold. `user:password@` and query parameters (tokens) are dropped; the rest stays, so the
server is still named."""

from __future__ import annotations

import copy
from urllib.parse import urlsplit, urlunsplit


def without_credentials(uri: str) -> str:
    """http://user:secret@host:5000/x?token=abc -> http://host:5000/x; a URI without
    credentials comes back unchanged."""
    try:
        parts = urlsplit(uri)
    except ValueError:  # not a URI at all: nothing of it is safe to keep
        return "(a URI that cannot be parsed)"
    host = parts.netloc.rsplit("@", 1)[-1]
    if host == parts.netloc and not parts.query:
        return uri
    return urlunsplit((parts.scheme, host, parts.path, "", parts.fragment))


def config_without_credentials(config: dict) -> dict:
    """A raw spec as a file of a run or sweep may hold it: tracking.mlflow.uri without its
    credentials, and no `tracking` key at all when it names nothing (config.yaml as before)."""
    config = copy.deepcopy(config)
    mlflow = (config.pop("tracking", None) or {}).get("mlflow")
    if mlflow is not None:
        if mlflow.get("uri"):
            mlflow["uri"] = without_credentials(mlflow["uri"])
        config["tracking"] = {"mlflow": mlflow}
    return config
