"""covariance="cluster": cluster-specific level-1 covariances around a common IW mean."""

import warnings

import numpy as np
import pandas as pd
import pytest

import mlimpute as mi
from _sim import simulate_opposite_correlations
from mlimpute.sampler.linalg import invwishart


def _impute(df, covariance, **kw):
    m = mi.ImputationModel(cluster="g", variables={"y1": "continuous", "y2": "continuous"},
                           covariance=covariance)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mi.ConvergenceWarning)
        return mi.impute(df, m, **{**dict(n_imputations=6, burn=300, between=50, chains=2, seed=1), **kw})


def _within_corr(res, rho):
    r = (res.data.groupby(["imputation", "g"])[["y1", "y2"]]
         .apply(lambda x: np.corrcoef(x.y1, x.y2)[0, 1]).groupby("g").mean())
    return r[rho > 0].mean(), r[rho < 0].mean()


@pytest.fixture(scope="module")
def opposite():
    return simulate_opposite_correlations(np.random.default_rng(1))


@pytest.mark.parametrize("order", ["sorted", "interleaved"])
def test_opposite_within_cluster_correlations_recovered(opposite, order):
    df, rho = opposite
    if order == "interleaved":  # rows of all clusters interleaved (jomo's sampler breaks here)
        df = df.iloc[np.argsort(np.tile(np.arange(50), 40), kind="stable")]
    pos, neg = _within_corr(_impute(df, "cluster"), rho)
    # complete-data correlations of the simulated clusters average 0.9 / −0.9; with 20% of y1
    # imputed, a model that kept the sign would stay near ±0.9, one that pooled would be pulled
    # toward the common ≈0 correlation (the common model gives ±0.70, checked below).
    assert pos > 0.85 and neg < -0.85, (pos, neg)


def test_common_covariance_cannot_and_shows_the_difference(opposite):
    df, rho = opposite
    pos, neg = _within_corr(_impute(df, "common"), rho)
    assert pos < 0.8 and neg > -0.8


def test_row_order_does_not_change_imputations(opposite):
    df, _ = opposite
    perm = np.random.default_rng(2).permutation(len(df))
    a = _impute(df, "cluster", n_imputations=2, burn=20, between=5)
    b = _impute(df.iloc[perm], "cluster", n_imputations=2, burn=20, between=5)
    pd.testing.assert_frame_equal(b.completed(2), a.completed(2).iloc[perm])


def test_hyperparameters_recovered():
    """Ω1_j ~ IW(a, A) with a = 12, A = (a − 3)·Σ̄: the posterior of a and A covers them."""
    rng = np.random.default_rng(5)
    J, n, a = 150, 30, 12.0
    sbar = np.array([[1.0, 0.5], [0.5, 2.0]])
    A = (a - 3) * sbar
    om = invwishart(rng, a, np.broadcast_to(A, (J, 2, 2)))
    g = np.repeat(np.arange(J), n)
    e = np.concatenate([rng.multivariate_normal([0, 0], om[j], size=n) for j in range(J)])
    u = rng.normal(scale=0.5, size=(J, 2))
    df = pd.DataFrame({"g": g, "y1": 1 + e[:, 0] + u[g, 0], "y2": e[:, 1] + u[g, 1]})
    df.loc[rng.random(J * n) < 0.1, "y2"] = np.nan
    res = _impute(df, "cluster", n_imputations=10, burn=500, between=100, seed=3)
    s = res.summary().set_index("parameter")
    d = res.diagnostics().set_index("parameter")
    truth = {"omega1_df": a, "omega1_scale[y1,y1]": A[0, 0], "omega1_scale[y2,y1]": A[1, 0],
             "omega1_scale[y2,y2]": A[1, 1], "beta1[y1:Intercept]": 1.0}
    for name, value in truth.items():
        mcse = s.loc[name, "sd"] / np.sqrt(d.loc[name, "ess_bulk"])
        # 4 SDs of posterior + Monte Carlo error (see test_recovery.py)
        assert abs(s.loc[name, "mean"] - value) < 4 * np.hypot(s.loc[name, "sd"], mcse), name


def test_cluster_covariance_rejects_categorical_level1():
    with pytest.raises(mi.SpecError, match=r"covariance='cluster' is not available with categorical level-1 variables \('b'\)"):
        mi.ImputationModel(cluster="g", variables={"y": "continuous", "b": "binary"}, covariance="cluster")
    with pytest.raises(mi.SpecError, match="no variable is at level 1"):
        mi.ImputationModel(cluster="g", variables={"w": mi.Variable("continuous", level=2)}, covariance="cluster")


def test_collapse_of_a_variable_constant_in_many_clusters_is_explained():
    """y2 constant in 10 of 20 clusters: with cluster-specific covariances their y2 variances
    and the common scale fall towards 0 together (a degenerate ridge of the posterior) until
    numpy's Cholesky failed; the chain now stops with the reason and the fix."""
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(20), 10)
    x = rng.standard_normal(200)
    y = 0.5 * x + rng.normal(0, 0.6, 20)[g] + rng.standard_normal(200)
    df = pd.DataFrame(dict(g=g, x=x, y=y, y2=np.where(g < 10, 1.0, 0.3 * y + rng.standard_normal(200))))
    df.loc[rng.random(200) < 0.2, "y"] = np.nan
    model = mi.ImputationModel(cluster="g", variables={"y": "continuous", "y2": "continuous"}, covariates=["x"],
                               covariance="cluster")
    with pytest.raises(mi.ConvergenceError, match=r"level-1 variance of 'y2' collapsed towards 0 in \d+ cluster\(s\) "
                                                  r"\('g'=\d.*use covariance='common'"):
        mi.impute(df, model, n_imputations=2, burn=300, between=10, chains=1, seed=1)
