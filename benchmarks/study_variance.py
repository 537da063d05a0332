"""Simulation study of imputation with a variance function (a location-scale model), with known
truth.

    python benchmarks/study_variance.py --reps 300 --jobs 1
    python benchmarks/study_variance.py --reps 10            # a quick look

Designs: 100 clusters × 20 units; sex (0/1) and z complete; x ~ N(0.5 z, 1);
y = 1 + 0.5 x + 0.5 sex + u_j + e_ij, Var(u) = 0.3, Var(e_ij) = exp(log 4 · sex + v_j) (residual
SD twice as large for sex = 1); ``location-scale``: with a cluster effect on the log-variance
v_j ~ N(0, 0.2), ``group-variance``: without (v = 0). Missing at random given z and sex: y 30%,
x 30%. Analysis ``lmm(y ~ x + sex + (1 | g), dispersion = "~ sex")``: its γ estimates log 4 and
its residual variance the sex = 0 marginal variance, E[exp v] = exp(0.1) or 1. The analysis
model has no v_j (neither nlme nor glmmTMB fits one), so under ``location-scale`` its standard
errors of γ and σ² are too small even without missing data: ``full`` and ``cc`` get Wald
intervals from the fit's covariance of the variance components to show it; ``group-variance``
is the design where the analysis model is right.

Methods: ``full`` (before deletion), ``cc`` (complete cases), ``homo`` (the joint model with one
residual variance), ``vf`` (``Variable("continuous", variance="~ sex + (1 | g)")``). M = 20.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
OUT_CSV = ROOT / "docs" / "data" / "variance_reps.csv.gz"
OUT_MD = ROOT / "docs" / "variance.md"

import _study as study  # noqa: E402

import mlimpute as mi  # noqa: E402

FORMULA = {"location-scale": "y ~ x + sex + (1 | g)", "group-variance": "y ~ x + sex + (1 | g)"}
DISPERSION = "~ sex"
TRUTH = {"location-scale": {"Intercept": 1.0, "x": 0.5, "sex": 0.5, "var(Intercept)": 0.3,
                            "Residual": float(np.exp(0.1)), "gamma(sex)": float(np.log(4))},
         "group-variance": {"Intercept": 1.0, "x": 0.5, "sex": 0.5, "var(Intercept)": 0.3,
                            "Residual": 1.0, "gamma(sex)": float(np.log(4))}}
M, CHAINS, BURN, BETWEEN = 20, 2, 1000, 50


def _expit(x):
    return 1.0 / (1.0 + np.exp(-x))


def simulate(rng: np.random.Generator, J: int = 100, n: int = 20, sd_v: float = np.sqrt(0.2)
             ) -> tuple[pd.DataFrame, pd.DataFrame]:
    g = np.repeat(np.arange(J), n)
    N = J * n
    sex = rng.integers(0, 2, N)
    z = rng.normal(size=N)
    x = 0.5 * z + rng.normal(size=N)
    v = rng.normal(0, sd_v, J)
    y = (1 + 0.5 * x + 0.5 * sex + rng.normal(0, np.sqrt(0.3), J)[g]
         + np.exp(0.5 * (np.log(4) * sex + v[g])) * rng.normal(size=N))
    full = pd.DataFrame({"g": g, "sex": sex, "z": z, "x": x, "y": y})
    data = full.copy()
    data.loc[rng.random(N) < _expit(-1.0 + 0.8 * z - 0.3 * sex), "y"] = np.nan
    data.loc[rng.random(N) < _expit(-0.9 - 0.6 * z + 0.3 * sex), "x"] = np.nan
    return data, full


def _models() -> dict:
    common = dict(cluster="g", covariates=["sex", "z"])
    return {
        "homo": mi.ImputationModel(variables={"y": "continuous", "x": "continuous"}, **common),
        "vf": mi.ImputationModel(variables={"y": mi.Variable("continuous", variance="~ sex + (1 | g)"),
                                            "x": "continuous"}, **common),
    }


def replicate(args) -> list[tuple]:
    design, rep, methods = args
    rng = np.random.default_rng([20261203, rep])
    data, full = simulate(rng, sd_v=np.sqrt(0.2) if design == "location-scale" else 0.0)
    f = FORMULA[design]
    rows: list[tuple] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if "full" in methods:
            rows += study.rows_single(mi.lmm(f, full, dispersion=DISPERSION), design, "full", rep,
                                      varcomp_intervals=True)
        if "cc" in methods:
            rows += study.rows_single(mi.lmm(f, data.dropna(), dispersion=DISPERSION), design, "cc", rep,
                                      varcomp_intervals=True)
        for method, model in _models().items():
            if method not in methods:
                continue
            t0 = time.perf_counter()
            res = mi.impute(data, model, n_imputations=M, burn=BURN, between=BETWEEN, chains=CHAINS, seed=rep)
            pooled = mi.analyse(res, f, dispersion=DISPERSION)
            rows += study.rows_pooled(pooled, design, method, rep)
            rows.append((design, method, rep, "_seconds", time.perf_counter() - t0, np.nan, np.nan))
            rows.append((design, method, rep, "_max_rhat", res.diagnostics()["rhat"].max(), np.nan, np.nan))
    return rows


INTRO = ("Made by `python benchmarks/study_variance.py` (see its docstring for the design). `homo` "
         "imputes with one residual variance, `vf` with the variance function. Relative bias in % "
         "of the true value ± its Monte Carlo SE; coverage of the 95% interval ± its Monte Carlo "
         "SE; variance components are the average over imputations (bias) with Rubin's rules on "
         "the log scale (interval); γ (gamma(sex), the log ratio of residual variances) is pooled "
         "as it is, on the log scale. `full` and `cc` variance components have Wald intervals from "
         "the fit's covariance of the components (same scales). Under `location-scale` the analysis "
         "model has no cluster effect on the log-variance, so its intervals for γ and the residual "
         "variance are too narrow whatever the data (see `full`); `group-variance` is the design "
         "where it is right.\n\nAn earlier form of the imputation model scaled the whole "
         "residual vector of a row (covariance D^½ Ω1 D^½), which ties the function of y to its "
         "covariance with x; on `location-scale` (200 replications, "
         "`docs/data/variance_reps_dhalf.csv.gz`) it gave γ −5.4 ± 0.5 % (coverage 81.0 ± 2.8), "
         "the residual variance +4.9 ± 0.6 % (79.5 ± 2.9) and x −2.9 ± 0.5 %. The model now scales "
         "y's residual given x (`mlimpute/sampler/multi.py`, section Variance functions).\n\n"
         "The `homo` and `vf` rows were run again after the samplers began to work on internally "
         "standardised variables (`mlimpute/scaling.py`, whose default priors are defined on that "
         "scale); `full` and `cc` do not depend on it. Against the earlier run, var(Intercept) of "
         "`vf` moved from +2.7 and +2.0 % to the values below (paired difference +0.0069 ± 0.0007 "
         "and +0.0070 ± 0.0006 over the 200 replications), the other parameters by less than one "
         "Monte Carlo SE; the same sampler with `standardize=False` reproduces the earlier values "
         "(40 replications, difference −0.0012 ± 0.0012): the inverse-Wishart prior's scale, not "
         "the sampler (the same finding as for small level-2 variances in "
         "[validation.md](validation.md)). `homo`'s var(Intercept) moved the same way, from −1.2 "
         "and −1.4 % (+0.0112 ± 0.0008, +0.0085 ± 0.0007).\n\n"
         "The effect grows with the variance function's range: a variable is standardised by the SD "
         "of its observed values, which its noisiest group sets, so a between-cluster variance that "
         "is small beside it meets a prior scaled to that SD. A helper's check (40 clusters of 15, "
         "residual SD 10 times larger for girls, cluster variance 0.25, 30 % of y missing) gave a "
         "posterior mean of 2.1 for the cluster variance and a completed-data estimate of 0.33 "
         "against the full data's 0.17 (with `standardize=False`, whose identity scale happens to "
         "suit these units: 0.31 and 0.23). Such a run now ends with a `PriorWarning` naming the "
         "variance (the prior's share of its posterior mean is 74 % there), and "
         "`priors={'g': mi.CovariancePrior(scale=[[0.05]])}` brings it to 0.10 and the completed "
         "data's estimate to 0.16.")


_render = study.markdown_render("Variance functions: simulation study", INTRO, FORMULA, TRUTH,
                               ["full", "cc", "homo", "vf"])


def main(argv=None) -> None:
    study.run(replicate, list(FORMULA), ["full", "cc", "homo", "vf"], OUT_CSV, OUT_MD, _render, argv)


if __name__ == "__main__":
    main()
