"""Where the flow runs: Prefect's settings, its API, and the task runner.

* :func:`prepare_environment` sets Prefect's environment *before* Prefect is imported:
  analytics off unless the user opted in, ``PREFECT_HOME`` in a user cache folder (the API's
  SQLite database: a fresh one costs ~20 s of migrations here, a kept one ~9 s to open), and
  a quiet console.
* :func:`prefect_api` gives the run one API for every process. With ``PREFECT_API_URL`` set
  (a real server) it uses that; otherwise it starts Prefect's local ephemeral API server once,
  with a start-up timeout fit for a slow machine, and points this process *and every worker* at
  it: the URL goes into the settings context, which Prefect serialises into each task it sends
  to a Dask or process worker, and into the environment inherited by worker processes started
  later. Without this, each worker process found no API URL and started its own server.
* :func:`task_runner` builds the runner the ``[runner]`` section asks for.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import guard, shutdown

__all__ = ["prepare_environment", "prefect_api", "ApiInfo", "task_runner", "user_cache_dir",
           "ensure_home", "STARTUP_TIMEOUT"]

#: Seconds to wait for the local API: 14–36 s were measured on a 2-core machine.
STARTUP_TIMEOUT = 180


def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlimpute"


def prepare_environment(prefect_home: str | os.PathLike | None = None, verbose: bool = False) -> None:
    """Prefect's environment for a pipeline process; call before ``import prefect``. Only sets
    environment variables (nothing is written, so a bad configuration found later leaves no
    trace).

    Settings the user made in the environment win, except that analytics stay off unless
    ``PREFECT_SERVER_ANALYTICS_ENABLED`` is set to true (then ``DO_NOT_TRACK`` is left alone).
    """
    env = os.environ
    opted_in = env.get("PREFECT_SERVER_ANALYTICS_ENABLED", "").lower() in ("1", "true", "yes")
    if not opted_in:
        env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
        env.setdefault("DO_NOT_TRACK", "1")
    if "PREFECT_HOME" not in env:
        env["PREFECT_HOME"] = str(prefect_home or user_cache_dir() / "prefect")
    if not verbose:
        # Prefect's INFO lines would interleave with the progress bars, its WARNING lines
        # repeat the run's warnings, which the CLI prints once with their counts, and its ERROR
        # lines a failure's tracebacks, task by task (125 lines for one failed fit), where the
        # CLI says it in one; all still go to the API's log, and `-v` shows them
        env.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    # the local API's start-up, also when Prefect itself starts one (e.g. under `serve`)
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(STARTUP_TIMEOUT))


@dataclass(frozen=True)
class ApiInfo:
    url: str
    started_here: bool
    startup_seconds: float


@contextlib.contextmanager
def prefect_api(timeout: int = STARTUP_TIMEOUT) -> Iterator[ApiInfo]:
    """One Prefect API for the whole run (see the module docstring)."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    url = PREFECT_API_URL.value()
    if url:
        yield ApiInfo(url=url, started_here=False, startup_seconds=0.0)
        return
    t0 = time.perf_counter()
    # the API's SQLite file cannot be opened in a folder that does not exist
    Path(PREFECT_HOME.value()).expanduser().mkdir(parents=True, exist_ok=True)
    # the None-keyed instance is the one Prefect's own client would start on demand
    server = _guarded_server_class()()
    forget = shutdown.on_abort(server.stop)
    server.start(timeout=timeout)
    info = ApiInfo(url=server.api_url, started_here=True, startup_seconds=time.perf_counter() - t0)
    old = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = server.api_url  # for worker processes started from here
    try:
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            try:
                yield info
            finally:
                _drain()
    finally:
        if old is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = old
        server.stop()
        forget()


def _guarded_server_class() -> type:
    """Prefect's ``SubprocessASGIServer`` whose uvicorn child dies with this process.

    Prefect starts ``python -m uvicorn … prefect.server.api.server:create_app`` as a plain
    child, which outlives a killed parent. This subclass starts the same command line through
    :mod:`.guard` (the child exits when this process dies, however it dies) and releases the
    guard's pipe when the server is stopped.
    """
    import prefect
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    class GuardedASGIServer(SubprocessASGIServer):
        def _run_uvicorn_command(self) -> Any:
            env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
                   "PREFECT__SERVER_FINAL": "1",
                   **get_current_settings().to_environment_variables(exclude_unset=True)}
            return guard.guarded_popen(
                "uvicorn", ["--app-dir", str(prefect.__module_path__.parent), "--factory",
                            "prefect.server.api.server:create_app", "--host", "127.0.0.1",
                            "--port", str(self.port), "--log-level", "error", "--lifespan", "on"],
                env=env)

        def stop(self) -> None:
            proc = self.server_process
            super().stop()
            if proc is not None:
                guard.release(proc)

    return GuardedASGIServer


def ensure_home() -> Path:
    """Create ``PREFECT_HOME`` (and its parents) before Prefect is imported.

    Prefect creates its home at import without parents, so a fresh machine without
    ``~/.cache`` got a "Failed to create the Prefect home directory" warning. Called only once
    the configuration has passed its checks, so a bad one still leaves nothing on disk.
    """
    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    return home


def _drain() -> None:
    """Send the buffered logs and events while the API is still up (else exit waits on retries)."""
    import inspect

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def drain() -> None:
        with contextlib.suppress(RuntimeError):  # a worker that never started
            result = APILogWorker.instance().drain()
            if inspect.isawaitable(result):
                await result
        result = EventsWorker.drain_all()
        if inspect.isawaitable(result):
            await result

    run_coro_as_sync(drain())


def task_runner(kind: str, workers: int | None = None, address: str | None = None) -> Any:
    """The task runner of ``[runner]``.

    ``local``: this process, ``workers`` tasks at a time (default 1). The sampler is bound by
    Python, not BLAS: two chains in two threads took 2.5 s against 1.6 s one after the other
    (GIL contention), so more threads only help for I/O-bound work.
    ``dask``: an existing cluster at ``address``, or a ``LocalCluster`` of ``workers``
    single-threaded worker processes (default: one per CPU).
    """
    if kind == "local":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=workers or 1)
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        if address:
            return DaskTaskRunner(address=address)
        n = workers or os.cpu_count() or 1
        return DaskTaskRunner(cluster_kwargs={"n_workers": n, "threads_per_worker": 1,
                                              "processes": True, "dashboard_address": None})
    raise ValueError(f"unknown runner kind {kind!r}")
