"""Progress of the flow's stages: bars on a terminal, plain lines elsewhere, and the run log.

The flow reports stage by stage (chains done, fits done) as task futures complete; the chains
themselves run in other threads, processes or machines, where a per-sweep bar could not be
drawn on this terminal anyway.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["Progress"]


class Progress:
    """``enabled``: draw on stderr (rich bars when it is a terminal); always log to Prefect."""

    def __init__(self, enabled: bool, logger: Any = None):
        self.enabled = enabled
        self.logger = logger
        self._rich: Any = None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress,
                                       TextColumn, TimeElapsedColumn)

            self._rich = RichProgress(TextColumn("{task.description:<10}"), BarColumn(),
                                      MofNCompleteColumn(), TimeElapsedColumn(),
                                      console=Console(stderr=True))
            self._rich.start()

    def stage(self, label: str, total: int) -> "Stage":
        return Stage(self, label, total)

    def note(self, text: str) -> None:
        if self.logger is not None:
            self.logger.info(text)
        if self._rich is not None:
            self._rich.console.print(text)
        elif self.enabled:
            print(f"mlimpute: {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None


class Stage:
    def __init__(self, progress: Progress, label: str, total: int):
        self.p, self.label, self.total, self.done = progress, label, total, 0
        self._task = progress._rich.add_task(label, total=total) if progress._rich is not None else None

    def advance(self, detail: str = "") -> None:
        self.done += 1
        if self._task is not None:
            self.p._rich.update(self._task, advance=1)
        line = f"{self.label} {self.done}/{self.total}" + (f" ({detail})" if detail else "")
        if self.p.logger is not None:
            self.p.logger.info(line)
        if self.p._rich is None and self.p.enabled:
            print(f"mlimpute: {line}", file=sys.stderr, flush=True)
