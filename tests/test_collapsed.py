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
from mlimpute.sampler.collapsed import collapsed_moves, collapsed_pairs


class _Codec:
    def __init__(self, kind, cols, codes, n_categories):
        self.kind, self.cols, self.codes, self.n_categories = kind, cols, codes, n_categories


def test_move_targets_the_collapsed_conditional():
    rng = np.random.default_rng(0)
    n, p = 60, 3                                          # columns: continuous, binary a, ordinal b
    omega = np.array([[1.5, 0.4, 0.3], [0.4, 1.0, 0.35], [0.3, 0.35, 1.0]])
    mean = rng.normal(0, 0.5, (n, p))
    y = mean + rng.multivariate_normal(np.zeros(p), omega, n)
    codes_a = (y[:, 1] > 0).astype(np.int64)
    codes_a[:7] = -1                                      # some categories missing
    cuts = np.array([-np.inf, 0.0, 0.8, np.inf])
    codes_b = np.searchsorted(cuts, y[:, 2]) - 1
    cat1 = (_Codec("binary", (1,), codes_a, 2), _Codec("ordinal", (2,), codes_b, 3))
    con = mi.sampler.covariance.Constraint.build(p, [([1], np.ones((1, 1))), ([2], np.ones((1, 1)))])
    pairs = collapsed_pairs(cat1, con)
    assert list(zip(pairs.a, pairs.b)) == [(2, 1), (1, 2)]   # both binary/ordinal: each collapsed
    # only the pair collapsing a = column 1 (binary)
    pairs.a, pairs.b, pairs.codec = pairs.a[1:], pairs.b[1:], pairs.codec[1:]
    psi, nu = np.eye(p), float(p)
    draws = []
    om = omega.copy()
    yy = y.copy()
    steps = np.array([0.25])
    for it in range(6000):
        om, acc = collapsed_moves(rng, pairs, yy, mean, om, (psi, nu), cat1, (cuts,), steps)
        draws.append(om[1, 2])
        # the redrawn latents respect the observed categories
        if it % 500 == 0:
            obs = codes_a >= 0
            assert np.array_equal((yy[obs, 1] > 0).astype(int), codes_a[obs])
    draws = np.array(draws[500:])
    # the target by quadrature: IW prior at Ω(ρ) times Π_i P(z_ia in its interval | z_i,-a)
    grid = np.linspace(-0.5, 0.9, 700)
    logt = np.full(grid.size, -np.inf)
    obs = codes_a >= 0
    lo = np.where(codes_a[obs] == 1, 0.0, -np.inf)
    hi = np.where(codes_a[obs] == 1, np.inf, 0.0)
    for g, r in enumerate(grid):
        o = omega.copy()
        o[1, 2] = o[2, 1] = r
        if np.linalg.eigvalsh(o).min() <= 0:
            continue
        others = [0, 2]
        w = np.linalg.solve(o[np.ix_(others, others)], o[others, 1])
        m = mean[obs, 1] + (y[obs][:, others] - mean[obs][:, others]) @ w
        s = np.sqrt(o[1, 1] - o[1, others] @ w)
        pr = stats.norm.cdf((hi - m) / s) - stats.norm.cdf((lo - m) / s)
        logt[g] = stats.invwishart(df=nu, scale=psi).logpdf(o) + np.log(pr).sum()
    wgt = np.exp(logt - logt.max())
    wgt /= wgt.sum()
    mu = (wgt * grid).sum()
    sd = np.sqrt((wgt * (grid - mu) ** 2).sum())
    ess = draws.size / (1 + 2 * sum(np.corrcoef(draws[:-k], draws[k:])[0, 1] for k in range(1, 30)))
    assert abs(draws.mean() - mu) < 4 * sd / np.sqrt(ess)
    assert draws.std() == pytest.approx(sd, rel=0.12)


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
