"""Compiled loops of the classifications sampler (numba): adding units' random effects to the
rows' means, summing rows by unit, the batched exact draw of every unit's effects, and the
row-weighted sums of variance functions.

Random numbers come from the chain's numpy Generator in bulk, as in ``_kernels``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._small import chol

__all__ = ["fixed_part", "add_unit_effects", "add_membership_effects", "unit_sums",
           "membership_sums", "draw_units_full", "unit_precisions", "logvar_change"]


@njit(cache=True)
def fixed_part(x, b, out, add):
    """out = X B (rows × responses), or out += X B with ``add``."""
    n, f = x.shape
    p = b.shape[1]
    for i in range(n):
        for l in range(p):
            v = 0.0
            for a in range(f):
                v += x[i, a] * b[a, l]
            out[i, l] = out[i, l] + v if add else v


@njit(cache=True)
def add_unit_effects(out, unit, A, sign):
    """out[i] += sign · A[unit[i]] (single membership)."""
    n, p = out.shape
    for i in range(n):
        k = unit[i]
        for l in range(p):
            out[i, l] += sign * A[k, l]


@njit(cache=True)
def add_membership_effects(out, ids, weights, A, sign):
    """out[i] += sign · Σ_m w_im A[ids[i, m]] (ids −1: absent)."""
    n, p = out.shape
    for i in range(n):
        for m in range(ids.shape[1]):
            k = ids[i, m]
            if k < 0:
                continue
            w = sign * weights[i, m]
            for l in range(p):
                out[i, l] += w * A[k, l]


@njit(cache=True)
def unit_sums(R, unit, K):
    """Σ of the rows of R in each unit (K × p)."""
    n, p = R.shape
    out = np.zeros((K, p))
    for i in range(n):
        k = unit[i]
        for l in range(p):
            out[k, l] += R[i, l]
    return out


@njit(cache=True)
def membership_sums(R, ids, weights, K):
    """W'R with W the (rows × units) membership weights."""
    n, p = R.shape
    out = np.zeros((K, p))
    for i in range(n):
        for m in range(ids.shape[1]):
            k = ids[i, m]
            if k < 0:
                continue
            w = weights[i, m]
            for l in range(p):
                out[k, l] += w * R[i, l]
    return out


# ------------------------------------------------------------------------------------------
# Variance functions: rows with covariance D_i^½ Ω1 D_i^½, rs = D_i^-½ (1 where no function)
# ------------------------------------------------------------------------------------------
@njit(cache=True)
def unit_precisions(y, mu, rs, om_inv, unit, K):
    """Per unit k: A_k = Σ_{i∈k} Ω_i⁻¹ (K, p, p) and Σ_{i∈k} Ω_i⁻¹ (y_i − μ_i) (K, p)."""
    n, p = y.shape
    A = np.zeros((K, p, p))
    h = np.zeros((K, p))
    for i in range(n):
        k = unit[i]
        for l in range(p):
            for m in range(p):
                wlm = rs[i, l] * om_inv[l, m] * rs[i, m]
                A[k, l, m] += wlm
                h[k, l] += wlm * (y[i, m] - mu[i, m])
    return A, h


@njit(cache=True)
def draw_units_full(prior_prec, Qk, h, z):
    """Every unit's effects from N(P_k⁻¹ h_k, P_k⁻¹), P_k = prior_prec + Qk[k]."""
    K, r = h.shape
    out = np.zeros((K, r))
    P = np.empty((r, r))
    t = np.empty(r)
    for k in range(K):
        for i in range(r):
            for j in range(r):
                P[i, j] = prior_prec[i, j] + Qk[k, i, j]
        L, ok = chol(P)
        if not ok:
            return out, False
        for i in range(r):
            v = h[k, i]
            for j in range(i):
                v -= L[i, j] * t[j]
            t[i] = v / L[i, i]
        for i in range(r):
            t[i] += z[k, i]
        for i in range(r - 1, -1, -1):
            v = t[i]
            for j in range(i + 1, r):
                v -= L[j, i] * out[k, j]
            out[k, i] = v / L[i, i]
    return out, True


@njit(cache=True)
def logvar_change(e, rs, om_inv, col, delta, unit, K):
    """The level-1 log-likelihood change, per unit (``unit`` given) or in all (``K`` = 1 and
    unit = None-like zeros), when every row's log-variance of column ``col`` moves by
    ``delta[i]``: −½ Δ_i − ½ (q_i' − q_i), q_i = ẽ_i'Ω1⁻¹ẽ_i, ẽ = e ∘ rs (only ẽ_col changes,
    by the factor exp(−Δ_i/2))."""
    n, p = e.shape
    out = np.zeros(K)
    for i in range(n):
        d = delta[i]
        if d == 0.0:
            continue
        old = e[i, col] * rs[i, col]
        new = old * math.exp(-0.5 * d)
        cross = 0.0
        for m in range(p):
            if m != col:
                cross += om_inv[col, m] * e[i, m] * rs[i, m]
        dq = om_inv[col, col] * (new * new - old * old) + 2.0 * cross * (new - old)
        out[unit[i]] += -0.5 * d - 0.5 * dq
    return out


@njit(cache=True)
def logvar_stats(y, mu, rs, om_inv, col, group, G):
    """Per group g (a value of a dummy-like covariate, or a unit): the count and the sums
    SA = Σ Ω⁻¹_vv ẽ_iv² and SB = Σ ẽ_iv Σ_{m≠v} Ω⁻¹_vm ẽ_im of the scaled residuals ẽ = (y − μ) rs,
    v = ``col``. If every row of group g has its log-variance moved by c_g δ, the level-1
    log-likelihood changes by −½ n_g c_g δ − ½ SA_g (e^{−c_g δ} − 1) − SB_g (e^{−c_g δ/2} − 1):
    a proposal then costs O(groups), not O(rows)."""
    n, p = y.shape
    cnt = np.zeros(G)
    SA = np.zeros(G)
    SB = np.zeros(G)
    for i in range(n):
        ev = (y[i, col] - mu[i, col]) * rs[i, col]
        cross = 0.0
        for m in range(p):
            if m != col:
                cross += om_inv[col, m] * (y[i, m] - mu[i, m]) * rs[i, m]
        g = group[i]
        cnt[g] += 1.0
        SA[g] += om_inv[col, col] * ev * ev
        SB[g] += ev * cross
    return cnt, SA, SB


@njit(cache=True)
def scale_column(rs, col, group, factor):
    """rs[i, col] *= factor[group[i]]."""
    for i in range(rs.shape[0]):
        rs[i, col] *= factor[group[i]]


@njit(cache=True, inline="always")
def _change(d, c, cnt, SA, SB):
    cd = c * d
    return -0.5 * cnt * cd - 0.5 * SA * math.expm1(-cd) - SB * math.expm1(-0.5 * cd)


@njit(cache=True)
def mh_shared(c, cnt, SA, SB, step, z, logu):
    """Random-walk MH on one shift δ of every group's log-variance by c_g δ (a γ component);
    ``z``/``logu``: a normal and a log-uniform per proposal. Returns the total move and the
    number of proposals accepted."""
    total = 0.0
    accepted = 0
    for t in range(z.size):
        d = total + step * z[t]
        change = 0.0
        for g in range(c.size):
            change += _change(d, c[g], cnt[g], SA[g], SB[g]) - _change(total, c[g], cnt[g], SA[g], SB[g])
        if logu[t] < change:
            total = d
            accepted += 1
    return total, accepted


@njit(cache=True)
def mh_units(cnt, SA, SB, mean, sd, cur, step, z, logu):
    """Random-walk MH on every unit's log-variance effect v_k (prior N(mean_k, sd²), moves from
    ``cur`` at the start, when the statistics were taken), each accepted on its own; ``z``,
    ``logu``: (proposals, units). Returns the new v and the share of proposals accepted."""
    K = cur.size
    out = cur.copy()
    accepted = 0
    for t in range(z.shape[0]):
        for k in range(K):
            prop = out[k] + step * sd * z[t, k]
            dl = (_change(prop - cur[k], 1.0, cnt[k], SA[k], SB[k])
                  - _change(out[k] - cur[k], 1.0, cnt[k], SA[k], SB[k]))
            dp = -0.5 * ((prop - mean[k]) ** 2 - (out[k] - mean[k]) ** 2) / (sd * sd)
            if logu[t, k] < dl + dp:
                out[k] = prop
                accepted += 1
    return out, accepted / (z.shape[0] * K)


@njit(cache=True)
def weighted_gradient(x, y, mu, rs, om_inv):
    """g = vec(X' (rs ∘ ((rs ∘ (y − μ)) Ω1⁻¹))) (variable-major), one pass, no temporaries."""
    n, f = x.shape
    p = y.shape[1]
    g = np.zeros(p * f)
    e = np.empty(p)
    for i in range(n):
        for m in range(p):
            e[m] = (y[i, m] - mu[i, m]) * rs[i, m]
        for l in range(p):
            v = 0.0
            for m in range(p):
                v += om_inv[l, m] * e[m]
            v *= rs[i, l]
            for a in range(f):
                g[l * f + a] += x[i, a] * v
    return g
