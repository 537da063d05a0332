"""Collapsed moves of the covariances between categorical latents (issue 13, mixing).

Why
---
A covariance Ω1[a, b] between two categorical latent columns is pinned by the latents: given
both columns its conditional SD was about 0.018 where its posterior SD is 0.03–0.044, so the
Gibbs scan (Ω1 | latents, latents | Ω1) crawls (lag-1 autocorrelation 0.9+, bulk ESS ~40 per
1,000 sweeps even with many Metropolis–Hastings scans of the block given the latents).

The move
--------
For a categorical latent column a (a binary or ordinal variable's, or one component of a
nominal variable's) and a categorical latent column b of another variable, Ω_ab is updated with the latents of column a *integrated out*, then those latents
are drawn afresh from their conditional: a blocked update of (Ω_ab, z_a) given everything else.
With z_a integrated, row i contributes the probability that its latent falls in the interval
its category allows,

    P_i(Ω) = P(lo_i < N(m_i, s²) ≤ hi_i),   m_i = μ_ia − Σ_{k≠a} (Q_ak / Q_aa)(y_ik − μ_ik),
                                            s² = 1 / Q_aa,  Q = Ω⁻¹

(given the row's other columns a nominal component's region is an interval too, as in
``latent``; rows where the category is missing contribute 1), while the density of the other columns
N(μ_−a, Ω_−a,−a) does not involve Ω_ab. The target of Ω_ab is therefore

    IW(Ω; ν, Ψ) · Π_i P_i(Ω)          (the prior restricted to Ω's fixed blocks: a constant)

sampled by random-walk Metropolis–Hastings (step tuned in burn-in only, COLLAPSED_REPEATS
proposals a sweep, a proposal that is not positive definite rejected); then z_a | rest for every
row (truncated to its interval where the category is observed). The move runs once collapsing
each of the two columns. Each proposal costs one pass over the rows with the
category observed, O(N·p).

Random effects
--------------
The random intercepts of a categorical latent column are pinned by its latents in the same way
(and with them the level-2 covariances of categorical variables). The same blocking applies: a
cluster's u_ja with the column's latents integrated out has the target

    N(u_ja | the cluster's other level-2 effects; Ω2) · Π_{i∈j} P_i(m_i + δ)

(a shift δ of u_ja moves the conditional mean of each of the cluster's rows by δ), sampled by
random-walk Metropolis–Hastings for all clusters at once (independent given the rest,
EFFECT_REPEATS proposals a sweep).

One latent column at a time, the random-intercept move and then the moves of the column's
covariances run on the marginal with the column's latents integrated out (each leaves it
invariant; the rows' log P_i are kept per row between the intercept proposals), and the latents
are redrawn once at the end.

Scope: the two-level sampler with a common Ω1 and random intercepts only, without a
substantive model. Level-2 categorical variables and the classifications sampler keep the
block's Metropolis–Hastings scans given the latents as their only update.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from . import _kernels as kern
from ._small import log_iw_kernel, spd_inv

__all__ = ["CollapsedPairs", "collapsed_pairs", "collapsed_moves"]

COLLAPSED_REPEATS = 3   # proposals a sweep for each pair's covariance
EFFECT_REPEATS = 2      # and for each column's random intercepts (all clusters at once)


class CollapsedPairs:
    """The (a, b) pairs of the level-1 covariance that get a collapsed move: a a categorical
    latent column, b one of another categorical variable, Ω_ab free."""

    def __init__(self, pairs: list[tuple[int, int, int]]):
        self.a = np.array([p[0] for p in pairs], np.int64)
        self.b = np.array([p[1] for p in pairs], np.int64)
        self.codec = [p[2] for p in pairs]          # index into cat1 of a's variable

    def __len__(self) -> int:
        return int(self.a.size)


def collapsed_pairs(cat1, con) -> CollapsedPairs:
    """The pairs of ``cat1`` (the level-1 categorical codecs) whose covariance ``con`` leaves
    free (covariances between two categorical variables), collapsing each member in turn.
    (Covariances with continuous columns would qualify too; on the mixed design of
    ``benchmarks/bench_ess.py`` they raised the smallest bulk ESS per 1,000 sweeps from 78 and 56
    to 82 and 75 (seeds 1, 2) for 45% more time per sweep, no gain per second, so they keep
    their exact draw given the latents.)"""
    if con is None or not con.n_free:
        return CollapsedPairs([])
    owner = {col: k for k, c in enumerate(cat1) for col in c.cols}
    pairs = []
    for i, j in zip(*con.free):
        ci, cj = int(con.cat[i]), int(con.cat[j])
        for a, b in ((ci, cj), (cj, ci)):
            pairs.append((a, b, owner[a]))
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


def _intervals(codec, a: int, cuts: np.ndarray | None, y: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(observed mask, rows, lo, hi): the interval latent column ``a`` of ``codec``'s variable
    may take in each row with an observed category, given the row's other columns (as
    ``latent``: binary (−∞, 0] / (0, ∞); ordinal (γ_k, γ_k+1]; nominal component m: above
    max(0, the others) for category m, below component k for another category k, below 0 for
    the reference category)."""
    codes = codec.codes
    observed = codes >= 0
    rows = np.flatnonzero(observed)
    k = codes[rows]
    if codec.kind != "nominal":
        bounds = np.array([-np.inf, 0.0, np.inf]) if codec.kind == "binary" else cuts
        return observed, rows, np.ascontiguousarray(bounds[k]), np.ascontiguousarray(bounds[k + 1])
    cols = list(codec.cols)
    m = cols.index(a)
    w = y[rows][:, cols]
    others = np.delete(w, m, axis=1)
    top = np.maximum(0.0, others.max(axis=1)) if others.shape[1] else np.zeros(rows.size)
    ref = codec.n_categories - 1
    own = k == m
    lo = np.where(own, top, -np.inf)
    kk = np.minimum(k, w.shape[1] - 1)
    hi = np.where(own, np.inf, np.where(k == ref, 0.0, w[np.arange(rows.size), kk]))
    return observed, rows, np.ascontiguousarray(lo), np.ascontiguousarray(hi)


@njit(cache=True)
def row_logp(y, mean, q, s, a, rows, lo, hi, out):
    """out[t] = log P_i of row ``rows[t]`` at the current state."""
    for t in range(rows.size):
        i = rows[t]
        out[t] = kern._log_interval(_conditional(y, mean, q, a, i), s, lo[t], hi[t])


@njit(cache=True)
def effect_proposal(y, mean, q, s, a, rows, lo, hi, cluster, delta, cur, new, change):
    """Every row's log P_i with its cluster's intercept moved by delta[j] into ``new`` and the
    clusters' sums of new − cur into ``change``."""
    change[:] = 0.0
    for t in range(rows.size):
        i = rows[t]
        j = cluster[i]
        v = kern._log_interval(_conditional(y, mean, q, a, i) + delta[j], s, lo[t], hi[t])
        new[t] = v
        change[j] += v - cur[t]


@njit(cache=True)
def _shift_column(mean, a, cluster, delta):
    for i in range(mean.shape[0]):
        mean[i, a] += delta[cluster[i]]


def _precision_row(omega: np.ndarray, a: int):
    """(q, s) of column a (module notes) from Ω, or None if Ω is not positive definite."""
    Q, ok = spd_inv(np.ascontiguousarray(omega))
    if not ok:
        return None
    q = Q[a] / Q[a, a]
    q[a] = 0.0
    return q, 1.0 / math.sqrt(Q[a, a])


def collapsed_moves(rng: np.random.Generator, columns: tuple, pairs: CollapsedPairs, y1: np.ndarray,
                    mean: np.ndarray, omega: np.ndarray, prior: tuple[np.ndarray, float], cat1,
                    cuts1: tuple, effects: tuple | None, steps_pairs: np.ndarray,
                    steps_effects: np.ndarray):
    """Every collapsed move, one latent column a at a time (module notes): its random intercepts
    (``effects`` = (u1, u2, Ω2, cluster), or None), then Ω_ab for each of its pairs, all with
    a's latents integrated out (each step leaves that marginal invariant), then a's latents
    redrawn once. ``y1`` and ``mean`` (the rows' X1 B1 + U1) are updated in place. Returns Ω1,
    u1 (None without effects) and the acceptance rates of the pairs and of the columns' effects."""
    scale, df = prior
    ordinal = [c for c in cat1 if c.kind == "ordinal"]
    cut_of = {id(c): k for c, k in zip(ordinal, cuts1)}
    acc_pairs = np.zeros(len(pairs))
    acc_effects = np.zeros(len(columns))
    omega = omega.copy()
    n = y1.shape[0]
    u1 = None
    if effects is not None:
        u1, u2, omega2, cluster = effects
        u1 = u1.copy()
    for c, (a, k) in enumerate(columns):
        codec = cat1[k]
        observed, rows, lo, hi = _intervals(codec, a, cut_of.get(id(codec)), y1)
        q, s = _precision_row(omega, a)
        mine = np.flatnonzero(pairs.a == a)
        if effects is not None and steps_effects.size:
            cur = np.empty(rows.size)
            row_logp(y1, mean, q, s, a, rows, lo, hi, cur)
            new = np.empty(rows.size)
            J = u1.shape[0]
            change = np.empty(J)
            v = np.concatenate([u1, u2], axis=1)
            others = np.r_[0:a, a + 1:v.shape[1]]
            w = np.linalg.solve(omega2[np.ix_(others, others)], omega2[others, a])
            prior_mean = v[:, others] @ w
            tau = math.sqrt(omega2[a, a] - omega2[a, others] @ w)
            z = rng.standard_normal((EFFECT_REPEATS, J))
            logu = np.log(rng.random((EFFECT_REPEATS, J)))
            for r in range(EFFECT_REPEATS):
                delta = steps_effects[c] * tau * z[r]
                ua = u1[:, a]
                effect_proposal(y1, mean, q, s, a, rows, lo, hi, cluster, delta, cur, new, change)
                ratio = change - 0.5 * ((ua + delta - prior_mean) ** 2 - (ua - prior_mean) ** 2) / tau ** 2
                take = logu[r] < ratio
                delta = np.where(take, delta, 0.0)
                u1[:, a] = ua + delta
                _shift_column(mean, a, cluster, delta)
                moved = take[cluster[rows]]
                cur[moved] = new[moved]
                acc_effects[c] += take.mean() / EFFECT_REPEATS
            ll = float(cur.sum())
        elif mine.size:
            ll = interval_loglik(y1, mean, q, s, a, rows, lo, hi)
        for t in mine:
            b = int(pairs.b[t])
            lp = ll + log_iw_kernel(omega, df, scale)
            z = rng.standard_normal(COLLAPSED_REPEATS)
            logu = np.log(rng.random(COLLAPSED_REPEATS))
            for r in range(COLLAPSED_REPEATS):
                prop = omega.copy()
                prop[a, b] = prop[b, a] = omega[a, b] + steps_pairs[t] * z[r]
                qs = _precision_row(prop, a)
                if qs is None:
                    continue
                ll_new = interval_loglik(y1, mean, qs[0], qs[1], a, rows, lo, hi)
                lp_new = ll_new + log_iw_kernel(prop, df, scale)
                if np.isfinite(lp_new) and logu[r] < lp_new - lp:
                    omega, ll, lp, (q, s) = prop, ll_new, lp_new, qs
                    acc_pairs[t] += 1.0 / COLLAPSED_REPEATS
        redraw_column(y1, mean, q, s, a, observed, lo, hi, rng.standard_normal(n), 1.0 - rng.random(n))
    return omega, u1, acc_pairs, acc_effects
