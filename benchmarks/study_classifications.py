"""Simulation study of imputation with several classifications (three-level nested,
cross-classified, multiple membership), with known truth.

    python benchmarks/study_classifications.py --reps 300 --jobs 2     # hours on 2 cores
    python benchmarks/study_classifications.py --reps 10 --designs crossed   # a quick look

Designs (incomplete variables at every level, missing at random given complete covariates;
analysed by mlimpute's LMM on each completed dataset, pooled by Rubin's rules):

- ``nested3``: pupils in classes in schools, 60 schools × 4 classes × 8 pupils.
  y = 0.5 + 0.5 x + 0.3 c + 0.3 s + u_school + u_class + e, Var = 0.3, 0.2, 1; c a class-level
  variable (its own school effect, Var 0.25, and class residual, Var 0.3), s a school-level one
  (Var 0.4). Missing: y 25% (more often for high x), c in 20% of classes, s in 20% of schools.
  Analysis ``y ~ x + c + s + (1 | school/class)``.
- ``crossed``: 2,400 pupils in 80 primary × 40 secondary schools (random pairs), y = 1 + 0.5 x +
  0.3 p + u_primary + u_secondary + e (Var 0.4, 0.2, 1); p a primary-school variable (Var 0.3).
  Missing: y 25% (MAR on x), p in 20% of primaries. Analysis ``y ~ x + p + (1 | primary) +
  (1 | secondary)``.
- ``membership``: 2,400 pupils, each in 1–3 of 120 schools with Dirichlet weights,
  y = 1 + 0.5 x + Σ_k w_k u_k + e, Var(u) = 0.4; y missing 30% (MAR on x). Analysis
  ``y ~ x + (1 | mm(s1, s2, s3, weights = (w1, w2, w3)))``.

Methods: ``full`` (before deletion), ``cc`` (complete cases), ``twolevel`` (the two-level joint
model that ignores the extra structure: classes only; primary schools only; the first school
only), ``multi`` (the classifications model). M = 20 imputations from 2 chains.
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
OUT_CSV = ROOT / "docs" / "data" / "classifications_reps.csv.gz"
OUT_MD = ROOT / "docs" / "classifications.md"

import _study as study  # noqa: E402

import mlimpute as mi  # noqa: E402



def simulate(design: str, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(data with missing values, the same before deletion)."""
    if design == "nested3":
        S, C, n = 60, 4, 8
        N = S * C * n
        school = np.repeat(np.arange(S), C * n)
        cls = np.repeat(np.arange(S * C), n)
        x = rng.normal(size=N)
        c = (rng.normal(0, 0.5, S)[school] + rng.normal(0, np.sqrt(0.3), S * C)[cls])
        s = rng.normal(0, np.sqrt(0.4), S)[school]
        y = (0.5 + 0.5 * x + 0.3 * c + 0.3 * s + rng.normal(0, np.sqrt(0.3), S)[school]
             + rng.normal(0, np.sqrt(0.2), S * C)[cls] + rng.normal(size=N))
        full = pd.DataFrame({"school": school, "class": cls % C, "x": x, "y": y, "c": c, "s": s})
        data = full.copy()
        data.loc[rng.random(N) < study.expit(-1.3 + 0.8 * x), "y"] = np.nan
        data.loc[np.isin(cls, rng.choice(S * C, S * C // 5, replace=False)), "c"] = np.nan
        data.loc[np.isin(school, rng.choice(S, S // 5, replace=False)), "s"] = np.nan
        return data, full
    if design == "crossed":
        A, B, N = 80, 40, 2400
        a = rng.integers(0, A, N)
        b = rng.integers(0, B, N)
        x = rng.normal(size=N)
        p = rng.normal(0, np.sqrt(0.3), A)[a]
        y = (1 + 0.5 * x + 0.3 * p + rng.normal(0, np.sqrt(0.4), A)[a] + rng.normal(0, np.sqrt(0.2), B)[b]
             + rng.normal(size=N))
        full = pd.DataFrame({"primary": a, "secondary": b, "x": x, "y": y, "p": p})
        data = full.copy()
        data.loc[rng.random(N) < study.expit(-1.3 + 0.8 * x), "y"] = np.nan
        data.loc[np.isin(a, rng.choice(A, A // 5, replace=False)), "p"] = np.nan
        return data, full
    K, N = 120, 2400
    nm = rng.integers(1, 4, N)
    ids = np.full((N, 3), -1)
    w = np.zeros((N, 3))
    for i in range(N):
        ids[i, :nm[i]] = rng.choice(K, nm[i], replace=False)
        w[i, :nm[i]] = rng.dirichlet(np.ones(nm[i]))
    u = rng.normal(0, np.sqrt(0.4), K)
    x = rng.normal(size=N)
    y = 1 + 0.5 * x + (w * np.where(ids >= 0, u[np.maximum(ids, 0)], 0.0)).sum(axis=1) + rng.normal(size=N)
    full = pd.DataFrame({"x": x, "y": y})
    for k in range(3):
        full[f"s{k + 1}"] = np.where(ids[:, k] >= 0, ids[:, k], np.nan)
        full[f"w{k + 1}"] = np.where(ids[:, k] >= 0, w[:, k], 0.0)
    data = full.copy()
    data.loc[rng.random(N) < study.expit(-0.85 + 0.8 * x), "y"] = np.nan
    return data, full


FORMULA = {
    "nested3": "y ~ x + c + s + (1 | school/class)",
    "crossed": "y ~ x + p + (1 | primary) + (1 | secondary)",
    "membership": "y ~ x + (1 | mm(s1, s2, s3, weights = (w1, w2, w3)))",
}
TRUTH = {
    "nested3": {"Intercept": 0.5, "x": 0.5, "c": 0.3, "s": 0.3, "var(school:Intercept)": 0.3,
                "var(school:class:Intercept)": 0.2, "Residual": 1.0},
    "crossed": {"Intercept": 1.0, "x": 0.5, "p": 0.3, "var(primary:Intercept)": 0.4,
                "var(secondary:Intercept)": 0.2, "Residual": 1.0},
    "membership": {"Intercept": 1.0, "x": 0.5, "var(mm(s1, s2, s3):Intercept)": 0.4, "Residual": 1.0},
}
M, CHAINS, BURN, BETWEEN = 20, 2, 1000, 50


def _models(design: str) -> dict:
    if design == "nested3":
        multi = mi.ImputationModel(cluster=["school", "class"], covariates=["x"],
                                   variables={"y": "continuous", "c": mi.Variable("continuous", level="class"),
                                              "s": mi.Variable("continuous", level="school")})
        two = mi.ImputationModel(cluster="cls_id", covariates=["x"],   # classes only: schools ignored
                                 variables={"y": "continuous", "c": mi.Variable("continuous", level=2),
                                            "s": mi.Variable("continuous", level=2)})
    elif design == "crossed":
        multi = mi.ImputationModel(cluster=mi.Crossed("primary", "secondary"), covariates=["x"],
                                   variables={"y": "continuous", "p": mi.Variable("continuous", level="primary")})
        two = mi.ImputationModel(cluster="primary", covariates=["x"],
                                 variables={"y": "continuous", "p": mi.Variable("continuous", level=2)})
    else:
        multi = mi.ImputationModel(cluster=mi.Membership(["s1", "s2", "s3"], ["w1", "w2", "w3"]),
                                   covariates=["x"], variables={"y": "continuous"})
        two = mi.ImputationModel(cluster="s1", covariates=["x"], variables={"y": "continuous"})
    return {"multi": multi, "twolevel": two}


def replicate(args) -> list[tuple]:
    design, rep, methods = args
    rng = np.random.default_rng([20261202, rep, list(FORMULA).index(design)])
    data, full = simulate(design, rng)
    if design == "nested3":
        data = data.assign(cls_id=data["school"] * 10 + data["class"])
    rows: list[tuple] = []
    name = study.grouped_vc_name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if "full" in methods:
            rows += study.rows_single(mi.lmm(FORMULA[design], full), design, "full", rep, name)
        if "cc" in methods:
            rows += study.rows_single(mi.lmm(FORMULA[design], data.dropna(subset=["x", "y"] + [
                c for c in ("c", "s", "p") if c in data])), design, "cc", rep, name)
        for method, model in _models(design).items():
            if method not in methods:
                continue
            t0 = time.perf_counter()
            res = mi.impute(data, model, n_imputations=M, burn=BURN, between=BETWEEN, chains=CHAINS, seed=rep)
            pooled = mi.analyse(res, FORMULA[design])
            rows += study.rows_pooled(pooled, design, method, rep, name)
            rows.append((design, method, rep, "_seconds", time.perf_counter() - t0, np.nan, np.nan))
            rows.append((design, method, rep, "_max_rhat", res.diagnostics()["rhat"].max(), np.nan, np.nan))
    return rows


INTRO = ("Made by `python benchmarks/study_classifications.py` (see its docstring for the designs). "
         "`twolevel` is the two-level joint model that ignores the extra structure (classes only; "
         "primary schools only; the first school only), `multi` the classifications model. Relative "
         "bias in % of the true value ± its Monte Carlo SE; coverage of the 95% interval ± its Monte "
         "Carlo SE; variance components are the average over imputations (bias) with Rubin's rules "
         "on the log scale (interval); `full` is the analysis before deletion.")


_render = study.markdown_render("Several classifications: simulation study", INTRO, FORMULA, TRUTH,
                               ["full", "cc", "twolevel", "multi"])


def main(argv=None) -> None:
    study.run(replicate, list(FORMULA), ["full", "cc", "twolevel", "multi"], OUT_CSV, OUT_MD, _render, argv)


if __name__ == "__main__":
    main()
