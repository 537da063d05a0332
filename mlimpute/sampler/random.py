"""Level-1 fixed and random effects drawn as one block: B1 from its conditional with the
random effects integrated out, then every cluster's random effects given B1.

Notes
-----
Write ``β = vec(B1)`` and ``u_j = vec(U1_j)`` variable-major, ``Ω = Ω1⁻¹``, ``Λ = Ω2⁻¹``
(blocks 11 for u1, 12 for u1×u2) and ``u2_j = y2_j − X2_j B2``. Given everything else the
pair (β, u_1..u_J) is jointly normal with precision and linear term::

    [ Ω ⊗ X'X   T_1' ... T_J' ]      h_β = vec(Ω Y1'X1)
    [ T_j       P_j  (block)  ]      h_j = vec(Ω Y1_j'Z_j) − Λ12 u2_j
    P_j = Λ11 + Ω ⊗ Z_j'Z_j,    T_j = Ω ⊗ Z_j'X1_j

(with cluster-specific covariances Ω becomes Ω_j in P_j, T_j, h_j and the first block is
``Σ_j Ω_j ⊗ X1_j'X1_j``, ``h_β = Σ_j vec(Ω_j Y1_j'X1_j)``)

so β | · (u integrated out) ~ N(H⁻¹ g, H⁻¹) with the Schur complement
``H = Ω ⊗ X'X − Σ_j T_j' P_j⁻¹ T_j`` and ``g = h_β − Σ_j T_j' P_j⁻¹ h_j``, and then
``u_j | β, · ~ N(P_j⁻¹ (h_j − T_j β), P_j⁻¹)``. Drawing the block removes the slow
see-saw between the fixed intercept and the random intercepts that a sweep alternating
``B1 | U1`` and ``U1 | B1`` suffers (jomo's scheme), at the cost of reusing each cluster's
Cholesky factor ``P_j = L_j L_j'`` for ``L_j⁻¹ T_j``.

All J clusters are handled as ``(J, ·, ·)`` stacks; the cluster sums come from
``np.add.reduceat`` over rows sorted by cluster, so a sweep costs O(N·p1·q + J·d1²·f1·p1),
never O(N·J).
"""

from __future__ import annotations

import numpy as np

from .linalg import back_solve_t, cholesky, forward_solve
from .state import Static

__all__ = ["draw_b1_u1", "zu", "cluster_crossprod"]


def zu(st: Static, u1: np.ndarray) -> np.ndarray:
    """Row contributions ``Z_ij U1_j`` (N, p1) of the random effects."""
    data = st.data
    u1r = u1.reshape(u1.shape[0], st.p1, st.q)
    # Rows are sorted by cluster: repeating each cluster's block beats a fancy-index gather.
    out = np.repeat(u1r[:, :, 0], data.sizes, axis=0)
    for k in range(1, st.q):
        out += np.repeat(u1r[:, :, k], data.sizes, axis=0) * data.z[:, k:k + 1]
    return out


def cluster_crossprod(st: Static, y: np.ndarray) -> np.ndarray:
    """``(Z_j' Y_j)'`` as a (J, p1, q) stack: ``A[j, l, k] = Σ_i z_ik y_il`` over cluster j."""
    data = st.data
    if st.q == 1:  # the intercept column is all ones
        return np.add.reduceat(y, data.starts, axis=0)[:, :, None]
    zy = y[:, :, None] * data.z[:, None, :]
    return np.add.reduceat(zy, data.starts, axis=0)


def draw_b1_u1(
    rng: np.random.Generator,
    st: Static,
    y1: np.ndarray,
    u2: np.ndarray,
    omega1_inv: np.ndarray,
    omega2: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw (B1 (f1, p1), u1 (J, p1*q)) jointly; see the module notes."""
    if st.q == 1 and omega1_inv.ndim == 2:
        return _draw_b1_u1_intercepts(rng, st, y1, u2, omega1_inv, omega2)
    J, p1, q = st.data.n_clusters, st.p1, st.q
    f1 = st.data.x1.shape[1]
    d1, fb = p1 * q, f1 * p1
    lam = np.linalg.inv(omega2)
    lam = 0.5 * (lam + lam.T)
    om = omega1_inv
    per_cluster = om.ndim == 3           # cluster-specific Ω1_j⁻¹ (covariance="cluster")
    omj = om if per_cluster else om[None]
    # Per-cluster precision of u_j and its Cholesky factor.
    P = (omj[:, :, None, :, None] * st.ztz[:, None, :, None, :]).reshape(J, d1, d1) + lam[:d1, :d1]
    L = cholesky(P)
    h = np.einsum("jlm,jmk->jlk", np.broadcast_to(omj, (J, p1, p1)), cluster_crossprod(st, y1)).reshape(J, d1)
    if st.p2:
        h -= u2 @ lam[:d1, d1:].T
    T = (omj[:, :, None, :, None] * st.ztx[:, None, :, None, :]).reshape(J, d1, fb)
    LT = forward_solve(L, T)                                   # L_j⁻¹ T_j   (J, d1, fb)
    Lh = forward_solve(L, h)                                   # L_j⁻¹ h_j   (J, d1)
    LT2 = LT.reshape(J * d1, fb)   # Σ_j T_j' P_j⁻¹ T_j as one BLAS product, not an einsum
    if per_cluster:  # Σ_j Ω_j ⊗ X_j'X_j and Σ_j vec(Ω_j Y_j'X_j), from per-cluster statistics
        H = np.einsum("jlm,jab->lamb", om, st.xtx_j).reshape(fb, fb)
        yx = np.add.reduceat(y1[:, :, None] * st.data.x1[:, None, :], st.data.starts, axis=0)
        hb = np.einsum("jlm,jma->la", om, yx).reshape(fb)
    else:
        H = np.kron(om, st.xtx)
        hb = (om @ (st.data.x1.T @ y1).T).reshape(fb)
    H = H - LT2.T @ LT2
    g = hb - LT2.T @ Lh.reshape(J * d1)
    LH = np.linalg.cholesky(0.5 * (H + H.T))
    z = rng.standard_normal(fb + J * d1)
    beta = back_solve_t(LH, forward_solve(LH, g) + z[:fb])
    u1 = back_solve_t(L, Lh - LT @ beta + z[fb:].reshape(J, d1))
    return beta.reshape(p1, f1).T, u1


def _draw_b1_u1_intercepts(
    rng: np.random.Generator, st: Static, y1: np.ndarray, u2: np.ndarray,
    om: np.ndarray, omega2: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The same block draw for random intercepts only (q = 1) and a common Ω1, in O(J·p1·f1²).

    Notes
    -----
    With q = 1, ``P_j = Λ11 + n_j Ω``. Diagonalise the pair once: with ``Λ11 = L L'`` and
    ``L⁻¹ Ω L⁻ᵀ = V diag(λ) V'``, ``W = L⁻ᵀ V`` gives ``W'Λ11 W = I`` and ``W'Ω W = diag(λ)``, so
    ``P_j⁻¹ = W diag(w_j) W'`` with ``w_j = 1 / (1 + n_j λ)``: every cluster's solve becomes
    elementwise. With ``G = W'Ω`` and ``s_j = 1'X1_j``::

        Σ_j T_j' P_j⁻¹ T_j = Σ_k (g_k g_k') ⊗ Σ_j w_jk s_j s_j'
        Σ_j T_j' P_j⁻¹ h_j = Σ_k g_k ⊗ Σ_j w_jk (W'h_j)_k s_j
        u_j = W (w_j ∘ W'(h_j − T_j β) + √w_j ∘ z_j)
    """
    data = st.data
    J, p1 = data.n_clusters, st.p1
    f1 = data.x1.shape[1]
    fb = f1 * p1
    lam = np.linalg.inv(omega2)
    lam = 0.5 * (lam + lam.T)
    L = np.linalg.cholesky(lam[:p1, :p1])
    Linv = np.linalg.inv(L)
    ev, V = np.linalg.eigh(Linv @ om @ Linv.T)
    W = Linv.T @ V
    G = W.T @ om                                             # (k, m)
    n = data.sizes.astype(float)
    w = 1.0 / (1.0 + n[:, None] * ev[None, :])               # (J, k)
    sx = st.ztx[:, 0, :]                                     # (J, f1) column sums of X1_j
    ysum = np.add.reduceat(y1, data.starts, axis=0)          # (J, p1)
    h = ysum @ om
    if st.p2:
        h -= u2 @ lam[:p1, p1:].T
    hw = h @ W                                               # (J, k): W'h_j
    S = np.matmul((w.T[:, :, None] * sx[None]).transpose(0, 2, 1), sx)   # (k, f1, f1), BLAS
    H = np.kron(om, st.xtx) - np.einsum("km,kn,kab->manb", G, G, S).reshape(fb, fb)
    R = np.einsum("jk,ja->ka", w * hw, sx)
    g = (om @ (data.x1.T @ y1).T).reshape(fb) - np.einsum("km,ka->ma", G, R).reshape(fb)
    LH = np.linalg.cholesky(0.5 * (H + H.T))
    z = rng.standard_normal(fb + J * p1)
    beta = np.linalg.solve(LH.T, np.linalg.solve(LH, g) + z[:fb])  # one small system: LAPACK
    b1 = beta.reshape(p1, f1).T
    tb = (sx @ b1) @ om                                      # T_j β, (J, p1)
    u1 = (w * ((h - tb) @ W) + np.sqrt(w) * z[fb:].reshape(J, p1)) @ W.T
    return b1, u1
