"""Does an incomplete cluster-level covariate see the complete unit-level columns of the analysis
formula? (helper 36: without their cluster means it did not, and the cross-level interaction came
out 10 % low.)

    python benchmarks/cluster_means_check.py --reps 40 [--without-means]

``y ~ x*w + (1 + x | g)``: 70 clusters of 2–40 rows; w a cluster-level covariate, x = 0.5w + e
complete at level 1, y = 0.2 + 0.5x + 0.3w + 0.3xw + u0 + u1·x + e (Var u0 = 0.3, Var u1 = 0.15);
w missing for about 35 % of the clusters, more often where the cluster's mean of y is high
(MAR). Imputed with ``variables={"w": Variable("continuous", level=2)}`` and the formula as
``substantive=`` (M = 10 from 2 chains, burn 500, 50 sweeps apart); ``--without-means`` leaves
the cluster mean of x out of w's model (``design.formula_unit_means`` returning nothing: the
model before it). Printed: the pooled x:w, x and the slope variance, each paired with the
full-data fit on the same dataset (imputed − full), with Monte Carlo SEs.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import pandas as pd

import mlimpute as mi

FORMULA = "y ~ x*w + (1 + x | g)"


def simulate(rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    J = 70
    g = np.repeat(np.arange(J), rng.integers(2, 41, J))
    N = g.size
    w = rng.normal(size=J)[g]
    x = 0.5 * w + rng.normal(size=N)
    y = (0.2 + 0.5 * x + 0.3 * w + 0.3 * x * w + rng.normal(0, 0.3 ** 0.5, J)[g]
         + rng.normal(0, 0.15 ** 0.5, J)[g] * x + rng.normal(size=N))
    full = pd.DataFrame({"g": g, "y": y, "x": x, "w": w})
    df = full.copy()
    hole = rng.random(J) < 1 / (1 + np.exp(0.8 - 0.8 * df.groupby("g")["y"].mean().to_numpy()))
    df.loc[hole[g], "w"] = np.nan
    return full, df


def summary(fit) -> dict:
    est = fit.tidy().set_index("term")["estimate"]
    vc = fit.varcomp()
    col = "mean" if "mean" in vc.columns else "estimate"
    slope = float(vc[(vc["term1"] == "x") & vc["term2"].isna()][col].iloc[0])
    return {"x:w": float(est["x:w"]), "x": float(est["x"]), "var(x)": slope}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=40)
    ap.add_argument("--without-means", action="store_true")
    a = ap.parse_args(argv)
    if a.without_means:
        import mlimpute.design as design
        design.formula_unit_means = lambda df, model: ()
    model = mi.ImputationModel(cluster="g", variables={"w": mi.Variable("continuous", level=2)},
                               substantive=FORMULA)
    rows = []
    for rep in range(a.reps):
        full, df = simulate(np.random.default_rng(1000 + rep))
        ref = summary(mi.lmm(FORMULA, full))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = mi.impute(df, model, n_imputations=10, burn=500, between=50, chains=2, seed=rep)
            got = summary(mi.analyse(res, FORMULA))
        rows.append({k: got[k] - ref[k] for k in got})
    d = pd.DataFrame(rows)
    label = "without the cluster means" if a.without_means else "with the cluster means"
    print(f"{label}, imputed - full over {a.reps} replications (truth x:w 0.3, x 0.5, var(x) 0.15): "
          + ", ".join(f"{k} {d[k].mean():+.4f} ± {d[k].std() / np.sqrt(a.reps):.4f}" for k in d))


if __name__ == "__main__":
    main()
