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
from ._small import chol_into, mm_add

__all__ = ["vf_latent_column", "vf_ordinal_ratio", "vf_missing_rows", "vf_moments",
           "vf_normal_equations", "vf_unit_precisions", "eta_stats", "eta_change",
           "cell_moments", "set_cell_scales", "vf_normal_equations_units", "vf_unit_finish"]


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
        if nm == 1:                       # one hole: N(μ_c − Σ_k W_ck e_k / W_cc, 1 / W_cc)
            c = idx[0]                    # with W_c· = A0_c· + Σ_j ρ_j G_jc G_j· (e_c = 0)
            acc = 0.0
            for b in range(p):
                acc += A0[c, b] * e[b]
            wcc = A0[c, c]
            for j in range(vcols.size):
                gc = G[j, c]
                if gc == 0.0:
                    continue
                ge = 0.0
                for b in range(p):
                    ge += G[j, b] * e[b]
                f = rs[i, vcols[j]] ** 2 * gc
                acc += f * ge
                wcc += f * gc
            if not wcc > 0.0:
                return False
            sd = 1.0 / math.sqrt(wcc)
            y[i, c] = mean[i, c] + sd * z[pos] - sd * sd * acc
            pos += 1
            continue
        if nm == 2:                       # two holes: the 2 × 2 factorisation written out
            a0 = idx[0]
            a1 = idx[1]
            h0 = 0.0
            h1 = 0.0
            for b in range(p):
                h0 -= A0[a0, b] * e[b]
                h1 -= A0[a1, b] * e[b]
            w00 = A0[a0, a0]
            w01 = A0[a0, a1]
            w11 = A0[a1, a1]
            for j in range(vcols.size):
                g0 = G[j, a0]
                g1 = G[j, a1]
                rho = rs[i, vcols[j]] ** 2
                ge = 0.0
                for b in range(p):
                    ge += G[j, b] * e[b]
                h0 -= rho * g0 * ge
                h1 -= rho * g1 * ge
                w00 += rho * g0 * g0
                w01 += rho * g0 * g1
                w11 += rho * g1 * g1
            if not w00 > 0.0:
                return False
            l00 = math.sqrt(w00)
            l10 = w01 / l00
            d = w11 - l10 * l10
            if not d > 0.0:
                return False
            l11 = math.sqrt(d)
            t0 = h0 / l00 + z[pos]
            t1 = (h1 - l10 * (h0 / l00)) / l11 + z[pos + 1]
            x1 = t1 / l11
            y[i, a1] = mean[i, a1] + x1
            y[i, a0] = mean[i, a0] + (t0 - l10 * x1) / l00
            pos += 2
            continue
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


BLOCK = 256   # rows per block: the row loops below run over a block's rows (SIMD), the small
              # loops over variables and functions once per block (their overhead amortised)
_FAST = {"reassoc", "contract"}   # sums may be reordered (block partial sums); no other liberties


@njit(cache=True, inline="always")
def _residual_block(y, mu, i0, nb, E):
    """E[a, r] = y − μ of row i0 + r, variable a."""
    for a in range(y.shape[1]):
        for r in range(nb):
            E[a, r] = y[i0 + r, a] - mu[i0 + r, a]


@njit(cache=True, inline="always")
def _load_block(y, mu, rs, vcols, G, i0, nb, E, RHO, GE):
    """E[a, r] = e_{i0+r, a}; RHO[j, r] = ρ_{i0+r, j}; GE[j, r] = ρ g_j'e (for the block's rows)."""
    p = y.shape[1]
    _residual_block(y, mu, i0, nb, E)
    for j in range(vcols.size):
        col = vcols[j]
        for r in range(nb):
            RHO[j, r] = rs[i0 + r, col] ** 2
            GE[j, r] = 0.0
        for a in range(p):
            g = G[j, a]
            if g != 0.0:
                for r in range(nb):
                    GE[j, r] += g * E[a, r]
        for r in range(nb):
            GE[j, r] *= RHO[j, r]


@njit(cache=True, inline="always")
def _run_sum(A, a, s, e):
    acc = 0.0
    for t in range(s, e):
        acc += A[a, t]
    return acc


@njit(cache=True, fastmath=_FAST)
def vf_moments(y, mu, rs, vcols):
    """Σ e e' (p × p) and, per function j, Σ ρ_ij e e' (the rows weighted by 1/d_ij), e = y − μ."""
    n, p = y.shape
    m = vcols.size
    M0 = np.zeros((p, p))
    Mw = np.zeros((m, p, p))
    E = np.empty((p, BLOCK))
    RHO = np.empty((m, BLOCK))
    for i0 in range(0, n, BLOCK):
        nb = min(BLOCK, n - i0)
        _residual_block(y, mu, i0, nb, E)
        for j in range(m):
            col = vcols[j]
            for r in range(nb):
                RHO[j, r] = rs[i0 + r, col] ** 2
        for a in range(p):
            for b in range(a + 1):
                acc = 0.0
                for r in range(nb):
                    acc += E[a, r] * E[b, r]
                M0[a, b] += acc
                for j in range(m):
                    acc = 0.0
                    for r in range(nb):
                        acc += RHO[j, r] * E[a, r] * E[b, r]
                    Mw[j, a, b] += acc
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
    H, grad, _ = vf_normal_equations_units(x, y, mu, A0, G, rs, vcols, xtx, np.zeros(0, np.int64), 0)
    return H, grad


@njit(cache=True, fastmath=_FAST)
def vf_normal_equations_units(x, y, mu, A0, G, rs, vcols, xtx, unit, K):
    """``vf_normal_equations`` and, in the same pass, what the effects of the K units ``unit``
    need (``vf_unit_finish``): per unit Σ e, Σ ρ_j, Σ ρ_j g_j'e and Σ ρ_j x (K = 0: none)."""
    n, f = x.shape
    p = y.shape[1]
    m = vcols.size
    es = np.zeros((K, p))
    r_ = np.zeros((K, m))
    rge = np.zeros((K, m))
    xr = np.zeros((K, m, f))
    S = np.zeros((m, f, f))          # X' diag(ρ_j) X, lower triangles
    grad = np.zeros((p, f))
    E = np.empty((p, BLOCK))
    WE = np.empty((p, BLOCK))
    RHO = np.empty((m, BLOCK))
    GE = np.empty((m, BLOCK))
    XT = np.empty((f, BLOCK))
    for i0 in range(0, n, BLOCK):
        nb = min(BLOCK, n - i0)
        _load_block(y, mu, rs, vcols, G, i0, nb, E, RHO, GE)
        for a in range(f):
            for r in range(nb):
                XT[a, r] = x[i0 + r, a]
        for a in range(p):                       # W_i e_i = A0 e_i + Σ_j ρ_ij (g_j'e_i) g_j
            for r in range(nb):
                WE[a, r] = 0.0
            for b in range(p):
                c = A0[a, b]
                if c != 0.0:
                    for r in range(nb):
                        WE[a, r] += c * E[b, r]
            for j in range(m):
                g = G[j, a]
                if g != 0.0:
                    for r in range(nb):
                        WE[a, r] += GE[j, r] * g
        for j in range(m):
            for a in range(f):
                for b in range(a + 1):
                    acc = 0.0
                    for r in range(nb):
                        acc += RHO[j, r] * XT[a, r] * XT[b, r]
                    S[j, a, b] += acc
        for a in range(p):
            for b in range(f):
                acc = 0.0
                for r in range(nb):
                    acc += WE[a, r] * XT[b, r]
                grad[a, b] += acc
        if K == 0:
            continue
        r = 0
        while r < nb:                # runs of rows of one unit (the whole cluster, sorted data)
            k = unit[i0 + r]
            s = r
            while r < nb and unit[i0 + r] == k:
                r += 1
            for a in range(p):
                es[k, a] += _run_sum(E, a, s, r)
            for j in range(m):
                r_[k, j] += _run_sum(RHO, j, s, r)
                rge[k, j] += _run_sum(GE, j, s, r)
                for a in range(f):
                    acc = 0.0
                    for t in range(s, r):
                        acc += RHO[j, t] * XT[a, t]
                    xr[k, j, a] += acc
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
    return H, grad.ravel(), (es, r_, rge, xr)


@njit(cache=True)
def vf_unit_finish(stats, count, xsum, dB, A0, G):
    """``vf_unit_precisions`` after B1 moved by dB (f × p), from the statistics of
    ``vf_normal_equations_units`` taken before: every residual moved by −dB'x_i, so per unit
    Σ e by −dB'Σx and Σ ρ_j g_j'e by −(dB g_j)'Σ ρ_j x. ``count``, ``xsum``: rows and Σ x per unit."""
    es, r_, rge, xr = stats
    K, p = es.shape
    m, f = xr.shape[1], xr.shape[2]
    dg = np.zeros((m, f))            # dB g_j
    for j in range(m):
        for a in range(f):
            for l in range(p):
                dg[j, a] += dB[a, l] * G[j, l]
    A = np.empty((K, p, p))
    h = np.zeros((K, p))
    E = es.copy()
    mm_add(E, xsum, dB, -1.0)        # the units' Σ e after the move
    rg = np.empty(m)
    for k in range(K):
        e = E[k]
        for j in range(m):
            v = rge[k, j]
            for a in range(f):
                v -= xr[k, j, a] * dg[j, a]
            rg[j] = v
        for a in range(p):
            acc = 0.0
            for b in range(p):
                v = count[k] * A0[a, b]
                for j in range(m):
                    v += r_[k, j] * G[j, a] * G[j, b]
                A[k, a, b] = v
                acc += A0[a, b] * e[b]
            for j in range(m):
                acc += rg[j] * G[j, a]
            h[k, a] = acc
    return A, h


@njit(cache=True)
def vf_unit_precisions(y, mu, A0, G, rs, vcols, unit, K):
    """Per unit k: Σ_{i∈k} W_i (K, p, p) and Σ_{i∈k} W_i e_i (K, p), from per-unit sums of e,
    the count, ρ_j and ρ_j g_j'e (one pass: ``vf_normal_equations_units`` without covariates)."""
    n, p = y.shape
    _, _, stats = vf_normal_equations_units(np.empty((n, 0)), y, mu, A0, G, rs, vcols, np.empty((0, 0)), unit, K)
    count = np.zeros(K)
    for i in range(n):
        count[unit[i]] += 1.0
    return vf_unit_finish(stats, count, np.empty((K, 0)), np.empty((0, p)), A0, G)


@njit(cache=True, fastmath=_FAST)
def eta_stats(y, mu, rs, gvec, v, group, G):
    """Per group: the count and SA = Σ ρ_iv (g'e_i)² (= η_i² / s² / d_iv): if every row of
    group g has its log-variance moved by c_g δ the log-likelihood changes by
    −½ n_g c_g δ − ½ SA_g (e^{−c_g δ} − 1) (the other factors do not change)."""
    n, p = y.shape
    cnt = np.zeros(G)
    SA = np.zeros(G)
    Q = np.empty((1, BLOCK))
    for i0 in range(0, n, BLOCK):
        nb = min(BLOCK, n - i0)
        for r in range(nb):
            Q[0, r] = 0.0
        for a in range(p):
            g = gvec[a]
            if g != 0.0:
                for r in range(nb):
                    Q[0, r] += g * (y[i0 + r, a] - mu[i0 + r, a])
        for r in range(nb):
            Q[0, r] = rs[i0 + r, v] ** 2 * Q[0, r] * Q[0, r]
        if G <= 8:                   # few groups: a masked sum per group (no scatter)
            for k in range(G):
                c = 0.0
                acc = 0.0
                for r in range(nb):
                    hit = group[i0 + r] == k
                    c += 1.0 if hit else 0.0
                    acc += Q[0, r] if hit else 0.0
                cnt[k] += c
                SA[k] += acc
            continue
        r = 0
        while r < nb:                # runs of rows of one group (a unit: its sorted cluster)
            k = group[i0 + r]
            s = r
            while r < nb and group[i0 + r] == k:
                r += 1
            cnt[k] += r - s
            SA[k] += _run_sum(Q, 0, s, r)
    return cnt, SA


@njit(cache=True, fastmath=_FAST)
def cell_moments(y, mu, cells, C):
    """Σ_{i∈c} e_i e_i' per cell c, e = y − μ, as (C, p(p+1)/2) lower triangles in the order of
    ``np.tril_indices(p)``: with a variance function whose rows of a cell share their d (the same
    covariate values and unit), every statistic of its moves and of Ω1's draw is a sum over
    cells of ρ_c times these (``multi.draw_variance_functions``)."""
    n, p = y.shape
    T = p * (p + 1) // 2
    ia = np.empty(T, np.int64)
    ib = np.empty(T, np.int64)
    t = 0
    for a in range(p):
        for b in range(a + 1):
            ia[t] = a
            ib[t] = b
            t += 1
    out = np.zeros((C, T))
    E = np.empty((p, BLOCK))
    P = np.empty((BLOCK, T))
    for i0 in range(0, n, BLOCK):
        nb = min(BLOCK, n - i0)
        _residual_block(y, mu, i0, nb, E)
        for t in range(T):
            a = ia[t]
            b = ib[t]
            for r in range(nb):
                P[r, t] = E[a, r] * E[b, r]
        for r in range(nb):
            c = cells[i0 + r]
            for t in range(T):
                out[c, t] += P[r, t]
    return out


@njit(cache=True)
def set_cell_scales(rs, col, cells, scale):
    """rs[i, col] = scale[cells[i]] (each row's d^-½ from its cell's)."""
    for i in range(rs.shape[0]):
        rs[i, col] = scale[cells[i]]


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
