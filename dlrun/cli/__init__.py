"""The `dlrun` command line: parse, call the library, print. No TensorFlow at import time.

A DlrunError is printed once, as `Error: ...` lines on stderr, and becomes the exit code
(cli.common). The commands live in four modules, training (train, validate, sweep), reading
(runs, show, compare, tensorboard), scoring (evaluate, attack, features, predict, export) and
syncing (sync); they are registered below in the order `dlrun --help` lists them. Every command
imports what it needs inside its body, so `--help` loads no TensorFlow, pandas or pydantic.
Nothing in dlrun imports this package.
"""

from __future__ import annotations

from dlrun.cli import reading, scoring, syncing, training
from dlrun.cli.common import app

for _name, _command in (
    ("train", training.train),
    ("validate", training.validate),
    ("runs", reading.runs_command),
    ("show", reading.show),
    ("evaluate", scoring.evaluate),
    ("attack", scoring.attack),
    ("features", scoring.features),
    ("predict", scoring.predict),
    ("export", scoring.export),
    ("compare", reading.compare),
    ("tensorboard", reading.tensorboard),
    ("sweep", training.sweep),
    ("sync", syncing.sync),
):
    app.command(_name)(_command)


def main() -> None:
    app()
