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
