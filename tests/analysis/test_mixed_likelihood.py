"""Log-likelihoods at given parameters (for D3), variance-component covariances, refits, solvers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import mlimpute as mi

SLEEP = "Reaction ~ Days + (Days | Subject)"


def dense_loglik(data: pd.DataFrame, beta, tau, sigma2) -> float:
    """ML log-likelihood of the sleepstudy random-slope model from the dense N x N covariance."""
    tau = tau[0] if isinstance(tau, list) else tau
    y = data["Reaction"].to_numpy()
    X = np.column_stack([np.ones(len(y)), data["Days"].to_numpy()])
    V = sigma2 * np.eye(len(y))
    for s in data["Subject"].unique():
        i = np.flatnonzero(data["Subject"].to_numpy() == s)
        V[np.ix_(i, i)] += X[i] @ tau @ X[i].T
    return float(stats.multivariate_normal(mean=X @ beta, cov=V).logpdf(y))


@pytest.fixture(scope="module")
def sleep(lme4_data):
    return lme4_data("sleepstudy")


@pytest.fixture(scope="module")
def sleep_ml(sleep):
    return mi.lmm(SLEEP, sleep, reml=False)


def test_loglik_at_own_ml_estimates_is_loglik(sleep_ml, sleep):
    p = sleep_ml.covariance_parameters()
    assert set(p) == {"beta", "tau", "sigma2"} and len(p["tau"]) == 1 and p["tau"][0].shape == (2, 2)
    assert sleep_ml.loglik_at(**p) == pytest.approx(sleep_ml.loglik, abs=1e-9)
    assert sleep_ml.loglik_at(**p) == pytest.approx(dense_loglik(sleep, **p), abs=1e-8)


def test_loglik_at_other_values_matches_dense_and_mitml(sleep_ml, sleep, lme4_table):
    ref = lme4_table("extra_sleep_userll").iloc[0]
    beta = np.array([ref.beta1, ref.beta2])
    tau = [np.array([[ref.tau11, ref.tau21], [ref.tau21, ref.tau22]])]
    ll = sleep_ml.loglik_at(beta, tau, ref.sigma2)
    assert ll == pytest.approx(dense_loglik(sleep, beta, tau[0], ref.sigma2), abs=1e-8)
    # mitml's .getUserLL.lmerMod (lme4's devfun2 with the fixed part as offset)
    assert ll == pytest.approx(ref.loglik, abs=1e-6)
    assert ll < sleep_ml.loglik


def test_loglik_at_of_reml_fit_is_the_ml_likelihood(sleep):
    fit = mi.lmm(SLEEP, sleep, reml=True)
    p = fit.covariance_parameters()
    assert fit.loglik_at(**p) == pytest.approx(dense_loglik(sleep, **p), abs=1e-8)
    assert fit.loglik_at(**p) != pytest.approx(fit.loglik, abs=1e-3)  # fit.loglik is the REML criterion


def test_loglik_at_singular_tau(sleep_ml, sleep):
    # a zero slope variance (a boundary value, e.g. after pooling) is a valid argument
    tau = np.array([[600.0, 0.0], [0.0, 0.0]])
    beta = np.array([250.0, 10.0])
    assert sleep_ml.loglik_at(beta, [tau], 700.0) == pytest.approx(dense_loglik(sleep, beta, tau, 700.0), abs=1e-8)


def test_loglik_at_rejects_bad_arguments(sleep_ml):
    p = sleep_ml.covariance_parameters()
    with pytest.raises(mi.SpecError, match="beta must have 2 entries"):
        sleep_ml.loglik_at(p["beta"][:1], p["tau"], p["sigma2"])
    with pytest.raises(mi.SpecError, match="symmetric 2x2"):
        sleep_ml.loglik_at(p["beta"], [np.eye(3)], p["sigma2"])
    with pytest.raises(mi.SpecError, match="not positive semi-definite"):
        sleep_ml.loglik_at(p["beta"], [np.array([[1.0, 2.0], [2.0, 1.0]])], p["sigma2"])
    with pytest.raises(mi.SpecError, match="positive residual variance"):
        sleep_ml.loglik_at(p["beta"], p["tau"], None)


def test_glmm_loglik_at_own_estimates(lme4_data):
    js = lme4_data("JSPmiss")[["behaviour", "english", "sex", "school"]].dropna()
    fit = mi.glmm("behaviour ~ english + sex + (1 | school)", js)
    p = fit.covariance_parameters()
    assert p["sigma2"] is None
    assert fit.loglik_at(**p) == pytest.approx(fit.loglik, abs=1e-8)
    assert fit.loglik_at(p["beta"] + 0.01, p["tau"]) < fit.loglik
    with pytest.raises(mi.SpecError, match="no residual variance"):
        fit.loglik_at(p["beta"], p["tau"], 2.0)


def test_refit_by_ml(sleep, sleep_ml):
    reml = mi.lmm(SLEEP, sleep)
    again = reml.refit(reml=False)
    assert not again.reml and again.loglik == pytest.approx(sleep_ml.loglik, abs=1e-8)
    np.testing.assert_allclose(again.params, sleep_ml.params, rtol=1e-8)
    assert again.refit(reml=True).loglik == pytest.approx(reml.loglik, abs=1e-8)


def test_varcomp_cov_balanced_one_way_closed_form():
    # Balanced one-way model: REML = ANOVA, with λ1 = σ²_e + nσ²_u and λ2 = σ²_e estimated by
    # SSB/(J-1) and SSW/(N-J); the inverse observed REML information is then exactly
    # var(λ1) = 2λ1²/(J-1), var(λ2) = 2λ2²/(N-J), mapped to (σ²_u, σ²_e) linearly.
    rng = np.random.default_rng(11)
    J, n = 30, 8
    g = np.repeat(np.arange(J), n)
    y = 3.0 + rng.normal(0, 0.8, J)[g] + rng.normal(0, 1.0, J * n)
    fit = mi.lmm("y ~ 1 + (1 | g)", pd.DataFrame({"y": y, "g": g}))
    means = y.reshape(J, n).mean(axis=1)
    l1 = n * np.sum((means - y.mean()) ** 2) / (J - 1)
    l2 = np.sum((y.reshape(J, n) - means[:, None]) ** 2) / (J * n - J)
    np.testing.assert_allclose(fit.varcomp().estimate, [(l1 - l2) / n, l2], rtol=1e-6)
    v1, v2 = 2 * l1**2 / (J - 1), 2 * l2**2 / (J * n - J)
    expected = np.array([[(v1 + v2) / n**2, -v2 / n], [-v2 / n, v2]])
    cov = fit.varcomp_cov()
    assert list(cov.index) == ["Intercept~~Intercept|g", "Residual~~Residual"]
    np.testing.assert_allclose(cov.to_numpy(), expected, rtol=1e-4)  # finite-difference Hessian


@pytest.mark.parametrize("reml", [True, False])
def test_varcomp_cov_matches_lmertest(sleep, reml, lme4_table):
    # lmerTest's vcov_varpar (numDeriv Hessian in (theta, sigma)) mapped to psi by the delta method
    ref = lme4_table(f"extra_sleep_varcompcov_{'reml' if reml else 'ml'}").to_numpy()
    cov = mi.lmm(SLEEP, sleep, reml=reml).varcomp_cov()
    assert list(cov.index) == ["Intercept~~Intercept|Subject", "Days~~Days|Subject",
                               "Intercept~~Days|Subject", "Residual~~Residual"]
    # both sides are finite-difference Hessians at slightly different optima
    np.testing.assert_allclose(cov.to_numpy(), ref, rtol=2e-3, atol=1e-3 * np.abs(ref).max())


def test_glmm_varcomp_cov_matches_lme4_hessian(lme4_data, lme4_table):
    js = lme4_data("JSPmiss")[["behaviour", "english", "sex", "school"]].dropna()
    ref = lme4_table("extra_jsp_logit_laplace_tight_vartau")["var_tau00"][0]
    cov = mi.glmm("behaviour ~ english + sex + (1 | school)", js).varcomp_cov()
    assert cov.shape == (1, 1) and cov.index[0] == "Intercept~~Intercept|school"
    assert cov.iloc[0, 0] == pytest.approx(ref, rel=2e-3)  # lme4's Hessian uses steps of 1e-4


def test_nested_and_sparse_solvers_agree(lme4_data):
    data = lme4_data("nested3")
    f = "y ~ x + z + (1 + x | school) + (1 | class)"
    a, b = mi.lmm(f, data, algebra="nested"), mi.lmm(f, data, algebra="sparse")
    assert a.loglik == pytest.approx(b.loglik, abs=1e-8)
    np.testing.assert_allclose(a.params, b.params, rtol=1e-7)
    np.testing.assert_allclose(a.tidy().std_error, b.tidy().std_error, rtol=1e-6)
    np.testing.assert_allclose(a.varcomp().estimate, b.varcomp().estimate, rtol=1e-5)
    p = a.covariance_parameters()
    assert a.loglik_at(**p) == pytest.approx(b.loglik_at(**p), abs=1e-8)


def test_row_order_does_not_matter(lme4_data):
    data = lme4_data("nested3")
    f = "y ~ x + z + (1 + x | school) + (1 | class)"
    shuffled = data.sample(frac=1.0, random_state=3)
    a, b = mi.lmm(f, data), mi.lmm(f, shuffled)
    assert a.loglik == pytest.approx(b.loglik, abs=1e-8)
    np.testing.assert_allclose(a.params, b.params, rtol=1e-7)


def test_glmm_nested_and_sparse_solvers_agree(lme4_data):
    data = lme4_data("logit_slope")
    a = mi.glmm("yb ~ x + (1 + x | g)", data, algebra="nested")
    b = mi.glmm("yb ~ x + (1 + x | g)", data, algebra="sparse")
    assert a.loglik == pytest.approx(b.loglik, abs=1e-7)
    np.testing.assert_allclose(a.params, b.params, rtol=1e-5)


def test_many_columns_few_groups_take_one_product_per_group():
    """``group_crossprods`` with many columns and few groups sums one matrix product per group
    (a 72-column GLMM on 40 groups took 316 s in pair products, 50 s so; helper 32): the same
    stack as the pair sums, and the same fit as the sparse solver, which does not use it."""
    from mlimpute.analysis._nested import group_crossprods

    rng = np.random.default_rng(8)
    Wt, w = rng.normal(size=(12, 60)), rng.uniform(0.2, 2.0, 60)
    starts = np.array([0, 7, 30, 31, 45])
    wide = group_crossprods(Wt, starts, w)               # 5 groups, 78 pairs: per group
    ends = np.append(starts[1:], 60)
    ref = np.stack([(Wt[:, a:b] * w[a:b]) @ Wt[:, a:b].T for a, b in zip(starts, ends)], axis=2)
    np.testing.assert_allclose(wide, ref, rtol=1e-13, atol=1e-13)
    assert np.array_equal(wide, wide.transpose(1, 0, 2))
    many = np.arange(0, 60, 2)                           # 30 groups, 78 pairs: pair products
    np.testing.assert_allclose(group_crossprods(Wt, many, w),
                               np.stack([(Wt[:, a:a + 2] * w[a:a + 2]) @ Wt[:, a:a + 2].T for a in many], axis=2),
                               rtol=1e-13, atol=1e-13)
    g = np.repeat(np.arange(6), 25)
    X = rng.normal(size=(150, 4))
    eta = X @ [0.5, -0.3, 0.2, 0.1] + rng.normal(0, 0.7, 6)[g]
    data = pd.DataFrame({"g": g, "a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "d": X[:, 3],
                         "yb": (rng.random(150) < 1 / (1 + np.exp(-eta))).astype(int)})
    f = "yb ~ a * b * c + d + (1 + a | g)"                # 10 columns + 2, 6 groups
    nested, sparse_ = mi.glmm(f, data, algebra="nested"), mi.glmm(f, data, algebra="sparse")
    assert nested.loglik == pytest.approx(sparse_.loglik, abs=1e-7)
    np.testing.assert_allclose(nested.params, sparse_.params, rtol=1e-5, atol=1e-7)


def _no_slope(seed):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(30), 15)
    x, z = rng.normal(size=450), rng.normal(size=450)
    y = 1 + 0.5 * x + rng.normal(0, 0.8, 30)[g] + rng.normal(size=450)   # no random slope of z
    return pd.DataFrame(dict(g=g, x=x, z=z, y=y, yb=(y + rng.normal(size=450) > 1).astype(int)))


@pytest.mark.parametrize("seed, family", [(4, "gaussian"), (5, "gaussian"), (4, "binomial")])
def test_singular_fit_keeps_the_interior_components_covariance(seed, family):
    """A random slope estimated at the boundary (Λ's second diagonal 0, a singular fit) has no
    regular asymptotic variance, nor its covariance; the intercept's variance and σ² do, and
    they were NaN too (so pooling dropped every interval of a model with a near-zero slope).
    Now computed on the boundary (the zero diagonal held at 0): close to the fit without the
    slope, whose model the boundary fit nearly is (theta's off-diagonal is 0.02-0.09)."""
    import warnings

    d = _no_slope(seed)
    fit, y = (mi.lmm, "y") if family == "gaussian" else (lambda f, d: mi.glmm(f, d, family="binomial"), "yb")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small, big = fit(f"{y} ~ x + (1 | g)", d), fit(f"{y} ~ x + (1 + z | g)", d)
        assert big.singular and not small.singular
    with pytest.warns(mi.ConvergenceWarning, match="varcomp_cov: boundary"):
        cov = big.varcomp_cov()
    with warnings.catch_warnings():   # computed once per fit (the pipeline counts its warning per imputation)
        warnings.simplefilter("error")
        pd.testing.assert_frame_equal(big.varcomp_cov(), cov)
    assert np.isnan(cov.loc["z~~z|g"]).all() and np.isnan(cov.loc["Intercept~~z|g"]).all()
    se_small = np.sqrt(np.diag(small.varcomp_cov()))
    keep = ["Intercept~~Intercept|g"] + (["Residual~~Residual"] if family == "gaussian" else [])
    np.testing.assert_allclose(np.sqrt(np.diag(cov.loc[keep, keep])), se_small, rtol=0.03)
    rows = [d.assign(imputation=k, y=d["y"] + 0.01 * k) for k in (1, 2, 3)] if family == "gaussian" else None
    if rows is not None:   # pooled: the interior rows keep their intervals
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            vc = mi.analyse(pd.concat(rows), "y ~ x + (1 + z | g)").varcomp()
        plain = vc["term2"].isna()
        for sel in (plain & (vc["group"] == "g") & (vc["term1"] == "Intercept"), vc["group"] == "Residual",
                    vc["term1"] == "ICC"):
            row = vc[sel].iloc[0]
            assert row["method"] != "mean_only" and row["conf_low"] < row["estimate"] < row["conf_high"], row
        assert (vc[plain & (vc["term1"] == "z")]["method"] == "mean_only").all()


def test_uncentred_predictors_fit_as_centred_ones():
    """A year and its square (columns 2000-2020 and 4e6): the solver works with centred and
    scaled columns, so the fit converges and equals the one on year - 2000 (before: not
    converged, the square's coefficient off by 2.5e-4 relative); REML's log|X'V⁻¹X| is mapped
    back, so the REML log-likelihood of x·1e6 differs from x's by log(1e6), as lme4's."""
    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(30), 10)
    year = rng.integers(2000, 2021, 300).astype(float)
    x = rng.normal(size=300)
    y = 0.05 * (year - 2010) + 0.07 * x + rng.normal(0, 0.7, 30)[g] + rng.normal(size=300)
    d = pd.DataFrame(dict(g=g, year=year, yc=year - 2000, x=x, y=y))
    a = mi.lmm("y ~ year + I(year**2) + (1 | g)", d)
    b = mi.lmm("y ~ yc + I(yc**2) + (1 | g)", d)
    assert a.converged and b.converged
    assert a.params.iloc[2] == pytest.approx(b.params.iloc[2], rel=1e-7)
    assert a.loglik == pytest.approx(b.loglik, abs=1e-7)        # the same column space, det T = 1
    assert np.sqrt(a.cov_params().iloc[2, 2]) == pytest.approx(np.sqrt(b.cov_params().iloc[2, 2]), rel=1e-6)
    c, e = mi.lmm("y ~ x + (1 | g)", d), mi.lmm("y ~ ts + (1 | g)", d.assign(ts=1.7e12 + 1e6 * d["x"]))
    assert e.params["ts"] * 1e6 == pytest.approx(c.params["x"], rel=1e-6)
    assert e.loglik == pytest.approx(c.loglik - np.log(1e6), abs=1e-6)


def test_random_slope_of_a_column_in_large_units():
    """(1 + xk | g) with xk = 1000 x + 500: the optimiser now works with θ scaled by each random
    column's size (θ of the slope ~1e-4 beside the intercept's ~1 before, and the REML optimum
    was missed by 5.6e-7, the slope variance by 2.3e-4, with converged=True). The fit equals the
    one on x, its covariance mapped by xk's affine map."""
    rng = np.random.default_rng(7)
    g = np.repeat(np.arange(40), 12)
    x = rng.normal(size=480)
    u = rng.multivariate_normal([0, 0], [[0.6, 0.05], [0.05, 0.3]], 40)
    y = 1 + 0.5 * x + u[g, 0] + u[g, 1] * x + rng.normal(size=480)
    d = pd.DataFrame(dict(g=g, x=x, xk=1000 * x + 500, y=y))
    a, b = mi.lmm("y ~ x + (1 + x | g)", d), mi.lmm("y ~ xk + (1 + xk | g)", d)
    assert a.converged and b.converged
    A = np.array([[1.0, -0.5], [0.0, 1e-3]])        # (u0 + u1 x) = (u0 - 0.5 u1) + (u1 / 1000) xk
    np.testing.assert_allclose(b.term_covs[0], A @ a.term_covs[0] @ A.T, rtol=2e-5)
    assert b.loglik == pytest.approx(a.loglik - np.log(1000), abs=1e-7)   # REML: X's column scaled by 1000


def test_glmm_random_slope_of_a_column_in_large_units():
    """As for the LMM: (1 + xk | g) with xk = 1000 x + 500 in a logit GLMM equals the fit on x
    mapped back (before the θ scaling: log-likelihood 6.7e-8 short, slope variance 1.1e-4 off)."""
    rng = np.random.default_rng(7)
    g = np.repeat(np.arange(60), 20)
    x = rng.normal(size=1200)
    u = rng.multivariate_normal([0, 0], [[0.6, 0.1], [0.1, 0.3]], 60)
    eta = -0.3 + 0.5 * x + u[g, 0] + u[g, 1] * x
    d = pd.DataFrame(dict(g=g, x=x, xk=1000 * x + 500, y=(rng.random(1200) < 1 / (1 + np.exp(-eta))).astype(int)))
    a = mi.glmm("y ~ x + (1 + x | g)", d, family="binomial")
    b = mi.glmm("y ~ xk + (1 + xk | g)", d, family="binomial")
    A = np.array([[1.0, -0.5], [0.0, 1e-3]])
    np.testing.assert_allclose(b.term_covs[0], A @ a.term_covs[0] @ A.T, rtol=1e-6)
    assert b.loglik == pytest.approx(a.loglik, abs=1e-9)


@pytest.mark.parametrize("formula", [
    "y ~ x + (1 + x | a) + (1 | b)",
    "y ~ x + (1 + x || a) + (x | b)",
    "y ~ x + (1 + x | mm(s1, s2, weights = (w1, w2))) + (1 | a)",
])
def test_sparse_system_matches_dense_construction(formula):
    """SparseAlgebra assembles A = ΛᵀZᵀWZΛ + I from pairs of entries of each row: held to the
    dense product of an explicit Z (a unit named twice in one row, with two weights, included),
    and log|A|, F and the modes to their dense formulas."""
    from mlimpute.analysis._design import build_design
    from mlimpute.analysis._sparse import SparseAlgebra
    from mlimpute.analysis._structure import Structure
    from mlimpute.analysis.formula import parse_formula

    rng = np.random.default_rng(7)
    n = 120
    s1, s2 = rng.integers(0, 9, n), rng.integers(0, 9, n)
    s2[:15] = s1[:15]                                        # the same unit twice in a row
    w1 = rng.uniform(0.2, 0.8, n)
    df = pd.DataFrame(dict(y=rng.normal(size=n), x=rng.normal(size=n), a=rng.integers(0, 7, n),
                           b=rng.integers(0, 4, n), s1=s1, s2=s2, w1=w1, w2=1 - w1))
    design = build_design(parse_formula(formula), df, kind="gaussian", na_action="raise")
    s = Structure.from_design(design)
    alg = SparseAlgebra(s, design)
    # dense Z and Λ written out level by level, without the solver's entries
    blocks = []
    for f in range(len(design.factors)):
        zf = np.hstack([design.terms[t].Z for t in s.factor_terms(f)])
        fac, q = design.factors[f], zf.shape[1]
        codes = fac.codes.reshape(n, -1)
        wts = np.ones_like(codes, dtype=float) if fac.weights is None else fac.weights.reshape(n, -1)
        Zf = np.zeros((n, fac.levels * q))
        for k in range(codes.shape[1]):
            for j in range(q):
                np.add.at(Zf, (np.arange(n), codes[:, k] * q + j), wts[:, k] * zf[:, j])
        blocks.append(Zf)
    Z = np.hstack(blocks)
    cols = np.column_stack([design.X, design.y])
    p = design.X.shape[1]
    for trial in range(3):
        theta = rng.uniform(0.2, 1.4, s.ntheta) * rng.choice([-1, 1], s.ntheta)
        w = None if trial == 0 else rng.uniform(0.05, 0.3, n)
        W = np.ones(n) if w is None else w
        Lam = np.zeros((Z.shape[1], Z.shape[1]))
        at = 0
        for f, lam in enumerate(s.factor_lambdas(theta)):
            for _ in range(design.factors[f].levels):
                q = lam.shape[0]
                Lam[at : at + q, at : at + q] = lam
                at += q
        ZL = Z @ Lam
        A = ZL.T @ (W[:, None] * ZL) + np.eye(Z.shape[1])
        C = ZL.T @ (W[:, None] * cols)
        F = cols.T @ (W[:, None] * cols) - C.T @ np.linalg.solve(A, C)
        sol = alg.solve(theta, w=w, z=None if w is None else design.y)
        assert sol.ldL2 == pytest.approx(np.linalg.slogdet(A)[1], rel=1e-10)
        np.testing.assert_allclose(sol.F, F, rtol=1e-9, atol=1e-9)
        beta = rng.normal(size=p)
        u = np.linalg.solve(A, C[:, -1] - C[:, :-1] @ beta)
        np.testing.assert_allclose(np.concatenate([b.ravel() for b in sol.u(beta)]), u, rtol=1e-9, atol=1e-10)
