"""Model-fit speed: mlimpute.lmm / mlimpute.glmm vs lme4's lmer / glmer on the same data, same run.

    python benchmarks/bench_lmm.py                  # N = 50,000 (1,000 clusters x 50), lme4 if available
    python benchmarks/bench_lmm.py --no-r           # ours only
    python benchmarks/bench_lmm.py --clusters 200 --per-cluster 25 --repeat 5
    python benchmarks/bench_lmm.py --crossed 2000 200 --rows 200000 --repeat 1   # crossed factors

Data (seeded): x, w ~ N(0, 1) at level 1; random intercept and slope on x with variances 0.5 and
0.2, correlation 0.3; y = 1 + 0.5 x + 0.3 w + u0 + u1 x + e, e ~ N(0, 1); a binary
yb ~ Bernoulli(logit⁻¹(-0.5 + 0.5 x + 0.3 w + u0)).
Models: ``y ~ x + w + (1 + x | g)`` by REML and ``yb ~ x + w + (1 | g)`` binomial logit, Laplace.
``--crossed G H``: ``--rows`` rows each in one of G levels of g and, crossed with it, one of H
levels of h drawn at random, with a random intercept of variance 0.25 for h; models
``y ~ x + w + (1 + x | g) + (1 | h)`` and ``yb ~ x + w + (1 | g) + (1 | h)`` (the sparse solver).
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


CROSSED = ("y ~ x + w + (1 + x | g) + (1 | h)", "yb ~ x + w + (1 | g) + (1 | h)")


def simulate(J: int, n: int, seed: int, crossed: tuple[int, int] | None = None, rows: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    N = J * n if crossed is None else rows
    g = np.repeat(np.arange(1, J + 1), n) if crossed is None else rng.integers(1, crossed[0] + 1, N)
    J = J if crossed is None else crossed[0]
    x, w = rng.normal(size=N), rng.normal(size=N)
    c = 0.3 * np.sqrt(0.5 * 0.2)
    u = rng.multivariate_normal([0.0, 0.0], [[0.5, c], [c, 0.2]], size=J)[g - 1]
    y = 1 + 0.5 * x + 0.3 * w + u[:, 0] + u[:, 1] * x + rng.normal(size=N)
    eta = -0.5 + 0.5 * x + 0.3 * w + u[:, 0]
    if crossed is not None:
        h = rng.integers(1, crossed[1] + 1, N)
        v = rng.normal(0.0, 0.5, crossed[1])[h - 1]
        y, eta = y + v, eta + v
    yb = (rng.random(N) < 1 / (1 + np.exp(-eta))).astype(int)
    out = pd.DataFrame({"g": g, "x": x, "w": w, "y": y, "yb": yb})
    if crossed is not None:
        out["h"] = h
    return out


def time_fits(df: pd.DataFrame, repeat: int, models: tuple[str, str]) -> dict:
    out = {}
    for name, fit_fn in (("lmm", lambda: mi.lmm(models[0], df, reml=True)), ("glmm", lambda: mi.glmm(models[1], df))):
        secs = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fit = fit_fn()
            secs.append(time.perf_counter() - t0)
        out[name] = (float(np.median(secs)), fit)
    return out


def run_lme4(df: pd.DataFrame, models: tuple[str, str]) -> pd.DataFrame | None:
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
        subprocess.run(["Rscript", str(R_SCRIPT), str(data), str(out), *models], check=True)
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
    # one grouping factor: lme4's VarCorr order equals ours (variances, covariance, residual);
    # crossed factors are listed in another order, so there the sorted values are compared
    vc_ref = np.sort(ref[ref.kind == "vc"].value.to_numpy())
    vc = np.sort(fit.varcomp().estimate.to_numpy())
    d_vc = np.max(np.abs(vc - vc_ref) / np.abs(vc_ref))
    d_ll = fit.loglik - float(ref[(ref.kind == "fit") & (ref.name == "logLik")].value.iloc[0])
    return f"beta {d_beta:.1e}, se {d_se:.1e}, varcomp {d_vc:.1e}; logLik ours - lme4 {d_ll:+.1e}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--per-cluster", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--crossed", type=int, nargs=2, metavar=("G", "H"), help="crossed factors g and h of G and H levels")
    ap.add_argument("--rows", type=int, default=200_000, help="rows with --crossed")
    ap.add_argument("--no-r", action="store_true", help="skip the lme4 comparison")
    args = ap.parse_args(argv)

    df = simulate(args.clusters, args.per_cluster, args.seed, args.crossed, args.rows)
    models = (LMM, GLMM) if args.crossed is None else CROSSED
    levels = f"J = {args.clusters:,}" if args.crossed is None else "g x h = {:,} x {:,} crossed".format(*args.crossed)
    print(f"data: N = {len(df):,}, {levels}; seed {args.seed}; mlimpute {mi.__version__}, "
          f"Python {sys.version.split()[0]}, numpy {np.__version__}")
    ours = time_fits(df, args.repeat, models)
    ref = None if args.no_r else run_lme4(df, models)
    rows = []
    for name, label in (("lmm", f"LMM REML  {models[0]}"), ("glmm", f"GLMM Laplace  {models[1]}")):
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
