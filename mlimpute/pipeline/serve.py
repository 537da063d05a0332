"""A scheduled deployment of the pipeline (``mlimpute serve CONFIG --cron "0 2 * * *"``).

Schedules need Prefect's scheduler service, which the ephemeral API does not run. With
``PREFECT_API_URL`` set, the deployment is registered with that server; otherwise
:func:`scheduler_api` starts a local ``prefect server start`` for as long as ``serve`` runs
(its database in ``PREFECT_HOME``, the UI at its address), so a survey team gets a nightly
job with one command.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import guard
from .finished import FLOW_NAME, announce_finished, finished_line
from .runtime import STARTUP_TIMEOUT

__all__ = ["build_deployment", "check_cron", "scheduler_api", "serve", "announce_finished",
           "finished_line", "FLOW_NAME"]



def check_cron(cron: str) -> None:
    """Raise ValueError with a readable message unless ``cron`` is a valid cron expression."""
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:
        CronSchedule(cron=cron)
    except ValidationError as exc:
        msg = exc.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")
        raise ValueError(f"--cron {cron!r} is not a cron expression ({msg}); write five fields "
                         "like \"0 2 * * *\" (02:00 every day)") from None


def build_deployment(config_path: str | os.PathLike, cron: str, name: str | None = None,
                     overrides: dict[str, Any] | None = None, timezone: str | None = None) -> Any:
    """A :class:`~prefect.deployments.runner.RunnerDeployment` of the pipeline on ``cron``."""
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.deployments.runner import EntrypointType

    from .flow import pipeline

    path = Path(config_path).resolve()
    schedule = CronSchedule(cron=cron, timezone=timezone) if timezone else CronSchedule(cron=cron)
    return pipeline.to_deployment(
        name=name or f"{path.stem}-scheduled",
        schedule=schedule,
        parameters={"config_path": str(path), "overrides": dict(overrides or {})},
        # the installed module, not a file path relative to today's working directory
        entrypoint_type=EntrypointType.MODULE_PATH,
        description=f"mlimpute pipeline for {path}",
        tags=["mlimpute"],
    )


@contextlib.contextmanager
def scheduler_api(timeout: int = STARTUP_TIMEOUT, port: int = 4200) -> Iterator[str]:
    """``PREFECT_API_URL`` if set, else a local Prefect server (with its scheduler) while in use."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = PREFECT_API_URL.value()
    if url:
        yield url
        return
    port = port if _free(port) else _any_port()
    url = f"http://127.0.0.1:{port}/api"
    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect")
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "mlimpute-server.log"
    with open(log_path, "ab") as log:  # a file, not a pipe: a full pipe would block the server
        # guarded: the server exits when this process dies, even by kill -KILL
        proc = guard.guarded_popen("prefect", ["server", "start", "--host", "127.0.0.1",
                                               "--port", str(port)],
                                   env={**os.environ, "PREFECT_API_URL": ""}, stdout=log,
                                   stderr=subprocess.STDOUT)
    try:
        _wait_healthy(url, proc, timeout, log_path)
        os.environ["PREFECT_API_URL"] = url  # inherited by the flow-run processes
        with temporary_settings({PREFECT_API_URL: url}):
            yield url
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        guard.release(proc)


def serve(config_path: str | os.PathLike, cron: str, name: str | None = None,
          overrides: dict[str, Any] | None = None, timezone: str | None = None) -> None:
    """Register the deployment and run its scheduled flow runs until interrupted."""
    from prefect import serve as prefect_serve

    if not os.environ.get("PREFECT_API_URL"):
        print("mlimpute: starting a local Prefect server (with its scheduler and UI; 10-40 s)",
              file=sys.stderr, flush=True)
    with scheduler_api() as url:
        dep = build_deployment(config_path, cron, name, overrides, timezone)
        print(f"mlimpute: serving {dep.name!r} on cron {cron!r}; Ctrl-C stops. Each finished "
              f"run prints a line here. From another shell: export PREFECT_API_URL={url} , then "
              f"e.g. prefect deployment run '{FLOW_NAME}/{dep.name}' starts a run now; the UI "
              f"is at {url.removesuffix('/api')}", file=sys.stderr, flush=True)
        prefect_serve(dep)


def _free(port: int) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _any_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float, log_path: Path) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the local Prefect server exited with code {proc.returncode}; "
                               f"see {log_path}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"the local Prefect server did not answer at {url} within {timeout} s")
