"""Compiled algebra on the sampler's small matrices (covariances of a few variables).

A sweep factorises, inverts and draws a dozen p×p matrices with p ≈ 2–10. numpy's linalg
costs 5–10 µs per call on such matrices (argument checks, dtype dispatch, LAPACK set-up)
for work that takes well under a microsecond, so on 5,000 rows these calls were a third of
a sweep. Here the loops are written out and compiled; random numbers are drawn by the
caller from the chain's Generator and passed in, as in ``_kernels``. Products and the
symmetric eigendecomposition are written out as well: numba's BLAS/LAPACK bindings and array
expressions each take seconds to compile (the whole sampler compiles in ~20 s on first use).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["chol", "chol_into", "gaussian_draw", "tri_inv", "mm", "mm_add", "symmetrise", "eigh", "spd_inv", "log_iw_kernel",
           "iw_from_parts", "complete_block", "constrained_iw", "pattern_conditionals", "log_iw_rescaled"]


@njit(cache=True)
def chol(A):
    """Lower Cholesky factor of ``A`` and whether ``A`` was positive definite."""
    p = A.shape[0]
    L = np.zeros((p, p))
    for i in range(p):
        for j in range(i + 1):
            L[i, j] = A[i, j]
    return L, chol_into(L, p)


@njit(cache=True, inline="always")
def chol_into(L, p):
    """Cholesky in place: the lower triangle of ``L[:p, :p]`` holds A on entry and its factor
    on return (the upper triangle is not read); False if A was not positive definite."""
    for j in range(p):
        s = L[j, j]
        for k in range(j):
            s -= L[j, k] * L[j, k]
        if not s > 0.0:
            return False
        d = math.sqrt(s)
        L[j, j] = d
        for i in range(j + 1, p):
            t = L[i, j]
            for k in range(j):
                t -= L[i, k] * L[j, k]
            L[i, j] = t / d
    return True


@njit(cache=True)
def gaussian_draw(L, g, z):
    """``L'⁻¹ (L⁻¹ g + z)`` for lower-triangular ``L``: with ``H = L L'`` a draw from
    N(H⁻¹ g, H⁻¹) given standard normals ``z`` (its mean when z = 0)."""
    n = g.size
    t = np.empty(n)
    for a in range(n):
        v = g[a]
        for b in range(a):
            v -= L[a, b] * t[b]
        t[a] = v / L[a, a]
    out = np.empty(n)
    for a in range(n - 1, -1, -1):
        v = t[a] + z[a]
        for b in range(a + 1, n):
            v -= L[b, a] * out[b]
        out[a] = v / L[a, a]
    return out


@njit(cache=True)
def tri_inv(L):
    """Inverse of a lower-triangular matrix (lower triangular)."""
    p = L.shape[0]
    X = np.zeros((p, p))
    for j in range(p):
        X[j, j] = 1.0 / L[j, j]
        for i in range(j + 1, p):
            s = 0.0
            for k in range(j, i):
                s -= L[i, k] * X[k, j]
            X[i, j] = s / L[i, i]
    return X


@njit(cache=True)
def mm(A, B):
    """A B (pass ``A.T`` or ``B.T`` for the transposed products: numba compiles one version per
    memory layout). With ``B = A.T`` or ``A = B.T`` the result is exactly symmetric."""
    out = np.zeros((A.shape[0], B.shape[1]))
    mm_add(out, A, B, 1.0)
    return out


@njit(cache=True)
def mm_add(out, A, B, sign):
    """out += sign · A B, in place (numba's array expressions are slow to compile)."""
    n, k = A.shape
    m = B.shape[1]
    for i in range(n):
        for t in range(k):
            a = sign * A[i, t]
            for j in range(m):
                out[i, j] += a * B[t, j]


@njit(cache=True)
def symmetrise(A):
    """(A + A') / 2 in place; returns A."""
    p = A.shape[0]
    for a in range(p):
        for b in range(a):
            v = 0.5 * (A[a, b] + A[b, a])
            A[a, b] = v
            A[b, a] = v
    return A


@njit(cache=True)
def eigh(A):
    """Eigenvalues and eigenvectors (columns) of a symmetric matrix by cyclic Jacobi rotations
    (converges quadratically to full precision; for the few-by-few matrices here it is as
    accurate as LAPACK and compiles in a fraction of the time of numba's LAPACK binding)."""
    p = A.shape[0]
    a = A.copy()
    V = np.zeros((p, p))
    for i in range(p):
        V[i, i] = 1.0
    for _ in range(100):
        off = 0.0
        scale = 0.0
        for i in range(p):
            scale += a[i, i] * a[i, i]
            for j in range(i):
                off += a[i, j] * a[i, j]
        if off <= 1e-30 * scale or off == 0.0:
            break
        for q in range(1, p):
            for r in range(q):           # rotate (r, q) to zero a[r, q]
                arq = a[r, q]
                if arq == 0.0:
                    continue
                theta = (a[q, q] - a[r, r]) / (2.0 * arq)
                t = (1.0 if theta >= 0.0 else -1.0) / (abs(theta) + math.sqrt(theta * theta + 1.0))
                cs = 1.0 / math.sqrt(t * t + 1.0)
                sn = t * cs
                for k in range(p):
                    akr, akq = a[k, r], a[k, q]
                    a[k, r] = cs * akr - sn * akq
                    a[k, q] = sn * akr + cs * akq
                for k in range(p):
                    ark, aqk = a[r, k], a[q, k]
                    a[r, k] = cs * ark - sn * aqk
                    a[q, k] = sn * ark + cs * aqk
                for k in range(p):
                    vkr, vkq = V[k, r], V[k, q]
                    V[k, r] = cs * vkr - sn * vkq
                    V[k, q] = sn * vkr + cs * vkq
    ev = np.empty(p)
    for i in range(p):
        ev[i] = a[i, i]
    return ev, V


@njit(cache=True)
def spd_inv(A):
    """Inverse of a symmetric positive-definite matrix (exactly symmetric) and whether ``A``
    was positive definite."""
    L, ok = chol(A)
    if not ok:
        return L, False
    Li = tri_inv(L)
    return mm(Li.T, Li), True                  # A⁻¹ = L⁻ᵀ L⁻¹


@njit(cache=True)
def log_iw_rescaled(pl, nu, f):
    """For a group move multiplying random-effect coordinates k by f_k (u_k → f_k u_k,
    Ω → DΩD, D = diag(f)): log IW(DΩD; ν, Ψ) + log |∂(DΩD)/∂Ω|, the effects' normal density and
    its Jacobian cancelling, as a function of f up to a constant: −ν Σ_k log f_k − ½ Σ_kl
    pl_kl / (f_k f_l) with pl = Ψ∘Ω⁻¹ (``random.scale_move``, ``expansion.effects_term``)."""
    out = 0.0
    for k in range(f.size):
        out -= nu * math.log(f[k])
        for m in range(f.size):
            out -= 0.5 * pl[k, m] / (f[k] * f[m])
    return out


@njit(cache=True)
def log_iw_kernel(omega, df, scale):
    """log IW(df, scale) density at ``omega`` up to a constant; −inf if not positive definite."""
    L, ok = chol(omega)
    if not ok:
        return -np.inf
    p = omega.shape[0]
    logdet = 0.0
    for a in range(p):
        logdet += 2.0 * math.log(L[a, a])
    Li = tri_inv(L)
    tr = 0.0                      # trace(Ω⁻¹ Ψ) = Σ (L⁻¹ Ψ) ∘ L⁻¹
    for a in range(p):
        for b in range(a + 1):
            s = 0.0
            for k in range(p):
                s += Li[a, k] * scale[k, b]
            tr += s * Li[a, b]
    return -0.5 * (df + p + 1) * logdet - 0.5 * tr


@njit(cache=True)
def iw_from_parts(scale, chi, z):
    """``IW(df, scale)`` by the Bartlett decomposition from its random parts: ``chi[i]`` ~ χ²(df − i)
    (i = 0..p−1) and ``z`` p(p−1)/2 standard normals (the lower triangle, row by row).

    With ``Ψ = Lψ Lψ'`` and A lower triangular (``A_ii = √chi_i``, ``A_ij = z``), ``W = Lψ'⁻¹ A A'
    Lψ⁻¹ ~ W(df, Ψ⁻¹)`` and ``W⁻¹ = (Lψ A'⁻¹)(Lψ A'⁻¹)'``. Returns the draw and whether ``scale``
    was positive definite.
    """
    p = scale.shape[0]
    Lpsi, ok = chol(scale)
    if not ok:
        return Lpsi, False
    A = np.zeros((p, p))
    pos = 0
    for i in range(p):
        A[i, i] = math.sqrt(chi[i])
        for j in range(i):
            A[i, j] = z[pos]
            pos += 1
    Ai = tri_inv(A)
    M = np.zeros((p, p))          # Lψ A'⁻¹ = Lψ (A⁻¹)'
    for a in range(p):
        for b in range(p):
            s = 0.0
            for k in range(min(a, b) + 1):
                s += Lpsi[a, k] * Ai[b, k]
            M[a, b] = s
    return mm(M, M.T), True


@njit(cache=True)
def _sub(A, rows, cols):
    out = np.empty((rows.size, cols.size))
    for a in range(rows.size):
        for b in range(cols.size):
            out[a, b] = A[rows[a], cols[b]]
    return out


@njit(cache=True)
def complete_block(df, scale, c, f, o_cc, chi, z):
    """The rest of Ω ~ IW(df, scale) given ``Ω_cc = o_cc`` (see ``covariance``); ``chi``: s
    χ²(df − i) draws and ``z``: s(s−1)/2 + r·s standard normals (s = f.size, r = c.size).
    Returns Ω and whether the scale blocks were positive definite."""
    r, s = c.size, f.size
    p = r + s
    out = np.empty((p, p))
    psi_cc = _sub(scale, c, c)
    psi_cf = _sub(scale, c, f)
    psi_cc_inv, ok = spd_inv(psi_cc)
    if not ok:
        return out, False
    mean_b = mm(psi_cc_inv, psi_cf)                           # (r, s)
    psi_ffc = _sub(scale, f, f)
    adj = mm(psi_cf.T, mean_b)
    for a in range(s):
        for e in range(s):
            psi_ffc[a, e] -= adj[a, e]
    symmetrise(psi_ffc)
    nb = s * (s - 1) // 2
    o_ffc, ok = iw_from_parts(psi_ffc, chi, z[:nb])
    if not ok:
        return out, False
    row, _ = chol(psi_cc_inv)
    col, _ = chol(o_ffc)
    zm = np.empty((r, s))
    for a in range(r):
        for e in range(s):
            zm[a, e] = z[nb + a * s + e]
    b = mm(mm(row, zm), col.T)
    for a in range(r):
        for e in range(s):
            b[a, e] += mean_b[a, e]
    o_cf = mm(o_cc, b)
    o_ff = mm(b.T, o_cf)
    for a in range(s):
        for e in range(s):
            o_ff[a, e] += o_ffc[a, e]
    for a in range(r):
        for e in range(r):
            out[c[a], c[e]] = o_cc[a, e]
        for e in range(s):
            out[c[a], f[e]] = o_cf[a, e]
            out[f[e], c[a]] = o_cf[a, e]
    for a in range(s):
        for e in range(a + 1):
            v = 0.5 * (o_ff[a, e] + o_ff[e, a])
            out[f[a], f[e]] = v
            out[f[e], f[a]] = v
    return out, True


@njit(cache=True)
def constrained_iw(df, scale, c, f, target, fi, fj, current, steps, z_mh, logu, chi, z):
    """One draw of Ω ~ IW(df, scale) restricted to ``Ω_cc = target`` where ``target`` is not NaN:
    componentwise random-walk MH on the free elements (fi, fj) of Ω_cc under its marginal
    IW(df − s, Ψ_cc), ``z_mh.shape[0]`` scans of them (``z_mh``, ``logu``: (scans, free)), then
    the rest exactly (``complete_block``). Returns Ω, each element's share of accepted
    proposals and whether the scale was positive definite."""
    r, s = c.size, f.size
    o_cc = np.empty((r, r))
    for a in range(r):
        for e in range(r):
            t = target[a, e]
            o_cc[a, e] = current[c[a], c[e]] if np.isnan(t) else t
    symmetrise(o_cc)
    acc = np.zeros(fi.size)
    if fi.size:
        psi_cc = _sub(scale, c, c)
        logp = log_iw_kernel(o_cc, df - s, psi_cc)
        prop = o_cc.copy()
        scans = z_mh.shape[0]
        for t in range(scans):
            for k in range(fi.size):
                i, j = fi[k], fj[k]
                v = o_cc[i, j] + steps[k] * z_mh[t, k]
                prop[i, j] = v
                prop[j, i] = v
                lp = log_iw_kernel(prop, df - s, psi_cc)
                if logu[t, k] < lp - logp:
                    o_cc[i, j] = v
                    o_cc[j, i] = v
                    logp = lp
                    acc[k] += 1.0 / scans
                else:
                    prop[i, j] = o_cc[i, j]
                    prop[j, i] = o_cc[j, i]
    if s == 0:
        return o_cc, acc, True
    out, ok = complete_block(df, scale, c, f, o_cc, chi, z)
    return out, acc, ok


@njit(cache=True)
def pattern_conditionals(covs, masks):
    """Regression ``K`` and Cholesky ``C`` factors of ``y_m | y_o`` for every missingness pattern
    (rows of ``masks``) and covariance (``covs`` (Jc, p, p)), as (G, Jc, p, p) stacks holding
    ``K_mo = −Q_mm⁻¹ Q_mo`` in the (m, o) block and ``chol(Q_mm⁻¹)`` in the (m, m) block, zero
    elsewhere (``Q = Σ⁻¹``). Returns also whether every covariance was positive definite."""
    Jc, p, _ = covs.shape
    G = masks.shape[0]
    K = np.zeros((G, Jc, p, p))
    C = np.zeros((G, Jc, p, p))
    for j in range(Jc):
        Q, ok = spd_inv(np.ascontiguousarray(covs[j]))
        if not ok:
            return K, C, False
        for g in range(G):
            nm = 0
            for a in range(p):
                if masks[g, a]:
                    nm += 1
            m = np.empty(nm, dtype=np.int64)
            o = np.empty(p - nm, dtype=np.int64)
            im = 0
            io = 0
            for a in range(p):
                if masks[g, a]:
                    m[im] = a
                    im += 1
                else:
                    o[io] = a
                    io += 1
            Vmm, ok = spd_inv(_sub(Q, m, m))                     # Σ_m|o = Q_mm⁻¹
            if not ok:
                return K, C, False
            Lmm, _ = chol(Vmm)
            for a in range(nm):
                for e in range(a + 1):
                    C[g, j, m[a], m[e]] = Lmm[a, e]
                for e in range(o.size):
                    t = 0.0
                    for k in range(nm):
                        t -= Vmm[a, k] * Q[m[k], o[e]]
                    K[g, j, m[a], o[e]] = t
    return K, C, True
