"""The pipeline's Prefect tasks: thin wrappers of library functions (STYLE §6).

Each task takes paths and small JSON-able records and returns the same: a chain task re-reads
the Parquet file by path, rebuilds the model arrays with :func:`mlimpute.impute.prepare`
(deterministic and cheap), runs :func:`mlimpute.impute.run_chain` and saves the chain to a
file; the next task reads the files. So a task can run in this process, another process or
another machine (Dask), and gives the same result for the same seed.

Retries: none. Sampling, fitting and pooling are deterministic given their inputs, so a retry
would fail the same way; a lost Dask worker is rescheduled by Dask itself.

Caching: chain and fit tasks are cached across runs under a key that is a digest of the input
file's sha256, the part of the configuration that decides the result and the package version
(Prefect's default keys hash argument *values* and the flow run id, so they would neither see a
changed file nor survive into the next run). Their cache records live beside the work files
under ``<output>/.cache`` (see :func:`cached`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task
from prefect.cache_policies import CacheKeyFnPolicy

from mlimpute.config import AnalysisConfig, ModelConfig, parse_config
from mlimpute.impute import assemble, chain_seeds, prepare, run_chain
from mlimpute.analysis import glmm, lmm
from mlimpute.errors import DataError
from mlimpute.io import atomic_path, file_sha256, read_parquet, write_parquet, write_partitioned
from mlimpute.pooling import pool

from . import checks, store

__all__ = ["ingest", "validate", "sample_chain", "assemble_imputations", "fit_imputation",
           "pool_analysis", "cached"]


def _job_key(context: Any, parameters: dict[str, Any]) -> str:
    """Cache key of a chain or fit job: the digest the flow computed (see module docstring)."""
    return parameters["job"]["key"]


def cached(t: Any, output_dir: str | Path, refresh: bool = False) -> Any:
    """``t`` with its cache records under ``<output>/.cache/prefect`` (with the work files).

    ``refresh=True`` recomputes even when a record exists: the flow asks for it when the work
    file a record points to has gone.
    """
    return t.with_options(
        cache_policy=CacheKeyFnPolicy(cache_key_fn=_job_key),
        result_storage=store.cache_dir(output_dir) / "prefect",
        persist_result=True,
        refresh_cache=refresh,
    )


def _warnings_of(caught: list[warnings.WarningMessage]) -> list[str]:
    seen: list[str] = []
    for w in caught:
        msg = f"{w.category.__name__}: {w.message}"
        if msg not in seen:
            seen.append(msg)
    return seen


@task(name="ingest", retries=0)
def ingest(data_path: str) -> dict[str, Any]:
    """Content hash of the input file: it keys every cache, so a changed file reruns all."""
    p = Path(data_path)
    if not p.exists():
        raise DataError(f"data file {data_path!r} does not exist; check [data] path")
    return {"path": str(p), "sha256": file_sha256(p), "bytes": p.stat().st_size}


@task(name="validate", retries=0)
def validate(config: dict[str, Any]) -> dict[str, Any]:
    """The model and analyses against the data (no sampling): a small summary."""
    cfg = parse_config(config, source="config")
    return checks.check_data(cfg)


@task(name="chain", retries=0, task_run_name="chain-{job[chain_number]}")
def sample_chain(job: dict[str, Any]) -> str:
    """Run one chain and save it; returns the file's path.

    ``job``: data path, model and sampler records, chain index, seed, key and output path.
    """
    df = read_parquet(job["data_path"])
    model = ModelConfig.model_validate(job["model"]).to_model()
    data = prepare(df, model)
    s = job["sampler"]
    _, seeds = chain_seeds(s["seed"], s["chains"])
    c = job["chain"]
    result = run_chain(data, c, job["n_imputations"], s["burn"], s["between"], seeds[c],
                       progress=False)
    return str(store.save_chain(job["out"], result))


@task(name="assemble", retries=0)
def assemble_imputations(config: dict[str, Any], chain_paths: list[str]) -> dict[str, Any]:
    """Chains → the long table, written hive-partitioned, and diagnostics.csv."""
    cfg = parse_config(config, source="config")
    out = cfg.output.dir
    df = read_parquet(cfg.data.path)
    data = prepare(df, cfg.imputation_model())
    chains = [store.load_chain(p) for p in chain_paths]
    entropy, _ = chain_seeds(cfg.sampler.seed, cfg.sampler.chains)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = assemble(df, data, chains, burn=cfg.sampler.burn, between=cfg.sampler.between,
                       seed_entropy=entropy)
    imp_dir = write_partitioned(res.data, out / "imputations", by="imputation")
    diag = res.diagnostics()
    diag_path = write_csv(diag, out / "diagnostics.csv")
    partitions = [
        {"imputation": k, "path": str(p), "sha256": file_sha256(p)}
        for k in range(1, res.n_imputations + 1)
        for p in [imp_dir / f"imputation={k}" / "part-0.parquet"]
    ]
    return {
        "imputations_dir": str(imp_dir),
        "diagnostics": str(diag_path),
        "partitions": partitions,
        "n_imputations": res.n_imputations,
        "seed_entropy": str(entropy),
        "chain_seconds": [float(s) for s in res.chain_seconds],
        "parameters": list(res.parameter_names),
        "warnings": _warnings_of(caught),
    }


@task(name="fit", retries=0, task_run_name="fit-{job[analysis][name]}-{job[imputation]}")
def fit_imputation(job: dict[str, Any]) -> str:
    """Fit one analysis on one completed dataset; the fit is pickled to ``job["out"]``."""
    a = AnalysisConfig.model_validate(job["analysis"])
    data = pd.read_parquet(job["data_path"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # as mlimpute.analyse: lmm for gaussian, glmm(family=...) otherwise
        if a.family == "gaussian":
            fit = lmm(a.formula, data, **a.fit_options())
        else:
            fit = glmm(a.formula, data, family=a.family, **a.fit_options())
    store.save_pickle(job["out"], {"fit": fit, "warnings": _warnings_of(caught)})
    return job["out"]


@task(name="pool", retries=0, task_run_name="pool-{analysis[name]}")
def pool_analysis(analysis: dict[str, Any], fit_paths: list[str], output_dir: str) -> dict[str, Any]:
    """Pool one analysis over the imputations; writes fits/, pooled/ tables. Small record back."""
    a = AnalysisConfig.model_validate(analysis)
    out = Path(output_dir)
    loaded = [store.load_pickle(p) for p in fit_paths]
    fits = [x["fit"] for x in loaded]
    fit_warnings = [f"imputation {k}: {w}" for k, x in enumerate(loaded, 1) for w in x["warnings"]]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pooled = pool(fits, **a.pool_options())
    tidy = pooled.tidy()
    per_fit = pd.concat(
        [f.tidy().assign(imputation=k, nobs=f.nobs, df_resid=f.df_resid, loglik=f.loglik,
                         converged=f.converged, singular=f.singular)
         for k, f in enumerate(fits, 1)], ignore_index=True)
    per_fit = per_fit[["imputation", *[c for c in per_fit.columns if c != "imputation"]]]
    per_vc = pd.concat([f.varcomp().assign(imputation=k) for k, f in enumerate(fits, 1)],
                       ignore_index=True)
    per_vc = per_vc[["imputation", *[c for c in per_vc.columns if c != "imputation"]]]
    paths = {
        "fits": write_parquet(per_fit, out / "fits" / f"{a.name}.parquet"),
        "fits_varcomp": write_parquet(per_vc, out / "fits" / f"{a.name}_varcomp.parquet"),
        "pooled": write_csv(tidy, out / "pooled" / f"{a.name}.csv"),
    }
    varcomp = None
    if pooled.varcomp_pooled is not None:
        varcomp = pooled.varcomp()
        paths["pooled_varcomp"] = write_csv(varcomp, out / "pooled" / f"{a.name}_varcomp.csv")
    return {
        "name": a.name,
        "formula": a.formula,
        "family": a.family,
        "m": pooled.m,
        "paths": {k: str(v) for k, v in paths.items()},
        "warnings": fit_warnings + _warnings_of(caught),
    }


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    """``df`` as CSV at ``path``, atomically."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return path
