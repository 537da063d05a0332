"""The run's last outputs: report.html, manifest.json and the Prefect artifacts.

``manifest.json`` is written last and removed when a run starts, so its presence means every
output beside it comes from one complete run; it lists each output file with its sha256.
"""

from __future__ import annotations

import json
import platform
import re
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from mlimpute.analysis._family import family_label
from mlimpute.config import PipelineConfig
from mlimpute.io import atomic_path, file_sha256
from mlimpute.report import (PooledTable, describe_model, missing_patterns, observed_vs_imputed,
                             render_report)

from . import notices, store

__all__ = ["write_report", "write_manifest", "publish_artifacts", "read_imputations",
           "versions"]

MANIFEST = "manifest.json"
PACKAGES = ("mlimpute", "numpy", "scipy", "pandas", "pyarrow", "formulaic", "prefect",
            "prefect-dask", "dask", "distributed", "matplotlib")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def read_imputations(partitions: list[dict[str, Any]]) -> pd.DataFrame:
    """The long table from the partition files, imputation 1..M, each in input row order."""
    return pd.concat([pd.read_parquet(p["path"]).assign(imputation=int(p["imputation"]))
                      for p in sorted(partitions, key=lambda p: int(p["imputation"]))],
                     ignore_index=True)


@task(name="report", retries=0)  # no retries: drawing is deterministic
def write_report(cfg: PipelineConfig, ingest: dict[str, Any], assembled: dict[str, Any],
                 chain_paths: list[str], pooled: list[dict[str, Any]], timings: dict[str, float]) -> str:
    """Render report.html from the files of the run."""
    df = store.read_input(cfg.data.path)
    long = read_imputations(assembled["partitions"])
    chains = [store.load_chain(p) for p in chain_paths]
    diag = pd.read_csv(assembled["diagnostics"])
    tables = []
    for rec in pooled:
        paths = rec["paths"]
        vc = pd.read_csv(paths["pooled_varcomp"]) if "pooled_varcomp" in paths else None
        cc = pd.read_csv(paths["complete_case"]) if "complete_case" in paths else None
        tables.append(PooledTable(name=rec["name"], formula=rec["formula"],
                                  family=family_label(rec["family"], rec.get("link")),
                                  dispersion=rec.get("dispersion"),
                                  m=rec["m"], tidy=pd.read_csv(paths["pooled"]), varcomp=vc,
                                  warnings=tuple(rec["warnings"]), complete_case=cc,
                                  complete_case_rows=None if cc is None else int(cc["nobs"][0])))
    s = cfg.sampler
    run = {
        "input": f"{cfg.data.path} ({ingest['bytes']:,} bytes)",
        "input sha256": ingest["sha256"],
        "rows / clusters": f"{len(df):,} / " + ", ".join(
            f"{_n_units(df, c):,} {c.name}" for c in cfg.imputation_model().classifications),
        "imputed variables": ", ".join([f"{n} ({v.kind}, level {v.level})"
                                        for n, v in cfg.model.variables.items()]
                                       + ([f"{cfg.imputation_model().outcome} (outcome of the analysis model)"]
                                          if cfg.model.substantive else [])),
        "covariates": ", ".join(cfg.model.covariates + cfg.model.level2_covariates) or "none",
        "run length": f"{s.imputations} imputations from {s.chains} chains; burn-in {s.burn}, "
                      f"{s.between} sweeps between imputations",
        "seed (entropy)": assembled["seed_entropy"],
        "chain seconds": ", ".join(f"{x:.1f}" for x in assembled["chain_seconds"]),
        "stage seconds": ", ".join(f"{k} {v:.1f}" for k, v in timings.items()),
        "mlimpute": versions().get("mlimpute", "?"),
    }
    html = render_report(
        title=f"mlimpute run: {cfg.data.path.name}", run=run, pooled=tables, diagnostics=diag,
        traces=[c.trace for c in sorted(chains, key=lambda c: c.chain)],
        parameter_names=assembled["parameters"], burn=s.burn,
        imputed=observed_vs_imputed(df, long, cfg.imputation_model()),
        warnings=notices.of_run(assembled, pooled), patterns=missing_patterns(df),
        model_html=describe_model(cfg.imputation_model(), assembled["parameters"]))
    path = cfg.output.dir / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return str(path)


def _n_units(df, c) -> int:
    """Units of a classification in the data (combinations of nested ids; union of membership ids)."""
    if c.kind == "membership":
        return int(pd.unique(pd.concat([df[x].dropna() for x in c.columns])).size)
    return int(df[list(c.columns)].drop_duplicates().shape[0])


@task(name="manifest", retries=0)  # no retries: a local write
def write_manifest(cfg: PipelineConfig, folder: Path, ingest: dict[str, Any], summary: dict[str, Any],
                   assembled: dict[str, Any], chains: list[dict[str, Any]],
                   pooled: list[dict[str, Any]], report: str, timings: dict[str, float]) -> str:
    """manifest.json in ``folder`` (the staging folder): input hash, config, seed entropy,
    versions, timings, and every file this run wrote there with its sha256, named relative to
    ``folder`` (so to the output folder once ``store.publish`` has moved them and it)."""
    out = Path(folder)
    config = cfg.record()
    written = [assembled["diagnostics"], report, *(p["path"] for p in assembled["partitions"]),
               *(path for rec in pooled for path in rec["paths"].values())]
    files = {Path(p).relative_to(out).as_posix(): file_sha256(p) for p in sorted(written)}
    manifest = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "input": {**ingest, **{k: summary[k] for k in ("rows", "clusters", "missing")}},
        "config": config,
        "config_sha256": store.digest(config),
        "seed": {"seed": config["sampler"]["seed"], "entropy": assembled["seed_entropy"]},
        "chains": chains,
        "analyses": [{k: r[k] for k in ("name", "formula", "family", "link", "m", "warnings")} for r in pooled],
        "warnings": notices.of_run(assembled, pooled),
        "prefect_flow_run_id": str(flow_run.id) if flow_run.id else None,
        "versions": versions(),
        "timings_seconds": {**timings, "per_chain": assembled["chain_seconds"]},
        "outputs": files,
    }
    path = out / MANIFEST
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
    return str(path)


def _key(text: str) -> str:
    """An artifact key: lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")


def _markdown(df: pd.DataFrame) -> str:
    """A markdown table (numbers to 4 significant digits)."""
    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    rows = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    rows += ["| " + " | ".join(cell(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join(rows)


def publish_artifacts(assembled: dict[str, Any], pooled: list[dict[str, Any]], output_dir: str) -> None:
    """A markdown summary of the run and one table artifact per pooled analysis."""
    diag = pd.read_csv(assembled["diagnostics"])
    lines = [f"# mlimpute run: {assembled['n_imputations']} imputations",
             f"Outputs in `{output_dir}` (report: `report.html`).", ""]
    if warnings := notices.of_run(assembled, pooled):
        lines += ["**Warnings**", ""] + [f"- {w}" for w in warnings] + [""]
    worst = diag.sort_values("rhat", ascending=False).head(5)
    lines += ["## Worst R-hat", "", _markdown(worst), ""]
    for rec in pooled:
        tidy = pd.read_csv(rec["paths"]["pooled"])
        disp = f", dispersion `{rec['dispersion']}`" if rec.get("dispersion") else ""
        family = family_label(rec["family"], rec.get("link"))
        lines += [f"## {rec['name']}", f"`{rec['formula']}` ({family}{disp}, m = {rec['m']})", "",
                  _markdown(tidy), ""]
        create_table_artifact(key=_key(f"pooled-{rec['name']}"), table=tidy.to_dict(orient="records"),
                              description=f"Pooled estimates: {rec['formula']}")
    create_markdown_artifact(key="mlimpute-run", markdown="\n".join(lines),
                             description="Summary of the imputation run")
