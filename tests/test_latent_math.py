"""Exact truncated-normal draws, interval probabilities and the constrained covariance draw."""

import numpy as np
import pytest
from scipy import integrate, stats

from mlimpute.sampler.covariance import Constraint, complete_given_block, draw_covariance, log_iw_kernel
from mlimpute.sampler.latent import cuts_to_codes, log_interval_prob, one_sided_normal, truncated_normal
from mlimpute.sampler.linalg import invwishart


@pytest.mark.parametrize("mean, sd, lo, hi", [
    (0.0, 1.0, 0.0, np.inf),        # binary, second category
    (1.3, 0.7, -np.inf, 0.0),       # binary, first category, mean above the cut
    (-0.4, 1.2, 0.3, 1.1),          # ordinal middle category
    (-6.0, 1.0, 0.0, np.inf),       # far tail (P ≈ 1e-9)
    (3.0, 0.5, -np.inf, -2.0),      # far tail on the other side
])
def test_truncated_normal_is_exact(mean, sd, lo, hi):
    rng = np.random.default_rng(0)
    n = 50_000
    x = truncated_normal(rng, np.full(n, mean), sd, np.full(n, lo), np.full(n, hi))
    assert np.all((x > lo) & (x < hi)) or np.all((x >= lo) & (x <= hi))
    ref = stats.truncnorm((lo - mean) / sd, (hi - mean) / sd, loc=mean, scale=sd)
    # KS against the exact CDF: p-value far from 0 for an exact sampler (fixed seed).
    assert stats.kstest(x, ref.cdf).pvalue > 1e-3


@pytest.mark.parametrize("mean, sd, bound, side", [
    (0.3, 1.0, 0.0, 1.0), (0.3, 1.0, 0.0, -1.0), (-5.0, 0.8, 0.0, 1.0), (4.0, 1.3, -1.0, -1.0),
    (0.0, 2.0, np.inf, -1.0),   # unrestricted
])
def test_one_sided_normal_is_exact(mean, sd, bound, side):
    rng = np.random.default_rng(5)
    n = 50_000
    x = one_sided_normal(rng, np.full(n, mean), sd, np.full(n, bound), np.full(n, side))
    lo, hi = (bound, np.inf) if side > 0 else (-np.inf, bound)
    assert np.all((x >= lo) & (x <= hi))
    ref = stats.truncnorm((lo - mean) / sd, (hi - mean) / sd, loc=mean, scale=sd)
    assert stats.kstest(x, ref.cdf).pvalue > 1e-3
    far = one_sided_normal(rng, np.zeros(1000), 1.0, np.full(1000, 40.0), np.ones(1000))
    assert np.all(far > 40.0) and np.all(np.isfinite(far))


def test_truncated_normal_extreme_tail_uses_log_space():
    rng = np.random.default_rng(1)
    # P(N(0,1) > 40) ≈ 4e-350 underflows in linear space: the log-space branch must still be exact.
    x = truncated_normal(rng, np.zeros(20_000), 1.0, np.full(20_000, 40.0), np.full(20_000, np.inf))
    assert np.all(x > 40.0) and np.all(np.isfinite(x))
    # Beyond a, the excess is ≈ Exponential(rate a): mean 1/a (Mills ratio) to ~1/a² = 6e-4
    # relative; its SD is also ≈ 1/a, so 20,000 draws give a Monte Carlo SE of 0.7% of the
    # mean: rel=0.03 is over 4 SE.
    assert np.mean(x - 40.0) == pytest.approx(1 / 40.0, rel=0.03)


def test_log_interval_prob():
    lo = np.array([-np.inf, 0.0, 8.0, -45.0])
    hi = np.array([0.0, 1.0, np.inf, -40.0])
    got = log_interval_prob(np.zeros(4), 1.0, lo, hi)
    ref = [np.log(0.5), np.log(stats.norm.cdf(1) - 0.5), stats.norm.logsf(8.0),
           stats.norm.logcdf(-40.0) + np.log1p(-np.exp(stats.norm.logcdf(-45.0) - stats.norm.logcdf(-40.0)))]
    assert got == pytest.approx(ref, rel=1e-10)


def test_cuts_to_codes():
    cuts = np.array([-np.inf, 0.0, 0.7, np.inf])
    assert cuts_to_codes(cuts, np.array([-3.0, 0.0, 0.1, 0.7, 5.0])).tolist() == [0, 0, 1, 1, 2]


def test_block_decomposition_reproduces_the_inverse_wishart():
    """Ω_cc ~ IW(ν − s, Ψ_cc) then the rest | Ω_cc (complete_given_block) is IW(ν, Ψ)."""
    rng = np.random.default_rng(2)
    a = rng.normal(size=(5, 5))
    psi = a @ a.T + 5 * np.eye(5)
    nu = 14.0
    c, f = np.array([1, 3]), np.array([0, 2, 4])
    n = 12_000
    direct = invwishart(rng, nu, np.broadcast_to(psi, (n, 5, 5)))
    occ = invwishart(rng, nu - 3, np.broadcast_to(psi[np.ix_(c, c)], (n, 2, 2)))
    composed = np.stack([complete_given_block(rng, nu, psi, c, f, o) for o in occ])
    se = np.hypot(direct.std(0), composed.std(0)) / np.sqrt(n)
    # every mean and every second moment within 4.5 Monte Carlo SEs
    assert np.all(np.abs(direct.mean(0) - composed.mean(0)) < 4.5 * se)
    # and the whole distribution of every entry (two-sample KS, 15 entries: threshold 1e-4)
    for i, j in zip(*np.tril_indices(5)):
        assert stats.ks_2samp(direct[:, i, j], composed[:, i, j]).pvalue > 1e-4, (i, j)


def test_constrained_mh_matches_the_restricted_density():
    """Two binary latents (unit variances): the free correlation's draws follow the restricted
    IW density, checked against its mean by quadrature."""
    rng = np.random.default_rng(3)
    con = Constraint.build(3, [([0], np.ones((1, 1))), ([1], np.ones((1, 1)))])
    scale = np.array([[30.0, 12.0, 3.0], [12.0, 25.0, -2.0], [3.0, -2.0, 20.0]])
    df = 40.0
    s = 1  # the free (continuous) column
    sub = scale[:2, :2]

    def dens(r):
        return np.exp(log_iw_kernel(np.array([[1.0, r], [r, 1.0]]), df - s, sub))

    norm = integrate.quad(dens, -0.999, 0.999)[0]
    mean_r = integrate.quad(lambda r: r * dens(r), -0.999, 0.999)[0] / norm
    sd_r = np.sqrt(integrate.quad(lambda r: r * r * dens(r), -0.999, 0.999)[0] / norm - mean_r**2)
    omega = np.eye(3)
    steps = np.array([0.15])
    draws = []
    for _ in range(8_000):
        omega, _ = draw_covariance(rng, df, scale, con, omega, steps)
        draws.append(omega[1, 0])
        assert omega[0, 0] == 1.0 and omega[1, 1] == 1.0
    draws = np.array(draws[500:])
    # MCSE with autocorrelation: batch means over 50 batches.
    batches = draws[: len(draws) // 50 * 50].reshape(50, -1).mean(1)
    mcse = batches.std(ddof=1) / np.sqrt(50)
    assert abs(draws.mean() - mean_r) < 4 * mcse
    assert draws.std() == pytest.approx(sd_r, rel=0.1)


def test_nominal_block_is_fixed_exactly():
    rng = np.random.default_rng(4)
    con = Constraint.build(4, [([1, 2, 3], 0.5 * (np.eye(3) + np.ones((3, 3))))])
    a = rng.normal(size=(4, 4))
    scale = a @ a.T + 10 * np.eye(4)
    omega, acc = draw_covariance(rng, 30.0, scale, con, np.eye(4), np.zeros(0))
    assert acc.size == 0
    assert np.allclose(omega[1:, 1:], 0.5 * (np.eye(3) + np.ones((3, 3))))
    assert np.all(np.linalg.eigvalsh(omega) > 0)
