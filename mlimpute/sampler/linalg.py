"""Small dense linear algebra on stacks of matrices, vectorised over the leading axis.

numpy's batched ``cholesky`` is fast on ``(J, d, d)`` stacks but it has no batched triangular
solve; for the small ``d`` of random-effect blocks a substitution loop over ``d`` (each step
vectorised over the J clusters) beats a batched general ``solve`` and avoids an LU per cluster.
"""

from __future__ import annotations

import numpy as np

from . import _small

__all__ = ["cholesky", "forward_solve", "back_solve_t", "invwishart"]


SMALL = 4  # up to this dimension, loops over entries (vectorised over the stack) beat LAPACK


def cholesky(P: np.ndarray) -> np.ndarray:
    """Lower Cholesky factors of a stack ``(..., d, d)`` of SPD matrices.

    numpy's batched ``cholesky`` calls LAPACK once per matrix (~200 ns each, 200 µs for 1000
    2x2 blocks); for d <= 4 the entry-by-entry recursion, each step one vectorised operation
    over the whole stack, is several times faster.
    """
    d = P.shape[-1]
    if d > SMALL or P.ndim == 2:
        return np.linalg.cholesky(P)
    L = np.zeros_like(P)
    for j in range(d):
        s = P[..., j, j] - (L[..., j, :j] ** 2).sum(-1) if j else P[..., j, j]
        if np.any(~(s > 0)):
            raise np.linalg.LinAlgError("matrix is not positive definite")
        L[..., j, j] = np.sqrt(s)
        for i in range(j + 1, d):
            t = P[..., i, j] - (L[..., i, :j] * L[..., j, :j]).sum(-1) if j else P[..., i, j]
            L[..., i, j] = t / L[..., j, j]
    return L


def forward_solve(L: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve ``L x = b`` for lower-triangular ``L`` (..., d, d); ``b`` is (..., d) or (..., d, k)."""
    d = L.shape[-1]
    mat = b.ndim == L.ndim
    x = np.empty_like(b)
    for i in range(d):
        if mat:
            acc = b[..., i, :] - (L[..., i, :i, None] * x[..., :i, :]).sum(-2) if i else b[..., i, :]
            x[..., i, :] = acc / L[..., i, i, None]
        else:
            acc = b[..., i] - (L[..., i, :i] * x[..., :i]).sum(-1) if i else b[..., i]
            x[..., i] = acc / L[..., i, i]
    return x


def back_solve_t(L: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve ``L' x = b`` for lower-triangular ``L`` of shape (..., d, d), ``b`` of shape (..., d)."""
    d = L.shape[-1]
    x = np.empty_like(b)
    for i in range(d - 1, -1, -1):
        acc = b[..., i] - (L[..., i + 1:, i] * x[..., i + 1:]).sum(-1) if i < d - 1 else b[..., i]
        x[..., i] = acc / L[..., i, i]
    return x


def invwishart(rng: np.random.Generator, df: float, scale: np.ndarray) -> np.ndarray:
    """Draw from the inverse-Wishart ``IW(df, scale)`` (mean ``scale / (df - p - 1)``).

    ``scale`` may be a stack ``(..., p, p)`` with a common ``df`` (or an array of df per stack
    element). Uses the Bartlett decomposition of the Wishart ``W(df, scale⁻¹)`` and inverts.

    Notes
    -----
    If ``Ψ⁻¹ = C C'`` and ``A`` is lower triangular with ``A_ii² ~ χ²(df - i)`` (i = 0..p-1)
    and ``A_ij ~ N(0, 1)`` below the diagonal, then ``W = C A A' C' ~ W(df, Ψ⁻¹)`` and
    ``W⁻¹ = C'⁻¹ A'⁻¹ A⁻¹ C⁻¹ ~ IW(df, Ψ)``.
    """
    if isinstance(df, (float, int)) and isinstance(scale, np.ndarray) and scale.ndim == 2:
        return _invwishart_one(rng, float(df), scale)
    scale = np.asarray(scale, dtype=float)
    p = scale.shape[-1]
    if scale.ndim == 2 and np.ndim(df) == 0:
        return _invwishart_one(rng, float(df), scale)
    batch = scale.shape[:-2]
    df = np.broadcast_to(np.asarray(df, dtype=float), batch)
    # C = chol(Ψ⁻¹); computed as the inverse-transpose of a Cholesky of Ψ reversed, via solve.
    Lpsi = np.linalg.cholesky(scale)
    eye = np.broadcast_to(np.eye(p), scale.shape)
    A = np.zeros(batch + (p, p))
    idx = np.arange(p)
    A[..., idx, idx] = np.sqrt(rng.chisquare(df[..., None] - idx, size=batch + (p,)))
    low = np.tril_indices(p, -1)
    if low[0].size:
        A[..., low[0], low[1]] = rng.standard_normal(batch + (low[0].size,))
    # W⁻¹ with W = C A A' C' and C C' = Ψ⁻¹. Take C = Lpsi'⁻¹ · R where R is any orthogonal
    # matrix; R = I gives C C' = Lpsi'⁻¹ Lpsi⁻¹ = (Lpsi Lpsi')⁻¹ = Ψ⁻¹. Then
    # W⁻¹ = Lpsi A'⁻¹ A⁻¹ Lpsi' = (Lpsi A'⁻¹)(Lpsi A'⁻¹)'.
    Ainv_t = np.swapaxes(np.linalg.solve(A, eye), -1, -2)  # A'⁻¹ (upper triangular)
    M = Lpsi @ Ainv_t
    out = M @ np.swapaxes(M, -1, -2)
    return 0.5 * (out + np.swapaxes(out, -1, -2))


def _invwishart_one(rng: np.random.Generator, df: float, scale: np.ndarray) -> np.ndarray:
    """One ``IW(df, scale)`` draw (it runs every sweep: the algebra is compiled in ``_small``)."""
    p = scale.shape[0]
    if p == 1:                         # the same draw: Bartlett's A is √χ²(df)
        if not scale[0, 0] > 0.0:
            raise np.linalg.LinAlgError("inverse-Wishart scale is not positive definite")
        return np.array([[scale[0, 0] / rng.chisquare(df)]])
    chi = np.empty(p)                  # = rng.chisquare(df - arange(p)), without its array checks
    for k in range(p):
        chi[k] = rng.chisquare(df - k)
    z = rng.standard_normal(p * (p - 1) // 2)
    out, ok = _small.iw_from_parts(np.ascontiguousarray(scale), chi, z)
    if not ok:
        raise np.linalg.LinAlgError("inverse-Wishart scale is not positive definite")
    return out


def chisquares(rng: np.random.Generator, df: np.ndarray) -> np.ndarray:
    """``rng.chisquare(df)`` for a short vector, element by element: the same draws from the same
    stream, without the array path's Python-level argument check (a few µs that a small model
    pays several times a sweep)."""
    if df.size > 8:
        return rng.chisquare(df)
    out = np.empty(df.size)
    for k in range(df.size):
        out[k] = rng.chisquare(df[k])
    return out


def inv_spd(a: np.ndarray) -> np.ndarray:
    """Inverse of a symmetric positive-definite matrix (or a stack of them), exactly symmetric;
    a single small matrix is inverted by a compiled Cholesky (``np.linalg.inv``'s call overhead
    is most of the time at the sizes a sweep inverts)."""
    if a.shape == (1, 1) and a[0, 0] > 0.0:
        return np.array([[1.0 / a[0, 0]]])
    if a.ndim == 2:
        out, ok = _small.spd_inv(np.ascontiguousarray(a, dtype=float))
        if ok:
            return out
    out = np.linalg.inv(a)
    return 0.5 * (out + np.swapaxes(out, -1, -2))
