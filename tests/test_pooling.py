"""Unit tests of mlimpute.pooling on hand-computable inputs and stub fits (no model fitting).

Reference comparisons with mitml are in test_pooling_mitml.py, the coverage simulation of the
pooled variance components in test_pooling_coverage.py.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from _stubs import StubFit, stub, varcomp_table

import mlimpute as mi
from mlimpute.errors import DataError, SpecError
from mlimpute.pooling import ModelTestResult, PooledResult, PoolingWarning

# an unexpected PoolingWarning fails a test; expected ones are caught by pytest.warns
pytestmark = pytest.mark.filterwarnings("error::mlimpute.pooling.PoolingWarning")

TIDY = ["term", "estimate", "std_error", "statistic", "df", "p_value", "conf_low", "conf_high",
        "riv", "fmi"]


def table(q: np.ndarray, se: np.ndarray, terms: list[str]) -> pd.DataFrame:
    """Long per-imputation table from (m, p) arrays."""
    m, p = q.shape
    return pd.DataFrame({"imputation": np.repeat(np.arange(1, m + 1), p),
                         "term": terms * m, "estimate": q.ravel(), "std_error": se.ravel()})


# ---- Rubin's rules ------------------------------------------------------------------------
def textbook(q: np.ndarray, u: np.ndarray, df_com: float) -> dict[str, float]:
    """Rubin (1987) and Barnard & Rubin (1999) for one scalar, written out plainly."""
    m = len(q)
    qbar, ubar, b = np.mean(q), np.mean(u), np.var(q, ddof=1)
    t = ubar + (1 + 1 / m) * b
    r = (1 + 1 / m) * b / ubar
    nu_m = (m - 1) * (1 + 1 / r) ** 2
    if np.isfinite(df_com):
        lam = (1 + 1 / m) * b / t
        nu_obs = (df_com + 1) / (df_com + 3) * df_com * (1 - lam)
        nu = 1 / (1 / nu_m + 1 / nu_obs)
    else:
        nu = nu_m
    return {"estimate": qbar, "std_error": np.sqrt(t), "df": nu, "riv": r,
            "fmi": (r + 2 / (nu + 3)) / (r + 1)}


@pytest.mark.parametrize("df_com", [np.inf, 30.0])
def test_scalar_rules_match_the_textbook_formulas(df_com: float) -> None:
    q = np.array([1.0, 1.1, 0.95, 1.05])
    u = np.array([0.04, 0.05, 0.06, 0.05])
    res = mi.pool(table(q[:, None], np.sqrt(u)[:, None], ["x"]), df_com=df_com)
    row = res.tidy().iloc[0]
    want = textbook(q, u, df_com)
    for key, val in want.items():
        assert row[key] == pytest.approx(val, rel=1e-12), key
    tq = stats.t.ppf(0.975, want["df"])
    assert row["conf_low"] == pytest.approx(want["estimate"] - tq * want["std_error"], rel=1e-12)
    assert row["statistic"] == pytest.approx(want["estimate"] / want["std_error"], rel=1e-12)
    assert row["p_value"] == pytest.approx(
        2 * stats.t.sf(abs(row["statistic"]), want["df"]), rel=1e-12)
    assert list(res.tidy().columns) == TIDY
    assert isinstance(res, PooledResult) and res.m == 4


def test_matrix_pooling_and_input_forms_agree() -> None:
    rng = np.random.default_rng(3)
    m, terms = 5, ["Intercept", "x", "g[T.b]"]
    q = rng.normal(scale=0.3, size=(m, 3))
    a = rng.normal(size=(m, 3, 3))
    u = a @ a.transpose(0, 2, 1) + np.eye(3)
    fits = [stub(dict(zip(terms, q[i])), u[i], df_resid=50.0) for i in range(m)]
    pairs = [(pd.Series(q[i], index=terms), u[i]) for i in range(m)]
    r_fits = mi.pool(fits)
    r_pairs = mi.pool(pairs, df_com=50.0)
    pd.testing.assert_frame_equal(r_fits.tidy(), r_pairs.tidy())
    t_want = u.mean(0) + (1 + 1 / m) * np.cov(q, rowvar=False)
    np.testing.assert_allclose(r_fits.cov_params().to_numpy(), t_want, rtol=1e-12)
    assert r_fits.full_covariance
    # a table of standard errors gives the same scalar results but no off-diagonal covariance
    se = np.sqrt(np.diagonal(u, axis1=1, axis2=2))
    r_tab = mi.pool(table(q, se, terms), df_com=50.0)
    pd.testing.assert_frame_equal(r_tab.tidy(), r_fits.tidy())
    assert not r_tab.full_covariance and r_tab.cov_params().isna().to_numpy().sum() == 6
    comp = r_fits.components()
    np.testing.assert_allclose(comp["t"], np.diag(t_want), rtol=1e-12)
    np.testing.assert_allclose(comp["lambda"], (1 + 1 / m) * comp["b"] / comp["t"], rtol=1e-12)


def test_terms_are_matched_by_name_not_position() -> None:
    a = stub({"Intercept": 1.0, "x": 2.0}, {"Intercept": 0.1, "x": 0.2}, df_resid=20)
    b = stub({"x": 2.2, "Intercept": 0.8}, {"x": 0.3, "Intercept": 0.1}, df_resid=20)
    res = mi.pool([a, b]).tidy().set_index("term")
    assert res.loc["x", "estimate"] == pytest.approx(2.1)
    assert res.loc["Intercept", "estimate"] == pytest.approx(0.9)


def test_df_com_none_uses_each_fits_df_resid() -> None:
    fits = [stub({"x": v}, {"x": 0.04}, df_resid=25.0) for v in (1.0, 1.1, 0.95)]
    pd.testing.assert_frame_equal(mi.pool(fits).tidy(), mi.pool(fits, df_com=25.0).tidy())
    assert mi.pool(fits).df_com.tolist() == [25.0]
    # df_com = inf is Rubin's large-sample df, as mitml without df.com
    row = mi.pool(fits, df_com=float("inf")).tidy().iloc[0]
    assert row["df"] == pytest.approx(textbook(np.array([1.0, 1.1, 0.95]), np.full(3, 0.04),
                                               np.inf)["df"])


def test_table_without_df_resid_warns_and_uses_large_sample_df() -> None:
    tab = table(np.array([[1.0], [1.1], [0.9]]), np.full((3, 1), 0.3), ["x"])
    with pytest.warns(PoolingWarning, match="no complete-data degrees of freedom"):
        res = mi.pool(tab)
    assert np.isinf(res.df_com).all()
    tab["df_resid"] = 12.0
    assert mi.pool(tab).df_com.tolist() == [12.0]


def test_identical_imputations_have_no_between_variance() -> None:
    # B = 0: RIV 0, FMI 0 and infinite df without df_com; with df_com the df is nu_obs = df_com
    # (df_com+1)/(df_com+3) and the FMI is mitml's 2/(nu+3) > 0
    fits = [stub({"a": 0.5, "b": -1.0}, {"a": 0.01, "b": 0.04}) for _ in range(4)]
    row = mi.pool(fits, df_com=np.inf).tidy().iloc[0]
    assert (row["riv"], row["fmi"], row["df"]) == (0.0, 0.0, np.inf)
    assert row["std_error"] == pytest.approx(0.1)
    assert row["conf_low"] == pytest.approx(0.5 - stats.norm.ppf(0.975) * 0.1)
    row = mi.pool(fits, df_com=20.0).tidy().iloc[0]
    assert row["df"] == pytest.approx(20 * 21 / 23)
    assert row["fmi"] == pytest.approx(2 / (20 * 21 / 23 + 3))


def test_two_imputations() -> None:
    q, u = np.array([2.0, 2.4]), np.array([0.09, 0.11])
    with pytest.warns(PoolingWarning, match="fraction of missing information above 0.5"):
        res = mi.pool([(pd.Series({"x": q[i]}), np.array([u[i]])) for i in range(2)],
                      df_com=np.inf)
    row = res.tidy().iloc[0]
    # m = 2: B = (q1 - q2)^2 / 2 = 0.08, T = 0.1 + 1.5 * 0.08, nu = (1 + 1/r)^2
    assert row["std_error"] == pytest.approx(np.sqrt(0.1 + 1.5 * 0.08))
    assert row["df"] == pytest.approx((1 + 0.1 / (1.5 * 0.08)) ** 2)


def test_a_scalar_parameter_from_plain_numbers() -> None:
    res = mi.pool([(0.3, 0.01), (0.32, 0.012), (0.29, 0.011)], df_com=100)
    tidy = res.tidy()
    assert tidy["term"].tolist() == ["Parameter.1"]
    assert tidy["estimate"].iloc[0] == pytest.approx(0.3033333333)
    assert res.params.index.tolist() == ["Parameter.1"]


def test_high_fmi_warns_and_names_the_term() -> None:
    fits = [stub({"x": v, "z": 1.0 + v / 100}, {"x": 0.01, "z": 1.0}, df_resid=100)
            for v in (0.0, 0.5, 1.0)]
    with pytest.warns(PoolingWarning, match=r"above 0.5 for x \(0\.\d\d\)") as rec:
        mi.pool(fits)
    assert "z" not in str(rec[0].message)


def test_conf_level() -> None:
    fits = [stub({"x": v}, {"x": 0.04}, df_resid=30) for v in (1.0, 1.1, 1.02)]
    res = mi.pool(fits, conf_level=0.9)
    row = res.tidy().iloc[0]
    half = stats.t.ppf(0.95, row["df"]) * row["std_error"]
    assert row["conf_high"] - row["estimate"] == pytest.approx(half)
    wide = res.conf_int(0.99).iloc[0]
    assert wide["conf_high"] > row["conf_high"]
    with pytest.raises(SpecError, match="conf_level = 1.5 must be strictly between 0 and 1"):
        mi.pool(fits, conf_level=1.5)


# ---- errors --------------------------------------------------------------------------------
def test_zero_within_variance_is_a_singular_ubar() -> None:
    fits = [stub({"x": 1.0, "c": 2.0}, {"x": 0.1, "c": 0.0}) for _ in range(3)]
    with pytest.raises(DataError, match=r"Ū is zero for term\(s\) \['c'\].*drop it"):
        mi.pool(fits, df_com=10)


def test_a_term_missing_in_some_imputations_is_an_error() -> None:
    a = stub({"x": 1.0, "g[T.c]": 0.5}, {"x": 0.1, "g[T.c]": 0.2})
    b = stub({"x": 1.1}, {"x": 0.1})
    with pytest.raises(DataError, match=r"'g\[T.c\]' is missing in imputation\(s\) 2, 3"):
        mi.pool([a, b, b], df_com=10)


def test_bad_inputs() -> None:
    with pytest.raises(SpecError, match="at least m = 2 analyses, got 1"):
        mi.pool([stub({"x": 1.0}, {"x": 0.1})])
    with pytest.raises(SpecError, match="got a dict"):
        mi.pool({"a": 1})
    with pytest.raises(DataError, match="needs columns imputation, term, estimate and std_error"):
        mi.pool(pd.DataFrame({"imputation": [1, 2], "est": [1.0, 2.0]}))
    with pytest.raises(DataError, match="the estimate of term 'x' in imputation 2 is nan"):
        mi.pool(table(np.array([[1.0], [np.nan]]), np.ones((2, 1)), ["x"]), df_com=5)
    with pytest.raises(SpecError, match="df_com = -1 must be positive"):
        mi.pool([stub({"x": 1.0}, {"x": 0.1}), stub({"x": 2.0}, {"x": 0.1})], df_com=-1)
    with pytest.raises(SpecError, match="df_com has 2 values for 1 terms"):
        mi.pool([stub({"x": 1.0}, {"x": 0.1}), stub({"x": 2.0}, {"x": 0.1})], df_com=[1, 2])
    with pytest.raises(DataError, match="imputation 1 has no row/column for term"):
        fit = stub({"x": 1.0}, {"x": 0.1})
        mi.pool([StubFit(fit.params, pd.DataFrame([[0.1]], index=["y"], columns=["y"])), fit])


# ---- variance components ----------------------------------------------------------------
def vc_fit(tau: float, sigma2: float, cov: np.ndarray, **kw) -> StubFit:
    return stub({"Intercept": 0.0}, {"Intercept": 0.1}, df_resid=100,
                vc=varcomp_table([("school", "Intercept", None, tau),
                                  ("Residual", None, None, sigma2)]),
                vc_cov=cov, **kw)


def test_variances_and_icc_pooled_on_log_and_logit_scales_by_hand() -> None:
    taus, sig2s = np.array([0.30, 0.36, 0.25]), np.array([1.0, 0.9, 1.1])
    covs = [np.array([[0.004, -0.0005], [-0.0005, 0.002]]) * (1 + i / 10) for i in range(3)]
    fits = [vc_fit(t, s, c) for t, s, c in zip(taus, sig2s, covs)]
    vc = mi.pool(fits).varcomp().set_index(["group", "term1"])
    assert list(vc.reset_index().columns) == ["group", "term1", "term2", "estimate", "mean",
                                              "conf_low", "conf_high", "df", "riv", "fmi",
                                              "method"]
    # tau on the log scale: z_i = log tau_i, Var(z_i) = Var(tau_i) / tau_i^2
    z, v = np.log(taus), np.array([c[0, 0] for c in covs]) / taus**2
    want = textbook(z, v, np.inf)
    half = stats.t.ppf(0.975, want["df"]) * want["std_error"]
    row = vc.loc[("school", "Intercept")]
    assert row["method"] == "rubin_log"
    assert row["estimate"] == pytest.approx(np.exp(want["estimate"]), rel=1e-12)
    assert row["conf_low"] == pytest.approx(np.exp(want["estimate"] - half), rel=1e-12)
    assert row["conf_high"] == pytest.approx(np.exp(want["estimate"] + half), rel=1e-12)
    assert row["mean"] == pytest.approx(taus.mean())
    # ICC on the logit scale: logit = log tau - log sigma2, by the delta method
    z = np.log(taus) - np.log(sig2s)
    v = np.array([c[0, 0] / t**2 + c[1, 1] / s**2 - 2 * c[0, 1] / (t * s)
                  for c, t, s in zip(covs, taus, sig2s)])
    want = textbook(z, v, np.inf)
    row = vc.loc[("school", "ICC")]
    assert row["method"] == "rubin_logit"
    assert row["estimate"] == pytest.approx(1 / (1 + np.exp(-want["estimate"])), rel=1e-12)
    assert row["mean"] == pytest.approx(np.mean(taus / (taus + sig2s)))
    assert row["riv"] == pytest.approx(want["riv"], rel=1e-12)
    assert 0 < row["conf_low"] < row["estimate"] < row["conf_high"] < 1


def test_covariances_pooled_on_their_own_scale() -> None:
    vc = varcomp_table([("s", "Intercept", None, 0.3), ("s", "x", None, 0.1),
                        ("s", "Intercept", "x", -0.05), ("Residual", None, None, 1.0)])
    cov = np.diag([0.004, 0.001, 0.0008, 0.002])
    fits = []
    for shift in (0.0, 0.01, -0.02):
        v = vc.copy()
        v.loc[2, "estimate"] += shift
        fits.append(stub({"Intercept": 0.0}, {"Intercept": 0.1}, df_resid=50, vc=v, vc_cov=cov))
    out = mi.pool(fits).varcomp()
    row = out[(out["term1"] == "Intercept") & (out["term2"] == "x")].iloc[0]
    assert row["method"] == "rubin_identity"
    want = textbook(np.array([-0.05, -0.04, -0.07]), np.full(3, 0.0008), np.inf)
    assert row["estimate"] == pytest.approx(want["estimate"])
    assert row["conf_high"] - row["estimate"] == pytest.approx(
        stats.t.ppf(0.975, want["df"]) * want["std_error"])
    assert out["term1"].tolist()[-1] == "ICC"  # one grouping factor with an intercept: one ICC


def test_latent_scale_icc_for_a_glmm_without_residual_variance() -> None:
    c = np.pi**2 / 3
    fits = []
    for tau in (0.5, 0.6, 0.45):
        fits.append(stub({"Intercept": 0.0}, {"Intercept": 0.1}, df_resid=50,
                         vc=varcomp_table([("school", "Intercept", None, tau)]),
                         vc_cov=np.array([[0.01]]), icc=tau / (tau + c)))
    out = mi.pool(fits).varcomp().set_index("term1")
    icc = out.loc["ICC"]
    z = np.log(np.array([0.5, 0.6, 0.45]) / c)
    want = textbook(z, 0.01 / np.array([0.5, 0.6, 0.45]) ** 2, np.inf)
    assert icc["estimate"] == pytest.approx(1 / (1 + np.exp(-want["estimate"])), rel=1e-12)


def test_boundary_variance_is_averaged_without_an_interval() -> None:
    fits = [vc_fit(t, 1.0, np.diag([0.01, 0.002])) for t in (0.2, 0.0, 0.1)]
    with pytest.warns(PoolingWarning, match=r"\('school', 'Intercept', None\).*boundary"):
        vc = mi.pool(fits).varcomp().set_index("term1")
    assert vc.loc["Intercept", "method"] == "mean_only"
    assert vc.loc["Intercept", "estimate"] == pytest.approx(0.1)
    assert np.isnan(vc.loc["Intercept", "conf_low"])
    assert vc.loc["ICC", "method"] == "mean_only"


def test_one_singular_imputation_costs_only_the_boundary_component() -> None:
    """A singular fit (tau = 0, covariance all NaN) in imputation 2 of 4: the residual variance
    keeps its interval, its Ū averaging the three imputations with a covariance."""
    covs = [np.diag([0.01, 0.002]) * (1 + i / 10) for i in range(4)]
    covs[1] = np.full((2, 2), np.nan)
    sig2s = np.array([1.0, 0.9, 1.1, 1.05])
    fits = [vc_fit(t, s, c) for t, s, c in zip((0.2, 0.0, 0.1, 0.15), sig2s, covs)]
    with pytest.warns(PoolingWarning) as caught:
        vc = mi.pool(fits).varcomp().set_index("group")
    messages = " | ".join(str(w.message) for w in caught)
    assert "('school', 'Intercept', None), ('school', 'ICC', None)] are on the boundary" in messages
    assert "imputation(s) [2] have no asymptotic variance" in messages
    assert vc.loc["Residual", "method"] == "rubin_log"
    v = np.array([c[1, 1] for c in covs]) / sig2s**2
    v[1] = np.mean(v[[0, 2, 3]])  # Ū over the imputations that have one
    want = textbook(np.log(sig2s), v, np.inf)
    assert vc.loc["Residual", "estimate"] == pytest.approx(np.exp(want["estimate"]), rel=1e-12)
    assert vc.loc["Residual", "riv"] == pytest.approx(want["riv"], rel=1e-12)
    assert vc.loc["Residual", "conf_low"] < vc.loc["Residual", "estimate"] < vc.loc["Residual", "conf_high"]
    assert set(vc.loc["school", "method"]) == {"mean_only"}


def test_varcomp_errors() -> None:
    tab = table(np.array([[1.0], [1.1]]), np.full((2, 1), 0.3), ["x"])
    with pytest.raises(DataError, match="no variance components: they come from fit results"):
        mi.pool(tab, df_com=10).varcomp()
    a = vc_fit(0.3, 1.0, np.eye(2) * 0.01)
    b = stub({"Intercept": 0.0}, {"Intercept": 0.1}, df_resid=100,
             vc=varcomp_table([("class", "Intercept", None, 0.3),
                               ("Residual", None, None, 1.0)]), vc_cov=np.eye(2) * 0.01)
    with pytest.raises(DataError, match="variance components differ between imputation 1 and 2"):
        mi.pool([a, b])


# ---- test_models ----------------------------------------------------------------------------
def two_models(q: np.ndarray, u: np.ndarray) -> tuple[list, list]:
    """Full (Intercept + tested a, b) and null (Intercept) pairs from (m, 2) / (m, 2, 2)."""
    full, null = [], []
    for qi, ui in zip(q, u):
        cov = np.eye(3) * 0.1
        cov[1:, 1:] = ui
        full.append((pd.Series([1.0, *qi], index=["Intercept", "a", "b"]), cov))
        null.append((pd.Series([1.0], index=["Intercept"]), np.array([[0.1]])))
    return full, null


def d1_textbook(q: np.ndarray, u: np.ndarray) -> tuple[float, float, float]:
    m, k = q.shape
    qbar, ubar, b = q.mean(0), u.mean(0), np.cov(q, rowvar=False)
    r = (1 + 1 / m) * np.trace(b @ np.linalg.inv(ubar)) / k
    d1 = qbar @ np.linalg.inv((1 + r) * ubar) @ qbar / k
    t = k * (m - 1)
    nu = 4 + (t - 4) * (1 + (1 - 2 / t) / r) ** 2 if t > 4 else t * (1 + 1 / k) * (1 + 1 / r) ** 2 / 2
    return d1, nu, r


@pytest.mark.parametrize("m", [6, 2])
def test_d1_by_hand(m: int) -> None:
    rng = np.random.default_rng(m)
    q = rng.normal(0.3, 0.05, size=(m, 2))
    u = np.stack([np.array([[0.01, 0.002], [0.002, 0.02]]) * (1 + rng.random()) for _ in range(m)])
    full, null = two_models(q, u)
    if m < 5:
        with pytest.warns(PoolingWarning, match="D1 with m = 2 < 5"):
            res = mi.test_models(full, null, method="D1")
    else:
        res = mi.test_models(full, null, method="D1")
    d1, nu, r = d1_textbook(q, u)
    assert isinstance(res, ModelTestResult)
    assert (res.statistic, res.df2, res.riv) == pytest.approx((d1, nu, r), rel=1e-12)
    assert res.df1 == 2 and res.terms == ("a", "b")
    assert res.p_value == pytest.approx(stats.f.sf(d1, 2, nu), rel=1e-10)
    assert list(res.tidy().columns) == ["method", "statistic", "df1", "df2", "p_value", "riv"]


def test_d1_d2_with_identical_imputations() -> None:
    q = np.tile([0.2, -0.1], (6, 1))
    u = np.tile(np.array([[0.01, 0.0], [0.0, 0.01]]), (6, 1, 1))
    full, null = two_models(q, u)
    res = mi.test_models(full, null, method="D1")
    wald = 0.2**2 / 0.01 + 0.1**2 / 0.01
    assert (res.riv, res.df2) == (0.0, np.inf)
    assert res.statistic == pytest.approx(wald / 2)
    assert res.p_value == pytest.approx(stats.chi2.sf(wald, 2))  # the F(2, inf) limit
    with pytest.warns(PoolingWarning, match="D2 with m = 6 < 20"):
        res2 = mi.test_models(full, null, method="D2")
    assert (res2.riv, res2.df2) == (0.0, np.inf)
    assert res2.statistic == pytest.approx(wald / 2)


def test_d2_by_hand() -> None:
    rng = np.random.default_rng(7)
    m = 20
    q = rng.normal(0.1, 0.05, size=(m, 2))
    u = np.stack([np.diag([0.01, 0.02]) for _ in range(m)])
    full, null = two_models(q, u)
    res = mi.test_models(full, null, method="D2")
    d = np.array([qi @ np.linalg.solve(ui, qi) for qi, ui in zip(q, u)])
    r = (1 + 1 / m) * np.var(np.sqrt(d), ddof=1)
    assert res.riv == pytest.approx(r)
    assert res.statistic == pytest.approx((d.mean() / 2 - (m + 1) / (m - 1) * r) / (1 + r))
    assert res.df2 == pytest.approx(2 ** (-3 / m) * (m - 1) * (1 + 1 / r) ** 2)


def test_d1_reiter_df_needs_k_m_minus_1_above_4() -> None:
    q = np.array([[0.2, 0.1], [0.25, 0.05], [0.22, 0.12]])
    u = np.stack([np.eye(2) * 0.01] * 3)
    full, null = two_models(q, u)
    with pytest.warns(PoolingWarning) as rec:
        res = mi.test_models(full, null, method="D1", df_com=30)
    msgs = " ".join(str(w.message) for w in rec)
    assert "needs k(m - 1) > 4 (here 4)" in msgs and "m = 3 < 5" in msgs
    assert res.df2 == pytest.approx(d1_textbook(q, u)[1])


def test_test_models_errors() -> None:
    q = np.random.default_rng(1).normal(0.3, 0.05, size=(6, 2))
    u = np.stack([np.eye(2) * 0.01] * 6)
    full, null = two_models(q, u)
    with pytest.raises(SpecError, match="not in the full model.*swap"):
        mi.test_models(null, full)
    with pytest.raises(SpecError, match="method = 'D4' is not one of"):
        mi.test_models(full, null, method="D4")
    with pytest.raises(SpecError, match="use = 'likelihood' applies to D2 only"):
        mi.test_models(full, null, method="D1", use="likelihood")
    with pytest.raises(SpecError, match="ariv = 'positive' applies to D2 and D3 only"):
        mi.test_models(full, null, method="D1", ariv="positive")
    with pytest.raises(SpecError, match="df_com is only used by D1"):
        mi.test_models(full, null, method="D2", df_com=10)
    with pytest.raises(SpecError, match="same fixed effects; nothing to test"):
        mi.test_models(full, full)
    with pytest.raises(SpecError, match="full model has 6 fits and the null model 5"):
        mi.test_models(full, null[:5])
    with pytest.raises(SpecError, match="D3 needs fit results"):
        mi.test_models(full, null, method="D3")
    sing = np.stack([np.array([[0.01, 0.01], [0.01, 0.01]])] * 6)
    full_s, null_s = two_models(q, sing)
    with pytest.raises(DataError, match=r"covariance matrix Ū of the tested terms \['a', 'b'\] is singular"):
        mi.test_models(full_s, null_s, method="D1")
    with pytest.raises(DataError, match="U of imputation 1 .* is singular"):
        mi.test_models(full_s, null_s, method="D2")
    tab_full = table(np.c_[np.ones(6), q], np.full((6, 3), 0.1), ["Intercept", "a", "b"])
    tab_null = table(np.ones((6, 1)), np.full((6, 1), 0.1), ["Intercept"])
    with pytest.raises(DataError, match="needs the full covariance matrix"):
        mi.test_models(tab_full, tab_null)


@pytest.mark.parametrize("method", ["D1", "D2"])
def test_wald_tests_do_not_depend_on_a_terms_units(method: str) -> None:
    """A covariate recorded in micro-units (its coefficient 1e6 times larger, its variance 1e12
    times) is no more singular than before: mitml gives the same F (helper 25 found D1 refused
    it at 1e7, D2 at 1e6: the eigenvalue ratio was judged on the raw matrix)."""
    rng = np.random.default_rng(11)
    m = 20
    q = rng.normal([0.3, 0.2], 0.05, size=(m, 2))
    u = np.stack([np.array([[0.01, 0.003], [0.003, 0.02]]) * (1 + rng.random()) for _ in range(m)])
    s = np.array([1.0, 1e7])
    full, null = two_models(q, u)
    full_s, null_s = two_models(q * s, u * np.outer(s, s))
    a = mi.test_models(full, null, method=method)
    b = mi.test_models(full_s, null_s, method=method)
    assert (b.statistic, b.df2) == pytest.approx((a.statistic, a.df2), rel=1e-9)


def test_likelihood_tests_need_one_model_in_every_imputation() -> None:
    """D3 and D2 on likelihoods checked that the fits are of one model only through their number
    of parameters: a fit of another formula in one imputation gave numpy's ValueError (D3) or a
    test with k taken from the first fit (D2); a failed fit (None) was called a table."""
    ll = np.array([-100.0, -101.0, -99.5, -100.5, -100.2])
    full = [d3_fit(a, a, [1.0, 0.5, 0.2]) for a in ll]
    null = [d3_fit(a - 8, a - 8, [1.0]) for a in ll]
    odd = d3_fit(-100.0, -100.0, [1.0, 0.5, 0.2, 0.1])
    for method, kw in (("D3", {}), ("D2", {"use": "likelihood"})):
        with pytest.raises(DataError, match=r"full model's fits are not of one model: imputation 1 has the fixed "
                                            r"effects \['b0', 'b1', 'b2'\], imputation 4 \['b0', 'b1', 'b2', 'b3'\]"):
            mi.test_models(full[:3] + [odd] + full[4:], null, method=method, **kw)
        with pytest.raises(DataError, match="null model's fit of imputation 2 is None"):
            mi.test_models(full, [null[0], None, *null[2:]], method=method, **kw)


def d3_fit(ll: float, llp: float, beta: list[float], reml: bool = False,
           ml: StubFit | None = None) -> StubFit:
    pars = {"beta": np.array(beta), "tau": [np.array([[0.2]])], "sigma2": 1.0}
    return StubFit(pd.Series(beta, index=[f"b{i}" for i in range(len(beta))]),
                   pd.DataFrame(np.eye(len(beta))), loglik=ll, loglik_pooled=llp,
                   cov_pars=pars, reml=reml, ml_version=ml)


def test_d3_formula_and_ml_refit_of_reml_fits() -> None:
    ll1 = np.array([-100.0, -101.0, -99.5, -100.5, -100.2])
    ll1p = ll1 - np.array([0.3, 0.5, 0.2, 0.4, 0.1])
    ll0 = ll1 - np.array([8.0, 9.0, 7.5, 8.2, 8.8])
    ll0p = ll0 - 0.2
    full_ml = [d3_fit(a, b, [1.0, 0.5 + i / 10, 0.2]) for i, (a, b) in enumerate(zip(ll1, ll1p))]
    null_ml = [d3_fit(a, b, [1.0 + i / 10]) for i, (a, b) in enumerate(zip(ll0, ll0p))]
    full = [d3_fit(np.nan, np.nan, [0.0, 0.0, 0.0], reml=True, ml=f) for f in full_ml]
    res = mi.test_models(full, null_ml, method="D3")
    m, k = 5, 2
    dbar = np.mean(-2 * (ll0 - ll1))
    dtilde = np.mean(-2 * (ll0p - ll1p))
    r = (m + 1) / (k * (m - 1)) * (dbar - dtilde)
    t = k * (m - 1)
    assert res.refit and all(f.calls[0] == "refit" for f in full)
    assert res.riv == pytest.approx(r)
    assert res.statistic == pytest.approx(dtilde / (k * (1 + r)))
    assert res.df2 == pytest.approx(4 + (t - 4) * (1 + (1 - 2 / t) / r) ** 2)
    assert res.df1 == k
    # the likelihood is evaluated at the averaged parameters, on every imputation's data
    beta, tau, sigma2 = full_ml[0].calls[0]
    np.testing.assert_allclose(beta, [1.0, 0.7, 0.2])
    np.testing.assert_allclose(tau[0], [[0.2]])
    assert sigma2 == 1.0
    np.testing.assert_allclose(null_ml[3].calls[0][0], [1.2])


def test_d3_without_likelihood_methods_is_a_spec_error() -> None:
    fits = [stub({"a": 1.0, "b": 2.0}, {"a": 0.1, "b": 0.1}, reml=False) for _ in range(5)]
    null = [stub({"a": 1.0}, {"a": 0.1}, reml=False) for _ in range(5)]
    with pytest.raises(SpecError, match="D3 needs fits with covariance_parameters"):
        mi.test_models(fits, null, method="D3")


def test_d3_negative_riv_warns_and_positive_truncates() -> None:
    ll1 = np.full(5, -100.0)
    ll0 = ll1 - 5.0
    full = [d3_fit(a, a + 1.0, [1.0, 0.5, 0.2]) for a in ll1]  # pooled LL above own: r < 0
    null = [d3_fit(a, a, [1.0]) for a in ll0]
    with pytest.warns(PoolingWarning, match="negative"):
        res = mi.test_models(full, null, method="D3")
    assert res.riv < 0
    res_pos = mi.test_models(full, null, method="D3", ariv="positive")
    assert res_pos.riv == 0.0 and res_pos.df2 == np.inf
    assert res_pos.statistic == pytest.approx(np.mean(-2 * (ll0 - ll1 - 1.0)) / 2)


# ---- analyse ---------------------------------------------------------------------------------
@pytest.fixture
def fake_analysis(monkeypatch: pytest.MonkeyPatch) -> list:
    """Replace mlimpute.analysis by a module whose lmm/glmm record their calls."""
    calls: list = []

    def lmm(formula, data, **kw):
        calls.append(("lmm", formula, data.copy(), kw))
        return stub({"Intercept": float(data["y"].mean())}, {"Intercept": 10.0}, df_resid=len(data) - 1)

    def glmm(formula, data, family, **kw):
        calls.append(("glmm", formula, data.copy(), dict(kw, family=family)))
        return stub({"Intercept": float(data["y"].mean())}, {"Intercept": 10.0}, df_resid=len(data) - 1)

    fake = types.ModuleType("mlimpute.analysis")
    fake.lmm, fake.glmm = lmm, glmm
    monkeypatch.setitem(sys.modules, "mlimpute.analysis", fake)
    return calls


def long_table(col: str, with_original: bool) -> pd.DataFrame:
    ks = ([0] if with_original else []) + [1, 2, 3]
    rows = [{"y": (np.nan if k == 0 else k + i / 10), "g": i % 2, col: k} for k in ks for i in range(4)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("col", ["imputation", "Imputation", ".imp"])
def test_analyse_detects_the_imputation_column_and_skips_the_original_data(
    fake_analysis: list, col: str
) -> None:
    res = mi.analyse(long_table(col, with_original=True), "y ~ 1 + (1 | g)", reml=False)
    assert len(fake_analysis) == 3
    for k, (kind, formula, data, kw) in enumerate(fake_analysis, 1):
        assert kind == "lmm" and formula == "y ~ 1 + (1 | g)" and kw == {"reml": False}
        assert col not in data.columns and len(data) == 4
        assert data["y"].tolist() == pytest.approx([k, k + 0.1, k + 0.2, k + 0.3])
    assert res.m == 3 and res.params["Intercept"] == pytest.approx(2.15)
    assert res.df_com.tolist() == [3.0]  # the fits' df_resid
    assert res.fits is not None and len(res.fits) == 3


def test_analyse_takes_an_imputation_result_and_calls_glmm(fake_analysis: list) -> None:
    res_like = types.SimpleNamespace(data=long_table("imputation", with_original=False))
    mi.analyse(res_like, "y ~ 1 + (1 | g)", family="binomial", nagq=5)
    assert [c[0] for c in fake_analysis] == ["glmm"] * 3
    assert fake_analysis[0][3] == {"nagq": 5, "family": "binomial"}


def test_analyse_errors(fake_analysis: list) -> None:
    both = long_table("Imputation", False).assign(**{".imp": 1})
    with pytest.raises(SpecError, match=r"several imputation columns \['Imputation', '.imp'\]"):
        mi.analyse(both, "y ~ 1")
    res = mi.analyse(both, "y ~ 1", imputation_col="Imputation")
    assert res.m == 3
    with pytest.raises(DataError, match="no imputation column .* imputation_col="):
        mi.analyse(pd.DataFrame({"y": [1.0]}), "y ~ 1")
    few = long_table("imputation", True)
    few = few[few["imputation"] <= 1]
    with pytest.raises(DataError, match="holds 1 imputation"):
        mi.analyse(few, "y ~ 1")
    with pytest.raises(SpecError, match="needs an ImputationResult or a long DataFrame"):
        mi.analyse([1, 2], "y ~ 1")


def test_analyse_names_the_imputation_whose_fit_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    def lmm(formula, data, **kw):
        if data["y"].iloc[0] >= 2:
            raise RuntimeError("singular fit")
        return stub({"Intercept": 1.0}, {"Intercept": 0.01}, df_resid=3)

    fake = types.ModuleType("mlimpute.analysis")
    fake.lmm = lmm
    monkeypatch.setitem(sys.modules, "mlimpute.analysis", fake)
    with pytest.raises(RuntimeError, match="singular fit") as info:
        mi.analyse(long_table("imputation", False), "y ~ 1")
    assert "on imputation 2" in " ".join(info.value.__notes__)


def test_public_api() -> None:
    for name in ("pool", "test_models", "analyse", "PooledResult", "ModelTestResult",
                 "PoolingWarning"):
        assert name in mi.__all__ and hasattr(mi, name)
    assert issubclass(PoolingWarning, UserWarning)


def test_table_inputs_are_checked() -> None:
    """A per-imputation table's df_resid of 0 gave NaN p-values, a negative or NaN one silently
    the large-sample df; a missing imputation label a bare KeyError, a text standard error
    pandas' ValueError, a negative one was squared."""
    tab = pd.DataFrame(dict(imputation=[1, 1, 2, 2], term=["a", "b", "a", "b"],
                            estimate=[1, 2, 1.1, 2.1], std_error=[.3, .4, .3, .4]))
    for d in (0, -3, np.nan):
        with pytest.raises(DataError, match=r"column df_resid must hold positive numbers"):
            mi.pool(tab.assign(df_resid=d))
    with pytest.raises(DataError, match=r"column imputation has 2 missing label\(s\)"):
        mi.pool(tab.assign(imputation=[1, 1, np.nan, np.nan]))
    with pytest.raises(DataError, match=r"column std_error holds values that are not numbers \(e.g. 'x'\)"):
        mi.pool(tab.assign(std_error=["x", ".4", ".3", ".4"]))
    with pytest.raises(DataError, match=r"column std_error holds negative values"):
        mi.pool(tab.assign(std_error=[-.3, .4, -.3, .4]))
    assert np.isinf(mi.pool(tab.assign(df_resid=np.inf)).tidy()["df"]).sum() == 0   # large-sample: allowed


def test_summary_names_a_non_canonical_link() -> None:
    """A probit analysis says so (its summary read "[binomial]", as a logit one's)."""
    rng = np.random.default_rng(5)
    g = np.repeat(np.arange(30), 8)
    x = rng.standard_normal(g.size)
    y = (x + rng.normal(0, 1, 30)[g] + rng.standard_normal(g.size) > 0).astype(int)
    long = pd.concat([pd.DataFrame(dict(imputation=k, g=g, x=x + 0.01 * k * rng.standard_normal(g.size), y=y))
                      for k in (1, 2, 3)])
    probit = mi.analyse(long, "y ~ x + (1 | g)", family="binomial", link="probit")
    assert (probit.family, probit.link) == ("binomial", "probit")
    assert "  [binomial, probit link]" in probit.summary()
    assert "  [binomial]" in mi.analyse(long, "y ~ x + (1 | g)", family="binomial").summary()
