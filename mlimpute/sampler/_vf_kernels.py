"""Compiled row loops of variance functions (numba).

A variable v with a variance function has a heteroscedastic residual *given the level-1
variables before it* (its lead: the variables without a function O, then the earlier ones with),
``e_v = b_v'e_lead + √d_iv η_v``, ``η_v ~ N(0, s_v²)``; e_O ~ N(0, Ω1[O, O]). Row i's density is
the product of these factors, so its precision is additive::

    W_i = A0 + Σ_j ρ_ij g_j g_j',   A0 = Ω1[O, O]⁻¹ (zeros elsewhere),
    g_j = (e_v − b_v) / s_v (1 at v, −b_v on its lead),   ρ_ij = 1 / d_iv = rs[i, v]²

(with every d = 1 it is Ω1⁻¹, partitioned). Every level-1 step therefore costs O(p·m) per row
beyond the homoscedastic one: ``G`` holds the g_j as rows, ``vcols`` the columns v, ``rs`` the
rows' d^-½ (1 in the other columns).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from . import _kernels as kern
from ._small import chol_into

__all__ = ["vf_latent_column", "vf_ordinal_ratio", "vf_missing_rows", "vf_moments",
           "vf_normal_equations", "vf_unit_precisions", "eta_stats", "eta_change"]


@njit(cache=True, inline="always")
def _precision_row(A0, G, rs, vcols, i, c, w):
    """w = W_i[c, :]."""
    p = A0.shape[0]
    for k in range(p):
        w[k] = A0[c, k]
    for j in range(vcols.size):
        gc = G[j, c]
        if gc == 0.0:
            continue
        f = rs[i, vcols[j]] ** 2 * gc
        for k in range(p):
            w[k] += f * G[j, k]


@njit(cache=True, inline="always")
def _conditional_mean(y, mean, i, c, w):
    acc = 0.0
    for k in range(y.shape[1]):
        if k != c:
            acc += w[k] * (y[i, k] - mean[i, k])
    return mean[i, c] - acc / w[c]


@njit(cache=True)
def vf_latent_column(y, mean, A0, G, rs, vcols, c, kind, codes, cols, m, cuts, u):
    """``_kernels.latent_column`` with each row's precision W_i (its conditional of column c:
    mean μ_c − Σ_{k≠c} W_ck e_k / W_cc, variance 1/W_cc)."""
    K = cols.size + 1 if kind == kern.NOMINAL else cuts.size - 1
    w = np.empty(y.shape[1])
    for i in range(y.shape[0]):
        code = codes[i]
        if code < 0:
            continue
        _precision_row(A0, G, rs, vcols, i, c, w)
        cm = _conditional_mean(y, mean, i, c, w)
        y[i, c] = kern.draw_category_latent(y, i, cm, 1.0 / math.sqrt(w[c]), kind, code, cols, m, K, cuts, u[i])


@njit(cache=True)
def vf_ordinal_ratio(y, mean, A0, G, rs, vcols, c, codes, new, old, k):
    """``_kernels.ordinal_loglik_ratio`` with each row's precision W_i."""
    w = np.empty(y.shape[1])
    total = 0.0
    for i in range(y.shape[0]):
        code = codes[i]
        if code != k and code != k - 1:
            continue
        _precision_row(A0, G, rs, vcols, i, c, w)
        cm = _conditional_mean(y, mean, i, c, w)
        sd = 1.0 / math.sqrt(w[c])
        total += kern._log_interval(cm, sd, new[code], new[code + 1])
        total -= kern._log_interval(cm, sd, old[code], old[code + 1])
    return total


@njit(cache=True)
def vf_missing_rows(y, mean, rows, pid, masks, A0, G, rs, vcols, z):
    """Missing cells of every row with a hole from N(μ_m − W_mm⁻¹ W_mo e_o, W_mm⁻¹), W = W_i;
    ``z``: one standard normal per missing cell in row order (the draw is μ + L'⁻¹(L⁻¹h + z),
    L L' = W_mm). False if a W_mm was not positive definite. No allocation inside the loop."""
    p = masks.shape[1]
    e = np.empty(p)
    idx = np.empty(p, np.int64)
    w = np.empty(p)
    L = np.empty((p, p))
    h = np.empty(p)
    t = np.empty(p)
    pos = 0
    for r in range(rows.size):
        i = rows[r]
        g = pid[r]
        nm = 0
        for a in range(p):
            if masks[g, a]:
                idx[nm] = a
                nm += 1
                e[a] = 0.0
            else:
                e[a] = y[i, a] - mean[i, a]
        for s in range(nm):
            _precision_row(A0, G, rs, vcols, i, idx[s], w)
            acc = 0.0
            for b in range(p):
                acc -= w[b] * e[b]        # e is 0 at the missing cells
            h[s] = acc
            for q in range(s + 1):
                L[s, q] = w[idx[q]]
        if not chol_into(L, nm):          # L L' = W_mm
            return False
        for s in range(nm):
            v = h[s]
            for k in range(s):
                v -= L[s, k] * t[k]
            t[s] = v / L[s, s]
        for s in range(nm):
            t[s] += z[pos + s]
        for s in range(nm - 1, -1, -1):
            v = t[s]
            for k in range(s + 1, nm):
                v -= L[k, s] * t[k]
            t[s] = v / L[s, s]
            y[i, idx[s]] = mean[i, idx[s]] + t[s]
        pos += nm
    return True


@njit(cache=True)
def vf_moments(y, mu, rs, vcols):
    """Σ e e' (p × p) and, per function j, Σ ρ_ij e e' (the rows weighted by 1/d_ij), e = y − μ."""
    n, p = y.shape
    m = vcols.size
    M0 = np.zeros((p, p))
    Mw = np.zeros((m, p, p))
    e = np.empty(p)
    for i in range(n):
        for a in range(p):
            e[a] = y[i, a] - mu[i, a]
        for a in range(p):
            for b in range(a + 1):
                M0[a, b] += e[a] * e[b]
        for j in range(m):
            w = rs[i, vcols[j]] ** 2
            for a in range(p):
                wa = w * e[a]
                for b in range(a + 1):
                    Mw[j, a, b] += wa * e[b]
    for a in range(p):
        for b in range(a):
            M0[b, a] = M0[a, b]
            for j in range(m):
                Mw[j, b, a] = Mw[j, a, b]
    return M0, Mw


@njit(cache=True)
def vf_normal_equations(x, y, mu, A0, G, rs, vcols, xtx):
    """B1's precision Σ_i W_i ⊗ x_i x_i' = A0 ⊗ X'X + Σ_j g_j g_j' ⊗ X' diag(ρ_j) X and linear
    term Σ_i vec(x_i (W_i e_i)') (variable-major), in one pass: O(N·(p² + p·f + m·f²))."""
    n, f = x.shape
    p = y.shape[1]
    m = vcols.size
    S = np.zeros((m, f, f))          # X' diag(ρ_j) X, lower triangles
    grad = np.zeros((p, f))
    e = np.empty(p)
    we = np.empty(p)
    for i in range(n):
        for a in range(p):
            e[a] = y[i, a] - mu[i, a]
        for a in range(p):
            acc = 0.0
            for b in range(p):
                acc += A0[a, b] * e[b]
            we[a] = acc
        for j in range(m):
            rho = rs[i, vcols[j]] ** 2
            ge = 0.0
            for a in range(p):
                ge += G[j, a] * e[a]
            ge *= rho
            for a in range(p):
                we[a] += ge * G[j, a]
            for a in range(f):
                xa = rho * x[i, a]
                for b in range(a + 1):
                    S[j, a, b] += xa * x[i, b]
        for a in range(p):
            for b in range(f):
                grad[a, b] += we[a] * x[i, b]
    H = np.empty((p * f, p * f))
    for l in range(p):
        for k in range(p):
            for a in range(f):
                for b in range(f):
                    v = A0[l, k] * xtx[a, b]
                    hi, lo = (a, b) if a >= b else (b, a)
                    for j in range(m):
                        v += G[j, l] * G[j, k] * S[j, hi, lo]
                    H[l * f + a, k * f + b] = v
    return H, grad.ravel()


@njit(cache=True)
def vf_unit_precisions(y, mu, A0, G, rs, vcols, unit, K):
    """Per unit k: Σ_{i∈k} W_i (K, p, p) and Σ_{i∈k} W_i e_i (K, p), from per-unit sums of e,
    the count, ρ_j and ρ_j g_j'e (one pass)."""
    n, p = y.shape
    m = vcols.size
    es = np.zeros((K, p))
    cnt = np.zeros(K)
    r = np.zeros((K, m))
    rge = np.zeros((K, m))
    for i in range(n):
        k = unit[i]
        cnt[k] += 1.0
        for a in range(p):
            es[k, a] += y[i, a] - mu[i, a]
        for j in range(m):
            rho = rs[i, vcols[j]] ** 2
            ge = 0.0
            for a in range(p):
                ge += G[j, a] * (y[i, a] - mu[i, a])
            r[k, j] += rho
            rge[k, j] += rho * ge
    A = np.empty((K, p, p))
    h = np.zeros((K, p))
    for k in range(K):
        for a in range(p):
            acc = 0.0
            for b in range(p):
                v = cnt[k] * A0[a, b]
                for j in range(m):
                    v += r[k, j] * G[j, a] * G[j, b]
                A[k, a, b] = v
                acc += A0[a, b] * es[k, b]
            for j in range(m):
                acc += rge[k, j] * G[j, a]
            h[k, a] = acc
    return A, h


@njit(cache=True)
def eta_stats(y, mu, rs, gvec, v, group, G):
    """Per group: the count and SA = Σ ρ_iv (g'e_i)² (= η_i² / s² / d_iv): if every row of
    group g has its log-variance moved by c_g δ the log-likelihood changes by
    −½ n_g c_g δ − ½ SA_g (e^{−c_g δ} − 1) (the other factors do not change)."""
    n, p = y.shape
    cnt = np.zeros(G)
    SA = np.zeros(G)
    for i in range(n):
        acc = 0.0
        for l in range(p):
            acc += gvec[l] * (y[i, l] - mu[i, l])
        g = group[i]
        cnt[g] += 1.0
        SA[g] += rs[i, v] ** 2 * acc * acc
    return cnt, SA


@njit(cache=True)
def eta_change(y, mu, rs, gvec, v, delta):
    """The log-likelihood change when row i's log-variance moves by delta[i] (row by row)."""
    n, p = y.shape
    out = 0.0
    for i in range(n):
        d = delta[i]
        if d == 0.0:
            continue
        acc = 0.0
        for l in range(p):
            acc += gvec[l] * (y[i, l] - mu[i, l])
        out += -0.5 * d - 0.5 * rs[i, v] ** 2 * acc * acc * math.expm1(-d)
    return out
