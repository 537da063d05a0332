"""Multiple-membership random effects, ``(1 | mm(s1, s2, s3, weights = (w1, w2, w3)))``.

Two references, both independent of mlimpute's design and solver code:

- a dense likelihood written out here: ``y ~ N(Xβ, σ²I + Z Σ Zᵀ)`` with ``Z`` built row by row from
  the raw id and weight columns (for the GLMM the Laplace approximation with dense matrices),
  optimised numerically;
- lme4 1.1-31 with its random-effects matrix replaced by the weighted membership matrix
  (``tests/fixtures/lme4/make_membership.R``, see PROVENANCE.md).

Data: ``tests/fixtures/lme4/data/membership.csv`` (400 pupils in 1-3 of 30 schools, made by that
script), and smaller simulated data for the invariants.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats
from scipy.special import log_expit

import mlimpute as mi

MM = "mm(school1, school2, school3, weights = (w1, w2, w3))"
GROUP = "mm(school1, school2, school3)"
IDS, WEIGHTS = ["school1", "school2", "school3"], ["w1", "w2", "w3"]


@pytest.fixture(scope="module")
def mmdata(lme4_data):
    return lme4_data("membership")


# ----- the dense reference ------------------------------------------------------------------------
def dense_z(data: pd.DataFrame, ids=IDS, weights=WEIGHTS) -> tuple[np.ndarray, list]:
    """``(N, J)`` membership matrix, one column per school (sorted ids), built row by row."""
    levels = sorted({float(v) for c in ids for v in data[c].dropna()})
    col = {v: j for j, v in enumerate(levels)}
    Z = np.zeros((len(data), len(levels)))
    for i, row in enumerate(data[ids + weights].itertuples(index=False)):
        for s, w in zip(row[: len(ids)], row[len(ids):]):
            if not pd.isna(s):
                Z[i, col[float(s)]] += w
    return Z, levels


def dense_loglik(y, X, Zs, beta, tau, sigma2) -> float:
    """log N(y; Xβ, σ²I + Σ_t Z_t Σ_t Z_tᵀ) with Σ_t = τ_t I (``Zs[t]`` are the columns of term t)."""
    V = sigma2 * np.eye(len(y)) + sum(t * Z @ Z.T for t, Z in zip(tau, Zs))
    return float(stats.multivariate_normal(mean=X @ beta, cov=V).logpdf(y))


def dense_profile(y, X, Z, reml: bool):
    """Profiled (RE)ML of a random-intercept model over the variance ratio γ = τ/σ²; returns its pieces."""
    n, p = X.shape

    def pieces(log_gamma):
        H = np.eye(n) + math.exp(log_gamma) * Z @ Z.T
        Hi = np.linalg.inv(H)
        XtHiX = X.T @ Hi @ X
        beta = np.linalg.solve(XtHiX, X.T @ Hi @ y)
        r = y - X @ beta
        rss = float(r @ Hi @ r)
        dof = n - p if reml else n
        s2 = rss / dof
        dev = np.linalg.slogdet(H)[1] + dof * (1 + math.log(2 * math.pi * s2))
        if reml:
            dev += np.linalg.slogdet(XtHiX)[1]
        return dev, beta, s2, XtHiX

    opt = optimize.minimize_scalar(lambda lg: pieces(lg)[0], bounds=(-10, 5), method="bounded",
                                   options={"xatol": 1e-12})
    dev, beta, s2, XtHiX = pieces(opt.x)
    return {"loglik": -0.5 * dev, "beta": beta, "se": np.sqrt(np.diag(s2 * np.linalg.inv(XtHiX))),
            "tau": math.exp(opt.x) * s2, "sigma2": s2}


def dense_laplace(y, X, Z, beta, tau) -> float:
    """Laplace approximation of log ∫ Π p(y_i | Xβ + Zb) N(b; 0, τI) db for a logit model, dense.

    At the mode b* of the integrand, with Fisher (= Newton, logit) weights W:
    −2 log L ≈ −2 Σ log p(y | b*) + b*ᵀb*/τ + log|I + τ ZᵀWZ|.
    """
    b = np.zeros(Z.shape[1])
    off = X @ beta
    for _ in range(100):
        eta = off + Z @ b
        mu = 1 / (1 + np.exp(-eta))
        w = mu * (1 - mu)
        grad = Z.T @ (y - mu) - b / tau
        H = Z.T @ (w[:, None] * Z) + np.eye(len(b)) / tau
        step = np.linalg.solve(H, grad)
        b += step
        if np.abs(step).max() < 1e-13:
            break
    eta = off + Z @ b
    mu = 1 / (1 + np.exp(-eta))
    w = mu * (1 - mu)
    ll = log_expit((2 * y - 1) * eta).sum()
    logdet = np.linalg.slogdet(np.eye(len(b)) + tau * Z.T @ (w[:, None] * Z))[1]
    return float(ll - 0.5 * (b @ b) / tau - 0.5 * logdet)


def design(data, response="y"):
    y = data[response].to_numpy(float)
    X = np.column_stack([np.ones(len(y)), data["x"].to_numpy()])
    return y, X


# ----- against the dense likelihood -----------------------------------------------------------------
@pytest.mark.parametrize("reml", [True, False])
def test_lmm_matches_the_dense_likelihood(mmdata, reml):
    fit = mi.lmm(f"y ~ x + (1 | {MM})", mmdata, reml=reml)
    y, X = design(mmdata)
    Z, _ = dense_z(mmdata)
    ref = dense_profile(y, X, Z, reml)
    # measured: logLik 1e-13, β 1.5e-10, SEs 8e-9, variances 2.2e-8
    assert fit.loglik == pytest.approx(ref["loglik"], abs=1e-6)
    np.testing.assert_allclose(fit.params, ref["beta"], rtol=1e-6)
    np.testing.assert_allclose(fit.tidy().std_error, ref["se"], rtol=1e-6)
    np.testing.assert_allclose(fit.varcomp().estimate, [ref["tau"], ref["sigma2"]], rtol=1e-6)
    assert fit.converged and not fit.singular
    assert fit.ngroups == {GROUP: 30} and fit.nobs == 400


def test_lmm_loglik_at_any_parameters_is_the_dense_one(mmdata):
    # the likelihood itself, independent of any optimiser, at parameters away from the optimum
    fit = mi.lmm(f"y ~ x + (1 | {MM})", mmdata, reml=False)
    y, X = design(mmdata)
    Z, _ = dense_z(mmdata)
    for beta, tau, s2 in [([1.0, 0.5], 0.3, 1.1), ([0.2, -0.3], 2.0, 0.5), ([1.1, 0.5], 0.0, 1.0)]:
        ours = fit.loglik_at(np.array(beta), [np.array([[tau]])], s2)
        assert ours == pytest.approx(dense_loglik(y, X, [Z], np.array(beta), [tau], s2), abs=1e-8)


def test_random_slope_loglik_is_the_dense_one(mmdata):
    # (1 + x | mm(...)): row i carries Σ_k w_ik (u0 + u1 x_i) of its schools
    fit = mi.lmm(f"y2 ~ x + (1 + x | {MM})", mmdata, reml=False)
    y, X = design(mmdata, "y2")
    Z, _ = dense_z(mmdata)
    Zb = np.hstack([Z, Z * X[:, [1]]])  # intercept columns, then slope columns
    p = fit.covariance_parameters()
    T = p["tau"][0]
    J = Z.shape[1]
    G = np.kron(T, np.eye(J))  # cov of (u0_1..u0_J, u1_1..u1_J)
    V = p["sigma2"] * np.eye(len(y)) + Zb @ G @ Zb.T
    dense = float(stats.multivariate_normal(mean=X @ p["beta"], cov=V).logpdf(y))
    assert fit.loglik == pytest.approx(dense, abs=1e-8)
    assert fit.loglik_at(**p) == pytest.approx(dense, abs=1e-8)
    assert [r[:2] for r in fit.varcomp().itertuples(index=False)][:3] == [
        (GROUP, "Intercept"), (GROUP, "x"), (GROUP, "Intercept")]


def test_glmm_laplace_matches_the_dense_laplace(mmdata):
    fit = mi.glmm(f"yb ~ x + (1 | {MM})", mmdata)
    y, X = design(mmdata, "yb")
    Z, _ = dense_z(mmdata)
    p = fit.covariance_parameters()
    tau = float(p["tau"][0][0, 0])
    # the approximation itself at the estimates and elsewhere (the PIRLS mode is exact to ~1e-12)
    assert fit.loglik == pytest.approx(dense_laplace(y, X, Z, p["beta"], tau), abs=1e-8)
    assert fit.loglik_at(np.array([0.1, 0.5]), [np.array([[0.9]])]) == pytest.approx(
        dense_laplace(y, X, Z, np.array([0.1, 0.5]), 0.9), abs=1e-8)

    # its maximum over (log τ, β) by a dense optimiser
    def dev(v):
        return -2 * dense_laplace(y, X, Z, v[1:], math.exp(v[0]))

    opt = optimize.minimize(dev, np.r_[math.log(tau) + 0.2, p["beta"] + 0.05], method="BFGS",
                            options={"gtol": 1e-9})
    assert fit.loglik == pytest.approx(-0.5 * opt.fun, abs=1e-8)
    # measured 1.2e-7 for β and τ: BFGS stops where the deviance is flat to ~1e-13
    np.testing.assert_allclose(fit.params, opt.x[1:], rtol=1e-6)
    assert tau == pytest.approx(math.exp(opt.x[0]), rel=1e-6)
    # SEs: the β block of 2 H⁻¹ (invariant to how τ is parameterised at the optimum). Measured
    # 1.3e-5: the dense side's Hessian is a nested forward difference with steps of 1e-5
    H = optimize.approx_fprime(opt.x, lambda v: optimize.approx_fprime(v, dev, 1e-5), 1e-5)
    se = np.sqrt(np.diag(2 * np.linalg.inv(0.5 * (H + H.T)))[1:])
    np.testing.assert_allclose(fit.tidy().std_error, se, rtol=1e-4)


# ----- against lme4 with the membership matrix -------------------------------------------------------
@pytest.mark.parametrize(("stem", "formula", "reml"), [
    ("membership_reml", f"y ~ x + (1 | {MM})", True),
    ("membership_ml", f"y ~ x + (1 | {MM})", False),
    ("membership_slope_reml", f"y2 ~ x + (1 + x | {MM})", True),
])
def test_lmm_matches_lme4_with_membership_matrix(mmdata, lme4_ref, lme4_compare, stem, formula, reml):
    fit = mi.lmm(formula, mmdata, reml=reml)
    # measured: beta 4e-9, SEs 7e-8, variances 2.4e-7, logLik 2e-13 (both optimisers run tight)
    lme4_compare(fit, lme4_ref(stem), rtol_beta=1e-6, rtol_se=1e-6, rtol_vc=1e-5, atol_ll=1e-8,
                 groups={"grp": GROUP})


def test_glmm_matches_lme4_with_membership_matrix(mmdata, lme4_ref, lme4_compare):
    fit = mi.glmm(f"yb ~ x + (1 | {MM})", mmdata)
    # measured: beta 6e-8, SEs 7e-7 (finite-difference Hessians on both sides), variance 2.6e-7
    lme4_compare(fit, lme4_ref("membership_logit"), rtol_beta=1e-6, rtol_se=1e-5, rtol_vc=1e-5, atol_ll=1e-8,
                 groups={"grp": GROUP})


# ----- invariants -------------------------------------------------------------------------------------
def simulate(seed=1, n=240, J=15):
    rng = np.random.default_rng(seed)
    ids = np.full((n, 3), np.nan)
    w = np.full((n, 3), np.nan)
    for i in range(n):
        k = rng.integers(1, 4)
        ids[i, :k] = rng.choice(J, k, replace=False) + 1
        g = rng.uniform(0.2, 1, k)
        w[i, :k] = g / g.sum()
    x = rng.normal(size=n)
    u = rng.normal(0, 0.8, J + 1)
    y = 1 + 0.5 * x + np.nansum(w * u[np.nan_to_num(ids).astype(int)], axis=1) + rng.normal(size=n)
    df = pd.DataFrame({"y": y, "x": x, "yb": (y > 1).astype(int)})
    for k in range(3):
        df[IDS[k]], df[WEIGHTS[k]] = ids[:, k], w[:, k]
    return df


@pytest.fixture(scope="module")
def small():
    return simulate()


@pytest.fixture(scope="module")
def small_fit(small):
    return mi.lmm(f"y ~ x + (1 | {MM})", small)


def test_row_and_column_order_do_not_matter(small, small_fit):
    shuffled = small.sample(frac=1.0, random_state=2)
    assert mi.lmm(f"y ~ x + (1 | {MM})", shuffled).loglik == pytest.approx(small_fit.loglik, abs=1e-9)
    swapped = mi.lmm("y ~ x + (1 | mm(school3, school1, school2, weights = (w3, w1, w2)))", small)
    assert swapped.loglik == pytest.approx(small_fit.loglik, abs=1e-9)
    assert swapped.varcomp().group[0] == "mm(school3, school1, school2)"


def test_zero_and_missing_weights_of_absent_ids_are_the_same(small, small_fit):
    zeros = small.assign(**{w: small[w].fillna(0.0) for w in WEIGHTS})
    assert mi.lmm(f"y ~ x + (1 | {MM})", zeros).loglik == pytest.approx(small_fit.loglik, abs=1e-9)


def test_an_id_repeated_in_a_row_adds_its_weights(small, small_fit):
    # a pupil wholly in school 4, written as two memberships of 0.5 each
    one = small[small.school2.isna()].index[0]
    split = small.copy()
    split.loc[one, ["school2", "w1", "w2"]] = [split.loc[one, "school1"], 0.5, 0.5]
    assert mi.lmm(f"y ~ x + (1 | {MM})", split).loglik == pytest.approx(small_fit.loglik, abs=1e-9)


def test_one_membership_per_row_is_an_ordinary_random_intercept(small):
    single = small.assign(w1=1.0, school2=np.nan, school3=np.nan, w2=np.nan, w3=np.nan)
    a = mi.lmm(f"y ~ x + (1 | {MM})", single)
    b = mi.lmm("y ~ x + (1 | school1)", single)
    assert a.loglik == pytest.approx(b.loglik, abs=1e-8)
    np.testing.assert_allclose(a.varcomp().estimate, b.varcomp().estimate, rtol=1e-6)
    g = mi.glmm(f"yb ~ x + (1 | {MM})", single)
    assert g.loglik == pytest.approx(mi.glmm("yb ~ x + (1 | school1)", single).loglik, abs=1e-7)


def test_without_weights_the_ids_present_share_equally(small):
    present = small[IDS].notna().to_numpy()
    equal = small.assign(**{w: np.where(present[:, k], 1.0 / present.sum(axis=1), np.nan)
                            for k, w in enumerate(WEIGHTS)})
    a = mi.lmm("y ~ x + (1 | mm(school1, school2, school3))", small)
    b = mi.lmm(f"y ~ x + (1 | {MM})", equal)
    assert a.loglik == pytest.approx(b.loglik, abs=1e-9)


def test_string_ids_and_ids_of_mixed_numeric_types(small, small_fit):
    # school ids 3 (int column) and 3.0 (float column, with NaN for absent ids) are one school
    as_int = small.assign(school1=small["school1"].astype(int))
    assert mi.lmm(f"y ~ x + (1 | {MM})", as_int).loglik == pytest.approx(small_fit.loglik, abs=1e-9)
    as_str = small.assign(**{c: small[c].map(lambda v: None if pd.isna(v) else f"s{int(v):02d}") for c in IDS})
    assert mi.lmm(f"y ~ x + (1 | {MM})", as_str).loglik == pytest.approx(small_fit.loglik, abs=1e-9)


def test_with_an_ordinary_crossed_factor(small):
    # a membership factor and an area factor crossed with it: dense covariance τ ZZᵀ + τ_a AAᵀ + σ²I
    area = np.arange(len(small)) % 7
    data = small.assign(area=area, y=small["y"] + np.random.default_rng(8).normal(0, 0.5, 7)[area])
    fit = mi.lmm(f"y ~ x + (1 | {MM}) + (1 | area)", data, reml=False)
    assert fit.ngroups == {GROUP: 15, "area": 7}
    y, X = design(data)
    Z, _ = dense_z(data)
    A = (data["area"].to_numpy()[:, None] == np.arange(7)).astype(float)
    p = fit.covariance_parameters()
    dense = dense_loglik(y, X, [Z, A], p["beta"], [p["tau"][0][0, 0], p["tau"][1][0, 0]], p["sigma2"])
    assert fit.loglik == pytest.approx(dense, abs=1e-8)


def test_with_a_variance_function(mmdata):
    # lmm(dispersion=) on a membership model: V = diag(σ² exp(γ g_i)) + τ ZZᵀ, dense
    data = mmdata.assign(g=np.arange(len(mmdata)) % 2)
    fit = mi.lmm(f"y ~ x + (1 | {MM})", data, reml=False, dispersion="~ g")
    tau, s2, gamma = fit.varcomp().estimate
    y, X = design(data)
    Z, _ = dense_z(data)
    V = np.diag(s2 * np.exp(gamma * data["g"].to_numpy())) + tau * Z @ Z.T
    assert fit.loglik == pytest.approx(stats.multivariate_normal(X @ fit.params.to_numpy(), V).logpdf(y), abs=1e-8)


def test_only_the_general_solver_and_laplace(small):
    with pytest.raises(mi.SpecError, match="algebra='nested' needs .* of multiple membership"):
        mi.lmm(f"y ~ x + (1 | {MM})", small, algebra="nested")
    with pytest.raises(mi.SpecError, match="nagq=5 .* multiple-membership factor 'mm\\(school1, school2, school3\\)'.*nagq=1"):
        mi.glmm(f"yb ~ x + (1 | {MM})", small, nagq=5)


# ----- pooling ---------------------------------------------------------------------------------------
def test_pooled_as_usual_by_rubins_rules(small):
    # three "imputations": the same memberships with different outcomes
    rng = np.random.default_rng(4)
    fits = [mi.lmm(f"y ~ x + (1 | {MM})", small.assign(y=small["y"] + rng.normal(0, 0.3, len(small))))
            for _ in range(3)]
    pooled = mi.pool(fits)
    m = 3
    q = np.array([f.params.to_numpy() for f in fits])
    u = np.array([np.diag(f.cov_params().to_numpy()) for f in fits])
    qbar, ubar, b = q.mean(0), u.mean(0), q.var(0, ddof=1)
    t = ubar + (1 + 1 / m) * b
    r = (1 + 1 / m) * b / ubar
    dfc = len(small) - 2  # each fit's df_resid
    nu_m = (m - 1) * (1 + 1 / r) ** 2
    nu_obs = (dfc + 1) / (dfc + 3) * dfc * (1 - r / (1 + r))
    tidy = pooled.tidy()
    np.testing.assert_allclose(tidy.estimate, qbar, rtol=1e-12)
    np.testing.assert_allclose(tidy.std_error, np.sqrt(t), rtol=1e-12)
    np.testing.assert_allclose(tidy.df, 1 / (1 / nu_m + 1 / nu_obs), rtol=1e-10)
    # the membership variance: pooled on the log scale, its mean the plain average
    vc = pooled.varcomp().set_index(["group", "term1"])
    taus = np.array([f.varcomp().estimate[0] for f in fits])
    vtau = np.array([f.varcomp_cov().iloc[0, 0] for f in fits])
    row = vc.loc[(GROUP, "Intercept")]
    assert row["method"] == "rubin_log" and row["mean"] == pytest.approx(taus.mean(), rel=1e-12)
    z, vz = np.log(taus), vtau / taus**2
    assert row["estimate"] == pytest.approx(np.exp(z.mean()), rel=1e-12)
    rz = (1 + 1 / m) * z.var(ddof=1) / vz.mean()
    assert row["riv"] == pytest.approx(rz, rel=1e-10)
    assert (GROUP, "ICC") in vc.index


@pytest.mark.filterwarnings("ignore:ESS < 100:mlimpute.ConvergenceWarning")  # a short run: plumbing, not mixing
def test_analyse_imputations_of_the_membership_sampler(mmdata):
    # end to end: 30% of y missing, imputed by the membership sampler, the membership model
    # fitted on each completed dataset and pooled
    data = mmdata[["y", "x"] + IDS + WEIGHTS]
    gaps = data.assign(y=data["y"].where(np.random.default_rng(3).random(len(data)) >= 0.3))
    model = mi.ImputationModel(cluster=mi.Membership(IDS, weights=WEIGHTS), variables={"y": "continuous"},
                               covariates=["x"])
    res = mi.impute(gaps, model, n_imputations=5, burn=300, between=30, chains=1, seed=2)
    pooled = mi.analyse(res, f"y ~ x + (1 | {MM})")
    full = mi.lmm(f"y ~ x + (1 | {MM})", data)
    tidy = pooled.tidy().set_index("term")
    # the complete data's estimates lie within 2 pooled SEs (seeded; measured 0.2 and 0.35 SEs)
    assert (np.abs(tidy.estimate - full.params) < 2 * tidy.std_error).all()
    vc = pooled.varcomp().set_index(["group", "term1"])
    row = vc.loc[(GROUP, "Intercept")]
    assert row["conf_low"] < full.varcomp().estimate[0] < row["conf_high"]
    assert (GROUP, "ICC") in vc.index and ("Residual", None) in vc.index
