"""What a finished pipeline run says under ``serve``, and the flow's name (shared by the flow,
which calls the hook, and ``serve``, which deploys it)."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["FLOW_NAME", "announce_finished", "finished_line"]

FLOW_NAME = "mlimpute-pipeline"


def announce_finished(flow: Any, flow_run: Any, state: Any) -> None:
    """Flow hook: under ``serve``, one line per finished scheduled run with its outputs.

    A run started by ``mlimpute run`` prints its own summary, so only deployment runs say
    anything here (on the flow-run process's stdout, which ``serve`` shows).
    """
    if getattr(flow_run, "deployment_id", None) is None:
        return
    print(finished_line(flow_run.name, state, flow_run.parameters), flush=True)


def finished_line(run_name: str, state: Any, parameters: dict[str, Any]) -> str:
    """``mlimpute: run 'x' Completed at 02:00:41: outputs in /data/out (report …); 2 warning(s)``."""
    from mlimpute.config import load_config

    when = time.strftime("%H:%M:%S")
    try:
        out = load_config(parameters["config_path"], parameters.get("overrides")).output.dir
    except Exception as exc:  # noqa: BLE001 - the line must still be printed
        return f"mlimpute: run {run_name!r} {state.name} at {when}: {exc}"
    manifest = out / "manifest.json"
    if state.is_completed() and manifest.is_file():
        import json

        n = len(json.loads(manifest.read_text(encoding="utf-8")).get("warnings", []))
        return (f"mlimpute: run {run_name!r} {state.name} at {when}: outputs in {out} (report "
                f"{out / 'report.html'}, manifest {manifest}); {n} warning(s)")
    return (f"mlimpute: run {run_name!r} {state.name} at {when}: {state.message or ''} "
            f"(no new outputs in {out}; the failed run's finished chains are cached there)")
