"""Missing cells from their conditional normal given the row's observed cells.

Notes
-----
For a row with mean μ and covariance Σ, missing set m and observed set o::

    y_m | y_o ~ N(μ_m + Σ_mo Σ_oo⁻¹ (y_o − μ_o),  Σ_mm − Σ_mo Σ_oo⁻¹ Σ_om)

Rows are grouped by missingness pattern (computed once), so each sweep does one small
factorisation per pattern and vectorised arithmetic over that pattern's rows. Level-1 rows have
``μ = X1 B1 + Z U1`` and ``Σ = Ω1``; level-2 rows have ``μ = X2 B2 + K u1_j`` and
``Σ = Σ22·1`` (the level-2 random effects given the cluster's level-1 random effects).
"""

from __future__ import annotations

import numpy as np

from .linalg import cond_normal
from .state import Patterns

__all__ = ["draw_missing"]


def draw_missing(
    rng: np.random.Generator, y: np.ndarray, mean: np.ndarray, cov: np.ndarray, patterns: Patterns
) -> np.ndarray:
    """Return ``y`` with the cells of every pattern redrawn (``y`` is modified in place)."""
    for mask, rows in zip(patterns.masks, patterns.rows):
        K, C = cond_normal(cov, mask)
        mi = np.flatnonzero(mask)
        oi = np.flatnonzero(~mask)
        m_rows = mean[rows]
        draw = m_rows[:, mi] + rng.standard_normal((rows.size, mi.size)) @ C.T
        if oi.size:
            draw += (y[rows][:, oi] - m_rows[:, oi]) @ K.T
        y[rows[:, None], mi] = draw
    return y
