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
from ._vf_kernels import vf_missing_rows
from ._small import pattern_conditionals
from .state import Patterns

__all__ = ["draw_missing", "conditionals"]


def conditionals(covs: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Regression and Cholesky factors of every pattern's conditional, as (G, Jc, p, p) stacks.

    With ``Q = Σ⁻¹``, the conditional of the missing block m is ``N(−Q_mm⁻¹ Q_mo e_o, Q_mm⁻¹)``:
    ``K_g`` holds ``−Q_mm⁻¹ Q_mo`` in its (m, o) block and ``C_g`` holds ``chol(Q_mm⁻¹)`` in its
    m×m block, zeros elsewhere; one set per pattern and (with cluster-specific covariances,
    ``covs`` (Jc, p, p)) per cluster. Compiled (``_small``): numpy's batched calls cost more in
    set-up than these small factorisations do.
    """
    K, C, ok = pattern_conditionals(np.ascontiguousarray(covs, dtype=float),
                                    np.ascontiguousarray(masks, dtype=bool))
    if not ok:
        raise np.linalg.LinAlgError("covariance matrix is not positive definite")
    return K, C


def draw_missing(
    rng: np.random.Generator, y: np.ndarray, mean: np.ndarray, cov: np.ndarray,
    patterns: Patterns, cluster: np.ndarray | None = None, vf: tuple | None = None,
) -> np.ndarray:
    """Redraw the missing cells of every row from their conditional normal given the row's
    other cells (``y`` is modified in place and returned). ``cov`` is (p, p), or (J, p, p)
    with a covariance per cluster (then ``cluster`` gives each row's cluster). ``vf``: variance
    functions' (A0, G, rs, vcols): each row then has its own precision (``_vf_kernels``;
    ``cov`` is not used)."""
    if not patterns.n_patterns:
        return y
    if vf is not None:
        z = rng.standard_normal(patterns.n_cells)
        if not vf_missing_rows(y, np.ascontiguousarray(mean), patterns.rows, patterns.pid, patterns.masks, *vf, z):
            raise np.linalg.LinAlgError("a row's precision is not positive definite")
        return y
    per_cluster = cov.ndim == 3
    K, C = conditionals(cov if per_cluster else cov[None], patterns.masks)
    z = rng.standard_normal(patterns.n_cells)
    cl = cluster if per_cluster else np.zeros(1, dtype=np.int64)
    missing_rows(y, np.ascontiguousarray(mean), patterns.rows, patterns.pid, patterns.masks,
                 K, C, cl, per_cluster, z)
    return y
