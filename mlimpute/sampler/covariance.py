"""Full conditionals of the covariance matrices Ω1 (level 1) and Ω2 (level 2).

Notes
-----
With inverse-Wishart priors ``Ω ~ IW(ν, Ψ)`` and n independent N(0, Ω) rows with cross-product
``S``, the conditional is ``IW(ν + n, Ψ + S)`` (conjugacy). Level 1: the rows are the level-1
residuals ``Y1 − X1 B1 − Z U1`` (n = N); level 2: the rows are ``(u1_j, u2_j)`` (n = J).

jomo's defaults are Ψ = I with ν = dimension for Ω2; for Ω1 jomo draws from
``IW(N − 1, I + S)``, i.e. an implicit prior df of −1. We use ν = dimension for both (a proper
prior, as DESIGN §1 says); the difference is negligible whenever N ≫ p1.
"""

from __future__ import annotations

import numpy as np

from .linalg import invwishart
from .state import Static

__all__ = ["draw_omega1", "draw_omega2"]


def draw_omega1(rng: np.random.Generator, st: Static, resid1: np.ndarray) -> np.ndarray:
    scale, df = st.prior1
    return invwishart(rng, df + resid1.shape[0], scale + resid1.T @ resid1)


def draw_omega2(rng: np.random.Generator, st: Static, u: np.ndarray) -> np.ndarray:
    scale, df = st.prior2
    return invwishart(rng, df + u.shape[0], scale + u.T @ u)
