"""Run feedback without a flow: per-chain sweep lines with rate and ETA, the numba-cache check
behind the one-off compilation line, and the line ``serve`` prints per finished run."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from mlimpute.pipeline import progress

ROOT = Path(__file__).resolve().parents[1]


def test_chain_lines_every_tenth_with_rate_and_eta(capsys):
    p = progress.Progress(enabled=True)  # stderr is captured, not a terminal: plain lines
    try:
        report = progress.sweep_reporter(2, 1000)
        for done in range(1, 1001):
            report(done, 1000)
    finally:
        p.close()
    lines = capsys.readouterr().err.splitlines()
    assert 10 <= len(lines) <= 11, lines  # every 10%, not every sweep
    assert lines[-1].startswith("mlimpute: chain 2: 1,000/1,000 sweeps (100%), ")
    assert all(re.search(r"\d[\d,]* sweeps/s, ETA \d+ s$", line) for line in lines)
    # with no Progress in this process (a Dask worker), the reporter does nothing
    progress.sweep_reporter(1, 10)(5, 10)
    assert capsys.readouterr().err == ""


def test_numba_cache_check(tmp_path, monkeypatch):
    import mlimpute.sampler as sampler
    from mlimpute.sampler import _kernels

    _kernels.ndtri(0.3)  # compiled (or loaded from the cache) now
    assert progress.numba_cache_present()
    fake = tmp_path / "sampler"
    fake.mkdir()
    monkeypatch.setattr(sampler, "__file__", str(fake / "__init__.py"))
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    assert not progress.numba_cache_present()  # a fresh installation: the line is printed


def test_serve_line_per_finished_run(tmp_path):
    from prefect.states import Completed, Failed

    from mlimpute.pipeline.serve import finished_line

    shutil.copy(ROOT / "tests" / "fixtures" / "pipeline" / "exam.toml", tmp_path / "run.toml")
    params = {"config_path": str(tmp_path / "run.toml"), "overrides": {}}
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"warnings": ["a", "b"]}))
    line = finished_line("nightly-fox", Completed(), params)
    assert line.startswith("mlimpute: run 'nightly-fox' Completed at ")
    assert f"outputs in {out} (report {out / 'report.html'}" in line and "2 warning(s)" in line
    line = finished_line("nightly-owl", Failed(message="chain 2 crashed"), params)
    assert "run 'nightly-owl' Failed at" in line and "chain 2 crashed" in line
    assert f"no new outputs in {out}" in line
