"""A transient progress bar on stderr for commands that work through batches (attack, predict).

Rich, with markup off: a description never drives the terminal. Without a console (the Python
API) or where the console is no terminal (a pipe, a file, a test) there is no bar at all.
"""

from __future__ import annotations


class Progress:
    """`with Progress(console, total, "what") as advance: advance(n)`; total None: unknown."""

    def __init__(self, console, total: int | None, description: str):
        self.console, self.total, self.description = console, total, description
        self.bar = None

    def __enter__(self):
        if self.console is None or not self.console.is_terminal:
            return lambda count=1: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.bar = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self.bar.start()
        task = self.bar.add_task(self.description, total=self.total)
        return lambda count=1: self.bar.advance(task, count)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
