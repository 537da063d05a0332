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

__all__ = ["fixed_part", "fixed_and_units", "add_unit_effects", "add_membership_effects", "unit_sums",
           "membership_sums", "draw_units_full", "scale_column", "mh_shared", "mh_units", "cell_moves",
           "batch_matvec", "shift_log_ratio", "shift_line"]


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
def fixed_and_units(x, b, unit, A, out, add):
    """out = X B + A[unit] (the level-1 means with one single-membership classification), or
    out += X B + A[unit] with ``add`` (μ1 after B1 and those effects moved by B and A), one pass."""
    n, f = x.shape
    p = b.shape[1]
    for i in range(n):
        k = unit[i]
        for l in range(p):
            v = A[k, l]
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


# ------------------------------------------------------------------------------------------
# Variance functions: moves of groups' log-variances (statistics from ``_vf_kernels.eta_stats``)
# ------------------------------------------------------------------------------------------
@njit(cache=True)
def scale_column(rs, col, group, factor):
    """rs[i, col] *= factor[group[i]]."""
    for i in range(rs.shape[0]):
        rs[i, col] *= factor[group[i]]


@njit(cache=True, inline="always")
def _change(d, c, cnt, SA):
    """The log-likelihood change of a group (count, SA = Σ η̃²/s²) whose log-variances move by c d."""
    cd = c * d
    return -0.5 * cnt * cd - 0.5 * SA * math.expm1(-cd)


@njit(cache=True)
def mh_shared(c, cnt, SA, step, z, logu):
    """Random-walk MH on one shift δ of every group's log-variance by c_g δ (a γ component);
    ``z``/``logu``: a normal and a log-uniform per proposal. Returns the total move and the
    number of proposals accepted."""
    total = 0.0
    accepted = 0
    for t in range(z.size):
        d = total + step * z[t]
        change = 0.0
        for g in range(c.size):
            change += _change(d, c[g], cnt[g], SA[g]) - _change(total, c[g], cnt[g], SA[g])
        if logu[t] < change:
            total = d
            accepted += 1
    return total, accepted


@njit(cache=True)
def mh_units(cnt, SA, mean, sd, cur, step, z, logu):
    """Random-walk MH on every unit's log-variance effect v_k (prior N(mean_k, sd²), moves from
    ``cur`` at the start, when the statistics were taken), each accepted on its own; ``z``,
    ``logu``: (proposals, units). Returns the new v and the share of proposals accepted."""
    K = cur.size
    out = cur.copy()
    now = np.zeros(K)                 # the change at out (0 at the start)
    accepted = 0
    for t in range(z.shape[0]):
        for k in range(K):
            prop = out[k] + step * sd * z[t, k]
            new = _change(prop - cur[k], 1.0, cnt[k], SA[k])
            dp = -0.5 * ((prop - mean[k]) ** 2 - (out[k] - mean[k]) ** 2) / (sd * sd)
            if logu[t, k] < new - now[k] + dp:
                out[k] = prop
                now[k] = new
                accepted += 1
    return out, accepted / (z.shape[0] * K)


@njit(cache=True)
def cell_moves(q, rho, count, groups, vals, nvals, steps, zg, lg, unit, mean, sd, start, ustep, zu, lu):
    """The moves of ``multi.draw_variance_functions`` for a function with cells: each covariate
    j's γ_j (``mh_shared`` on the groups of cells ``groups[j]`` with values ``vals[j, :nvals[j]]``,
    proposals ``zg[j]``, ``lg[j]``), then the units' log-variance effects (``mh_units``; ``unit``
    each cell's unit, empty without an effect); the cells' ρ (``q``: their g'E_c g) move in
    place. Returns γ's moves, their acceptances, the units' new effects and their rate."""
    C = q.size
    J = groups.shape[0]
    totals = np.zeros(J)
    accepted = np.zeros(J)
    L = vals.shape[1]
    cnt = np.empty(L)
    SA = np.empty(L)
    for j in range(J):
        nv = nvals[j]
        cnt[:] = 0.0
        SA[:] = 0.0
        for c in range(C):
            g = groups[j, c]
            cnt[g] += count[c]
            SA[g] += rho[c] * q[c]
        total, n_acc = mh_shared(vals[j, :nv], cnt[:nv], SA[:nv], steps[j], zg[j], lg[j])
        totals[j] = total
        accepted[j] = n_acc
        if total != 0.0:
            for c in range(C):
                rho[c] *= math.exp(-vals[j, groups[j, c]] * total)
    if unit.size == 0:
        return totals, accepted, start.copy(), 0.0
    K = start.size
    cntk = np.zeros(K)
    SAk = np.zeros(K)
    for c in range(C):
        k = unit[c]
        cntk[k] += count[c]
        SAk[k] += rho[c] * q[c]
    cur, rate = mh_units(cntk, SAk, mean, sd, start, ustep, zu, lu)
    for c in range(C):
        k = unit[c]
        rho[c] *= math.exp(start[k] - cur[k])
    return totals, accepted, cur, rate


@njit(cache=True)
def batch_matvec(A, x):
    """out[k] = A[k] @ x[k] for stacks (K, p, p) and (K, p)."""
    K, p = x.shape
    out = np.zeros((K, p))
    for k in range(K):
        for a in range(p):
            acc = 0.0
            for b in range(p):
                acc += A[k, a, b] * x[k, b]
            out[k, a] = acc
    return out


@njit(cache=True)
def shift_log_ratio(delta, lin, quad, shape, Q, s2):
    """The log target ratio of ``multi.shift_logvar`` (``lin`` = e'Λ Σ_k u_k, ``quad`` = K e'Λe)."""
    return delta * lin - 0.5 * quad * delta ** 2 - shape * delta - 0.5 * Q / s2 * math.expm1(-delta)


@njit(cache=True)
def shift_line(lin, quad, shape, Q, s2, deltas, logu):
    """Random-walk MH along the line of ``multi.shift_logvar`` (proposals ``deltas`` from the
    current point, ``logu`` log-uniforms). Returns the total move and s² after it."""
    total = 0.0
    for t in range(deltas.size):
        d = deltas[t]
        if logu[t] < shift_log_ratio(d, lin, quad, shape, Q, s2):
            lin -= quad * d            # Σ_k u_k moves by −K δ e_v
            s2 *= math.exp(d)
            total += d
    return total, s2
