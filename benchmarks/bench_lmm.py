"""Model-fit speed: mlimpute.lmm / mlimpute.glmm vs lme4's lmer / glmer on the same data, same run.

    python benchmarks/bench_lmm.py                  # N = 50,000 (1,000 clusters x 50), lme4 if available
    python benchmarks/bench_lmm.py --no-r           # ours only
    python benchmarks/bench_lmm.py --clusters 200 --per-cluster 25 --repeat 5

Data (seeded): x, w ~ N(0, 1) at level 1; random intercept and slope on x with variances 0.5 and
0.2, correlation 0.3; y = 1 + 0.5 x + 0.3 w + u0 + u1 x + e, e ~ N(0, 1); a binary
yb ~ Bernoulli(logit⁻¹(-0.5 + 0.5 x + 0.3 w + u0)).
Models: ``y ~ x + w + (1 + x | g)`` by REML and ``yb ~ x + w + (1 | g)`` binomial logit, Laplace.
Ours: median of ``--repeat`` fits (formula parsing and design building included).
lme4 (1.1-31 here): one ``lmer`` and one ``glmer`` fit with default controls, elapsed seconds from
``system.time`` around the fit (reading the CSV excluded), run by ``Rscript benchmarks/r/lme4_bench.R``
in the same run. The table also gives the largest differences between the two sets of estimates.
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

LMM = "y ~ x + w + (1 + x | g)"
GLMM = "yb ~ x + w + (1 | g)"
R_SCRIPT = Path(__file__).resolve().parent / "r" / "lme4_bench.R"


def simulate(J: int, n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    N = J * n
    g = np.repeat(np.arange(1, J + 1), n)
    x, w = rng.normal(size=N), rng.normal(size=N)
    c = 0.3 * np.sqrt(0.5 * 0.2)
    u = rng.multivariate_normal([0.0, 0.0], [[0.5, c], [c, 0.2]], size=J)[g - 1]
    y = 1 + 0.5 * x + 0.3 * w + u[:, 0] + u[:, 1] * x + rng.normal(size=N)
    eta = -0.5 + 0.5 * x + 0.3 * w + u[:, 0]
    yb = (rng.random(N) < 1 / (1 + np.exp(-eta))).astype(int)
    return pd.DataFrame({"g": g, "x": x, "w": w, "y": y, "yb": yb})


def time_fits(df: pd.DataFrame, repeat: int) -> dict:
    out = {}
    for name, fit_fn in (("lmm", lambda: mi.lmm(LMM, df, reml=True)), ("glmm", lambda: mi.glmm(GLMM, df))):
        secs = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fit = fit_fn()
            secs.append(time.perf_counter() - t0)
        out[name] = (float(np.median(secs)), fit)
    return out


def run_lme4(df: pd.DataFrame) -> pd.DataFrame | None:
    if shutil.which("Rscript") is None:
        print("Rscript not found: lme4 comparison skipped")
        return None
    check = subprocess.run(["Rscript", "-e", "library(lme4)"], capture_output=True, text=True)
    if check.returncode != 0:
        print("R package lme4 not installed: lme4 comparison skipped")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        data, out = Path(tmp) / "data.csv", Path(tmp) / "lme4.csv"
        df.to_csv(data, index=False)
        subprocess.run(["Rscript", str(R_SCRIPT), str(data), str(out)], check=True)
        return pd.read_csv(out)


def differences(fit, ref: pd.DataFrame) -> str:
    """Largest relative differences of fixed effects, SEs and variance components; Δ logLik.

    A positive Δ logLik means our optimum is higher: glmer's default tolerances (PIRLS 1e-7,
    Nelder-Mead) stop ~1e-3 short of the Laplace maximum (see tests/analysis/test_glmm_reference.py).
    """
    coef = ref[ref.kind == "coef"]
    tidy = fit.tidy()
    d_beta = np.max(np.abs(tidy.estimate.to_numpy() - coef.value.to_numpy()) / np.abs(coef.value.to_numpy()))
    d_se = np.max(np.abs(tidy.std_error.to_numpy() - coef.se.to_numpy()) / coef.se.to_numpy())
    # lme4's VarCorr order equals ours here (one grouping factor): variances, covariance, residual
    vc_ref = ref[ref.kind == "vc"].value.to_numpy()
    vc = fit.varcomp().estimate.to_numpy()
    d_vc = np.max(np.abs(vc - vc_ref) / np.abs(vc_ref))
    d_ll = fit.loglik - float(ref[(ref.kind == "fit") & (ref.name == "logLik")].value.iloc[0])
    return f"beta {d_beta:.1e}, se {d_se:.1e}, varcomp {d_vc:.1e}; logLik ours - lme4 {d_ll:+.1e}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--per-cluster", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--no-r", action="store_true", help="skip the lme4 comparison")
    args = ap.parse_args(argv)

    df = simulate(args.clusters, args.per_cluster, args.seed)
    print(f"data: N = {len(df):,}, J = {args.clusters:,}; seed {args.seed}; mlimpute {mi.__version__}, "
          f"Python {sys.version.split()[0]}, numpy {np.__version__}")
    ours = time_fits(df, args.repeat)
    ref = None if args.no_r else run_lme4(df)
    rows = []
    for name, label in (("lmm", f"LMM REML  {LMM}"), ("glmm", f"GLMM Laplace  {GLMM}")):
        secs, fit = ours[name]
        row = {"model": label, "mlimpute_s": f"{secs:.2f}", "converged": fit.converged}
        if ref is not None:
            r = ref[ref.model == name]
            r_secs = float(r[(r.kind == "fit") & (r.name == "seconds")].value.iloc[0])
            row.update({"lme4_s": f"{r_secs:.2f}", "speed-up": f"{r_secs / secs:.1f}x",
                        "max difference vs lme4": differences(fit, r)})
        rows.append(row)
    with pd.option_context("display.width", 250, "display.max_colwidth", 80):
        print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
