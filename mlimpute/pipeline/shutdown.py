"""Stopping a run on SIGINT or SIGTERM within seconds, leaving no process behind (no Prefect).

``timeout``, systemd, SLURM and CI cancellation send SIGTERM; a terminal sends SIGINT. Both
mean the same here: stop now. A chain cannot be stopped half-way from another thread, and
Prefect's own SIGTERM handling waits for the running tasks to finish, so :func:`run` runs the
flow in a worker thread and keeps the main thread free for the signal: on the first SIGINT or
SIGTERM it says so on stderr, runs the registered clean-ups (the Prefect API server),
terminates every process this one started (the API server, Dask's local workers), and exits
with 128 + the signal's number. What was finished is on disk already: each chain and fit is
written whole when it ends, so the next run resumes from the finished chains; the running one
is abandoned.
"""

from __future__ import annotations

import contextvars
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["run", "on_abort", "descendants", "expect_chains", "stop_message"]

T = TypeVar("T")
_cleanups: list[Callable[[], None]] = []


def on_abort(fn: Callable[[], None]) -> Callable[[], None]:
    """Run ``fn`` if the run is stopped by a signal; returns a function that unregisters it."""
    _cleanups.append(fn)
    return lambda: _cleanups.remove(fn) if fn in _cleanups else None


def descendants(pid: int | None = None) -> list[int]:
    """Process ids of every process below ``pid`` (default: this one), from /proc (Linux)."""
    pid = os.getpid() if pid is None else pid
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])  # the name may hold spaces
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _terminate_descendants(grace: float = 5.0) -> None:
    procs = descendants()
    for p in procs:
        _signal(p, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in procs):
        time.sleep(0.1)
    for p in procs:
        if _alive(p):
            _signal(p, signal.SIGKILL)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reap our own children
    except ChildProcessError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


_chains: list[str] = []   # this run's chain files (``expect_chains``)


def expect_chains(paths: list[str]) -> None:
    """Name the chain files of the running run, so that a stop counts those (the cache also holds
    other seeds' and configurations' chains: helper 37 saw "2 chain file(s)" kept where none of
    the stopped run's had finished)."""
    _chains[:] = [str(p) for p in paths]


def stop_message(name: str, cache: str | os.PathLike | None) -> str:
    """What a stopped run prints: what is kept (this run's finished chain files in ``cache``,
    ``expect_chains``; before those are known, every chain file there) and what the output
    folder holds."""
    if _chains:
        done = sum(Path(p).exists() for p in _chains)
        where = f" ({done} of this run's {len(_chains)} chains finished, in {Path(_chains[0]).parent})"
    else:
        kept = sorted(Path(cache, "chains").glob("*.npz")) if cache else []
        where = f" ({len(kept)} chain file(s) in {Path(cache, 'chains')})" if cache else ""
    if cache and Path(cache, "replaced").exists():   # inside store.publish's renames (milliseconds)
        folder = ("the output folder was stopped while this run's outputs were being moved into place: it "
                  "has no manifest.json until a run completes")
    else:
        folder = "the output folder keeps the last complete run's outputs"
    return (f"\nmlimpute: {name} received: stopping now. Finished chains and fits are kept{where}; what was "
            f"still running is abandoned, and {folder}. Run the same command again to resume.")


def run(fn: Callable[..., T], *args: Any, cache: str | os.PathLike | None = None, **kw: Any) -> T:
    """``fn(*args, **kw)`` in a worker thread, stopped by SIGINT/SIGTERM (see module docstring).

    ``cache``: where finished chains are kept, named in the message.
    """
    if threading.current_thread() is not threading.main_thread():
        return fn(*args, **kw)  # signals reach only the main thread: nothing to arrange
    result: dict[str, Any] = {}
    ctx = contextvars.copy_context()  # Prefect's settings live in context variables

    def target() -> None:
        try:
            result["value"] = ctx.run(fn, *args, **kw)
        except BaseException as exc:  # re-raised in the main thread
            result["error"] = exc

    def stop(signum: int, frame: Any) -> None:
        print(stop_message(signal.Signals(signum).name, cache), file=sys.stderr, flush=True)
        for clean in reversed(_cleanups):
            try:
                clean()
            except Exception:  # noqa: BLE001 - stopping anyway; the next clean-up may work
                pass
        _terminate_descendants()
        sys.stdout.flush()
        os._exit(128 + signum)

    worker = threading.Thread(target=target, name="mlimpute-run", daemon=True)
    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        worker.start()
        while worker.is_alive():
            worker.join(0.2)  # short waits: a signal is handled between them
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if "error" in result:
        raise result["error"]
    return result["value"]
