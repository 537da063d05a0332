"""Full conditional of the level-2 fixed effects B2 (flat prior).

(B1 is drawn jointly with the level-1 random effects: see ``random``.)

Notes
-----
Given u1_j the level-2 residual ``u2_j = y2_j − X2_j B2`` is normal with mean
``K u1_j`` and covariance ``Σ22·1`` (the conditional of Ω2's u2 block given its u1 block), so
``B2 | · ~ MN((X2'X2)⁻¹ X2'(Y2 − U1 K'), (X2'X2)⁻¹, Σ22·1)``.
"""

from __future__ import annotations

import numpy as np

from .missing import conditionals
from .state import Static

__all__ = ["draw_b2", "level2_given_u1"]


def level2_given_u1(st: Static, omega2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``K`` (p2 × d1) and ``chol(Σ22·1)`` of the level-2 random effects given u1."""
    d1 = st.p1 * st.q
    miss = np.zeros((1, st.d), dtype=bool)
    miss[0, d1:] = True
    K, C = conditionals(omega2[None], miss)          # compiled; (1, 1, d, d) blocks
    return K[0, 0, d1:, :d1], C[0, 0, d1:, d1:]


def draw_b2(
    rng: np.random.Generator, st: Static, y2: np.ndarray, u1: np.ndarray, omega2: np.ndarray
) -> np.ndarray:
    """Draw B2 given the completed level-2 variables, the level-1 random effects and Ω2."""
    K, C = level2_given_u1(st, omega2)
    target = y2 - u1 @ K.T if K.shape[1] else y2
    w = rng.standard_normal((st.x2_factor.shape[0], st.p2))
    if st.fixed_prior is None:
        return st.x2_pinv @ target + st.x2_factor @ w @ C.T
    # with prior precisions: vec(B2) ~ N(H⁻¹ g, H⁻¹), H = S⁻¹ ⊗ X2'X2 + P, g = vec(X2' T S⁻¹)
    x2 = st.data.x2
    f2 = x2.shape[1]
    s_inv = np.linalg.inv(C @ C.T)
    H = np.kron(s_inv, x2.T @ x2) + np.diag(st.fixed_prior[-f2 * st.p2:])
    g = (s_inv @ (x2.T @ target).T).ravel()
    L = np.linalg.cholesky(0.5 * (H + H.T))
    theta = np.linalg.solve(L.T, np.linalg.solve(L, g) + w.T.ravel())
    return theta.reshape(st.p2, f2).T
