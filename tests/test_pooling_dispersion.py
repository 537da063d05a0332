"""Pooling variance-function fits (``lmm(..., dispersion=...)``) over imputations.

The log-variance coefficients γ are pooled as they are by Rubin's rules (method
``rubin_identity``: they are on the log scale already), checked here against a hand computation
from each fit's γ and ``varcomp_cov()``; the ICC uses the residual variance σ² (at w = 0), not γ.
Data: the first five of jomo's ExamScores imputations (tests/fixtures/mitml, PROVENANCE.md there).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import mlimpute as mi
from mlimpute.pooling import PoolingWarning

FIX = Path(__file__).parent / "fixtures" / "mitml"
FORMULA = "normexam ~ standlrt + sex + (1 | clus)"
DISP = "~ sex + standlrt"
M = 5


@pytest.fixture(scope="module")
def long() -> pd.DataFrame:
    data = pd.read_csv(FIX / "jomo_exam_imputations.csv.gz")
    return data[data.Imputation <= M][["normexam", "standlrt", "sex", "clus", "Imputation"]]


@pytest.fixture(scope="module")
def pooled(long) -> mi.PooledResult:
    return mi.analyse(long, FORMULA, dispersion=DISP)


def rubin_by_hand(q: np.ndarray, u: np.ndarray, level: float = 0.95) -> dict:
    """Rubin (1987) for a scalar, large-sample df (what variance components use)."""
    m = len(q)
    q_bar, u_bar, b = q.mean(), u.mean(), q.var(ddof=1)
    t = u_bar + (1 + 1 / m) * b
    r = (1 + 1 / m) * b / u_bar
    df = (m - 1) * (1 + 1 / r) ** 2
    half = stats.t.ppf(0.5 + level / 2, df) * np.sqrt(t)
    return {"estimate": q_bar, "conf_low": q_bar - half, "conf_high": q_bar + half, "df": df, "riv": r,
            "fmi": (r + 2 / (df + 3)) / (r + 1)}


def test_analyse_passes_dispersion_through(pooled):
    assert pooled.m == M
    assert all(f.dispersion == DISP for f in pooled.fits)
    assert [list(f.dispersion_params.index) for f in pooled.fits] == [["sex[T.girl]", "standlrt"]] * M


@pytest.mark.parametrize("term", ["sex[T.girl]", "standlrt"])
def test_dispersion_rows_are_rubins_rules_on_the_log_variance_scale(pooled, term):
    row = pooled.varcomp().set_index(["group", "term1"]).loc[("Residual", term)]
    assert row.method == "rubin_identity" and row.term2 is None
    q = np.array([f.dispersion_params[term] for f in pooled.fits])
    u = np.array([f.varcomp_cov().loc[f"log-variance:{term}|Residual", f"log-variance:{term}|Residual"]
                  for f in pooled.fits])
    want = rubin_by_hand(q, u)
    for col, value in want.items():
        assert row[col] == pytest.approx(value, rel=1e-12), col
    assert row["mean"] == pytest.approx(q.mean(), rel=1e-12)


def test_residual_variance_and_icc_ignore_the_coefficients(pooled):
    vc = pooled.varcomp()
    sigma2 = vc[(vc.group == "Residual") & vc.term1.isna()].iloc[0]
    assert sigma2.method == "rubin_log"
    s2 = np.array([f.sigma2 for f in pooled.fits])
    assert sigma2.estimate == pytest.approx(np.exp(np.log(s2).mean()), rel=1e-12)
    icc = vc[(vc.group == "clus") & (vc.term1 == "ICC")].iloc[0]
    tau = np.array([f.term_covs[0][0, 0] for f in pooled.fits])
    assert icc["mean"] == pytest.approx(np.mean(tau / (tau + s2)), rel=1e-12)  # σ² only: the ICC where w = 0


def test_fixed_effects_pool_as_usual(long, pooled):
    fits = [mi.lmm(FORMULA, long[long.Imputation == k].drop(columns="Imputation"), dispersion=DISP)
            for k in range(1, M + 1)]
    np.testing.assert_allclose(mi.pool(fits).tidy().estimate, pooled.tidy().estimate, rtol=1e-12)
    est = np.array([f.params.to_numpy() for f in fits])
    np.testing.assert_allclose(pooled.tidy().estimate, est.mean(axis=0), rtol=1e-12)


def test_does_the_variance_depend_on_sex_and_standlrt(long, pooled):
    # D3 (and D2 on likelihoods) against the homoscedastic model: γ is part of the ML parameters
    null = mi.analyse(long, FORMULA)
    d3 = mi.test_models(pooled, null, method="D3")
    with pytest.warns(PoolingWarning, match="D2 with m = 5 < 20"):
        d2 = mi.test_models(pooled, null, method="D2", use="likelihood")
    assert d3.df1 == d2.df1 == 2
    assert 0 <= d3.p_value <= 1 and 0 <= d2.p_value <= 1
    # D3 evaluates each ML fit at the averaged parameters, γ included: at a fit's own
    # parameters its loglik_at is its log-likelihood
    ml = pooled.fits[0].refit(reml=False)
    p = ml.covariance_parameters()
    assert ml.loglik_at(p["beta"], p["tau"], p["sigma2"], p["gamma"]) == pytest.approx(ml.loglik, abs=1e-7)
