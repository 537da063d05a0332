"""The binomial substantive outcome's collapsed block (``sampler.outcome_collapsed``): its pieces
against densities written out with scipy, and the posterior with and without it."""

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.special import log_expit

import mlimpute as mi
from mlimpute.sampler import outcome_collapsed as oc
from mlimpute.sampler.collapsed import _log_q

LINKS = {"probit": oc.PROBIT, "logit": oc.LOGIT}


def _log_f(link, t):
    return stats.norm.logcdf(t) if link == "probit" else log_expit(t)


@pytest.mark.parametrize("link", LINKS)
def test_row_terms_are_log_f_and_its_derivatives(link):
    eps = 1e-5
    for s in (-1.0, 1.0):
        for eta in (-45.0, -8.0, -1.3, 0.0, 0.7, 6.0, 45.0):
            lp, d1, d2 = oc._terms(LINKS[link], s, eta)
            f = lambda e: _log_f(link, s * e)   # noqa: E731
            assert lp == pytest.approx(f(eta), rel=1e-10, abs=1e-300)
            assert d1 == pytest.approx((f(eta + eps) - f(eta - eps)) / (2 * eps), rel=1e-5, abs=1e-9)
            assert d2 == pytest.approx((f(eta + eps) - 2 * f(eta) + f(eta - eps)) / eps ** 2, rel=1e-3, abs=1e-5)


def _problem(seed, J=6, nf=3, q=2):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 9, J)
    cl = np.repeat(np.arange(J), sizes)
    n = cl.size
    D = np.column_stack([np.ones(n), rng.normal(size=(n, nf - 1)), np.ones(n), rng.normal(size=(n, q - 1))])
    rows = np.sort(rng.choice(n, n - 3, replace=False))      # three rows with a missing outcome
    sgn = np.zeros(n)
    sgn[rows] = np.where(rng.random(rows.size) < 0.4, 1.0, -1.0)
    beta = rng.normal(size=nf) * 0.5
    b = rng.normal(size=(J, q)) * 0.6
    a = rng.normal(size=(q, q))
    cov = a @ a.T + 0.3 * np.eye(q)
    off = rng.normal(size=n) * 0.3
    return rng, D, nf, np.arange(q), cl, rows, sgn, off, beta, b, cov


def _brute_rows(link, D, nf, cols, cl, rows, sgn, off, beta, b):
    eta = off + D[:, :nf] @ beta + np.einsum("ik,ik->i", D[:, nf + cols], b[cl])
    return _log_f(link, sgn[rows] * eta[rows]), cl[rows]


@pytest.mark.parametrize("link", LINKS)
def test_effects_terms_against_the_rows_written_out(link):
    rng, D, nf, cols, cl, rows, sgn, off, beta, b, cov = _problem(1)
    n, (J, q) = D.shape[0], b.shape
    base = off + D[:, :nf] @ beta
    rl, r1, r2 = np.zeros(n), np.zeros(n), np.zeros(n)
    lp, g, H = oc.effects_terms(LINKS[link], D, nf, cols, cl, rows, sgn, base, b, rl, r1, r2)

    def unit_lp(bb, j):
        l, c = _brute_rows(link, D, nf, cols, cl, rows, sgn, off, beta, bb)
        return l[c == j].sum()

    eps = 1e-5
    for j in range(J):
        assert lp[j] == pytest.approx(unit_lp(b, j), rel=1e-10)
        for a in range(q):
            e = np.zeros((J, q))
            e[j, a] = eps
            assert g[j, a] == pytest.approx((unit_lp(b + e, j) - unit_lp(b - e, j)) / (2 * eps), rel=1e-5, abs=1e-8)
            for c in range(q):
                f = np.zeros((J, q))
                f[j, c] = eps
                num = (unit_lp(b + e + f, j) - unit_lp(b + e - f, j) - unit_lp(b - e + f, j)
                       + unit_lp(b - e - f, j)) / (4 * eps ** 2)
                assert -H[j, a, c] == pytest.approx(num, rel=1e-3, abs=1e-4)
    # the fixed effects' terms, with the effects' part as the addend
    add = off + np.einsum("ik,ik->i", D[:, nf + cols], b[cl])
    fx = np.zeros(n)
    w, gb, Hb = oc.fixed_terms(LINKS[link], D, nf, rows, sgn, beta, add, fx, rl, r1, r2)

    def total(bt):
        return _brute_rows(link, D, nf, cols, cl, rows, sgn, off, bt, b)[0].sum()

    assert w == pytest.approx(total(beta), rel=1e-10)
    assert np.allclose(fx[rows], (D[:, :nf] @ beta)[rows])
    for a in range(nf):
        e = np.zeros(nf)
        e[a] = eps
        assert gb[a] == pytest.approx((total(beta + e) - total(beta - e)) / (2 * eps), rel=1e-5, abs=1e-8)
    num = np.array([[(total(beta + ea + ec) - total(beta + ea - ec) - total(beta - ea + ec) + total(beta - ea - ec))
                     / (4 * eps ** 2) for ec in np.eye(nf) * eps] for ea in np.eye(nf) * eps])
    assert np.allclose(-Hb, num, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("link", LINKS)
@pytest.mark.parametrize("k", [0, 1])
def test_scale_target_is_the_posterior_along_the_group(link, k):
    """log π(g_α θ) + log |J_α(θ)| on the group's Haar measure (du, u = log α), written out with
    scipy: the rows' likelihood, every unit's N(α-scaled b_j; 0, AΣA), IW(AΣA; ν, Ψ), and the
    Jacobian α^(J + q + 1) of (b, Σ) → (b·A, AΣA) (one block of width q)."""
    rng, D, nf, cols, cl, rows, sgn, off, beta, b, cov = _problem(2)
    n, (J, q) = D.shape[0], b.shape
    nu = q + 1.5
    a = rng.normal(size=(q, q))
    psi = a @ a.T + np.eye(q)

    def brute(u):
        A = np.eye(q)
        A[k, k] = np.exp(u)
        bb, S = b @ A, A @ cov @ A
        return (_brute_rows(link, D, nf, cols, cl, rows, sgn, off, beta, bb)[0].sum()
                + stats.multivariate_normal(np.zeros(q), S).logpdf(bb).sum()
                + stats.invwishart(nu, psi).logpdf(S) + (J + q + 1) * u)

    inv = np.linalg.inv(cov)
    p2 = psi[k, k] * inv[k, k]
    p1 = 2.0 * sum(psi[k, m] * inv[m, k] for m in range(q) if m != k)
    fx = off + D[:, :nf] @ beta
    rz = np.einsum("ik,ik->i", D[:, nf + cols], b[cl])
    scratch = [np.zeros(n) for _ in range(4)]

    def kernel(u):
        return oc.scale_terms(LINKS[link], D, nf, cols, cl, rows, sgn, fx, rz, b, k, u, nu, p2, p1, *scratch)

    w0 = kernel(0.0)[0]
    eps = 1e-5
    for u in (-0.7, -0.1, 0.2, 0.9):
        w, G, Hn = kernel(u)
        assert w - w0 == pytest.approx(brute(u) - brute(0.0), rel=1e-8, abs=1e-8)
        assert G == pytest.approx((brute(u + eps) - brute(u - eps)) / (2 * eps), rel=1e-5, abs=1e-6)
        assert Hn == pytest.approx(-(brute(u + eps) - 2 * brute(u) + brute(u - eps)) / eps ** 2, rel=1e-3, abs=1e-3)
        assert np.allclose(scratch[0][rows], (rz + (np.exp(u) - 1) * D[:, nf + k] * b[cl, k])[rows])


def test_newton_proposal_is_the_stated_normal():
    """The proposal N(θ + (h²/2)P⁻¹∇, h²P⁻¹), P = H + V⁻¹, and its log density ``_log_q`` up to
    a constant that does not depend on P (the forward and reverse proposals have different P)."""
    rng = np.random.default_rng(3)
    h = oc.H_STEP
    consts = []
    for _ in range(3):
        q = 3
        a, c = rng.normal(size=(q, q)), rng.normal(size=(q, q))
        H, Vinv = a @ a.T + 0.5 * np.eye(q), c @ c.T + 0.5 * np.eye(q)
        theta, grad, eps = rng.normal(size=q), rng.normal(size=q), rng.normal(size=q)
        L, t, mean, prop = np.zeros((q, q)), np.empty(q), np.empty(q), np.empty(q)
        assert oc._newton(theta, grad, H, Vinv, h, eps, L, t, mean, prop)
        P = H + Vinv
        assert np.allclose(mean, theta + 0.5 * h * h * np.linalg.solve(P, grad - Vinv @ theta))
        assert np.allclose(L @ L.T, P)
        assert np.allclose(prop, mean + h * np.linalg.solve(L.T, eps))
        for x in (prop, rng.normal(size=q)):
            consts.append(_log_q(x, mean, L, h) - stats.multivariate_normal(mean, h * h * np.linalg.inv(P)).logpdf(x))
    assert np.ptp(consts) < 1e-9
    L = np.zeros((2, 2))
    assert not oc._newton(np.zeros(2), np.zeros(2), -np.eye(2), np.zeros((2, 2)), h, np.zeros(2), L, np.empty(2),
                          np.empty(2), np.empty(2))


def test_block_keeps_its_state_consistent():
    """β, b and Σ_b move (the steps are taken), Σ_b stays symmetric positive definite with the
    effects scaled with it, and η is written at the rows with an observed outcome only."""
    rng, D, nf, cols, cl, rows, sgn, off, beta, b, cov = _problem(4, J=40)
    n, (J, q) = D.shape[0], b.shape
    eta = np.full(n, np.nan)
    moved = np.zeros(3)
    for _ in range(20):
        nb, nbb, ncov = oc.block(oc.PROBIT, D, nf, cols, cl, rows, sgn, off, beta, b, cov, np.eye(q),
                                 np.full(q, float(q)), rng.standard_normal((J, q)), np.log(rng.random(J)),
                                 rng.standard_normal(nf), np.log(rng.random()), rng.standard_normal(q),
                                 np.log(rng.random(q)), eta)
        moved += [not np.array_equal(nb, beta), not np.array_equal(nbb, b), not np.array_equal(ncov, cov)]
        assert np.allclose(ncov, ncov.T) and np.all(np.linalg.eigvalsh(ncov) > 0)
        expect = off + D[:, :nf] @ nb + np.einsum("ik,ik->i", D[:, nf + cols], nbb[cl])
        assert np.allclose(eta[rows], expect[rows])
        beta, b, cov = nb, nbb, ncov
    assert np.all(moved >= 5)
    assert np.isnan(np.delete(eta, rows)).all()


def _data(seed, crossed=False):
    rng = np.random.default_rng(seed)
    J = 40
    g = np.repeat(np.arange(J), rng.integers(5, 21, J))
    N = g.size
    z = rng.normal(size=N)
    x = 0.4 * z + rng.normal(0, 0.7, J)[g] + rng.normal(size=N)
    eta = -0.3 + 0.5 * x + 0.3 * z + rng.normal(0, 0.7, J)[g] + rng.normal(0, 0.5, J)[g] * x
    df = pd.DataFrame({"g": g, "y": (eta + rng.normal(size=N) > 0).astype(int), "x": x, "z": z})
    df.loc[rng.random(N) < 0.3, "x"] = np.nan
    df.loc[rng.random(N) < 0.05, "y"] = np.nan
    if crossed:
        df["h"] = rng.integers(0, 10, N)
    return df


@pytest.mark.parametrize("link,crossed", [("probit", False), ("logit", False), ("probit", True)])
def test_posterior_is_the_same_with_and_without_the_block(link, crossed, monkeypatch):
    """Long runs with the block and without it on the same data: every monitored parameter's
    posterior mean agrees within 4.5 combined Monte Carlo SEs (from each chain pair's bulk ESS)."""
    df = _data(11, crossed)
    formula = "y ~ x + z + (1 + x | g)" + (" + (1 | h)" if crossed else "")
    model = mi.ImputationModel(cluster=mi.Crossed("g", "h") if crossed else "g", variables={"x": "continuous"},
                               substantive=formula, family="binomial", link=link)
    out = {}
    for on in (True, False):
        monkeypatch.setattr(oc, "ENABLED", on)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = mi.impute(df, model, n_imputations=2, burn=300, between=3000, chains=2, seed=5)
        d = res.diagnostics().set_index("parameter").reindex(res.parameter_names)
        draws = np.concatenate(list(res.traces))
        out[on] = (draws.mean(0), draws.std(0) / np.sqrt(d.ess_bulk.to_numpy()))
    z = (out[True][0] - out[False][0]) / np.hypot(out[True][1], out[False][1])
    worst = int(np.argmax(np.abs(z)))
    assert np.abs(z).max() < 4.5, (res.parameter_names[worst], z[worst])


@pytest.mark.parametrize("link", LINKS)
def test_block_alone_leaves_the_posterior_invariant(link):
    """The block iterated on its own (q = 1: the effects, β, and the scale move that carries
    σ² with them) is a chain on p(β, b, σ² | y) with a flat prior on β and IW(ν, ψ) on σ²; its
    means of β, b_1 and log σ² against importance sampling from a t fitted to the posterior
    (a reference that shares no code with the block). Fails (|z| 11–36) without the effects' or
    the fixed effects' Hastings terms or with ν + 1 in the scale's target."""
    from scipy import optimize

    from mlimpute.diagnostics import ess_bulk

    rng = np.random.default_rng(5)
    J, m, nf, nu, psi = 5, 5, 2, 3.0, 1.0
    cl = np.repeat(np.arange(J), m)
    n = cl.size
    D = np.column_stack([np.ones(n), rng.normal(size=n), np.ones(n)])
    sgn = np.where(0.3 + 0.8 * D[:, 1] + rng.normal(0, 0.8, J)[cl] + rng.normal(size=n) > 0, 1.0, -1.0)

    def log_target(th):        # (β0, β1, b_1..b_J, u = log σ²), with the Jacobian of u
        th = np.atleast_2d(th)
        b, u = th[:, 2:2 + J], th[:, -1]
        eta = th[:, [0]] + th[:, [1]] * D[:, 1] + b[:, cl]
        return (_log_f(link, sgn * eta).sum(1) - 0.5 * (b ** 2).sum(1) / np.exp(u) - 0.5 * J * u
                - (nu / 2 + 1) * u - psi / (2 * np.exp(u)) + u)

    mode = optimize.minimize(lambda t: -log_target(t)[0], np.zeros(J + 3), method="BFGS")
    prop = stats.multivariate_t(mode.x, 2.0 * mode.hess_inv, df=4)
    for size in (200_000, 400_000):   # a second t fitted to the first's weighted moments
        X = prop.rvs(size, random_state=rng)
        lw = log_target(X) - prop.logpdf(X)
        w = np.exp(lw - lw.max())
        w /= w.sum()
        mu = w @ X
        prop = stats.multivariate_t(mu, 1.3 * (X - mu).T @ ((X - mu) * w[:, None]), df=6)
    F = X[:, [0, 1, 2, J + 2]]
    ref = w @ F
    ref_se = np.sqrt(w ** 2 @ (F - ref) ** 2)

    beta, b, cov = np.zeros(nf), np.zeros((J, 1)), np.full((1, 1), 0.5)
    args = (LINKS[link], D, nf, np.arange(1), cl, np.arange(n), sgn, np.zeros(n))
    T, burn = 40_000, 2_000
    out = np.empty((T, 4))
    for t in range(T):
        beta, b, cov = oc.block(*args, beta, b, cov, np.full((1, 1), psi), np.full(1, nu),
                                rng.standard_normal((J, 1)), np.log(rng.random(J)), rng.standard_normal(nf),
                                np.log(rng.random()), rng.standard_normal(1), np.log(rng.random(1)), np.zeros(n))
        out[t] = beta[0], beta[1], b[0, 0], np.log(cov[0, 0])
    out = out[burn:]
    se = out.std(0) / np.sqrt([ess_bulk(out[None, :, k]) for k in range(4)])
    z = (out.mean(0) - ref) / np.hypot(se, ref_se)
    assert np.abs(z).max() < 4, z
