"""Stopping ``mlimpute run``: SIGTERM and SIGINT stop it within seconds and say so; neither
they nor ``kill -KILL`` leave a process behind (Prefect's API server included).

Each run is started in a session of its own, so "left behind" means: any process of that
session still alive once the CLI has gone. The first run uses a fresh HOME without
``~/.cache``, as on a new machine, where Prefect used to warn that it could not create its home.
Runs are long (burn-in 100,000 sweeps) so the first chain is sampling when the signal comes.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(),
                                 reason="lists processes by session from /proc (Linux)")


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A user's home without ~/.cache: Prefect's home is created under it by the CLI."""
    return tmp_path_factory.mktemp("home")


def session_processes(sid: int) -> list[str]:
    """Command lines of the live processes in session ``sid``."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            out.append(f"{entry.name}: {cmd}")
    return out


class Run:
    """``mlimpute run`` in its own session, its stderr collected by a thread."""

    def __init__(self, tmp_path: Path, home: Path):
        project = tmp_path / "project"
        project.mkdir()
        shutil.copy(ROOT / "examples" / "exam_scores.parquet", project / "exam.parquet")
        shutil.copy(ROOT / "tests" / "fixtures" / "pipeline" / "exam.toml", project / "run.toml")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "XDG_"))}
        env.update(HOME=str(home), DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlimpute.cli", "run", str(project / "run.toml"),
             "--set", "sampler.burn=100000"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            start_new_session=True)
        self.lines: list[str] = []
        self.started = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)
            if "rows in 65 clusters" in line:  # the flow has started; chains come next
                self.started.set()

    def wait_sampling(self) -> None:
        assert self.started.wait(240), "".join(self.lines)[-3000:]
        time.sleep(3)  # chain 1 is sampling now: 100,000 sweeps take well over a minute
        assert self.proc.poll() is None

    def left_behind(self, within: float) -> list[str]:
        deadline = time.monotonic() + within
        while (left := session_processes(self.proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        return left


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_the_run_within_seconds_and_leaves_nothing(tmp_path, home, sig):
    run = Run(tmp_path, home)
    run.wait_sampling()
    t0 = time.monotonic()
    run.proc.send_signal(sig)
    code = run.proc.wait(timeout=60)
    seconds = time.monotonic() - t0
    err = "".join(run.lines)
    assert code == 128 + sig, err[-3000:]
    assert seconds < 15, f"took {seconds:.1f} s to stop"
    assert f"mlimpute: {sig.name} received: stopping now" in err
    assert "what was still running is abandoned, and the output folder keeps the last complete run's outputs. Run the same command again to resume" in err
    assert "Failed to create the Prefect home directory" not in err
    assert "mlimpute: starting Prefect and its local API" in err  # said before the wait
    assert re.search(r"Prefect's API is up \(\d+ s\) at (\S+); .* export PREFECT_API_URL=\1", err)
    assert run.left_behind(within=10) == []


def test_kill_minus_kill_leaves_no_api_server(tmp_path, home):
    run = Run(tmp_path, home)
    run.wait_sampling()
    assert any("prefect.server.api.server:create_app" in p for p in session_processes(run.proc.pid))
    run.proc.kill()
    run.proc.wait(timeout=30)
    assert run.left_behind(within=20) == []  # the server saw its parent go and stopped


def test_stop_message_inside_the_publish_step(tmp_path):
    """Stopped while store.publish moves the outputs (``.cache/replaced`` exists): the folder
    has no manifest, and the message says so instead of "keeps the last complete run's
    outputs" (helper 35); a stale ``replaced`` is cleared when the next run starts staging."""
    from mlimpute.pipeline import store
    from mlimpute.pipeline.shutdown import expect_chains, stop_message

    expect_chains([])
    cache = store.cache_dir(tmp_path)
    (cache / "chains").mkdir(parents=True)
    (cache / "chains" / "chain-1-abc.npz").write_bytes(b"")
    assert "keeps the last complete run's outputs" in stop_message("SIGTERM", cache)
    assert "(1 chain file(s) in" in stop_message("SIGTERM", cache)
    # once the run's chains are known, the message counts those, not another seed's files
    # (helper 37: "2 chain file(s)" kept where none of the stopped run's had finished)
    expect_chains([str(cache / "chains" / "chain-1-new.npz"), str(cache / "chains" / "chain-2-new.npz")])
    assert "(0 of this run's 2 chains finished, in" in stop_message("SIGTERM", cache)
    (cache / "chains" / "chain-2-new.npz").write_bytes(b"")
    assert "(1 of this run's 2 chains finished, in" in stop_message("SIGTERM", cache)
    expect_chains([])
    (cache / "replaced").mkdir()
    text = stop_message("SIGTERM", cache)
    assert "being moved into place: it has no manifest.json" in text and "keeps the last" not in text
    store.stage_dir(tmp_path)
    assert not (cache / "replaced").exists() and (cache / "staging").is_dir()


def test_a_failed_publish_puts_the_last_run_back(tmp_path, monkeypatch):
    """A rename inside store.publish that fails (an output the user may not move) left the folder
    half old, half new and without a manifest (helper 37); the renames before it are now undone
    and the error says so."""
    import os

    import pytest

    from mlimpute.pipeline import store

    def write(root, tag):
        (root / "imputations").mkdir(parents=True)
        (root / "imputations" / "imputation-1.parquet").write_text(tag)
        (root / "pooled").mkdir()
        (root / "pooled" / "a.csv").write_text(tag)
        (root / "diagnostics.csv").write_text(tag)
        (root / "manifest.json").write_text(tag)

    write(tmp_path, "old")
    stage = store.stage_dir(tmp_path)
    write(stage, "new")
    real = os.replace

    def refuse_pooled(src, dst):
        if str(src).endswith(os.sep + "pooled") and "replaced" in str(dst):
            raise PermissionError(1, "Operation not permitted", str(src))
        return real(src, dst)

    monkeypatch.setattr(store.os, "replace", refuse_pooled)
    with pytest.raises(OSError, match=r"could not move this run's outputs into .*Operation not permitted.*the "
                                      r"output folder is as it was before this run"):
        store.publish(stage, tmp_path, "manifest.json")
    for f in ("imputations/imputation-1.parquet", "pooled/a.csv", "diagnostics.csv", "manifest.json"):
        assert (tmp_path / f).read_text() == "old", f
    monkeypatch.setattr(store.os, "replace", real)
    store.publish(stage, tmp_path, "manifest.json")      # the next try goes through
    for f in ("imputations/imputation-1.parquet", "pooled/a.csv", "diagnostics.csv", "manifest.json"):
        assert (tmp_path / f).read_text() == "new", f
