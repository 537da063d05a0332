"""The fixed schema of MixedResult (the public analysis API): tables, properties, immutability."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import mlimpute as mi


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(21)
    J, n = 40, 12
    g = np.repeat(np.arange(J), n)
    h = np.tile(np.arange(6), J * 2)[: J * n]  # crossed with g
    x = rng.normal(size=J * n)
    sex = rng.choice(["boy", "girl"], J * n)
    y = 1 + 0.5 * x + 0.3 * (sex == "girl") + rng.normal(0, 0.8, J)[g] + rng.normal(0, 0.3, J)[g] * x
    y = y + rng.normal(0, 0.4, 6)[h] + rng.normal(size=J * n)
    return pd.DataFrame({"y": y, "x": x, "sex": sex, "g": g, "h": h, "yb": (y > 1).astype(int)})


@pytest.fixture(scope="module")
def fit(data):
    return mi.lmm("y ~ x + sex + (1 + x | g) + (1 | h)", data)


def test_tidy(fit):
    t = fit.tidy()
    assert list(t.columns) == ["term", "estimate", "std_error", "statistic", "p_value"]
    assert list(t.term) == ["Intercept", "x", "sex[T.girl]"]
    np.testing.assert_allclose(t.statistic, t.estimate / t.std_error)
    np.testing.assert_allclose(t.p_value, 2 * stats.norm.sf(np.abs(t.statistic)))  # normal reference
    np.testing.assert_allclose(t.std_error, np.sqrt(np.diag(fit.cov_params())))


def test_params_and_cov_params(fit):
    assert isinstance(fit.params, pd.Series) and list(fit.params.index) == ["Intercept", "x", "sex[T.girl]"]
    cov = fit.cov_params()
    assert list(cov.index) == list(cov.columns) == list(fit.params.index)
    np.testing.assert_allclose(cov.to_numpy(), cov.to_numpy().T)
    assert np.all(np.linalg.eigvalsh(cov.to_numpy()) > 0)


def test_varcomp_rows_and_dtypes(fit):
    vc = fit.varcomp()
    assert list(vc.columns) == ["group", "term1", "term2", "estimate"]
    assert list(zip(vc.group, vc.term1, vc.term2)) == [
        ("g", "Intercept", None), ("g", "x", None), ("g", "Intercept", "x"), ("h", "Intercept", None),
        ("Residual", None, None)]
    assert vc.term2[0] is None and vc.term1[4] is None  # object dtype: None stays None
    assert (vc.estimate[[0, 1, 3, 4]] > 0).all()
    assert vc.estimate[4] == pytest.approx(fit.sigma2)
    tau = fit.covariance_parameters()["tau"]
    assert tau[0][0, 1] == pytest.approx(vc.estimate[2]) and tau[1][0, 0] == pytest.approx(vc.estimate[3])
    cov = fit.varcomp_cov()
    assert list(cov.index) == ["Intercept~~Intercept|g", "x~~x|g", "Intercept~~x|g", "Intercept~~Intercept|h",
                               "Residual~~Residual"]
    assert np.all(np.linalg.eigvalsh(cov.to_numpy()) > 0)


def test_counts_and_flags(fit, data):
    assert fit.nobs == len(data) and fit.df_resid == len(data) - 3
    assert fit.ngroups == {"g": 40, "h": 6}
    assert fit.converged and not fit.singular and fit.reml
    assert (fit.formula, fit.family, fit.link) == ("y ~ x + sex + (1 + x | g) + (1 | h)", "gaussian", "identity")
    assert fit.icc is None  # random slopes and two factors


def test_icc_of_random_intercept_lmm(data):
    fit = mi.lmm("y ~ x + (1 | g)", data)
    tau, sigma2 = fit.varcomp().estimate
    assert fit.icc == pytest.approx(tau / (tau + sigma2))


def test_frozen(fit):
    with pytest.raises(dataclasses.FrozenInstanceError):
        fit.loglik = 0.0
    with pytest.raises(ValueError):
        fit.beta[0] = 1.0
    before = fit.params.copy()
    params = fit.params
    params.iloc[0] = 99.0  # a copy, not a view into the result
    pd.testing.assert_series_equal(fit.params, before)


def test_pickle_round_trip(fit):
    # fits travel between processes (e.g. parallel analyses); the copy keeps its data and methods
    again = pickle.loads(pickle.dumps(fit))
    assert again.loglik == fit.loglik
    p = fit.covariance_parameters()
    assert again.loglik_at(**p) == pytest.approx(fit.loglik_at(**p), abs=1e-10)


def test_without_data_pools_alike_and_refuses_what_needs_the_data(fit, data):
    """The pipeline caches fits without their data (a fit on 1,000,000 rows pickled to 184 MB
    with its design matrices): the same pooled tables, a pickle a fraction of the size, and a
    clear refusal where the data are needed."""
    slim = pickle.loads(pickle.dumps(fit.without_data()))
    assert len(pickle.dumps(slim)) < len(pickle.dumps(fit)) / 5
    pd.testing.assert_frame_equal(slim.varcomp_cov(), fit.varcomp_cov())
    pd.testing.assert_frame_equal(slim.tidy(), fit.tidy())
    other = fit.refit(reml=False)   # a second "imputation"
    a, b = mi.pool([fit, other]), mi.pool([slim, other.without_data()])
    pd.testing.assert_frame_equal(a.tidy(), b.tidy())
    pd.testing.assert_frame_equal(a.varcomp(), b.varcomp())
    with pytest.raises(mi.SpecError, match=r"loglik_at\(\) needs the fit's data"):
        slim.loglik_at(**slim.covariance_parameters())
    with pytest.raises(mi.SpecError, match=r"refit\(\) needs the fit's data"):
        slim.refit()
    assert np.isfinite(fit.loglik_at(**fit.covariance_parameters()))   # the original keeps its data


def test_summary_text(fit):
    text = fit.summary()
    assert "y ~ x + sex + (1 + x | g) + (1 | h)" in text and "sex[T.girl]" in text and "Residual" in text


def test_glmm_schema(data):
    fit = mi.glmm("yb ~ x + (1 | g)", data)
    assert list(fit.tidy().columns) == ["term", "estimate", "std_error", "statistic", "p_value"]
    vc = fit.varcomp()
    assert list(zip(vc.group, vc.term1, vc.term2)) == [("g", "Intercept", None)]  # no Residual row
    assert fit.sigma2 is None and not fit.reml and fit.df_resid == fit.nobs - 2
    assert fit.refit(reml=False).loglik == pytest.approx(fit.loglik, abs=1e-8)
