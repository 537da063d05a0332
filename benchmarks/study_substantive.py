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

Results: per replication in ``docs/data/substantive_reps.csv.gz`` (resumable), the summary table
in ``docs/substantive.md``: mean estimate, relative bias (% of truth, with its Monte Carlo SE),
RMSE and 95% coverage (with its Monte Carlo SE).
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
OUT_CSV = ROOT / "docs" / "data" / "substantive_reps.csv.gz"
OUT_MD = ROOT / "docs" / "substantive.md"

import mlimpute as mi  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _study as study  # noqa: E402



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
        p = study.expit(-1.2 + 0.8 * (y - y.mean()) / y.std())
    elif design == "quadratic":
        y = 0.5 * x + 0.3 * x ** 2 + 0.3 * z + u0 + u1 * x + rng.normal(size=J * n)
        p = study.expit(-1.2 + 0.8 * (y - y.mean()) / y.std())
    else:
        y = (rng.random(J * n) < study.expit(-0.5 + 0.5 * x + 0.3 * z + u0 + u1 * x)).astype(float)
        p = study.expit(-1.45 + 1.0 * y)
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
            rows += study.rows_single(_fit(design, full), design, "full", rep)
        if "cc" in methods:
            rows += study.rows_single(_fit(design, data.dropna()), design, "cc", rep)
        for name, model in _models(design).items():
            if name not in methods:
                continue
            t0 = time.perf_counter()
            res = mi.impute(data, model, n_imputations=M, burn=BURN, between=BETWEEN, chains=CHAINS,
                            seed=rep)
            pooled = mi.analyse(res, FORMULA[design], family=family)
            rows += study.rows_pooled(pooled, design, name, rep)
            rows.append((design, name, rep, "_seconds", time.perf_counter() - t0, np.nan, np.nan))
            rhat = res.diagnostics()["rhat"].max()
            rows.append((design, name, rep, "_max_rhat", rhat, np.nan, np.nan))
    return rows


INTRO = ("Made by `python benchmarks/study_substantive.py` (see its docstring for the designs); the "
         "`jomo` rows by `python benchmarks/jomo_substantive.py` on the same datasets (jomo 2.7, "
         "lme4, mitml; its binary sampler is probit). Relative bias in % of the true value ± its "
         "Monte Carlo SE; coverage of the 95% interval ± its Monte Carlo SE; variance components "
         "are the average over imputations (bias) with Rubin's rules on the log scale (interval). "
         "`full` is the analysis of the data before deletion (no interval for variance components)."
         "\n\nThe `smc` rows use the default prior of the random-effect covariance, inverse-Wishart "
         "with df = its dimension q and its mode at the complete-case estimate. With jomo's scale "
         "(the estimate itself, a mode 2q + 1 times smaller) the binary design's slope variance "
         "came out at −14.0 ± 2.9 % (complete data −6.5 ± 2.4 %; paired difference −7.5 ± 1.8 % of "
         "the truth), and the gaussian designs' slope variances −1.6 ± 1.3 % (interaction) and −1.0 ± "
         "1.4 % (quadratic), 3–5 points below the rows here; fixed effects alike "
         "(`docs/data/substantive_reps_prior_jomo.csv.gz`, the `smc` rows of that run). jomo.glmer samples a probit model but "
         "takes its prior scale from a logit complete-case fit, about 2.9 times larger on its "
         "own scale, which is what lifts its slope variance here."
         "\n\n"
         "Paired with the complete-data fit on the same datasets (imputed − full, "
         "`docs/data/substantive_reps.csv.gz`), the default prior leaves the `smc` slope variance "
         "a little high: binary +0.0151 ± 0.0046 (6 % of the true 0.25; the complete-data glmer "
         "estimate is itself 6.5 % low, which is why the row reads −0.5 %), interaction +0.0042 ± "
         "0.0009 (2.8 % of 0.15), quadratic +0.0034 ± 0.0011 (2.3 %); the intercept variances "
         "within ±0.004. Where the data say less about the slope variance the prior says more. An "
         "outside check (helper 38: 80 clusters of 5–30 rows, logit and probit outcomes with a "
         "random slope on x, x missing for 36 % of the rows depending on y and z, 100 "
         "replications, M = 5) measured +0.049 ± 0.009 (logit) and +0.031 ± 0.007 (probit, before "
         "version 0.3.5's scale move) on a true 0.25, 12–20 %, without a PriorWarning (the prior's "
         "share of the posterior mean is under its 20 % threshold: what holds the variance up is "
         "the right tail of a weakly identified variance, which the prior keeps); with "
         "`prior_substantive=mi.CovariancePrior(scale=0.02 * np.eye(2))` the probit's was −0.005 ± "
         "0.007, and jomo's scale gives the −7.5 % above. For a binary outcome with a random slope "
         "on an incomplete covariate and fewer than a hundred clusters, run it with a smaller "
         "`prior_substantive` scale beside the default and compare: a difference between the two "
         "is what the data cannot settle."
         "\n\nThe quadratic design's `smc` rows were run again at version 0.3.3, whose sampler adds to "
         "the random walk of a missing x a reflection about the vertex of its rows' parabola (x | y "
         "has a mode on each side of it). Paired with the version before it on the same 500 datasets: "
         "I(x ** 2) −0.0018 ± 0.0003 (0.3003 against 0.3021; RMSE 0.0315 against 0.0324), x "
         "+0.0025 ± 0.0004 (0.5013 against 0.4989), the other parameters within 0.001 (Residual "
         "−0.0009 ± 0.0003); the largest R-hat of a replication above 1.1 in 1 of 500 against 26 "
         "(above 1.05 in 2 against 86; mean 1.016 against 1.034); 12 % more time per replication (both "
         "runs beside other work, hence its 2.5 s below against 1.6 in the earlier run). "
         "The one left (1.44) holds a collective mode: three missing x of one cluster with high y "
         "sit together on one side of the vertex with that cluster's random slope, or on the other "
         "with another slope; a move of one cell at a time crosses between the two rarely."
         "\n\nThe binary design's `smc` rows are of the version before 0.3.6, whose sampler adds the "
         "binomial outcome's collapsed block (`docs/sampler-quality.md`). Its first 40 replications "
         "run again at 0.3.6 (`--reps 40 --designs binary --methods smc --csv OTHER.csv.gz --md "
         "OTHER.md`), paired with these on the same datasets: x −0.0009 ± 0.0019, var(x) −0.0018 ± "
         "0.0034, var(Intercept) +0.0003 ± 0.0016, cov(Intercept,x) +0.0036 ± 0.0018, the fixed "
         "effects' others within 0.0006; the largest R-hat of a replication 1.016 against 1.024 "
         "(−0.0088 ± 0.0027); 6.6 seconds a replication (these rows' 8.1 ran beside other work)."
         "\n\n"
         'An incomplete covariate measured on clusters (`w` in `y ~ x*w + (1 + x | g)`, x complete'
         " at level 1) is modelled given the cluster means of the formula's complete columns that "
         'vary within clusters (`mean(x|g)` among its fixed effects, version 0.3.4); before, its '
         'model saw only the level-2 covariates, so it was imputed as if independent of x. `python'
         ' benchmarks/cluster_means_check.py --reps 40 [--without-means]` (70 clusters of 2–40 '
         'rows, x = 0.5w + e, w missing for about 35 % of the clusters, more often where the '
         "cluster's mean of y is high; imputed − full-data estimate on the same datasets, ± Monte "
         'Carlo SE): with the means x:w −0.0005 ± 0.0028, x −0.0058 ± 0.0019, slope variance '
         '−0.0014 ± 0.0015; without them −0.0309 ± 0.0093 (10 % of the true 0.3), +0.0128 ± 0.0038'
         ' and +0.0144 ± 0.0031 (10 % of 0.15). The means are the manifest ones: with clusters of '
         "unequal size the exact conditional of w weighs a small cluster's mean less, and that is "
         'what the −0.006 left on x (1 % of 0.5) is: with every cluster of 21 rows (a copy of the '
         'script with `np.full(J, 21)` for the sizes, the same seeds) x −0.0006 ± 0.0017, x:w '
         '+0.0068 ± 0.0035, slope variance −0.0024 ± 0.0014.')


def summarise(reps: pd.DataFrame) -> pd.DataFrame:
    return study.summarise(reps, TRUTH)


_render = study.markdown_render("Substantive-model-compatible imputation: simulation study", INTRO, FORMULA,
                                TRUTH, ["full", "cc", "joint", "smc", "jomo"])


def main(argv=None) -> None:
    study.run(replicate, list(FORMULA), ["full", "cc", "joint", "smc"], OUT_CSV, OUT_MD, _render, argv,
              extra_csvs=(ROOT / "docs" / "data" / "substantive_jomo.csv",))


if __name__ == "__main__":
    main()
