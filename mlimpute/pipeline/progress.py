"""Progress of a run: per-chain sweep bars (rate, ETA) on a terminal, plain lines elsewhere,
and the run log. No Prefect here.

The flow creates one :class:`Progress` and registers it for its process; a chain task running
in that process (the local runner's threads) asks :func:`sweep_reporter` for a callback that
advances its chain's bar sweep by sweep. Tasks in other processes (Dask workers) get a no-op
callback: their chains show as done when they finish. Without a terminal (logs, CI) a chain
prints a line at most every 10% or 15 s, so a log shows the rate and the time left without
filling up.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["Progress", "sweep_reporter", "numba_cache_present"]

_current: Progress | None = None
_lock = threading.Lock()


def sweep_reporter(chain_number: int, total: int) -> Callable[[int, int], None]:
    """A ``(done, total)`` callback advancing chain ``chain_number``'s bar in this process."""
    with _lock:
        progress = _current
    if progress is None:
        return lambda done, total: None
    return progress.chain(chain_number, total)


def numba_cache_present() -> bool:
    """Whether the sampler's compiled kernels are cached (else the first chain compiles them,
    ~20 s once per installation). Numba keeps its index files (``*.nbi``) beside the module, or
    in ``NUMBA_CACHE_DIR``."""
    import os

    import mlimpute.sampler as sampler

    places = [Path(sampler.__file__).parent / "__pycache__"]
    if os.environ.get("NUMBA_CACHE_DIR"):
        places.append(Path(os.environ["NUMBA_CACHE_DIR"]))
    return any(next(p.rglob("*.nbi"), None) is not None for p in places if p.is_dir())


class Progress:
    """``enabled``: draw on stderr (rich bars when it is a terminal); always log to Prefect."""

    def __init__(self, enabled: bool, logger: Any = None):
        global _current
        self.enabled = enabled
        self.logger = logger
        self._rich: Any = None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress,
                                       TextColumn, TimeElapsedColumn, TimeRemainingColumn)

            self._rich = RichProgress(
                TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                TimeRemainingColumn(), console=Console(stderr=True))
            self._rich.start()
        with _lock:
            _current = self

    def stage(self, label: str, total: int) -> "Stage":
        return Stage(self, label, total)

    def chain(self, number: int, total: int) -> Callable[[int, int], None]:
        """The sweep callback of chain ``number`` (``total`` sweeps)."""
        return ChainBar(self, number, total).update

    def note(self, text: str) -> None:
        if self.logger is not None:
            self.logger.info(text)
        if self._rich is not None:
            self._rich.console.print(text)
        elif self.enabled:
            print(f"mlimpute: {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        global _current
        with _lock:
            if _current is self:
                _current = None
        if self._rich is not None:
            self._rich.stop()
            self._rich = None


class ChainBar:
    """One chain's sweeps: a rich bar with sweeps/s and ETA, or a line every 10% / 15 s."""

    def __init__(self, progress: Progress, number: int, total: int):
        self.p, self.label, self.total = progress, f"chain {number}", total
        self.t0 = self.last_line = self.last_call = time.monotonic()
        self.last_done = 0
        self.first: tuple[float, int] | None = None   # (time, sweeps) of the first report
        self._task = (progress._rich.add_task(self.label, total=total, rate="")
                      if progress._rich is not None else None)

    def update(self, done: int, total: int | None = None) -> None:
        now = time.monotonic()
        # the rate from the first report on: before it the chain set up and numba compiled (15 s
        # for a few sweeps had made the first ETA 24,000 s)
        if self.first is None:
            self.first = (now, done)
        t1, d1 = self.first
        rate = (done - d1) / (now - t1) if done > d1 and now > t1 else 0.0
        if self._task is not None:
            # called after every sweep (one can take 0.1 ms): redraw at most 10 times a second
            if done < self.total and now - self.last_call < 0.1:
                return
            self.last_call = now
            self.p._rich.update(self._task, completed=done, rate=f"{rate:,.0f} sweeps/s" if rate > 0 else "")
            return
        step = max(self.total // 10, 1)
        if done < self.total and done - self.last_done < step and now - self.last_line < 15:
            return
        self.last_done, self.last_line = done, now
        speed = f"{rate:,.0f} sweeps/s, ETA {(self.total - done) / rate:.0f} s" if rate > 0 else "starting"
        line = f"{self.label}: {done:,}/{self.total:,} sweeps ({100 * done / self.total:.0f}%), {speed}"
        if self.p.logger is not None:
            self.p.logger.info(line)
        if self.p.enabled:
            print(f"mlimpute: {line}", file=sys.stderr, flush=True)


class Stage:
    def __init__(self, progress: Progress, label: str, total: int):
        self.p, self.label, self.total, self.done = progress, label, total, 0
        self._task = (progress._rich.add_task(label, total=total, rate="")
                      if progress._rich is not None else None)

    def advance(self, detail: str = "") -> None:
        self.done += 1
        if self._task is not None:
            self.p._rich.update(self._task, advance=1)
        line = f"{self.label} {self.done}/{self.total}" + (f" ({detail})" if detail else "")
        if self.p.logger is not None:
            self.p.logger.info(line)
        if self.p._rich is None and self.p.enabled:
            print(f"mlimpute: {line}", file=sys.stderr, flush=True)
