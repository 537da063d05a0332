"""The Prefect flow: a table in (Parquet, CSV or a Parquet folder), pooled report out.

    ingest (sha256) → validate → chains (tasks, cached) → assemble (imputations/,
    diagnostics.csv) → fits (one task per analysis × imputation, cached) → pool (fits/,
    pooled/) → report.html → manifest.json → published (moved from .cache/staging into place,
    in place of the last run's outputs, the manifest last) → stale cache entries pruned →
    Prefect artifacts (their failure a warning: the run is complete by then)

The configuration is parsed once, by the flow (or by the CLI, which hands the flow the object
it checked), and passed to the tasks as the validated object. Tasks pass paths and small
records. The chains and fits go to the ``[runner]``'s task runner
(this process, or Dask workers); the cheap steps run in the flow's own process. The flow waits
for *every* future and calls ``.result()`` on each, so a failed chain fails the flow (after the
other chains have finished and been cached for the next run) instead of leaving a "Completed"
run with missing pieces.

Imputations equal ``mlimpute.impute(df, model, n_imputations, burn, between, chains, seed)``
for the same configuration, whichever runner ran the chains: each chain task rebuilds the
model arrays from the file and draws from its own ``SeedSequence`` child of ``seed``.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.futures import as_completed
from threadpoolctl import threadpool_limits

import mlimpute
from mlimpute.config import PipelineConfig, load_config
from mlimpute.design import declared_levels
from mlimpute.impute import split_imputations

from . import checks, notices, shutdown, store
from .outputs import MANIFEST, publish_artifacts, write_manifest, write_report
from .progress import Progress, numba_cache_present
from .runtime import task_runner
from .finished import FLOW_NAME, announce_finished
from .tasks import (assemble_imputations, cached, fit_imputation, ingest, pool_analysis,
                    sample_chain, validate)

__all__ = ["pipeline"]


# persist_result=False: the return value is a small summary read in-process; the files are the output
# hooks: under `serve`, one line per finished scheduled run (a `mlimpute run` prints its own)
@flow(name=FLOW_NAME, log_prints=False, persist_result=False,
      on_completion=[announce_finished], on_failure=[announce_finished],
      on_crashed=[announce_finished])
def pipeline(config_path: str, overrides: dict[str, Any] | None = None,
             progress: bool = False, config: PipelineConfig | None = None) -> dict[str, Any]:
    """Impute, analyse and pool as the TOML configuration at ``config_path`` says.

    Parameters
    ----------
    config_path : str
        The TOML configuration (see :mod:`mlimpute.config`).
    overrides : dict, optional
        Dotted keys applied over the file, e.g. ``{"output.dir": "/data/out"}``.
    progress : bool
        Draw stage progress on stderr (the CLI does); the run log always gets it.
    config : PipelineConfig, optional
        ``config_path`` with ``overrides`` already parsed and validated (the CLI passes the
        object it checked); read from ``config_path`` when not given (deployments).

    Returns
    -------
    dict
        Output folder, files, warnings and stage timings.
    """
    t_start = time.perf_counter()
    logger = get_run_logger()
    cfg = config if config is not None else load_config(config_path, overrides)
    out = cfg.output.dir
    version = mlimpute.__version__
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    data = ingest(str(cfg.data.path))
    summary = validate(cfg)  # bad data fails here, leaving the last complete run untouched
    timings["ingest+validate"] = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    lock = store.lock_output(out)   # one run at a time in a folder (held to the end of the flow)
    # this run's outputs are written under .cache/staging and moved into place at the end: a run
    # that fails or is stopped leaves the last complete run (and its manifest) as it was
    stage = store.stage_dir(out)
    staged = cfg.model_copy(update={"output": cfg.output.model_copy(update={"dir": stage})})
    bar = Progress(progress, logger)
    try:
        bar.note(f"{summary['rows']} rows in {checks.describe_clusters(summary['clusters'])} clusters; missing: "
                 + ", ".join(f"{k} {v}" for k, v in summary["missing"].items()))

        if not numba_cache_present():
            bar.note("compiling the sampler's numba kernels for the first chain: once per "
                     "installation, about 20 s on 2 cores")
        chain_jobs = _chain_jobs(cfg, data["sha256"], version)
        shutdown.expect_chains([j["out"] for j in chain_jobs])   # what a stop says is kept
        # BLAS pinned to one thread in this process too: run_chain's own limit is restored
        # when a chain ends, which would un-pin a chain still running in another thread
        with threadpool_limits(limits=1, user_api="blas"), task_runner(
                cfg.runner.kind, cfg.runner.workers, cfg.runner.address) as runner:
            t0 = time.perf_counter()
            futures = [runner.submit(cached(sample_chain, out, refresh=_redo(j["out"], logger)),
                                     {"cfg": cfg, "job": j}) for j in chain_jobs]
            chain_states = _gather(futures, bar.stage("chains", len(futures)))
            # the files are where this run's jobs say: a cache record keeps the path it was made
            # with, which names another folder once the output folder is moved or copied
            chain_paths = [j["out"] for j in chain_jobs]
            timings["chains"] = time.perf_counter() - t0

            t0 = time.perf_counter()
            assembled = assemble_imputations(staged, chain_paths)
            timings["assemble"] = time.perf_counter() - t0

            t0 = time.perf_counter()
            fit_jobs = _fit_jobs(cfg, assembled["partitions"], version)
            analyses = {a.name: a for a in cfg.analysis}
            futures = [runner.submit(cached(fit_imputation, out, refresh=_redo(j["out"], logger)),
                                     {"analysis": analyses[j["analysis"]["name"]], "job": j})
                       for j in fit_jobs]
            _gather(futures, bar.stage("fits", len(futures)))
            fit_paths = [j["out"] for j in fit_jobs]
            timings["fits"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        pooled = []
        cc_paths = _complete_case_paths(cfg, data["sha256"], version)
        for a in cfg.analysis:
            paths = [p for j, p in zip(fit_jobs, fit_paths) if j["analysis"]["name"] == a.name]
            pooled.append(pool_analysis(staged, a, paths, cc_paths[a.name], data["sha256"]))
        timings["pool"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        report = write_report(staged, data, assembled, chain_paths, pooled, timings)
        timings["report"] = time.perf_counter() - t0
        timings["total"] = time.perf_counter() - t_start
        chains = [{"chain": j["chain"] + 1, "imputations": j["n_imputations"], "key": j["key"],
                   "file": Path(p).relative_to(out).as_posix(), "state": s}
                  for j, p, s in zip(chain_jobs, chain_paths, chain_states)]
        # the manifest is staged with the outputs it lists and renamed into place last
        write_manifest(cfg, stage, data, summary, assembled, chains, pooled, report, timings)
        store.publish(stage, out, MANIFEST)
        manifest = str(out / MANIFEST)
        assembled, pooled, report = _published(assembled, pooled, report, stage, out)
        store.prune_cache(out, [*chain_paths, *fit_paths, *cc_paths.values()])
        shutdown.expect_chains([])
        try:  # the run is complete and in place: Prefect's artifacts are a courtesy to its UI
            publish_artifacts(assembled, pooled, str(out))
        except Exception as exc:  # noqa: BLE001 - an API hiccup must not fail a published run
            logger.warning(f"the run's Prefect artifacts were not created ({type(exc).__name__}: "
                           f"{exc}); the outputs and manifest.json in {out} are complete")
    finally:
        shutil.rmtree(stage, ignore_errors=True)   # what a failed run had staged (published: gone)
        bar.close()
        lock.close()
    warnings = notices.of_run(assembled, pooled)
    for w in warnings:  # once each, in the run's log (the CLI prints them, not Prefect)
        logger.warning(w)
    return {"output_dir": str(out), "report": report, "manifest": manifest,
            "imputations": assembled["imputations_dir"], "diagnostics": assembled["diagnostics"],
            "pooled": {r["name"]: r["paths"]["pooled"] for r in pooled},
            "chain_states": chain_states, "warnings": warnings, "timings": timings}


def _published(assembled: dict[str, Any], pooled: list[dict[str, Any]], report: str, stage: Path,
               out: Path) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
    """The records' paths where ``store.publish`` moved their files (``stage`` → ``out``)."""
    def moved(p: str) -> str:
        return str(out / Path(p).relative_to(stage))

    assembled = {**assembled, "imputations_dir": moved(assembled["imputations_dir"]),
                 "diagnostics": moved(assembled["diagnostics"]),
                 "partitions": [{**p, "path": moved(p["path"])} for p in assembled["partitions"]]}
    pooled = [{**r, "paths": {k: moved(v) for k, v in r["paths"].items()}} for r in pooled]
    return assembled, pooled, moved(report)


def _chain_jobs(cfg: Any, data_sha256: str, version: str) -> list[dict[str, Any]]:
    """One record per chain; ``key`` digests everything that decides the chain's draws."""
    s = cfg.sampler
    rec = cfg.chain_record()
    per_chain = split_imputations(s.imputations, s.chains)
    jobs = []
    for c in range(s.chains):
        key = store.digest({"what": "chain", "data_sha256": data_sha256, "config": rec,
                            "chain": c, "version": version})
        jobs.append({
            "key": key, "chain": c, "chain_number": c + 1, "n_imputations": per_chain[c], "data_sha256": data_sha256,
            "out": str(store.cache_dir(cfg.output.dir) / "chains" / f"chain-{c + 1}-{key[:16]}.npz"),
        })
    return jobs


def _fit_jobs(cfg: Any, partitions: list[dict[str, Any]], version: str) -> list[dict[str, Any]]:
    """One record per analysis × imputation, keyed on the completed dataset's sha256."""
    jobs = []
    levels = declared_levels(cfg.imputation_model())   # C(ses) in the declared order
    for a in cfg.analysis:
        rec = a.model_dump(mode="json")
        fit_rec = _fit_record(a)
        for p in partitions:
            key = store.digest({"what": "fit", "data_sha256": p["sha256"], "analysis": fit_rec,
                                "levels": levels, "version": version})
            jobs.append({
                "key": key, "analysis": rec, "imputation": p["imputation"], "data_path": p["path"], "levels": levels,
                "out": str(store.cache_dir(cfg.output.dir) / "fits" / a.name
                           / f"imputation-{p['imputation']}-{key[:16]}.pkl"),
            })
    return jobs


def _fit_record(a: Any) -> dict[str, Any]:
    """What decides an analysis's fits (not its name or the pooling options)."""
    return {k: v for k, v in a.model_dump(mode="json").items() if k not in ("name", "df_com", "conf_level")}


def _redo(path: str, logger: Any) -> bool:
    """Whether a cached job must run again although Prefect may hold a record of it: its work
    file is gone, or damaged (then deleted, and said)."""
    state = store.cache_entry(path)
    if state == "damaged":
        logger.warning(f"the cache file {path} was damaged (it did not read); it was deleted and its job runs again")
    return state != "usable"


def _complete_case_paths(cfg: Any, data_sha256: str, version: str) -> dict[str, str]:
    """Per analysis, the cache file of its complete-case fit, keyed on the input and the
    analysis (a re-run refitted it every time: 13 s of a 33 s cached re-run at 1,000,000 rows)."""
    out = {}
    for a in cfg.analysis:
        key = store.digest({"what": "complete_case", "data_sha256": data_sha256, "analysis": _fit_record(a),
                            "levels": declared_levels(cfg.imputation_model()), "version": version})
        out[a.name] = str(store.cache_dir(cfg.output.dir) / "fits" / a.name / f"complete-case-{key[:16]}.pkl")
    return out


def _gather(futures: list[Any], stage: Any) -> list[str]:
    """Wait for every future (advancing ``stage``), then return their final states in submission
    order. The results are not used: the work files are where the jobs say (a cached result names
    the folder it was made in).

    Raises the first failure only after all have finished, so the finished ones are cached.
    """
    for fut in as_completed(futures):
        fut.wait()  # records the final state on the future (else .state asks the API, which lags)
        state = fut.state
        stage.advance("from cache" if state.name == "Cached" else state.name.lower())
    for fut in futures:
        fut.result()  # raises the first failed task's exception
    return [fut.state.name for fut in futures]
