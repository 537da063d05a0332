"""Collapsed moves of the covariances between categorical latents (issue 13, mixing).

Why
---
A covariance Ω1[a, b] between two categorical latent columns is pinned by the latents: given
both columns its conditional SD was about 0.018 where its posterior SD is 0.03–0.044, so the
Gibbs scan (Ω1 | latents, latents | Ω1) crawls (lag-1 autocorrelation 0.9+, bulk ESS ~40 per
1,000 sweeps even with many Metropolis–Hastings scans of the block given the latents).

The move
--------
For a binary or ordinal variable with latent column a and another categorical latent column b
(any kind), Ω_ab is updated with the latents of column a *integrated out*, then those latents
are drawn afresh from their conditional: a blocked update of (Ω_ab, z_a) given everything else.
With z_a integrated, row i contributes the probability that its latent falls in the interval
its category allows,

    P_i(Ω) = P(lo_i < N(m_i, s²) ≤ hi_i),   m_i = μ_ia − Σ_{k≠a} (Q_ak / Q_aa)(y_ik − μ_ik),
                                            s² = 1 / Q_aa,  Q = Ω⁻¹

(rows where the category is missing contribute 1), while the density of the other columns
N(μ_−a, Ω_−a,−a) does not involve Ω_ab. The target of Ω_ab is therefore

    IW(Ω; ν, Ψ) · Π_i P_i(Ω)          (the prior restricted to Ω's fixed blocks: a constant)

sampled by random-walk Metropolis–Hastings (step tuned in burn-in only, COLLAPSED_REPEATS
proposals a sweep, a proposal that is not positive definite rejected); then z_a | rest for every
row (truncated to its interval where the category is observed). When both columns are binary or
ordinal the move runs once collapsing each. Each proposal costs one pass over the rows with the
category observed, O(N·p).

Scope: the two-level sampler's level-1 covariance (common Ω1), for models without a
substantive model. Covariances between two nominal variables, at level 2 and in the
classifications sampler keep the block's Metropolis–Hastings scans given the latents.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from . import _kernels as kern
from ._small import log_iw_kernel, spd_inv

__all__ = ["CollapsedPairs", "collapsed_pairs", "collapsed_moves"]

COLLAPSED_REPEATS = 5


class CollapsedPairs:
    """The (a, b) pairs of the level-1 covariance that get a collapsed move: a a binary or
    ordinal variable's latent column, b another categorical latent column, Ω_ab free."""

    def __init__(self, pairs: list[tuple[int, int, int]]):
        self.a = np.array([p[0] for p in pairs], np.int64)
        self.b = np.array([p[1] for p in pairs], np.int64)
        self.codec = [p[2] for p in pairs]          # index into cat1 of a's variable

    def __len__(self) -> int:
        return int(self.a.size)


def collapsed_pairs(cat1, con) -> CollapsedPairs:
    """The pairs of ``cat1`` (the level-1 categorical codecs) whose covariance ``con`` leaves
    free, collapsing every binary or ordinal member."""
    if con is None or not con.n_free:
        return CollapsedPairs([])
    single = {c.cols[0]: k for k, c in enumerate(cat1) if c.kind in ("binary", "ordinal")}
    pairs = []
    for i, j in zip(*con.free):
        ci, cj = int(con.cat[i]), int(con.cat[j])
        for a, b in ((ci, cj), (cj, ci)):
            if a in single:
                pairs.append((a, b, single[a]))
    return CollapsedPairs(pairs)


@njit(cache=True)
def _conditional(y, mean, q, a, i):
    """m_i of the module notes (``q`` = Q[a] / Q[a, a] with q[a] = 0)."""
    acc = 0.0
    for k in range(y.shape[1]):
        acc += q[k] * (y[i, k] - mean[i, k])
    return mean[i, a] - acc


@njit(cache=True)
def interval_loglik(y, mean, q, s, a, rows, lo, hi):
    """Σ over ``rows`` of log P(lo < N(m_i, s²) ≤ hi)."""
    total = 0.0
    for t in range(rows.size):
        i = rows[t]
        total += kern._log_interval(_conditional(y, mean, q, a, i), s, lo[t], hi[t])
    return total


@njit(cache=True)
def redraw_column(y, mean, q, s, a, observed, lo, hi, z, u):
    """z_a | rest for every row: within its interval where ``observed`` (rows' positions in
    lo/hi: the running count), else unrestricted; ``z`` normals, ``u`` uniforms in (0, 1]."""
    t = 0
    for i in range(y.shape[0]):
        m = _conditional(y, mean, q, a, i)
        if observed[i]:
            l, h = lo[t], hi[t]
            t += 1
            if np.isinf(l) and np.isinf(h):
                y[i, a] = m + s * z[i]
            elif np.isinf(h):
                y[i, a] = kern.one_sided(m, s, l, 1.0, u[i])
            elif np.isinf(l):
                y[i, a] = kern.one_sided(m, s, h, -1.0, u[i])
            else:
                y[i, a] = kern.two_sided(m, s, l, h, u[i])
        else:
            y[i, a] = m + s * z[i]


@njit(cache=True)
def _row_of_precision(omega):
    Q, ok = spd_inv(omega)
    return Q, ok


def _intervals(codec, cuts: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(observed mask, rows, lo, hi) of a binary or ordinal variable's latent intervals."""
    codes = codec.codes
    observed = codes >= 0
    rows = np.flatnonzero(observed)
    k = codes[rows]
    bounds = np.array([-np.inf, 0.0, np.inf]) if codec.kind == "binary" else cuts
    return observed, rows, np.ascontiguousarray(bounds[k]), np.ascontiguousarray(bounds[k + 1])


def collapsed_moves(rng: np.random.Generator, pairs: CollapsedPairs, y1: np.ndarray, mean: np.ndarray,
                    omega: np.ndarray, prior: tuple[np.ndarray, float], cat1, cuts1: tuple,
                    steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The collapsed move of every pair (module notes); ``y1`` is updated in place. Returns Ω1
    and the acceptance rate of each pair's proposals."""
    scale, df = prior
    ordinal = [c for c in cat1 if c.kind == "ordinal"]
    cut_of = {id(c): k for c, k in zip(ordinal, cuts1)}
    accepted = np.zeros(len(pairs))
    omega = omega.copy()
    mean = np.ascontiguousarray(mean)
    n = y1.shape[0]
    for t in range(len(pairs)):
        a, b = int(pairs.a[t]), int(pairs.b[t])
        codec = cat1[pairs.codec[t]]
        observed, rows, lo, hi = _intervals(codec, cut_of.get(id(codec)))

        def state(om):
            Q, ok = _row_of_precision(om)
            if not ok:
                return None
            q = Q[a] / Q[a, a]
            q[a] = 0.0
            s = 1.0 / math.sqrt(Q[a, a])
            return q, s, interval_loglik(y1, mean, q, s, a, rows, lo, hi) + log_iw_kernel(om, df, scale)

        cur = state(omega)
        z = rng.standard_normal(COLLAPSED_REPEATS)
        logu = np.log(rng.random(COLLAPSED_REPEATS))
        for r in range(COLLAPSED_REPEATS):
            prop = omega.copy()
            prop[a, b] = prop[b, a] = omega[a, b] + steps[t] * z[r]
            new = state(prop)
            if new is not None and np.isfinite(new[2]) and logu[r] < new[2] - cur[2]:
                omega, cur = prop, new
                accepted[t] += 1.0 / COLLAPSED_REPEATS
        q, s, _ = cur
        redraw_column(y1, mean, q, s, a, observed, lo, hi, rng.standard_normal(n), 1.0 - rng.random(n))
    return omega, accepted
