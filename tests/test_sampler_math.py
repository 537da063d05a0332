"""The sampler's building blocks against closed forms."""

import numpy as np
import pytest
from scipy import stats

from mlimpute.sampler.linalg import back_solve_t, cond_normal, draw_mvn_precision, forward_solve, invwishart


def _spd(rng, d, batch=()):
    a = rng.normal(size=batch + (d, d))
    return a @ np.swapaxes(a, -1, -2) + d * np.eye(d)


def test_triangular_solves():
    rng = np.random.default_rng(0)
    L = np.linalg.cholesky(_spd(rng, 4, (7,)))
    b = rng.normal(size=(7, 4))
    assert np.allclose(np.einsum("jab,jb->ja", L, forward_solve(L, b)), b)
    assert np.allclose(np.einsum("jba,jb->ja", L, back_solve_t(L, b)), b)


def test_draw_mvn_precision_moments():
    rng = np.random.default_rng(1)
    P = _spd(rng, 3)
    b = rng.normal(size=3)
    n = 200_000
    x = draw_mvn_precision(np.broadcast_to(P, (n, 3, 3)), np.broadcast_to(b, (n, 3)), rng.standard_normal((n, 3)))
    cov = np.linalg.inv(P)
    # Monte Carlo SE of a mean is sqrt(var/n) < 0.002 here; 5 SE tolerance.
    assert x.mean(0) == pytest.approx(cov @ b, abs=5 * np.sqrt(cov.diagonal().max() / n))
    assert np.cov(x, rowvar=False) == pytest.approx(cov, abs=0.01 * cov.max())


def test_invwishart_matches_scipy_moments():
    rng = np.random.default_rng(2)
    psi = _spd(rng, 3)
    df = 9.0
    n = 100_000
    draws = invwishart(rng, df, np.broadcast_to(psi, (n, 3, 3)))
    mean = psi / (df - 3 - 1)
    # Var of IW entries is finite for df > p + 3; tolerance 5 Monte Carlo SEs of the mean.
    se = draws.std(axis=0) / np.sqrt(n)
    assert np.all(np.abs(draws.mean(0) - mean) < 5 * se)
    # and the distribution of one entry against scipy's sampler (two-sample KS)
    ref = stats.invwishart(df=df, scale=psi).rvs(size=20_000, random_state=rng)
    assert stats.ks_2samp(draws[:20_000, 0, 1], ref[:, 0, 1]).pvalue > 1e-3
    assert stats.ks_2samp(draws[:20_000, 2, 2], ref[:, 2, 2]).pvalue > 1e-3


def test_invwishart_single_and_batched_df():
    rng = np.random.default_rng(3)
    out = invwishart(rng, np.array([5.0, 50.0]), np.stack([np.eye(2), np.eye(2)]))
    assert out.shape == (2, 2, 2)
    assert np.allclose(out, np.swapaxes(out, -1, -2))
    assert np.all(np.linalg.eigvalsh(out) > 0)


def test_cond_normal_against_direct_formula():
    rng = np.random.default_rng(4)
    S = _spd(rng, 4)
    miss = np.array([True, False, True, False])
    K, C = cond_normal(S, miss)
    m, o = miss, ~miss
    K_ref = S[np.ix_(m, o)] @ np.linalg.inv(S[np.ix_(o, o)])
    V_ref = S[np.ix_(m, m)] - K_ref @ S[np.ix_(o, m)]
    assert np.allclose(K, K_ref)
    assert np.allclose(C @ C.T, V_ref)
    # all missing: the marginal
    K2, C2 = cond_normal(S, np.ones(4, bool))
    assert K2.shape == (4, 0) and np.allclose(C2 @ C2.T, S)
