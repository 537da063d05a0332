"""Full conditionals of the fixed effects B1 (level 1) and B2 (level 2), flat priors.

Notes
-----
Level 1: with R = Y1 − Z U1 (rows) and e_ij ~ N(0, Ω1), the conditional is matrix normal,
``B1 | · ~ MN(B̂1, (X1'X1)⁻¹, Ω1)`` with ``B̂1 = (X1'X1)⁻¹ X1' R``. A draw is
``B̂1 + L'⁻¹ W chol(Ω1)'`` with ``X1'X1 = L L'`` and W standard normal (f1 × p1).

Level 2: given u1_j the level-2 residual ``u2_j = y2_j − X2_j B2`` is normal with mean
``K u1_j`` and covariance ``Σ22·1`` (the conditional of Ω2's u2 block given its u1 block), so
``B2 | · ~ MN((X2'X2)⁻¹ X2'(Y2 − U1 K'), (X2'X2)⁻¹, Σ22·1)``.
"""

from __future__ import annotations

import numpy as np

from .linalg import cond_normal
from .state import Static

__all__ = ["draw_b1", "draw_b2", "level2_given_u1"]


def _matrix_normal(rng, mean, row_factor, cov_chol):
    """``mean + F W C'`` with F F' the row covariance and C C' the column covariance."""
    w = rng.standard_normal(mean.shape)
    return mean + row_factor @ w @ cov_chol.T


def draw_b1(rng: np.random.Generator, st: Static, r1: np.ndarray, omega1: np.ndarray) -> np.ndarray:
    """Draw B1 given ``r1 = Y1 − Z U1`` (N, p1) and Ω1."""
    return _matrix_normal(rng, st.x1_pinv @ r1, st.x1_factor, np.linalg.cholesky(omega1))


def level2_given_u1(st: Static, omega2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``K`` (p2 × d1) and ``chol(Σ22·1)`` of the level-2 random effects given u1."""
    miss = np.zeros(st.d, dtype=bool)
    miss[st.p1 * st.q:] = True
    return cond_normal(omega2, miss)


def draw_b2(
    rng: np.random.Generator, st: Static, y2: np.ndarray, u1: np.ndarray, omega2: np.ndarray
) -> np.ndarray:
    """Draw B2 given the completed level-2 variables, the level-1 random effects and Ω2."""
    K, C = level2_given_u1(st, omega2)
    target = y2 - u1 @ K.T if K.shape[1] else y2
    return _matrix_normal(rng, st.x2_pinv @ target, st.x2_factor, C)
