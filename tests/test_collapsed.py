"""The collapsed move of a cross-categorical covariance with its latents (sampler.collapsed):
its target against a quadrature of IW(Ω) Π_i P_i(Ω) (scipy's densities and normal CDF, not
the code under test), the redrawn latents, and the pairs it applies to."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import mlimpute as mi
from mlimpute.impute import prepare
from mlimpute.sampler import initial_state, prepare_static, sweep
from mlimpute.sampler.collapsed import CollapsedPairs, collapsed_moves, collapsed_pairs


class _Codec:
    def __init__(self, kind, cols, codes, n_categories):
        self.kind, self.cols, self.codes, self.n_categories = kind, cols, codes, n_categories


def _setup(kind):
    """Rows of (continuous, binary, second categorical) with latents drawn from Ω; the second
    categorical is ordinal (3 categories) or nominal (3 categories: two latent components)."""
    rng = np.random.default_rng(0)
    n = 60
    if kind == "ordinal":
        omega = np.array([[1.5, 0.4, 0.3], [0.4, 1.0, 0.35], [0.3, 0.35, 1.0]])
    else:
        omega = np.array([[1.5, 0.4, 0.3, 0.2], [0.4, 1.0, 0.35, 0.1],
                          [0.3, 0.35, 1.0, 0.5], [0.2, 0.1, 0.5, 1.0]])
    p = omega.shape[0]
    mean = rng.normal(0, 0.5, (n, p))
    y = mean + rng.multivariate_normal(np.zeros(p), omega, n)
    codes_a = (y[:, 1] > 0).astype(np.int64)
    codes_a[:7] = -1                                      # some categories missing
    cuts = np.array([-np.inf, 0.0, 0.8, np.inf])
    if kind == "ordinal":
        codes_b = np.searchsorted(cuts, y[:, 2]) - 1
        second = _Codec("ordinal", (2,), codes_b, 3)
        blocks = [([1], np.ones((1, 1))), ([2], np.ones((1, 1)))]
    else:
        w = y[:, 2:4]
        codes_b = np.where(w.max(axis=1) > 0, w.argmax(axis=1), 2)
        codes_b[7:10] = -1
        second = _Codec("nominal", (2, 3), codes_b, 3)
        blocks = [([1], np.ones((1, 1))), ([2, 3], 0.5 * (np.eye(2) + 1))]
    con = mi.sampler.covariance.Constraint.build(p, blocks)
    return rng, omega, mean, y, (_Codec("binary", (1,), codes_a, 2), second), con, cuts


def _matches(draws, grid, logt, lags, rel_sd):
    """The chain's mean within 4 Monte Carlo SEs (autocorrelation-corrected) and its SD within
    ``rel_sd`` of the density exp(logt) on ``grid``."""
    wgt = np.exp(logt - logt.max())
    wgt /= wgt.sum()
    mu = (wgt * grid).sum()
    sd = np.sqrt((wgt * (grid - mu) ** 2).sum())
    ess = draws.size / (1 + 2 * sum(np.corrcoef(draws[:-k], draws[k:])[0, 1] for k in range(1, lags)))
    assert abs(draws.mean() - mu) < 4 * sd / np.sqrt(ess)
    assert draws.std() == pytest.approx(sd, rel=rel_sd)


def _interval(codec, a, y):
    """A direct transcription of the regions (latent module notes) for the quadrature."""
    codes = codec.codes
    lo, hi = np.full(codes.size, -np.inf), np.full(codes.size, np.inf)
    for i, k in enumerate(codes):
        if k < 0:
            continue
        if codec.kind == "binary":
            lo[i], hi[i] = (0.0, np.inf) if k == 1 else (-np.inf, 0.0)
        else:
            m = list(codec.cols).index(a)
            w = y[i, list(codec.cols)]
            if k == m:
                lo[i] = max(0.0, max(np.delete(w, m), default=-np.inf))
            elif k == codec.n_categories - 1:
                hi[i] = 0.0
            else:
                hi[i] = w[k]
    return codes >= 0, lo, hi


@pytest.mark.parametrize("kind, collapse", [("ordinal", 1), ("nominal", 1), ("nominal", 2)])
def test_move_targets_the_collapsed_conditional(kind, collapse):
    """Ω_ab's chain under repeated moves (the rest fixed) has the density IW(Ω) Π_i P_i(Ω)."""
    rng, omega, mean, y, cat1, con, cuts = _setup(kind)
    pairs = collapsed_pairs(cat1, con)
    keep = [t for t in range(len(pairs)) if pairs.a[t] == collapse and pairs.b[t] != collapse]
    keep = keep[:1]
    a, b = int(pairs.a[keep[0]]), int(pairs.b[keep[0]])
    pairs.a, pairs.b, pairs.codec = pairs.a[keep], pairs.b[keep], [pairs.codec[t] for t in keep]
    p = omega.shape[0]
    psi, nu = np.eye(p), float(p)
    draws = []
    om = omega.copy()
    yy = y.copy()
    steps = np.array([0.25])
    codec_a = cat1[0] if collapse == 1 else cat1[1]
    for it in range(6000):
        om, _, acc, _ = collapsed_moves(rng, ((a, pairs.codec[0]),), pairs, yy, mean, om, (psi, nu), cat1,
                                        (cuts,) if kind == "ordinal" else (), None, steps, np.zeros(0))
        draws.append(om[a, b])
        if it % 500 == 0:   # the redrawn latents keep the observed categories
            obs, lo, hi = _interval(codec_a, a, yy)
            assert np.all((yy[obs, a] > lo[obs]) & (yy[obs, a] <= hi[obs]))
    draws = np.array(draws[500:])
    obs, lo, hi = _interval(codec_a, a, y)
    grid = np.linspace(omega[a, b] - 0.8, omega[a, b] + 0.8, 800)
    logt = np.full(grid.size, -np.inf)
    others = [k for k in range(p) if k != a]
    for g, r in enumerate(grid):
        o = omega.copy()
        o[a, b] = o[b, a] = r
        if np.linalg.eigvalsh(o).min() <= 0:
            continue
        w = np.linalg.solve(o[np.ix_(others, others)], o[others, a])
        m = mean[obs, a] + (y[obs][:, others] - mean[obs][:, others]) @ w
        s = np.sqrt(o[a, a] - o[a, others] @ w)
        pr = stats.norm.cdf((hi[obs] - m) / s) - stats.norm.cdf((lo[obs] - m) / s)
        with np.errstate(divide="ignore"):
            logt[g] = stats.invwishart(df=nu, scale=psi).logpdf(o) + np.log(pr).sum()
    _matches(draws, grid, logt, lags=30, rel_sd=0.12)


def test_sampler_with_collapsed_moves_recovers_the_latent_correlation():
    """Two binary variables correlated 0.5 at level 1: the chain's Ω1[b1, b2] centres on it."""
    rng = np.random.default_rng(3)
    J, n = 60, 20
    g = np.repeat(np.arange(J), n)
    e = rng.multivariate_normal(np.zeros(2), [[1, 0.5], [0.5, 1]], J * n)
    u = rng.normal(0, 0.4, (J, 2))[g]
    df = pd.DataFrame({"g": g, "b1": (u[:, 0] + e[:, 0] > 0).astype(float),
                       "b2": (0.3 + u[:, 1] + e[:, 1] > 0).astype(float)})
    for c in ("b1", "b2"):
        df.loc[rng.random(J * n) < 0.15, c] = np.nan
    model = mi.ImputationModel(cluster="g", variables={"b1": "binary", "b2": "binary"})
    st = prepare_static(prepare(df, model))
    assert len(st.collapsed1) == 2
    r = np.random.default_rng(1)
    s = initial_state(st, r)
    draws = []
    for it in range(1500):
        s = sweep(r, st, s, adapt_at=it if it < 300 else None)
        if it >= 300:
            draws.append(s.omega1[1, 0])
    assert abs(np.mean(draws) - 0.5) < 0.1


def test_effect_move_targets_the_collapsed_conditional():
    """A cluster's random intercept of a binary latent under repeated moves (the rest fixed):
    the density N(u | its conditional prior) Π_i P(z_ia in its interval | u, z_i,-a), by
    quadrature with scipy's densities."""
    rng = np.random.default_rng(2)
    J, n, p = 3, 12, 2                                     # columns: continuous, binary
    omega1 = np.array([[1.0, 0.4], [0.4, 1.0]])
    omega2 = np.array([[0.5, 0.2, 0.1], [0.2, 0.6, 0.15], [0.1, 0.15, 0.4]])   # (u_cont, u_bin, u2)
    base = rng.normal(0, 0.3, (J * n, p))                  # X B
    u1 = rng.multivariate_normal(np.zeros(3), omega2, J)
    u2 = u1[:, 2:]
    u1 = np.ascontiguousarray(u1[:, :2])
    g = np.repeat(np.arange(J), n)
    y = base + u1[g] + rng.multivariate_normal(np.zeros(p), omega1, J * n)
    codes = (y[:, 1] > 0).astype(np.int64)
    codes[::5] = -1
    cat1 = (_Codec("binary", (1,), codes, 2),)
    Q = np.linalg.inv(omega1)
    draws = []
    uu, yy = u1.copy(), y.copy()
    mean = base + uu[g]
    steps = np.array([1.0])
    for it in range(8000):
        _, uu, _, acc = collapsed_moves(rng, ((1, 0),), CollapsedPairs([]), yy, mean, omega1, (np.eye(p), 2.0),
                                        cat1, (), (uu, u2, omega2, g), np.zeros(0), steps)
        draws.append(uu[0, 1])
        assert np.allclose(mean, base + uu[g])
    draws = np.array(draws[500:])
    # quadrature for cluster 0
    v_others = np.array([u1[0, 0], u2[0, 0]])
    w = np.linalg.solve(omega2[np.ix_([0, 2], [0, 2])], omega2[[0, 2], 1])
    m0, tau = v_others @ w, np.sqrt(omega2[1, 1] - omega2[1, [0, 2]] @ w)
    rows = np.flatnonzero((g == 0) & (codes >= 0))
    sd = np.sqrt(1 / Q[1, 1])
    grid = np.linspace(m0 - 4 * tau, m0 + 4 * tau, 1500)
    logt = stats.norm.logpdf(grid, m0, tau)
    for i in rows:
        cm = base[i, 1] + grid + omega1[1, 0] / omega1[0, 0] * (y[i, 0] - base[i, 0] - u1[0, 0])
        logt = logt + (stats.norm.logsf(0, cm, sd) if codes[i] == 1 else stats.norm.logcdf(0, cm, sd))
    _matches(draws, grid, logt, lags=40, rel_sd=0.1)
