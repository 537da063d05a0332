"""The Prefect pipeline end to end (mlimpute.pipeline, through the flow and the CLI).

One session-scoped ``prefect_test_harness`` serves every in-process flow run (its API takes
20-40 s to start on a 2-core machine). The Dask test runs ``mlimpute run`` in a subprocess
against a ``LocalCluster`` of 2 worker processes, exercising the default set-up: no
``PREFECT_API_URL``, the CLI starts one local API and the workers must use it rather than
start their own. Run lengths are tiny: these tests check plumbing, not convergence.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mlimpute as mi
from mlimpute.io import file_sha256, read_parquet

ROOT = Path(__file__).resolve().parents[1]
EXAM = ROOT / "examples" / "exam_scores.parquet"
CONFIG = ROOT / "tests" / "fixtures" / "pipeline" / "exam.toml"
_cfg = tomllib.loads(CONFIG.read_text())
SEED, M, CHAINS, BURN, BETWEEN = (_cfg["sampler"][k] for k in ("seed", "imputations", "chains",
                                                               "burn", "between"))
FORMULA, FORMULA_2 = (a["formula"] for a in _cfg["analysis"])
DISPERSION_2 = _cfg["analysis"][1]["dispersion"]  # sex-gap: a residual variance per sex
MODEL = mi.ImputationModel(
    cluster="school",
    variables={"normexam": "continuous", "standlrt": "continuous",
               "avslrt": mi.Variable("continuous", level=2)},
    covariates=["sex"])
OUTPUTS = ["diagnostics.csv", "report.html", "manifest.json", "fits/exam.parquet",
           "fits/exam_varcomp.parquet", "fits/sex-gap.parquet", "fits/sex-gap_varcomp.parquet",
           "pooled/exam.csv",
           "pooled/exam_varcomp.csv", "pooled/sex-gap.csv", "pooled/sex-gap_varcomp.csv",
           "pooled/exam_complete_case.csv", "pooled/sex-gap_complete_case.csv",
           *[f"imputations/imputation-{k}.parquet" for k in range(1, M + 1)]]


@pytest.fixture(scope="session")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


def make_project(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(EXAM, root / "exam.parquet")
    shutil.copy(CONFIG, root / "run.toml")
    return root / "run.toml"


@pytest.fixture(scope="module")
def reference():
    """``mi.impute`` with the configuration's arguments: what the flow must reproduce."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mi.ConvergenceWarning)  # tiny run on purpose
        return mi.impute(read_parquet(EXAM), MODEL, n_imputations=M, burn=BURN, between=BETWEEN,
                         chains=CHAINS, seed=SEED)


@pytest.fixture(scope="module")
def local_run(harness, tmp_path_factory):
    from mlimpute.pipeline.flow import pipeline

    from mlimpute import diagnostics

    config = make_project(tmp_path_factory.mktemp("local"))
    real = diagnostics.summarise

    def poor(draws, names):  # one R-hat past the limit, whatever this short run's mixing
        table = real(draws, names)
        table.loc[0, "rhat"] = 1.5
        return table

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(diagnostics, "summarise", poor)
        state = pipeline(config_path=str(config), return_state=True)
    assert state.is_completed(), state.message
    return state, config.parent / "out"


def read_long(out: Path) -> pd.DataFrame:
    """The written imputations as one table, as an analyst reads them (pandas)."""
    got = pd.read_parquet(out / "imputations")
    assert got["imputation"].dtype == "int64"  # integers in numeric order (test_io: 4 readers)
    assert got["imputation"].is_monotonic_increasing
    return got


# ------------------------------------------------------------------------------------------
# The default (local) runner, end to end
# ------------------------------------------------------------------------------------------
def test_all_outputs_present_whole_and_listed_in_manifest(local_run):
    state, out = local_run
    for rel in OUTPUTS:
        assert (out / rel).is_file(), rel
    leftovers = [p for p in out.rglob("*") if p.name.endswith((".tmp", ".old"))]
    assert leftovers == []  # every file was renamed into place whole
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["input"]["sha256"] == file_sha256(out.parent / "exam.parquet")
    assert manifest["input"]["rows"] == 4059 and manifest["input"]["clusters"] == 65
    assert manifest["seed"] == {"seed": SEED, "entropy": str(SEED)}
    assert manifest["config"]["sampler"] == {"imputations": M, "burn": BURN, "between": BETWEEN,
                                             "chains": CHAINS, "seed": SEED}
    assert manifest["versions"]["mlimpute"] == mi.__version__ and "prefect" in manifest["versions"]
    assert set(manifest["timings_seconds"]) >= {"chains", "assemble", "fits", "pool", "report", "total"}
    assert [c["state"] for c in manifest["chains"]] == ["Completed", "Completed"]
    assert set(manifest["outputs"]) == set(OUTPUTS) - {"manifest.json"}
    for rel, sha in manifest["outputs"].items():
        assert file_sha256(out / rel) == sha, rel
    result = state.result()
    assert result["chain_states"] == ["Completed", "Completed"]
    assert any("ConvergenceWarning: R-hat > 1.05" in w for w in result["warnings"])  # forced


def test_imputations_identical_to_impute_and_observed_cells_intact(local_run, reference):
    _, out = local_run
    got = read_long(out)
    pd.testing.assert_frame_equal(got[list(reference.data.columns)], reference.data)
    df = read_parquet(EXAM)
    for k in range(1, M + 1):
        done = got[got["imputation"] == k].drop(columns="imputation").reset_index(drop=True)
        observed = df.notna()
        for col in df.columns:
            pd.testing.assert_series_equal(done.loc[observed[col], col], df.loc[observed[col], col])
        assert not done[list(MODEL.variables)].isna().any().any()
    diag = pd.read_csv(out / "diagnostics.csv")
    assert list(diag.columns) == ["parameter", "rhat", "ess_bulk", "ess_tail"]
    want = reference.diagnostics()
    want.loc[0, "rhat"] = 1.5  # forced by local_run
    pd.testing.assert_frame_equal(diag, want, check_exact=False, rtol=1e-12)


def test_pooled_tables_equal_analyse_on_the_written_imputations(local_run):
    _, out = local_run
    written = pd.read_parquet(out / "imputations")  # as an analyst would read it
    for name, formula, kw in (("exam", FORMULA, {"reml": True}),
                              ("sex-gap", FORMULA_2, {"reml": False, "dispersion": DISPERSION_2})):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FMI warnings of a tiny run
            ref = mi.analyse(written, formula, **kw)
        pooled = pd.read_csv(out / "pooled" / f"{name}.csv")
        pd.testing.assert_frame_equal(pooled, ref.tidy(), check_exact=False, rtol=1e-12)
        vc = pd.read_csv(out / "pooled" / f"{name}_varcomp.csv")
        np.testing.assert_allclose(vc["estimate"], ref.varcomp()["estimate"], rtol=1e-12)
        cc = pd.read_csv(out / "pooled" / f"{name}_complete_case.csv")  # beside it in the report
        complete = read_parquet(EXAM).dropna(subset=["normexam", "standlrt", "sex", "avslrt", "school"]
                                             if name == "exam" else ["normexam", "sex", "school"])
        assert (cc["nobs"] == len(complete)).all()
        np.testing.assert_allclose(cc["estimate"], mi.lmm(formula, complete, **kw).tidy()["estimate"],
                                   rtol=1e-10)
        fits = pd.read_parquet(out / "fits" / f"{name}.parquet")
        per = ref.per_imputation()
        assert sorted(fits["imputation"].unique()) == list(range(1, M + 1))
        np.testing.assert_allclose(fits["estimate"], per["estimate"], rtol=1e-12)
        np.testing.assert_allclose(fits["std_error"], per["std_error"], rtol=1e-12)


def test_report_and_prefect_artifacts(local_run):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    state, out = local_run
    html = (out / "report.html").read_text()
    # forest plots (one per analysis), missing-data patterns, observed vs imputed, traces
    assert html.count("data:image/png;base64,") == 2 + 3
    assert "http://" not in html and "https://" not in html
    for term in pd.read_csv(out / "pooled" / "exam.csv")["term"]:
        assert f">{term}<" in html
    # sex-gap's variance function: named beside its formula, its rows explained
    assert "w from <code>~ sex</code>" in html and "exp(γ) is the ratio of residual variances" in html
    vc = pd.read_csv(out / "pooled" / "sex-gap_varcomp.csv")
    assert vc.query("group == 'Residual' and term1 == 'sex[T.girl]'")["method"].tolist() == ["rubin_identity"]
    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    kinds = {a.key: a.type for a in arts}
    assert kinds == {"mlimpute-run": "markdown", "pooled-exam": "table", "pooled-sex-gap": "table"}
    md = next(a for a in arts if a.key == "mlimpute-run").data
    assert "## exam" in md and "Worst R-hat" in md
    assert "(gaussian, dispersion `~ sex`, m = 4)" in md  # sex-gap's variance function


# ------------------------------------------------------------------------------------------
# Resume: a failed chain fails the run; the re-run takes the finished chain from the cache
# ------------------------------------------------------------------------------------------
def test_failed_chain_fails_run_and_rerun_reuses_finished_chains(harness, cli_env, tmp_path,
                                                                 monkeypatch, capsys, reference):
    import mlimpute.pipeline.tasks as ft
    from mlimpute.cli import main

    config = make_project(tmp_path / "project")
    out = config.parent / "out"
    real = ft.run_chain
    calls: list[int] = []

    def crash_second(data, chain, *args, **kwargs):
        calls.append(chain)
        if chain == 1:
            raise RuntimeError("chain 2 crashed on purpose")
        return real(data, chain, *args, **kwargs)

    monkeypatch.setattr(ft, "run_chain", crash_second)
    assert main(["run", str(config)]) == 1
    err = capsys.readouterr().err
    assert "mlimpute: error: the run failed (Failed): chain 2 crashed on purpose" in err
    assert sorted(calls) == [0, 1]
    assert not (out / "manifest.json").exists()  # no "complete" run with missing pieces
    assert not (out / "imputations").exists()
    assert len(list((out / ".cache" / "chains").glob("chain-1-*.npz"))) == 1

    def counting(data, chain, *args, **kwargs):
        calls.append(chain)
        return real(data, chain, *args, **kwargs)

    calls.clear()
    monkeypatch.setattr(ft, "run_chain", counting)
    assert main(["run", str(config)]) == 0
    printed = capsys.readouterr().out
    assert calls == [1]  # only the missing chain was sampled
    assert "chains: 2 (1 from cache)" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert [c["state"] for c in manifest["chains"]] == ["Cached", "Completed"]
    pd.testing.assert_frame_equal(read_long(out)[list(reference.data.columns)], reference.data)

    # a cache record whose chain file has gone is recomputed, not trusted; the complete-case
    # fits (of the unchanged input) come from the cache
    next((out / ".cache" / "chains").glob("chain-2-*.npz")).unlink()
    calls.clear()
    real_cc, cc_calls = ft.complete_case, []
    monkeypatch.setattr(ft, "complete_case", lambda *a, **k: cc_calls.append(1) or real_cc(*a, **k))
    assert main(["run", str(config), "--no-progress"]) == 0
    assert calls == [1] and cc_calls == []
    assert len(list((out / ".cache" / "fits").rglob("complete-case-*.pkl"))) == 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert [c["state"] for c in manifest["chains"]] == ["Cached", "Completed"]
    pd.testing.assert_frame_equal(read_long(out)[list(reference.data.columns)], reference.data)

    # another seed: the old chains and fits (and their cache records) are stale and pruned; the
    # complete-case fits (same input, same analyses) are not
    cached = {p.name for p in (out / ".cache").rglob("*") if p.is_file()} - {".lock"}
    complete_case = {n for n in cached if n.startswith("complete-case-")}
    assert main(["run", str(config), "--no-progress", "--set", "sampler.seed=7"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    left = {p.name for p in (out / ".cache").rglob("*") if p.is_file()} - {".lock"}
    assert not (cached - complete_case) & left and complete_case <= left
    keys = {c["key"] for c in manifest["chains"]}
    assert sorted(p.name.split("-")[2][:16] for p in (out / ".cache" / "chains").iterdir()) == \
        sorted(k[:16] for k in keys)
    assert keys <= {p.name for p in (out / ".cache" / "prefect").iterdir()}
    assert len(list((out / ".cache" / "fits").rglob("imputation-*.pkl"))) == 2 * M  # two analyses
    assert len(list((out / ".cache" / "fits").rglob("complete-case-*.pkl"))) == 2

    # an analysis dropped from the configuration: its tables go, not left beside the manifest
    config.write_text(config.read_text().split('[[analysis]]\nname = "sex-gap"')[0] + "[output]\ndir = \"out\"\n")
    assert main(["run", str(config), "--no-progress", "--set", "sampler.seed=7"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    tables = {p.relative_to(out).as_posix() for d in ("fits", "pooled") for p in (out / d).iterdir()}
    assert tables == {o for o in OUTPUTS if o.startswith(("fits/", "pooled/")) and "sex-gap" not in o}
    assert tables <= set(manifest["outputs"])

    # the output folder moved: the cache records named the old folder's files, and every later
    # run failed (helper 31); the files are taken where this run's jobs put them
    moved = out.parent / "out moved"
    out.rename(moved)
    calls.clear()
    assert main(["run", str(config), "--no-progress", "--set", "sampler.seed=7", "--out", str(moved)]) == 0
    assert calls == [] and json.loads((moved / "manifest.json").read_text())["chains"][0]["state"] == "Cached"

    # a re-run that fails after writing its imputations (another seed: new chains and tables)
    # leaves the last complete run as it was, its manifest and every file it lists (helper 32:
    # the new imputations had been left beside the old run's fits, pooled tables and report)
    import mlimpute.pipeline.flow as flow_module

    before = json.loads((moved / "manifest.json").read_text())
    real_pool = flow_module.pool_analysis

    def fail_pool(*a, **k):
        raise mi.DataError("pooling failed on purpose")

    monkeypatch.setattr(flow_module, "pool_analysis", fail_pool)
    assert main(["run", str(config), "--no-progress", "--set", "sampler.seed=8", "--out", str(moved)]) == 1
    assert "pooling failed on purpose" in capsys.readouterr().err
    assert json.loads((moved / "manifest.json").read_text()) == before
    shown = {p.relative_to(moved).as_posix() for p in moved.rglob("*")
             if p.is_file() and ".cache" not in p.parts and p.name != "manifest.json"}
    assert shown == set(before["outputs"])
    assert all(file_sha256(moved / f) == h for f, h in before["outputs"].items())
    assert not (moved / ".cache" / "staging").exists()

    # Prefect's artifact calls fail after the outputs are in place (the API stopping or
    # unreachable): the run is complete and says so, its manifest in place and listing its files
    # (helper 34: the artifacts ran between publishing and writing the manifest, which was lost)
    import mlimpute.pipeline.outputs as outputs_module

    monkeypatch.setattr(flow_module, "pool_analysis", real_pool)

    def fail_artifact(*a, **k):
        raise RuntimeError("artifact API unreachable on purpose")

    monkeypatch.setattr(outputs_module, "create_markdown_artifact", fail_artifact)
    assert main(["run", str(config), "--no-progress", "--set", "sampler.seed=8", "--out", str(moved)]) == 0
    after = json.loads((moved / "manifest.json").read_text())
    assert after["config"]["sampler"]["seed"] == 8 and after["outputs"].keys() == before["outputs"].keys()
    assert after["config"]["output"]["dir"] == str(moved)
    assert all(file_sha256(moved / f) == h for f, h in after["outputs"].items())
    assert not (moved / ".cache" / "staging").exists() and not (moved / ".cache" / "replaced").exists()


def test_each_warning_once_with_its_count_on_console_log_report_and_manifest(
        harness, cli_env, tmp_path, monkeypatch, capsys):
    """A fit warning on 3 of 4 imputations (numbers differing) is one line everywhere."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    import mlimpute.pipeline.tasks as ft
    from mlimpute.cli import main

    config = make_project(tmp_path / "project")
    real, calls = ft.lmm, []

    def warning_lmm(formula, data, **kw):
        calls.append(formula)
        if formula == FORMULA and len(calls) > 1:  # exam's fits 2-4, each with its own number
            warnings.warn(f"boundary (singular) fit: theta {len(calls) / 7:.4f}",
                          mi.ConvergenceWarning)
        return real(formula, data, **kw)

    monkeypatch.setattr(ft, "lmm", warning_lmm)
    assert main(["run", str(config), "--no-progress"]) == 0
    cap = capsys.readouterr()
    console = cap.out + cap.err
    line = "exam: ConvergenceWarning: boundary (singular) fit: theta 0.2857 (in 3 of 4 imputations)"
    assert console.count("boundary (singular) fit") == 1 and line in console
    out = config.parent / "out"
    html = (out / "report.html").read_text()
    assert html.count("boundary (singular) fit") == 1 and "(in 3 of 4 imputations)" in html
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["warnings"].count(line) == 1
    flow_run = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[manifest["prefect_flow_run_id"]]))
    deadline = time.monotonic() + 30  # logs reach the API in batches
    while True:
        with get_client(sync_client=True) as client:
            logs = [log.message for log in client.read_logs(log_filter=flow_run)]
        if any("boundary" in m for m in logs) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    time.sleep(2)  # a second copy, if any, would come in the same or the next batch
    with get_client(sync_client=True) as client:
        logs = [log.message for log in client.read_logs(log_filter=flow_run)]
    assert sum("boundary (singular) fit" in m for m in logs) == 1, logs


def test_demo_command_runs_the_bundled_example(harness, cli_env, tmp_path, capsys):
    from mlimpute.cli import main

    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--imputations", "2", "--chains", "1",
                 "--burn", "10", "--between", "2", "--no-progress"])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    assert "exam (pooled):" in cap.out and "Prefect start-up" in cap.out
    assert (out / "manifest.json").is_file() and (out / "report.html").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["input"]["sha256"] == file_sha256(EXAM)
    assert manifest["config"]["analysis"][0]["formula"] == FORMULA
    # the demo imputes with its analysis model (random slope of the incomplete standlrt)
    assert manifest["config"]["model"]["substantive"] == FORMULA
    assert "substantive-model compatible" in (out / "report.html").read_text()


def test_serve_registers_a_cron_deployment(harness, cli_env, tmp_path, capsys):
    from prefect.client.orchestration import get_client

    from mlimpute.pipeline.serve import build_deployment
    from mlimpute.cli import main

    config = make_project(tmp_path / "project")
    dep = build_deployment(config, "0 2 * * *", overrides={"sampler.burn": 50})
    assert dep.parameters == {"config_path": str(config.resolve()), "overrides": {"sampler.burn": 50}}
    assert dep.entrypoint == "mlimpute.pipeline.flow.pipeline"
    dep_id = dep.apply()
    with get_client(sync_client=True) as client:
        stored = client.read_deployment(dep_id)
    assert [s.schedule.cron for s in stored.schedules] == ["0 2 * * *"]
    assert stored.parameters["config_path"] == str(config.resolve())

    assert main(["serve", str(config), "--cron", "every night"]) == 2
    err = capsys.readouterr().err
    assert "--cron 'every night' is not a cron expression" in err and err.count("\n") == 1


# ------------------------------------------------------------------------------------------
# Dask: the same imputations; workers use the run's one API instead of starting their own
# ------------------------------------------------------------------------------------------
def test_dask_runner_same_imputations_and_workers_start_no_api(local_run, tmp_path):
    import psutil
    from distributed import Client, LocalCluster

    config = make_project(tmp_path / "project")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), DO_NOT_TRACK="1",
               PREFECT_SERVER_ANALYTICS_ENABLED="false")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        proc = subprocess.run(
            [sys.executable, "-m", "mlimpute.cli", "run", str(config), "--no-progress",
             "--set", 'runner.kind="dask"', "--set", f'runner.address="{cluster.scheduler_address}"'],
            env=env, capture_output=True, text=True, timeout=400)
        assert proc.returncode == 0, proc.stderr[-3000:]

        def children() -> list[str]:
            return [" ".join(p.cmdline()) for p in psutil.Process().children(recursive=True)]

        spawned = client.run(children)
        ran_tasks = client.run(lambda: "mlimpute.pipeline.tasks" in sys.modules)
    assert all(not any("uvicorn" in c for c in cmds) for cmds in spawned.values()), spawned
    assert any(ran_tasks.values())  # the chains and fits ran on the workers
    assert "API" in proc.stdout and "external" not in proc.stdout  # the CLI started the one API
    _, local_out = local_run
    dask_out = config.parent / "out"
    pd.testing.assert_frame_equal(read_long(dask_out), read_long(local_out))
    pd.testing.assert_frame_equal(pd.read_csv(dask_out / "pooled" / "exam.csv"),
                                  pd.read_csv(local_out / "pooled" / "exam.csv"))
