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

from ._kernels import missing_pattern
from .state import Pattern, Patterns

__all__ = ["draw_missing", "draw_missing_clustered", "conditional"]


def conditional(cov: np.ndarray, pat: Pattern) -> tuple[np.ndarray, np.ndarray]:
    """``K`` and ``chol(Σ_m|o)`` for one pattern (see :func:`..linalg.cond_normal`)."""
    if pat.obs.size == 0:
        return np.empty((pat.miss.size, 0)), np.linalg.cholesky(cov[pat.ix_mm])
    s_mo = cov[pat.ix_mo]
    K = np.linalg.solve(cov[pat.ix_oo], s_mo.T).T
    return K, np.linalg.cholesky(cov[pat.ix_mm] - K @ s_mo.T)


def _all_conditionals(cov: np.ndarray, patterns: Patterns) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(K, C)`` of every pattern from two batched factorisations instead of two per pattern.

    With ``Q = Σ⁻¹``, the conditional of the missing block is ``N(−Q_mm⁻¹ Q_mo e_o, Q_mm⁻¹)``.
    Padding each pattern's ``Q_mm`` with an identity on its observed columns,
    ``A_g = Q ∘ mm' + diag(1 − m)``, makes ``A_g⁻¹`` hold ``Q_mm⁻¹`` in its m×m block, and the
    Cholesky factor of ``A_g⁻¹`` (zero across the blocks) holds ``chol(Q_mm⁻¹)`` there.
    """
    Q = np.linalg.inv(cov)
    Q = 0.5 * (Q + Q.T)
    masks = np.stack([pat.miss_mask for pat in patterns.groups]).astype(float)
    A = Q[None] * masks[:, :, None] * masks[:, None, :] + np.eye(Q.shape[0])[None] * (1.0 - masks)[:, None, :]
    Ainv = np.linalg.inv(A)
    Ainv = 0.5 * (Ainv + np.swapaxes(Ainv, 1, 2))
    L = np.linalg.cholesky(Ainv)
    out = []
    for g, pat in enumerate(patterns.groups):
        K = -Ainv[g][pat.ix_mm] @ Q[pat.ix_mo]
        out.append((K, L[g][pat.ix_mm]))
    return out


def draw_missing(
    rng: np.random.Generator, y: np.ndarray, mean: np.ndarray, cov: np.ndarray, patterns: Patterns
) -> np.ndarray:
    """Return ``y`` with the cells of every pattern redrawn (``y`` is modified in place).

    One bulk draw of standard normals serves all patterns; cells are read and written through
    precomputed flat indices (cheaper than 2-D fancy indexing).
    """
    if not patterns.groups:
        return y
    z = rng.standard_normal(patterns.n_cells)
    yf = y.reshape(-1)                   # a view: y is C-contiguous
    mf = np.ascontiguousarray(mean).reshape(-1)
    pos = 0
    for pat, (K, C) in zip(patterns.groups, _all_conditionals(cov, patterns)):
        n_cells = pat.rows.size * pat.miss.size
        missing_pattern(yf, mf, pat.flat_miss, pat.flat_obs, pat.rows.size,
                        np.ascontiguousarray(K), np.ascontiguousarray(C), z[pos:pos + n_cells])
        pos += n_cells
    return y


def draw_missing_clustered(
    rng: np.random.Generator, y: np.ndarray, mean: np.ndarray, covs: np.ndarray,
    cluster: np.ndarray, patterns: Patterns,
) -> np.ndarray:
    """As :func:`draw_missing` with a covariance per cluster, ``covs`` (J, p, p).

    Each pattern's conditional (regression matrix and Cholesky factor) is computed for all J
    clusters as one stack, then gathered by each row's cluster.
    """
    z = rng.standard_normal(patterns.n_cells)
    yf = y.reshape(-1)
    mf = mean.reshape(-1)
    pos = 0
    for pat in patterns.groups:
        n_rows, n_miss, n_obs = pat.rows.size, pat.miss.size, pat.obs.size
        s_mm = covs[:, pat.miss[:, None], pat.miss[None, :]]
        cl = cluster[pat.rows]
        noise = z[pos:pos + n_rows * n_miss].reshape(n_rows, n_miss)
        pos += n_rows * n_miss
        draw = mf[pat.flat_miss].reshape(n_rows, n_miss)
        if n_obs:
            s_mo = covs[:, pat.miss[:, None], pat.obs[None, :]]
            s_oo = covs[:, pat.obs[:, None], pat.obs[None, :]]
            K = np.swapaxes(np.linalg.solve(s_oo, np.swapaxes(s_mo, 1, 2)), 1, 2)   # (J, m, o)
            s_mm = s_mm - K @ np.swapaxes(s_mo, 1, 2)
            e_o = (yf[pat.flat_obs] - mf[pat.flat_obs]).reshape(n_rows, n_obs)
            draw += np.einsum("imo,io->im", K[cl], e_o)
        C = np.linalg.cholesky(0.5 * (s_mm + np.swapaxes(s_mm, 1, 2)))
        draw += np.einsum("imk,ik->im", C[cl], noise)
        yf[pat.flat_miss] = draw.reshape(-1)
    return y
