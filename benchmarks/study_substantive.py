"""Simulation study of substantive-model-compatible imputation (issue: random slopes,
interactions and non-linear terms), with known truth.

    python benchmarks/study_substantive.py --reps 500 --jobs 2      # ~1-2 h on 2 cores
    python benchmarks/study_substantive.py --reps 20 --designs interaction   # a quick look

Designs (J clusters × n units; x has ~30% missing values, more often when the outcome is high:
missing at random given the outcome; z is a complete cluster-level covariate):

- ``interaction``: y = 0.5 x + 0.3 z + 0.3 x·z + u0 + u1 x + e, Var(u0) = 0.3, Var(u1) = 0.15,
  σ² = 1, J = 100, n = 10; analysis ``y ~ x * z + (1 + x | g)`` (the design of the issue);
- ``quadratic``: y = 0.5 x + 0.3 x² + 0.3 z + u0 + u1 x + e, same variances; analysis
  ``y ~ x + I(x**2) + z + (1 + x | g)``;
- ``binary``: logit P(y = 1) = −0.5 + 0.5 x + 0.3 z + u0 + u1 x, Var(u0) = 0.5, Var(u1) = 0.25,
  J = 100, n = 20; analysis ``glmm(y ~ x + z + (1 + x | g))`` (Laplace).

Methods: ``full`` (the analysis before any value was deleted: what the analysis itself gives),
``cc`` (complete cases), ``joint`` (mlimpute's joint model (6) of y and x given z, the default
before this issue), ``smc`` (ImputationModel(substantive=...)). M = 20 imputations from 2
chains. Fixed effects: Rubin's rules with Barnard–Rubin df; variance components: the average
over imputations (``mean``) for bias, Rubin's rules on the log scale for the interval.

Results: per replication in ``docs/data/substantive_reps.csv`` (resumable), the summary table
in ``docs/substantive.md``: mean estimate, relative bias (% of truth, with its Monte Carlo SE),
RMSE and 95% coverage (with its Monte Carlo SE).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
OUT_CSV = ROOT / "docs" / "data" / "substantive_reps.csv"
OUT_MD = ROOT / "docs" / "substantive.md"

import mlimpute as mi  # noqa: E402


def _expit(x):
    return 1.0 / (1.0 + np.exp(-x))


def simulate(design: str, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(data with missing values, the same before deletion)."""
    J, n = (100, 20) if design == "binary" else (100, 10)
    g = np.repeat(np.arange(J), n)
    z = rng.normal(size=J)[g]
    x = rng.normal(size=J * n)
    v0, v1 = (0.5, 0.25) if design == "binary" else (0.3, 0.15)
    u0 = rng.normal(0, np.sqrt(v0), J)[g]
    u1 = rng.normal(0, np.sqrt(v1), J)[g]
    if design == "interaction":
        y = 0.5 * x + 0.3 * z + 0.3 * x * z + u0 + u1 * x + rng.normal(size=J * n)
        p = _expit(-1.2 + 0.8 * (y - y.mean()) / y.std())
    elif design == "quadratic":
        y = 0.5 * x + 0.3 * x ** 2 + 0.3 * z + u0 + u1 * x + rng.normal(size=J * n)
        p = _expit(-1.2 + 0.8 * (y - y.mean()) / y.std())
    else:
        y = (rng.random(J * n) < _expit(-0.5 + 0.5 * x + 0.3 * z + u0 + u1 * x)).astype(float)
        p = _expit(-1.45 + 1.0 * y)
    full = pd.DataFrame({"g": g, "x": x, "z": z, "y": y})
    data = full.copy()
    data.loc[rng.random(J * n) < p, "x"] = np.nan
    return data, full


FORMULA = {
    "interaction": "y ~ x * z + (1 + x | g)",
    "quadratic": "y ~ x + I(x**2) + z + (1 + x | g)",
    "binary": "y ~ x + z + (1 + x | g)",
}
TRUTH = {
    "interaction": {"Intercept": 0.0, "x": 0.5, "z": 0.3, "x:z": 0.3,
                    "var(Intercept)": 0.3, "var(x)": 0.15, "cov(Intercept,x)": 0.0, "Residual": 1.0},
    "quadratic": {"Intercept": 0.0, "x": 0.5, "I(x ** 2)": 0.3, "z": 0.3,
                  "var(Intercept)": 0.3, "var(x)": 0.15, "cov(Intercept,x)": 0.0, "Residual": 1.0},
    "binary": {"Intercept": -0.5, "x": 0.5, "z": 0.3, "var(Intercept)": 0.5, "var(x)": 0.25,
               "cov(Intercept,x)": 0.0},
}
M, CHAINS, BURN, BETWEEN = 20, 2, 1000, 50


def _fit(design, data):
    if design == "binary":
        return mi.glmm(FORMULA[design], data, family="binomial")
    return mi.lmm(FORMULA[design], data, reml=True)


def _vc_name(row) -> str:
    if row["group"] == "Residual":
        return "Residual"
    if row["term2"] is None or (isinstance(row["term2"], float) and np.isnan(row["term2"])):
        return f"var({row['term1']})"
    return f"cov({row['term1']},{row['term2']})"


def _rows_single(fit, design, method, rep):
    out = []
    t = fit.tidy()
    for _, r in t.iterrows():
        out.append((design, method, rep, r["term"], r["estimate"], r["estimate"] - 1.96 * r["std_error"],
                    r["estimate"] + 1.96 * r["std_error"]))
    for _, r in fit.varcomp().iterrows():
        out.append((design, method, rep, _vc_name(r), r["estimate"], np.nan, np.nan))
    return out


def _rows_pooled(pooled, design, method, rep):
    out = []
    for _, r in pooled.tidy().iterrows():
        out.append((design, method, rep, r["term"], r["estimate"], r["conf_low"], r["conf_high"]))
    vc = pooled.varcomp()
    for _, r in vc[vc["term1"] != "ICC"].iterrows():
        out.append((design, method, rep, _vc_name(r), r["mean"], r["conf_low"], r["conf_high"]))
    return out


def _models(design):
    family = "binomial" if design == "binary" else "gaussian"
    smc = mi.ImputationModel(cluster="g", variables={"x": "continuous"}, covariates=["z"],
                             substantive=FORMULA[design], family=family)
    joint = mi.ImputationModel(cluster="g", variables={"x": "continuous",
                                                        "y": "binary" if design == "binary" else "continuous"},
                               covariates=["z"])
    return {"smc": smc, "joint": joint}


def replicate(args) -> list[tuple]:
    design, rep, methods = args
    rng = np.random.default_rng([20261201, rep, list(FORMULA).index(design)])
    data, full = simulate(design, rng)
    rows: list[tuple] = []
    family = "binomial" if design == "binary" else "gaussian"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if "full" in methods:
            rows += _rows_single(_fit(design, full), design, "full", rep)
        if "cc" in methods:
            rows += _rows_single(_fit(design, data.dropna()), design, "cc", rep)
        for name, model in _models(design).items():
            if name not in methods:
                continue
            t0 = time.perf_counter()
            res = mi.impute(data, model, n_imputations=M, burn=BURN, between=BETWEEN, chains=CHAINS,
                            seed=rep)
            pooled = mi.analyse(res, FORMULA[design], family=family)
            rows += _rows_pooled(pooled, design, name, rep)
            rows.append((design, name, rep, "_seconds", time.perf_counter() - t0, np.nan, np.nan))
            rhat = res.diagnostics()["rhat"].max()
            rows.append((design, name, rep, "_max_rhat", rhat, np.nan, np.nan))
    return rows


COLUMNS = ["design", "method", "rep", "parameter", "estimate", "conf_low", "conf_high"]


def summarise(reps: pd.DataFrame) -> pd.DataFrame:
    out = []
    for (design, method, par), d in reps.groupby(["design", "method", "parameter"], sort=False):
        if par.startswith("_") or par not in TRUTH[design]:
            continue
        truth = TRUTH[design][par]
        est = d["estimate"].to_numpy(float)
        R = est.size
        bias = est.mean() - truth
        se_bias = est.std(ddof=1) / np.sqrt(R)
        rel = 100 * bias / truth if truth else np.nan
        rel_se = 100 * se_bias / abs(truth) if truth else np.nan
        lo, hi = d["conf_low"].to_numpy(float), d["conf_high"].to_numpy(float)
        ok = np.isfinite(lo) & np.isfinite(hi)
        cover = np.mean((lo[ok] <= truth) & (truth <= hi[ok])) if ok.any() else np.nan
        cover_se = np.sqrt(cover * (1 - cover) / ok.sum()) if ok.any() else np.nan
        out.append(dict(design=design, method=method, parameter=par, truth=truth, reps=R,
                        mean=est.mean(), bias=bias, rel_bias_pct=rel, rel_bias_mcse=rel_se,
                        rmse=np.sqrt(np.mean((est - truth) ** 2)), coverage=cover,
                        coverage_mcse=cover_se))
    return pd.DataFrame(out)


def _markdown(summary: pd.DataFrame, reps: pd.DataFrame) -> str:
    lines = ["# Substantive-model-compatible imputation: simulation study", "",
             "Made by `python benchmarks/study_substantive.py` (see its docstring for the designs). "
             "Relative bias in % of the true value ± its Monte Carlo SE; coverage of the 95% "
             "interval ± its Monte Carlo SE; variance components are the average over "
             "imputations (bias) with Rubin's rules on the log scale (interval). `full` is the "
             "analysis of the data before deletion (no interval for variance components).", ""]
    for design in summary["design"].unique():
        d = summary[summary["design"] == design]
        n = int(d["reps"].max())
        lines += [f"## {design}: `{FORMULA[design]}` ({n} replications)", "",
                  "| parameter | truth | method | mean | rel. bias % | RMSE | coverage |",
                  "|---|---|---|---|---|---|---|"]
        for par in TRUTH[design]:
            for method in ["full", "cc", "joint", "smc", "jomo"]:
                r = d[(d["parameter"] == par) & (d["method"] == method)]
                if r.empty:
                    continue
                r = r.iloc[0]
                rb = "–" if not np.isfinite(r.rel_bias_pct) else f"{r.rel_bias_pct:+.1f} ± {r.rel_bias_mcse:.1f}"
                cov = "–" if not np.isfinite(r.coverage) else f"{100 * r.coverage:.1f} ± {100 * r.coverage_mcse:.1f}"
                lines.append(f"| {par} | {r.truth:g} | {method} | {r['mean']:.4f} | {rb} | {r.rmse:.4f} | {cov} |")
        sec = reps[(reps["design"] == design) & (reps["parameter"] == "_seconds")].groupby("method")["estimate"].mean()
        rh = reps[(reps["design"] == design) & (reps["parameter"] == "_max_rhat")].groupby("method")["estimate"].max()
        lines += ["", "Seconds per replication (imputation + analysis, M = 20): "
                  + ", ".join(f"{m} {s:.1f}" for m, s in sec.items())
                  + "; largest R-hat over all parameters and replications: "
                  + ", ".join(f"{m} {v:.3f}" for m, v in rh.items()), ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=500)
    ap.add_argument("--designs", nargs="*", default=list(FORMULA))
    ap.add_argument("--methods", nargs="*", default=["full", "cc", "joint", "smc"])
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--summary-only", action="store_true")
    ap.add_argument("--csv", type=Path, default=OUT_CSV, help="per-replication results (resumed)")
    ap.add_argument("--md", type=Path, default=OUT_MD, help="the summary table")
    a = ap.parse_args()
    csv = a.csv
    csv.parent.mkdir(parents=True, exist_ok=True)
    done = pd.read_csv(csv) if csv.exists() else pd.DataFrame(columns=COLUMNS)
    if not a.summary_only:
        have = set(map(tuple, done[["design", "rep", "method"]].drop_duplicates().to_numpy().tolist()))
        todo = []
        for design in a.designs:
            for rep in range(a.reps):
                missing = [m for m in a.methods if (design, rep, m) not in have]
                if missing:
                    todo.append((design, rep, missing))
        print(f"{len(todo)} replications to run", flush=True)
        if a.jobs > 1:
            from multiprocessing import Pool

            with Pool(a.jobs) as pool:
                it = pool.imap_unordered(replicate, todo)
                for k, rows in enumerate(it):
                    pd.DataFrame(rows, columns=COLUMNS).to_csv(csv, mode="a", header=not csv.exists(),
                                                               index=False)
                    if (k + 1) % 10 == 0:
                        print(f"{k + 1}/{len(todo)}", flush=True)
        else:
            for k, job in enumerate(todo):
                rows = replicate(job)
                pd.DataFrame(rows, columns=COLUMNS).to_csv(csv, mode="a", header=not csv.exists(),
                                                           index=False)
                if (k + 1) % 10 == 0:
                    print(f"{k + 1}/{len(todo)}", flush=True)
        done = pd.read_csv(csv)
    summary = summarise(done)
    a.md.write_text(_markdown(summary, done))
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main()
