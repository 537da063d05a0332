"""The pipeline's Prefect tasks: thin wrappers of library functions.

Each task takes the validated configuration (a :class:`~mlimpute.config.PipelineConfig`,
parsed once by the flow), paths and small records, and returns paths and small records: a
chain task builds the model arrays from the input (read once per process, see
:mod:`.store`), runs :func:`mlimpute.impute.run_chain` and saves the chain to a file; the next
task reads the files. So a task can run in this process, another process or another machine
(Dask), and gives the same result for the same seed.

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

import numpy as np
import pandas as pd
from prefect import task
from scipy import stats
from prefect.cache_policies import CacheKeyFnPolicy

from mlimpute.analysis import glmm, lmm
from mlimpute.config import AnalysisConfig, PipelineConfig
from mlimpute.design import declared_levels, with_declared_levels
from mlimpute.errors import ConvergenceError, DataError, MlimputeError, SpecError
from mlimpute.impute import assemble, chain_seeds, run_chain
from mlimpute.io import atomic_path, dataset_files, file_sha256, write_imputations, write_parquet
from mlimpute.pooling import pool
from mlimpute.substantive import dispersion_note

from . import checks, notices, progress, store

__all__ = ["ingest", "validate", "sample_chain", "assemble_imputations", "fit_imputation",
           "pool_analysis", "cached", "write_csv"]


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


@task(name="ingest", retries=0)
def ingest(data_path: str) -> dict[str, Any]:
    """Content hash of the input: it keys every cache, so a changed input reruns all."""
    p = Path(data_path)
    if not p.exists():
        raise DataError(f"data file {data_path!r} does not exist; check [data] path")
    size = sum(f.stat().st_size for f in dataset_files(p))
    return {"path": str(p), "sha256": file_sha256(p), "bytes": size}


@task(name="validate", retries=0)
def validate(cfg: PipelineConfig) -> dict[str, Any]:
    """The model and analyses against the data (no sampling): a small summary."""
    checks.check_output_outside_input(cfg)
    return checks.check_data(cfg)


@task(name="chain", retries=0, task_run_name="chain-{job[chain_number]}")
def sample_chain(cfg: PipelineConfig, job: dict[str, Any]) -> str:
    """Run one chain and save it; returns the file's path.

    ``job``: chain index, its number of imputations, cache key and output path.
    """
    s = cfg.sampler
    _, seeds = chain_seeds(s.seed, s.chains)
    c = job["chain"]
    total = s.burn + job["n_imputations"] * s.between
    hook = progress.sweep_reporter(job["chain_number"], total)
    result = run_chain(store.model_data(cfg), c, job["n_imputations"], s.burn, s.between,
                       seeds[c], progress=False, on_sweep=hook)
    store.same_input(cfg, job["data_sha256"])   # (before the chain is cached under that input)
    return str(store.save_chain(job["out"], result))



@task(name="assemble", retries=0)
def assemble_imputations(cfg: PipelineConfig, chain_paths: list[str]) -> dict[str, Any]:
    """Chains → the completed datasets (one file per imputation) and diagnostics.csv."""
    out = cfg.output.dir
    chains = [store.load_chain(p) for p in chain_paths]
    entropy, _ = chain_seeds(cfg.sampler.seed, cfg.sampler.chains)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = assemble(store.read_input(cfg.data.path), store.model_data(cfg), chains,
                       burn=cfg.sampler.burn, between=cfg.sampler.between, seed_entropy=entropy)
    files = write_imputations(res.data, out / "imputations")
    diag_path = write_csv(res.diagnostics(), out / "diagnostics.csv")
    return {
        "imputations_dir": str(out / "imputations"),
        "diagnostics": str(diag_path),
        "partitions": [{"imputation": k, "path": str(p), "sha256": file_sha256(p)}
                       for k, p in files.items()],
        "n_imputations": res.n_imputations,
        "seed_entropy": str(entropy),
        "chain_seconds": [float(s) for s in res.chain_seconds],
        "parameters": list(res.parameter_names),
        "warnings": notices.caught(caught),
    }


# what a fit raises where its numbers fail (a matrix that lost definiteness, an overflow), as
# against the package's own errors, which say what to change
NUMERIC_FAILURES = (np.linalg.LinAlgError, ArithmeticError)


@task(name="fit", retries=0, task_run_name="fit-{job[analysis][name]}-{job[imputation]}")
def fit_imputation(analysis: AnalysisConfig, job: dict[str, Any]) -> str:
    """Fit one analysis on one completed dataset; the fit is pickled to ``job["out"]``."""
    data = with_declared_levels(pd.read_parquet(job["data_path"]).drop(columns="imputation"), job.get("levels", {}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fit = _fit(analysis, data)
            fit.varcomp_cov()   # here, so that its warnings (a boundary fit) count per imputation; kept with the fit
        except (SpecError, DataError) as exc:   # the data checked before sampling fitted: this imputation's did not
            raise type(exc)(
                f"[[analysis]] {analysis.name!r} on imputation {job['imputation']}: {exc} (the observed data passed "
                "this check before sampling; imputed values did not: a transform undefined for some of them? "
                "impute the transformed column instead)") from None
        except NUMERIC_FAILURES as exc:
            raise ConvergenceError(
                f"[[analysis]] {analysis.name!r} on imputation {job['imputation']}: the fit failed numerically "
                f"({type(exc).__name__}: {exc}); a coefficient the data nearly separate, or more terms than these "
                "data identify? simplify the formula") from None
    # without its data: the design matrices made a fit on 1,000,000 rows a 184 MB pickle, and
    # pooling loaded every imputation's at once (3.3 GB for 20); pooling needs none of them
    store.save_pickle(job["out"], {"fit": fit.without_data(), "warnings": notices.caught(caught)})
    return job["out"]


def _fit(a: AnalysisConfig, data: pd.DataFrame) -> Any:
    """As mlimpute.analyse: lmm for gaussian, glmm(family=...) otherwise."""
    if a.family == "gaussian":
        return lmm(a.formula, data, **a.fit_options())
    return glmm(a.formula, data, family=a.family, **a.fit_options())


def complete_case(a: AnalysisConfig, df: pd.DataFrame, levels: dict | None = None) -> tuple[pd.DataFrame | None, int]:
    """The analysis on the rows with no missing value in its columns (the comparison the report
    draws beside the pooled estimates), with Wald intervals; None if it cannot be fitted.
    ``levels``: the declared categories, whose order text columns take (as in the fits)."""
    used = checks.analysis_columns(a, df.columns) - checks.membership_columns(a)  # mm() ids/weights: missing by design
    data = with_declared_levels(df.dropna(subset=sorted(used & {str(c) for c in df.columns})), levels or {})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the complete-case fit's warnings are not the run's
            fit = _fit(a, data)
    except (MlimputeError, *NUMERIC_FAILURES):   # a comparison: without it the report says so
        return None, len(data)
    t = fit.tidy()
    half = stats.norm.ppf(0.5 + a.conf_level / 2) * t["std_error"]
    return t.assign(conf_low=t["estimate"] - half, conf_high=t["estimate"] + half), len(data)


@task(name="pool", retries=0, task_run_name="pool-{analysis.name}")
def pool_analysis(cfg: PipelineConfig, analysis: AnalysisConfig,
                  fit_paths: list[str], cc_path: str | None = None, data_sha256: str | None = None) -> dict[str, Any]:
    """Pool one analysis over the imputations; writes fits/, pooled/ tables (and the
    complete-case fit for comparison, kept in ``cc_path`` when given and read from it on a
    re-run). Small record back.

    The fits' warnings are tallied: each distinct one once, with the number of imputations
    that gave it.
    """
    a = analysis
    out = cfg.output.dir
    loaded = [store.load_pickle(p) for p in fit_paths]
    fits = [x["fit"] for x in loaded]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pooled = pool(fits, **a.pool_options())
    per_fit = pd.concat(
        [f.tidy().assign(imputation=k, nobs=f.nobs, df_resid=f.df_resid, loglik=f.loglik,
                         converged=f.converged, singular=f.singular)
         for k, f in enumerate(fits, 1)], ignore_index=True)
    per_vc = pd.concat([f.varcomp().assign(imputation=k) for k, f in enumerate(fits, 1)],
                       ignore_index=True)
    paths = {
        "fits": write_parquet(_imputation_first(per_fit), out / "fits" / f"{a.name}.parquet"),
        "fits_varcomp": write_parquet(_imputation_first(per_vc),
                                      out / "fits" / f"{a.name}_varcomp.parquet"),
        "pooled": write_csv(pooled.tidy(), out / "pooled" / f"{a.name}.csv"),
    }
    if pooled.varcomp_pooled is not None:
        paths["pooled_varcomp"] = write_csv(pooled.varcomp(),
                                            out / "pooled" / f"{a.name}_varcomp.csv")
    if cc_path is not None and store.cache_entry(cc_path) == "usable":
        cc, cc_rows = store.load_pickle(cc_path)
    else:
        cc, cc_rows = complete_case(a, store.read_input(cfg.data.path), declared_levels(cfg.imputation_model()))
        store.same_input(cfg, data_sha256)
        if cc_path is not None:
            store.save_pickle(cc_path, (cc, cc_rows))
    if cc is not None:
        paths["complete_case"] = write_csv(cc.assign(nobs=cc_rows),
                                           out / "pooled" / f"{a.name}_complete_case.csv")
    return {
        "name": a.name,
        "formula": a.formula,
        "dispersion": a.dispersion,
        "family": a.family,
        "link": pooled.link,
        "m": pooled.m,
        "paths": {k: str(v) for k, v in paths.items()},
        "warnings": notices.tally([x["warnings"] for x in loaded]) + notices.caught(caught)
        + [n for n in [dispersion_note(cfg.imputation_model(), a.formula, a.dispersion)] if n],
    }


def _imputation_first(df: pd.DataFrame) -> pd.DataFrame:
    return df[["imputation", *[c for c in df.columns if c != "imputation"]]]


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    """``df`` as CSV at ``path``, atomically."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return path
