"""Accuracy of the mixed-type model, printed: the numbers behind tests/test_recovery_mixed.py,
tests/test_jomo_mixed.py and tests/test_cluster_covariance.py (which assert them with
tolerances but print nothing).

    python benchmarks/accuracy_mixed.py        # ~30 s on 2 cores

1. Recovery on simulated data with known parameters (tests/_sim.py): |z| of every monitored
   parameter, z = (posterior mean − truth) / √(sd² + mcse²), and a few of them spelled out.
2. Against jomo 2.7 on real data (fixtures with their provenance in tests/fixtures/): cldata
   (continuous + 4-category nominal), JSPmiss (ravens, english continuous; fluent nominal, and
   ordinal), and the rare-category simulation that shows jomo's truncation bias (its latent
   draws are kept only inside (−3, 4)). z = (ours − jomo) / combined Monte Carlo SE.
3. covariance="cluster" with within-cluster correlations +0.9 / −0.9, rows sorted and
   interleaved, and covariance="common" for contrast: mean completed-data correlation.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
FIX = ROOT / "tests" / "fixtures"

import mlimpute as mi  # noqa: E402
from _sim import simulate_mixed, simulate_opposite_correlations  # noqa: E402
from _stats import imputation_summaries  # noqa: E402


def _impute(df, model, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mi.ConvergenceWarning)
        return mi.impute(df, model, **kw)


def recovery() -> None:
    data, _, t = simulate_mixed(np.random.default_rng(21), J=250, n=16)
    model = mi.ImputationModel(
        cluster="g", covariates=["x"],
        variables={"y": "continuous", "b": "binary", "o": "ordinal", "f": "nominal",
                   "w": mi.Variable("continuous", level=2), "v": mi.Variable("binary", level=2)})
    r = _impute(data, model, n_imputations=10, burn=400, between=100, chains=2, seed=3)
    s, d = r.summary().set_index("parameter"), r.diagnostics().set_index("parameter")
    true = pd.Series(t.monitored(), index=s.index)
    z = (s["mean"] - true) / np.hypot(s["sd"], s["sd"] / np.sqrt(d["ess_bulk"]))
    print(f"1. recovery: {len(z)} parameters, max |z| = {z.abs().max():.2f} ({z.abs().idxmax()}); "
          f"min bulk ESS {d.ess_bulk.min():.0f} of {2 * 1000} ({d.ess_bulk.idxmin()})")
    for name in ["beta1[b:x]", "beta1[o:x]", "beta1[f[A]:x]", "cut[o:2]", "cut[o:3]",
                 "omega1[b,y]", "omega1[o,y]", "omega1[f[A],y]", "omega2[v,w]"]:
        print(f"   {name:16s} truth {true[name]:+.3f}  posterior {s.loc[name, 'mean']:+.3f} "
              f"± {s.loc[name, 'sd']:.3f}  z {z[name]:+.2f}")


def _shares(long, imp, col):
    p = long.groupby(imp)[col].value_counts(normalize=True).unstack(fill_value=0.0)
    return p.mean(), p.std(ddof=1) / np.sqrt(len(p))


def against_jomo() -> None:
    print("2. against jomo")
    d0 = pd.read_csv(FIX / "data" / "cldata.csv")
    m = mi.ImputationModel(cluster="city", variables={"measure": "continuous", "social": "nominal"},
                           covariates=["age", "sex"])
    ours = _impute(d0, m, n_imputations=20, burn=500, between=100, chains=2, seed=7).data
    jomo = pd.read_csv(FIX / "jomo" / "jomo_cldata_imputations.csv.gz").query("Imputation > 0")
    a = imputation_summaries(ours, "city", "imputation", ["measure"]).set_index("statistic")
    b = imputation_summaries(jomo, "clus", "Imputation", ["measure"]).set_index("statistic")
    zc = ((a.value - b.value) / np.hypot(a.mcse, b.mcse)).round(2)
    pm, ps = _shares(ours, "imputation", "social")
    jm, js = _shares(jomo, "Imputation", "social")
    print(f"   cldata measure z: {zc.to_dict()}")
    print(f"   cldata social shares ours {pm.round(3).tolist()} jomo {jm.round(3).tolist()} "
          f"z {((pm.values - jm.values) / np.hypot(ps.values, js.values)).round(2).tolist()}")
    dj = pd.read_csv(FIX / "data" / "JSPmiss.csv")
    jj = pd.read_csv(FIX / "mitml" / "jomo_jsp_imputations.csv.gz").query("Imputation > 0")
    holes = dj.fluent.isna().to_numpy()
    b = imputation_summaries(jj, "clus", "Imputation", ["ravens", "english"]).set_index(["variable", "statistic"])
    for kind in ("nominal", "ordinal"):
        m = mi.ImputationModel(cluster="school", covariates=["sex", "behaviour"],
                               variables={"ravens": "continuous", "english": "continuous", "fluent": kind})
        o = _impute(dj, m, n_imputations=20, burn=500, between=100, chains=2, seed=7).data
        a = imputation_summaries(o, "school", "imputation", ["ravens", "english"]).set_index(["variable", "statistic"])
        zz = (a.value - b.value) / np.hypot(a.mcse, b.mcse)
        sh = np.mean([[(g.fluent.to_numpy()[holes] == c).mean() for c in (0.0, 1.0, 2.0)]
                      for _, g in o.groupby("imputation")], axis=0)
        print(f"   JSPmiss, fluent {kind}: ravens/english max |z| {zz.abs().max():.2f}; "
              f"fluent shares of the imputed holes {np.round(sh, 3).tolist()}")
    vals = np.stack([g.fluent.to_numpy()[holes].astype(float) for _, g in jj.groupby("Imputation")])
    print(f"   JSPmiss, jomo: fluent shares of the imputed holes "
          f"{[round(float((vals == c).mean()), 3) for c in (0.0, 1.0, 2.0)]}; observed "
          f"{dj.fluent.value_counts(normalize=True).sort_index().round(3).tolist()}")
    sim = pd.read_csv(FIX / "jomo" / "nominal_rare_sim.csv")
    ref = pd.read_csv(FIX / "jomo" / "jomo_nominal_rare.csv")
    m = mi.ImputationModel(cluster="g", variables={"y": "continuous", "f": "nominal"}, covariates=["x"])
    res = _impute(sim.drop(columns="f_true"), m, n_imputations=10, burn=500, between=100, chains=2, seed=1)
    h = sim.f.isna().to_numpy()
    v = np.stack([res.completed(k).f.to_numpy()[h] for k in range(1, 11)])
    print(f"   rare-category simulation, shares of the holes: ours "
          f"{[round(float((v == c).mean()), 3) for c in (0, 1, 2)]} truth {ref.truth.round(3).tolist()} "
          f"jomo {ref.jomo.round(3).tolist()}")


def opposite_correlations() -> None:
    J, n = 40, 50
    df, rho = simulate_opposite_correlations(np.random.default_rng(1), J, n)
    print("3. within-cluster correlations +0.9 / -0.9 (mean completed-data correlation)")
    for covariance, order in [("cluster", "sorted"), ("cluster", "interleaved"), ("common", "sorted")]:
        d = df.iloc[np.argsort(np.tile(np.arange(n), J), kind="stable")] if order == "interleaved" else df
        m = mi.ImputationModel(cluster="g", variables={"y1": "continuous", "y2": "continuous"},
                               covariance=covariance)
        res = _impute(d, m, n_imputations=10, burn=500, between=50, chains=2, seed=1)
        r = (res.data.groupby(["imputation", "g"])[["y1", "y2"]]
             .apply(lambda x: np.corrcoef(x.y1, x.y2)[0, 1]).groupby("g").mean())
        print(f"   covariance={covariance!r:9s} rows {order:11s}: +0.9 clusters {r[rho > 0].mean():.3f}, "
              f"-0.9 clusters {r[rho < 0].mean():.3f}")


if __name__ == "__main__":
    import argparse

    argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    recovery()
    against_jomo()
    opposite_correlations()
