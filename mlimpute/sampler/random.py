"""Full conditional of the level-1 random effects of every cluster at once.

Notes
-----
With ``u1_j = vec(U1_j)`` (variable-major), ``Λ = Ω2⁻¹`` partitioned into the u1 and u2
blocks, ``u2_j = y2_j − X2_j B2`` and ``A_j = Z_j' (Y1_j − X1_j B1)`` (q × p1)::

    u1_j | · ~ N(P_j⁻¹ b_j, P_j⁻¹),   P_j = Λ11 + Ω1⁻¹ ⊗ Z_j'Z_j,
                                      b_j = −Λ12 u2_j + vec(A_j Ω1⁻¹)

(the prior term is the conditional of u1_j given u2_j under N(0, Ω2)). ``Ω1⁻¹`` may be one
matrix or one per cluster (cluster-specific covariances). The J systems are solved as one
``(J, d1, d1)`` stack; the cluster sums ``A_j`` come from ``np.add.reduceat`` over rows sorted
by cluster, so a sweep costs O(N·p1·q + J·d1³), never O(N·J).
"""

from __future__ import annotations

import numpy as np

from .linalg import draw_mvn_precision
from .state import Static

__all__ = ["draw_u1", "zu"]


def zu(st: Static, u1: np.ndarray) -> np.ndarray:
    """Row contributions ``Z_ij U1_j`` (N, p1) of the random effects."""
    data = st.data
    u1r = u1.reshape(u1.shape[0], st.p1, st.q)
    # Rows are sorted by cluster: repeating each cluster's block beats a fancy-index gather.
    out = np.repeat(u1r[:, :, 0], data.sizes, axis=0)
    for k in range(1, st.q):
        out += np.repeat(u1r[:, :, k], data.sizes, axis=0) * data.z[:, k:k + 1]
    return out


def cluster_crossprod(st: Static, r1: np.ndarray) -> np.ndarray:
    """``A_j`` as a (J, p1, q) stack: ``A[j, l, k] = Σ_i z_ik r_il`` over cluster j's rows."""
    data = st.data
    if st.q == 1:  # the intercept column is all ones
        return np.add.reduceat(r1, data.starts, axis=0)[:, :, None]
    zr = r1[:, :, None] * data.z[:, None, :]
    return np.add.reduceat(zr, data.starts, axis=0)


def draw_u1(
    rng: np.random.Generator,
    st: Static,
    r1: np.ndarray,
    u2: np.ndarray,
    omega1_inv: np.ndarray,
    omega2: np.ndarray,
) -> np.ndarray:
    """Draw u1 (J, p1*q) given ``r1 = Y1 − X1 B1``, ``u2 = Y2 − X2 B2``, Ω1⁻¹ and Ω2."""
    J, p1, q = st.data.n_clusters, st.p1, st.q
    d1 = p1 * q
    lam = np.linalg.inv(omega2)
    lam = 0.5 * (lam + lam.T)
    A = cluster_crossprod(st, r1)                                          # (J, p1, q)
    oinv = np.broadcast_to(omega1_inv, (J, p1, p1))
    b = np.einsum("jlm,jmk->jlk", oinv, A).reshape(J, d1)
    if st.p2:
        b -= u2 @ lam[:d1, d1:].T
    P = (oinv[:, :, None, :, None] * st.ztz[:, None, :, None, :]).reshape(J, d1, d1)
    P = P + lam[:d1, :d1]
    return draw_mvn_precision(P, b, rng.standard_normal((J, d1)))
