"""Missing cells from their conditional normal given the row's observed cells.

Notes
-----
For a row with mean μ and covariance Σ, missing set m and observed set o::

    y_m | y_o ~ N(μ_m + Σ_mo Σ_oo⁻¹ (y_o − μ_o),  Σ_mm − Σ_mo Σ_oo⁻¹ Σ_om)

Rows are labelled by missingness pattern (computed once); each sweep factorises the
conditionals of all patterns at once and then runs one compiled loop over the rows in memory
order (grouping rows by pattern would make that loop jump around the data). Level-1 rows have
``μ = X1 B1 + Z U1`` and ``Σ = Ω1``; level-2 rows have ``μ = X2 B2 + K u1_j`` and
``Σ = Σ22·1`` (the level-2 random effects given the cluster's level-1 random effects).
"""

from __future__ import annotations

import numpy as np

from ._kernels import missing_rows
from .state import Patterns

__all__ = ["draw_missing", "conditionals"]


def conditionals(covs: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Regression and Cholesky factors of every pattern's conditional, as (G, Jc, p, p) stacks.

    Notes
    -----
    With ``Q = Σ⁻¹``, the conditional of the missing block is ``N(−Q_mm⁻¹ Q_mo e_o, Q_mm⁻¹)``.
    Padding each pattern's ``Q_mm`` with an identity on its observed columns,
    ``A_g = Q ∘ mm' + diag(1 − m)``, makes ``A_g⁻¹`` hold ``Q_mm⁻¹`` in its m×m block (zero
    across the blocks), so ``K_g = −A_g⁻¹ (Q ∘ m o')`` holds ``−Q_mm⁻¹ Q_mo`` in its (m, o)
    block and zeros elsewhere, and the lower Cholesky factor of ``A_g⁻¹`` holds
    ``chol(Q_mm⁻¹)`` in its m×m block. All patterns (and, with cluster-specific covariances,
    all clusters: ``covs`` is (Jc, p, p)) in two batched factorisations.
    """
    Q = np.linalg.inv(covs)
    Q = 0.5 * (Q + np.swapaxes(Q, -1, -2))
    m = masks.astype(float)[:, None, :]                      # (G, 1, p)
    o = 1.0 - m
    A = Q[None] * m[..., :, None] * m[..., None, :] + np.eye(Q.shape[-1]) * o[..., None, :]
    Ainv = np.linalg.inv(A)
    Ainv = 0.5 * (Ainv + np.swapaxes(Ainv, -1, -2))
    K = -Ainv @ (Q[None] * m[..., :, None] * o[..., None, :])
    return np.ascontiguousarray(K), np.ascontiguousarray(np.linalg.cholesky(Ainv))


def draw_missing(
    rng: np.random.Generator, y: np.ndarray, mean: np.ndarray, cov: np.ndarray,
    patterns: Patterns, cluster: np.ndarray | None = None,
) -> np.ndarray:
    """Redraw the missing cells of every row from their conditional normal given the row's
    other cells (``y`` is modified in place and returned). ``cov`` is (p, p), or (J, p, p)
    with a covariance per cluster (then ``cluster`` gives each row's cluster)."""
    if not patterns.n_patterns:
        return y
    per_cluster = cov.ndim == 3
    K, C = conditionals(cov if per_cluster else cov[None], patterns.masks)
    z = rng.standard_normal(patterns.n_cells)
    cl = cluster if per_cluster else np.zeros(1, dtype=np.int64)
    missing_rows(y, np.ascontiguousarray(mean), patterns.rows, patterns.pid, patterns.masks,
                 K, C, cl, per_cluster, z)
    return y
