"""Full conditionals of the covariance matrices Ω1 (level 1) and Ω2 (level 2).

Notes
-----
With an inverse-Wishart prior ``Ω ~ IW(ν, Ψ)`` and n independent N(0, Ω) rows with cross
product ``S``, the conditional is ``IW(ν + n, Ψ + S)``. Level 1: the rows are the residuals
``Y1 − X1 B1 − Z U1`` (n = N); level 2: the rows are ``(u1_j, u2_j)`` (n = J).

Constrained blocks (latent columns of categorical variables: variance 1 for binary and
ordinal, ½(I + 11') for a nominal variable's K−1 columns, as in jomo) make the conditional an
inverse-Wishart *restricted* to those values. Partition the columns into the constrained set
c (r columns) and the rest f (s columns). For ``Ω ~ IW(ν, Ψ)``:

- ``Ω_cc ~ IW(ν − s, Ψ_cc)``;
- ``Ω_ff·c = Ω_ff − Ω_fc Ω_cc⁻¹ Ω_cf ~ IW(ν, Ψ_ff·c)``, independent of Ω_cc;
- ``Ω_cc⁻¹ Ω_cf | Ω_ff·c ~ MN(Ψ_cc⁻¹ Ψ_cf, Ψ_cc⁻¹, Ω_ff·c)``.

Hence, given Ω_cc, the rest is drawn *exactly*; the restricted density of the others in the
(Ω_cf, Ω_ff) coordinates differs from that in these coordinates by the Jacobian |Ω_cc|^s, a
constant once Ω_cc is fixed. Ω_cc itself is fixed when it has no free element (one
categorical variable); otherwise its free elements (covariances between *different*
categorical variables) are updated by componentwise random-walk Metropolis–Hastings on the
marginal ``IW(ν − s, Ψ_cc)`` restricted to the constraint set, BLOCK_SCANS scans per draw
(one scan left them with lag-1 autocorrelation 0.9+ given the latents; twenty come close to an
exact draw of the block at no cost that shows), before the exact draw of the rest. Each proposal
costs O(r³) on the sufficient statistic, never O(N), and the prior Ψ, ν is part of the target
(jomo's MH uses the likelihood only).

jomo's defaults are Ψ = I with ν = dimension for Ω2; for Ω1 jomo draws from
``IW(N − 1, I + S)``, an implicit prior df of −1. We use ν = dimension for both (a proper
prior, jomo's default for Ω2 used for Ω1 too); the difference is negligible whenever N ≫ p1.

References
----------
Gupta, A. K., & Nagar, D. K. (2000). Matrix Variate Distributions, Theorem 3.4.1. Chapman &
Hall/CRC.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _small
from .linalg import chisquares, invwishart

__all__ = ["Constraint", "free_lower", "draw_covariance", "complete_given_block", "log_iw_kernel"]

BLOCK_SCANS = 20   # MH scans of the constrained block's free elements per draw (O(r³) each)


@dataclass(frozen=True, eq=False)
class Constraint:
    """Fixed elements of a covariance matrix: the constrained columns and their values.

    ``cat``: indices of the constrained columns; ``rest``: the others; ``target``: the r×r
    values of the constrained block, NaN where an element is free; ``free``: (rows, cols) of
    the free elements of that block, lower triangle.
    """

    cat: np.ndarray
    rest: np.ndarray
    target: np.ndarray
    free: tuple[np.ndarray, np.ndarray]

    @staticmethod
    def build(dim: int, blocks: list[tuple[list[int], np.ndarray]]) -> "Constraint | None":
        """``blocks``: (column indices, fixed block) per categorical variable."""
        if not blocks:
            return None
        cat = np.concatenate([np.asarray(c, dtype=np.int64) for c, _ in blocks])
        rest = np.setdiff1d(np.arange(dim), cat)
        r = cat.size
        target = np.full((r, r), np.nan)
        pos = 0
        for cols, block in blocks:
            w = len(cols)
            target[pos:pos + w, pos:pos + w] = block
            pos += w
        i, j = np.tril_indices(r, -1)
        keep = np.isnan(target[i, j])
        return Constraint(cat, rest, target, (i[keep], j[keep]))

    @property
    def n_free(self) -> int:
        return int(self.free[0].size)

    def fill(self, block: np.ndarray) -> np.ndarray:
        """``block`` with the fixed elements set to their values."""
        out = np.where(np.isnan(self.target), block, self.target)
        return 0.5 * (out + out.T)


def free_lower(dim: int, con: Constraint | None) -> tuple[np.ndarray, np.ndarray]:
    """Lower-triangle positions of a dim×dim covariance that ``con`` does not fix."""
    i, j = np.tril_indices(dim)
    if con is None:
        return i, j
    fixed = np.zeros((dim, dim), dtype=bool)
    fixed[np.ix_(con.cat, con.cat)] = ~np.isnan(con.target)
    keep = ~fixed[i, j]
    return i[keep], j[keep]


def log_iw_kernel(omega: np.ndarray, df: float, scale: np.ndarray) -> float:
    """log IW(df, scale) density at ``omega`` up to a constant; −inf if not positive definite."""
    return float(_small.log_iw_kernel(np.ascontiguousarray(omega, dtype=float), float(df),
                                      np.ascontiguousarray(scale, dtype=float)))


def draw_covariance(
    rng: np.random.Generator,
    df: float,
    scale: np.ndarray,
    con: Constraint | None = None,
    current: np.ndarray | None = None,
    steps: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw Ω from ``IW(df, scale)`` restricted by ``con`` (see module notes).

    The free elements of the constrained block get componentwise random-walk MH on its
    marginal, then the rest is drawn exactly given the block (compiled in ``_small``).
    Returns the draw and the acceptance indicators of the MH moves (empty when exact).
    """
    if con is None:
        return invwishart(rng, df, scale), np.zeros(0)
    scale = np.ascontiguousarray(scale, dtype=float)
    r, s, nf = con.cat.size, con.rest.size, con.n_free
    if nf:
        z_mh = rng.standard_normal((BLOCK_SCANS, nf))
        logu = np.log(rng.random((BLOCK_SCANS, nf)))
        cur = np.ascontiguousarray(current, dtype=float)
        stp = np.asarray(steps, dtype=float)
    else:
        z_mh = logu = np.zeros((1, 0))
        stp = np.zeros(0)
        cur = scale  # not read: every element of the block is fixed
    chi = chisquares(rng, df - np.arange(s)) if s else np.zeros(0)
    z = rng.standard_normal(s * (s - 1) // 2 + r * s)
    out, acc, ok = _small.constrained_iw(float(df), scale, con.cat, con.rest, con.target,
                                         con.free[0], con.free[1], cur, stp, z_mh, logu, chi, z)
    if not ok:
        raise np.linalg.LinAlgError("inverse-Wishart scale is not positive definite")
    return out, acc


def complete_given_block(
    rng: np.random.Generator, df: float, scale: np.ndarray, c: np.ndarray, f: np.ndarray,
    o_cc: np.ndarray,
) -> np.ndarray:
    """Draw the rest of Ω ~ IW(df, scale) given its block ``Ω_cc = o_cc`` (module notes)."""
    c, f = np.asarray(c, dtype=np.int64), np.asarray(f, dtype=np.int64)
    if f.size == 0:
        return o_cc
    s = f.size
    chi = chisquares(rng, df - np.arange(s))
    z = rng.standard_normal(s * (s - 1) // 2 + c.size * s)
    out, ok = _small.complete_block(float(df), np.ascontiguousarray(scale, dtype=float), c, f,
                                    np.ascontiguousarray(o_cc, dtype=float), chi, z)
    if not ok:
        raise np.linalg.LinAlgError("inverse-Wishart scale is not positive definite")
    return out
