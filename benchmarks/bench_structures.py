"""Fit times of crossed and multiple-membership models on large data (both use the sparse solver).

    python benchmarks/bench_structures.py                       # N = 100,000, all layouts, LMM and GLMM
    python benchmarks/bench_structures.py --layouts crossed mm-local --models lmm
    python benchmarks/bench_structures.py --no-r                # ours only

Data (seeded), N rows, x ~ N(0, 1), e ~ N(0, 1), yb ~ Bernoulli(logit⁻¹(η − 1)):

- ``crossed``: pupils in ``--levels`` schools crossed with ``--levels2`` neighbourhoods, both drawn
  uniformly; ``y = 1 + 0.5 x + a_school + b_nbhd + e``, SDs 0.7 and 0.5;
  ``y ~ x + (1 | school) + (1 | nbhd)``.
- ``mm-local``: pupils in 1-3 schools (probabilities 0.5, 0.3, 0.2) among ``--levels`` schools, the
  later schools within 10 ids of the first (pupils move between nearby schools), weights
  uniform(0.2, 1) normalised; ``y = 1 + 0.5 x + Σ_k w_k u_{s_k} + e``, SD 0.7;
  ``y ~ x + (1 | mm(s1, s2, s3, weights = (w1, w2, w3)))``.
- ``mm-random``: the same with the later schools drawn from all schools: the worst case for the
  sparse Cholesky factor (a random co-membership graph fills it in almost completely).

Ours: one fit each (formula parsing and design building included), wall seconds. lme4 (when
``Rscript`` with lme4 is installed): ``lmer``/``glmer`` with default controls, the membership
models by lme4's modular interface with the membership matrix as ``Zt`` (as
tests/fixtures/lme4/make_membership.R), elapsed seconds of the fit, by
``Rscript benchmarks/r/structures_bench.R``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

import mlimpute as mi

FORMULAS = {
    "crossed": "~ x + (1 | school) + (1 | nbhd)",
    "mm-local": "~ x + (1 | mm(s1, s2, s3, weights = (w1, w2, w3)))",
    "mm-random": "~ x + (1 | mm(s1, s2, s3, weights = (w1, w2, w3)))",
}
R_SCRIPT = Path(__file__).resolve().parent / "r" / "structures_bench.R"


def simulate(layout: str, n: int, levels: int, levels2: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    if layout == "crossed":
        a, b = rng.integers(0, levels, n), rng.integers(0, levels2, n)
        eta = 0.5 * x + rng.normal(0, 0.7, levels)[a] + rng.normal(0, 0.5, levels2)[b]
        df = pd.DataFrame({"x": x, "school": a + 1, "nbhd": b + 1})
    else:
        k = rng.choice([1, 2, 3], n, p=[0.5, 0.3, 0.2])
        first = rng.integers(0, levels, n)
        if layout == "mm-local":
            later = (first[:, None] + rng.integers(1, 11, (n, 2))) % levels
        else:
            later = rng.integers(0, levels, (n, 2))
        s = np.column_stack([first, later]).astype(float)
        w = rng.uniform(0.2, 1.0, (n, 3))
        absent = np.arange(3)[None, :] >= k[:, None]
        s[absent], w[absent] = np.nan, np.nan
        w /= np.nansum(w, axis=1, keepdims=True)
        u = rng.normal(0, 0.7, levels)
        eta = 0.5 * x + np.nansum(w * u[np.nan_to_num(s).astype(int)], axis=1)
        df = pd.DataFrame({"x": x, **{f"s{j + 1}": s[:, j] + 1 for j in range(3)},
                           **{f"w{j + 1}": w[:, j] for j in range(3)}})
    df["y"] = 1 + eta + rng.normal(size=n)
    df["yb"] = (rng.random(n) < 1 / (1 + np.exp(1 - eta))).astype(int)
    return df


def run_lme4(df: pd.DataFrame, layout: str, models: list[str]) -> dict[str, float] | None:
    if shutil.which("Rscript") is None:
        print("Rscript not found: lme4 comparison skipped")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        data, out = Path(tmp) / "data.csv", Path(tmp) / "lme4.csv"
        df.to_csv(data, index=False)
        done = subprocess.run(["Rscript", str(R_SCRIPT), str(data), str(out), layout, *models],
                              capture_output=True, text=True)
        if done.returncode != 0:
            print(f"lme4 comparison failed: {done.stderr.strip().splitlines()[-1:]}")
            return None
        ref = pd.read_csv(out)
        return dict(zip(ref.model, ref.seconds)) | {f"{m}_loglik": v for m, v in zip(ref.model, ref.loglik)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--levels", type=int, default=1000, help="schools")
    ap.add_argument("--levels2", type=int, default=500, help="neighbourhoods (crossed)")
    ap.add_argument("--layouts", nargs="+", default=list(FORMULAS), choices=list(FORMULAS))
    ap.add_argument("--models", nargs="+", default=["lmm", "glmm"], choices=["lmm", "glmm"])
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--no-r", action="store_true", help="skip the lme4 comparison")
    args = ap.parse_args(argv)
    print(f"N = {args.n:,}, {args.levels:,} schools, {args.levels2:,} neighbourhoods; seed {args.seed}; "
          f"mlimpute {mi.__version__}, Python {sys.version.split()[0]}, numpy {np.__version__}")
    rows = []
    for layout in args.layouts:
        df = simulate(layout, args.n, args.levels, args.levels2, args.seed)
        ref = None if args.no_r else run_lme4(df, layout, args.models)
        for model in args.models:
            formula = ("y " if model == "lmm" else "yb ") + FORMULAS[layout]
            t0 = time.perf_counter()
            fit = mi.lmm(formula, df) if model == "lmm" else mi.glmm(formula, df)
            secs = time.perf_counter() - t0
            row = {"layout": layout, "model": "LMM REML" if model == "lmm" else "GLMM Laplace",
                   "mlimpute_s": f"{secs:.1f}", "converged": fit.converged,
                   "variances": ", ".join(f"{v:.4f}" for v in fit.varcomp().estimate)}
            if ref is not None:
                row["lme4_s"] = f"{ref[model]:.1f}"
                row["logLik ours - lme4"] = f"{fit.loglik - ref[f'{model}_loglik']:+.1e}"
            rows.append(row)
            print(f"{layout} {model}: {secs:.1f} s", flush=True)
    with pd.option_context("display.width", 250):
        print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
