"""Fixed effects of both levels and the level-1 random effects drawn as one block: (B1, B2)
from their conditional with the random effects integrated out, then every cluster's random
effects given them.

Notes
-----
Write ``β1 = vec(B1)``, ``β2 = vec(B2)`` and ``u_j = vec(U1_j)`` variable-major, ``Ω = Ω1⁻¹``,
``Λ = Ω2⁻¹`` (blocks 11 for u1, 12 for u1×u2, 22 for u2). The level-2 random effects are
``u2_j = y2_j − X2_j B2 = y2_j − D_j β2`` with ``D_j = I ⊗ x2_j'``, so the prior of
``(u1_j, u2_j)`` couples u1_j with β2. Given everything else, θ = (β1, β2) and u_1..u_J are
jointly normal with precision and linear term::

    θθ:  diag(Ω ⊗ X1'X1, Λ22 ⊗ X2'X2)        h_θ = (vec(Ω Y1'X1), vec(Λ22 Y2'X2))
    u_j θ: T_j = [Ω ⊗ Z_j'X1_j,  −Λ12 D_j]     h_j = vec(Ω Y1_j'Z_j) − Λ12 y2_j
    u_j u_j: P_j = Λ11 + Ω ⊗ Z_j'Z_j

so θ | · (u integrated out) ~ N(H⁻¹ g, H⁻¹) with the Schur complement
``H = diag(...) − Σ_j T_j' P_j⁻¹ T_j`` and ``g = h_θ − Σ_j T_j' P_j⁻¹ h_j``, and then
``u_j | θ, · ~ N(P_j⁻¹ (h_j − T_j θ), P_j⁻¹)``. Drawing the block removes the slow see-saw
between fixed intercepts and random intercepts (of both levels) that a sweep alternating
``B | U`` and ``U | B`` suffers (jomo's scheme), at the cost of reusing each cluster's
Cholesky factor ``P_j = L_j L_j'`` for ``L_j⁻¹ T_j``.

(With cluster-specific covariances Ω becomes Ω_j in P_j, T_j, h_j and the first block is
``Σ_j Ω_j ⊗ X1_j'X1_j``, ``h_β1 = Σ_j vec(Ω_j Y1_j'X1_j)``.)

All J clusters are handled as ``(J, ·, ·)`` stacks; the cluster sums come from
``np.add.reduceat`` over rows sorted by cluster, so a sweep costs O(N·p1·q + J·d1²·dim θ),
never O(N·J).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from . import _small
from ._small import mm, mm_add
from .linalg import back_solve_t, cholesky, forward_solve
from .state import Static

__all__ = ["draw_fixed_u1", "cluster_crossprod"]


def cluster_crossprod(st: Static, y: np.ndarray) -> np.ndarray:
    """``(Z_j' Y_j)'`` as a (J, p1, q) stack: ``A[j, l, k] = Σ_i z_ik y_il`` over cluster j."""
    data = st.data
    if st.q == 1:  # the intercept column is all ones
        return np.add.reduceat(y, data.starts, axis=0)[:, :, None]
    zy = y[:, :, None] * data.z[:, None, :]
    return np.add.reduceat(zy, data.starts, axis=0)


def draw_fixed_u1(
    rng: np.random.Generator,
    st: Static,
    y1: np.ndarray,
    y2: np.ndarray,
    omega1_inv: np.ndarray,
    omega2: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw (B1 (f1, p1), B2 (f2, p2), u1 (J, p1*q)) as one block; see the module notes."""
    if st.q == 1 and omega1_inv.ndim == 2:
        return _draw_fixed_u1_intercepts(rng, st, y1, y2, omega1_inv, omega2)
    data = st.data
    J, p1, p2, q = data.n_clusters, st.p1, st.p2, st.q
    f1, f2 = data.x1.shape[1], data.x2.shape[1]
    d1, fb1, fb2 = p1 * q, f1 * p1, f2 * p2
    lam = np.linalg.inv(omega2)
    lam = 0.5 * (lam + lam.T)
    lam12 = lam[:d1, d1:]
    om = omega1_inv
    per_cluster = om.ndim == 3           # cluster-specific Ω1_j⁻¹ (covariance="cluster")
    omj = om if per_cluster else om[None]
    # Per-cluster precision of u_j and its Cholesky factor.
    P = (omj[:, :, None, :, None] * st.ztz[:, None, :, None, :]).reshape(J, d1, d1) + lam[:d1, :d1]
    L = cholesky(P)
    h = np.einsum("jlm,jmk->jlk", np.broadcast_to(omj, (J, p1, p1)), cluster_crossprod(st, y1)).reshape(J, d1)
    T = (omj[:, :, None, :, None] * st.ztx[:, None, :, None, :]).reshape(J, d1, fb1)
    if p2:
        h -= y2 @ lam12.T
        # coupling of u1_j with β2 through u2_j = y2_j − X2_j B2: −Λ12 (I ⊗ x2_j')
        T2 = -(lam12[None, :, :, None] * data.x2[:, None, None, :]).reshape(J, d1, fb2)
        T = np.concatenate([T, T2], axis=2)
    LT = forward_solve(L, T)                                   # L_j⁻¹ T_j   (J, d1, fb)
    Lh = forward_solve(L, h)                                   # L_j⁻¹ h_j   (J, d1)
    LT2 = LT.reshape(J * d1, fb1 + fb2)   # Σ_j T_j' P_j⁻¹ T_j as one BLAS product
    if per_cluster:  # Σ_j Ω_j ⊗ X_j'X_j and Σ_j vec(Ω_j Y_j'X_j), from per-cluster statistics
        H1 = np.einsum("jlm,jab->lamb", om, st.xtx_j).reshape(fb1, fb1)
        yx = np.add.reduceat(y1[:, :, None] * data.x1[:, None, :], data.starts, axis=0)
        h1 = np.einsum("jlm,jma->la", om, yx).reshape(fb1)
    else:
        H1 = np.kron(om, st.xtx)
        h1 = (om @ (data.x1.T @ y1).T).reshape(fb1)
    H, g = _with_level2(st, H1, h1, lam, y2)
    H = H - LT2.T @ LT2
    if st.fixed_prior is not None:
        H = H + np.diag(st.fixed_prior)
    g = g - LT2.T @ Lh.reshape(J * d1)
    LH = np.linalg.cholesky(0.5 * (H + H.T))
    z = rng.standard_normal(fb1 + fb2 + J * d1)
    theta = np.linalg.solve(LH.T, np.linalg.solve(LH, g) + z[:fb1 + fb2])
    u1 = back_solve_t(L, Lh - LT @ theta + z[fb1 + fb2:].reshape(J, d1))
    return theta[:fb1].reshape(p1, f1).T, theta[fb1:].reshape(p2, f2).T, u1


def _with_level2(st: Static, H1, h1, lam, y2):
    """Append β2's own block: precision Λ22 ⊗ X2'X2 and linear term vec(Λ22 Y2'X2)."""
    if not st.p2:
        return H1, h1
    d1 = st.p1 * st.q
    x2 = st.data.x2
    lam22 = lam[d1:, d1:]
    H2 = np.kron(lam22, x2.T @ x2)
    h2 = (lam22 @ (x2.T @ y2).T).reshape(-1)
    fb1, fb2 = h1.size, h2.size
    H = np.zeros((fb1 + fb2, fb1 + fb2))
    H[:fb1, :fb1] = H1
    H[fb1:, fb1:] = H2
    return H, np.concatenate([h1, h2])


def _draw_fixed_u1_intercepts(
    rng: np.random.Generator, st: Static, y1: np.ndarray, y2: np.ndarray,
    om: np.ndarray, omega2: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same block draw for random intercepts only (q = 1) and a common Ω1, in
    O(N·p·f + J·p·f²) without per-cluster factorisations (compiled: ``_intercepts``).

    Notes
    -----
    With q = 1, ``P_j = Λ11 + n_j Ω``. Diagonalise the pair once: with ``Λ11 = L L'`` and
    ``L⁻¹ Ω L⁻ᵀ = V diag(λ) V'``, ``W = L⁻ᵀ V`` gives ``W'Λ11 W = I`` and ``W'Ω W = diag(λ)``, so
    ``P_j⁻¹ = W diag(w_j) W'`` with ``w_j = 1 / (1 + n_j λ)``: every cluster's solve becomes
    elementwise. With ``G = W'Ω``, ``E = W'Λ12``, ``s_j = 1'X1_j`` and ``x_j`` the row of X2,
    the rows of ``W'T_j`` are ``(g_k ⊗ s_j, −e_k ⊗ x_j)``, so for instance::

        Σ_j T_j' P_j⁻¹ T_j = Σ_k [ (g_k g_k') ⊗ S_k      −(g_k e_k') ⊗ S12_k ]
                                 [     ·                  (e_k e_k') ⊗ S2_k   ]
        S_k = Σ_j w_jk s_j s_j',  S12_k = Σ_j w_jk s_j x_j',  S2_k = Σ_j w_jk x_j x_j'
        u_j = W (w_j ∘ W'(h_j − T_j θ) + √w_j ∘ z_j)
    """
    data = st.data
    J, p1, p2 = data.n_clusters, st.p1, st.p2
    f1, f2 = data.x1.shape[1], data.x2.shape[1]
    z = rng.standard_normal(f1 * p1 + f2 * p2 + J * p1)
    prior = st.fixed_prior if st.fixed_prior is not None else np.zeros(f1 * p1 + f2 * p2)
    b1, b2, u1, ok = _intercepts(np.ascontiguousarray(y1), data.x1, data.cluster, data.sizes,
                                 st.ztx[:, 0, :], st.xtx, np.ascontiguousarray(y2), data.x2,
                                 np.ascontiguousarray(om), np.ascontiguousarray(omega2), z, prior)
    if not ok:
        raise np.linalg.LinAlgError("covariance matrix is not positive definite")
    return b1, b2, u1


@njit(cache=True)
def _intercepts(y1, x1, cluster, sizes, sx, xtx, y2, x2, om, omega2, z, prior):
    """``_draw_fixed_u1_intercepts``'s algebra (same symbols); ``z``: fb1 + fb2 + J·p1 standard
    normals; ``prior``: prior precisions added to θ's (0: flat). Returns B1, B2, U1 and whether
    the precisions were positive definite. (Loops and
    ``_small``'s products rather than ``@``: numba compiles its BLAS bindings slowly.)"""
    n, f1 = x1.shape
    J, p1 = sizes.size, om.shape[0]
    p2, f2 = y2.shape[1], x2.shape[1]
    fb1, fb2 = f1 * p1, f2 * p2
    fb = fb1 + fb2
    b1 = np.zeros((f1, p1))
    b2 = np.zeros((f2, p2))
    u1 = np.zeros((J, p1))
    lam, ok = _small.spd_inv(omega2)
    if not ok:
        return b1, b2, u1, False
    lam11 = lam[:p1, :p1].copy()
    lam12 = lam[:p1, p1:].copy()
    lam22 = lam[p1:, p1:].copy()
    L, ok = _small.chol(lam11)
    if not ok:
        return b1, b2, u1, False
    Li = _small.tri_inv(L)
    ev, V = _small.eigh(_small.symmetrise(mm(mm(Li, om), Li.T)))
    W = mm(Li.T, V)                                          # L⁻ᵀ V   (m, k)
    G = mm(W.T, om)                                          # W'Ω     (k, m)
    E = mm(W.T, lam12)                                       # W'Λ12   (k, l)
    # per-cluster sums of Y1 and X1'Y1, one pass over the rows
    ysum = np.zeros((J, p1))
    xty = np.zeros((f1, p1))
    for i in range(n):
        j = cluster[i]
        for l in range(p1):
            v = y1[i, l]
            ysum[j, l] += v
            for a in range(f1):
                xty[a, l] += x1[i, a] * v
    h = mm(ysum, om)                                         # (J, p1): h_j
    mm_add(h, y2, lam12.T, -1.0)
    hw = mm(h, W)                                            # (J, k): W'h_j
    w = np.empty((p1, J))                                    # w[k, j] = 1 / (1 + n_j λ_k)
    whw = np.empty((J, p1))
    for j in range(J):
        for k in range(p1):
            w[k, j] = 1.0 / (1.0 + sizes[j] * ev[k])
            whw[j, k] = w[k, j] * hw[j, k]
    H = np.zeros((fb, fb))
    g = np.zeros(fb)
    _kron_add(H, 0, 0, om, xtx, 1.0)                         # Ω ⊗ X1'X1
    for k in range(p1):                                      # − Σ_k (g_k g_k') ⊗ S_k
        _kron_add(H, 0, 0, _outer(G[k], G[k]), _wcross(sx, w[k], sx), -1.0)
    g1 = mm(om, xty.T)                                       # (m, a)
    mm_add(g1, G.T, mm(whw.T, sx), -1.0)
    for m in range(p1):
        for a in range(f1):
            g[m * f1 + a] = g1[m, a]
    if p2:
        _kron_add(H, fb1, fb1, lam22, mm(x2.T, x2), 1.0)     # Λ22 ⊗ X2'X2
        for k in range(p1):
            _kron_add(H, 0, fb1, _outer(G[k], E[k]), _wcross(sx, w[k], x2), 1.0)
            _kron_add(H, fb1, fb1, _outer(E[k], E[k]), _wcross(x2, w[k], x2), -1.0)
        g2 = mm(lam22, mm(x2.T, y2).T)                       # (l, b)
        mm_add(g2, E.T, mm(whw.T, x2), 1.0)
        for l in range(p2):
            for b in range(f2):
                g[fb1 + l * f2 + b] = g2[l, b]
        for a in range(fb1):
            for b in range(fb1, fb):
                H[b, a] = H[a, b]
    for a in range(fb):
        H[a, a] += prior[a]
    LH, ok = _small.chol(_small.symmetrise(H))
    if not ok:
        return b1, b2, u1, False
    theta = _small.gaussian_draw(LH, g, z[:fb])              # θ = LH'⁻¹ (LH⁻¹ g + z)
    for m in range(p1):
        for a in range(f1):
            b1[a, m] = theta[m * f1 + a]
    for l in range(p2):
        for a in range(f2):
            b2[a, l] = theta[fb1 + l * f2 + a]
    mm_add(h, mm(sx, b1), om, -1.0)                          # h_j − T_j θ
    mm_add(h, mm(x2, b2), lam12.T, 1.0)
    rw = mm(h, W)
    for j in range(J):
        for k in range(p1):
            rw[j, k] = w[k, j] * rw[j, k] + math.sqrt(w[k, j]) * z[fb + j * p1 + k]
    return b1, b2, mm(rw, W.T), True


@njit(cache=True)
def _outer(u, v):
    out = np.empty((u.size, v.size))
    for a in range(u.size):
        for b in range(v.size):
            out[a, b] = u[a] * v[b]
    return out


@njit(cache=True)
def _wcross(A, w, B):
    """A' diag(w) B: Σ_j w_j a_j b_j'."""
    out = np.zeros((A.shape[1], B.shape[1]))
    for j in range(A.shape[0]):
        for a in range(A.shape[1]):
            v = w[j] * A[j, a]
            for b in range(B.shape[1]):
                out[a, b] += v * B[j, b]
    return out


@njit(cache=True)
def _kron_add(H, r0, c0, C, S, sign):
    """H[r0:, c0:] += sign · (C ⊗ S) on the block that C ⊗ S covers."""
    ra, ca = S.shape
    for m in range(C.shape[0]):
        for n in range(C.shape[1]):
            v = sign * C[m, n]
            for a in range(ra):
                for b in range(ca):
                    H[r0 + m * ra + a, c0 + n * ca + b] += v * S[a, b]
