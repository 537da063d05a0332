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
marginal ``IW(ν − s, Ψ_cc)`` restricted to the constraint set, before the exact draw of the
rest. Each proposal costs O(r³) on the sufficient statistic, never O(N), and the prior Ψ, ν
is part of the target (jomo's MH uses the likelihood only).

jomo's defaults are Ψ = I with ν = dimension for Ω2; for Ω1 jomo draws from
``IW(N − 1, I + S)``, an implicit prior df of −1. We use ν = dimension for both (a proper
prior, as DESIGN §1 says); the difference is negligible whenever N ≫ p1.

References
----------
Gupta, A. K., & Nagar, D. K. (2000). Matrix Variate Distributions, Theorem 3.4.1. Chapman &
Hall/CRC.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .linalg import invwishart

__all__ = ["Constraint", "draw_covariance", "complete_given_block", "log_iw_kernel"]


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


def log_iw_kernel(omega: np.ndarray, df: float, scale: np.ndarray) -> float:
    """log IW(df, scale) density at ``omega`` up to a constant; −inf if not positive definite."""
    try:
        L = np.linalg.cholesky(omega)
    except np.linalg.LinAlgError:
        return -np.inf
    p = omega.shape[0]
    logdet = 2.0 * np.log(np.diag(L)).sum()
    Linv = np.linalg.inv(L)
    return -0.5 * (df + p + 1) * logdet - 0.5 * np.sum((Linv @ scale) * Linv)


def _mh_block(
    rng: np.random.Generator, current: np.ndarray, df: float, scale: np.ndarray, con: Constraint,
    steps: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Componentwise random-walk MH on the free elements of the constrained block."""
    omega = con.fill(current)
    logp = log_iw_kernel(omega, df, scale)
    accepted = np.zeros(con.n_free)
    z = rng.standard_normal(con.n_free)
    logu = np.log(rng.random(con.n_free))
    for k, (i, j) in enumerate(zip(*con.free)):
        prop = omega.copy()
        prop[i, j] = prop[j, i] = omega[i, j] + steps[k] * z[k]
        lp = log_iw_kernel(prop, df, scale)
        if logu[k] < lp - logp:
            omega, logp, accepted[k] = prop, lp, 1.0
    return omega, accepted


def draw_covariance(
    rng: np.random.Generator,
    df: float,
    scale: np.ndarray,
    con: Constraint | None = None,
    current: np.ndarray | None = None,
    steps: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw Ω from ``IW(df, scale)`` restricted by ``con`` (see module notes).

    Returns the draw and the acceptance indicators of the MH moves (empty when exact).
    """
    if con is None:
        return invwishart(rng, df, scale), np.zeros(0)
    c, f = con.cat, con.rest
    s = f.size
    psi_cc = scale[np.ix_(c, c)]
    if con.n_free:
        o_cc, accepted = _mh_block(rng, current[np.ix_(c, c)], df - s, psi_cc, con, steps)
    else:
        o_cc, accepted = con.fill(np.zeros_like(psi_cc)), np.zeros(0)
    return complete_given_block(rng, df, scale, c, f, o_cc), accepted


def complete_given_block(
    rng: np.random.Generator, df: float, scale: np.ndarray, c: np.ndarray, f: np.ndarray,
    o_cc: np.ndarray,
) -> np.ndarray:
    """Draw the rest of Ω ~ IW(df, scale) given its block ``Ω_cc = o_cc`` (module notes)."""
    if f.size == 0:
        return o_cc
    psi_cc = scale[np.ix_(c, c)]
    psi_cf = scale[np.ix_(c, f)]
    psi_cc_inv = np.linalg.inv(psi_cc)
    mean_b = psi_cc_inv @ psi_cf
    o_ffc = invwishart(rng, df, scale[np.ix_(f, f)] - psi_cf.T @ mean_b)
    row = np.linalg.cholesky(0.5 * (psi_cc_inv + psi_cc_inv.T))
    b = mean_b + row @ rng.standard_normal((c.size, f.size)) @ np.linalg.cholesky(o_ffc).T
    out = np.empty_like(scale)
    o_cf = o_cc @ b
    out[np.ix_(c, c)] = o_cc
    out[np.ix_(c, f)] = o_cf
    out[np.ix_(f, c)] = o_cf.T
    o_ff = o_ffc + b.T @ o_cf
    out[np.ix_(f, f)] = 0.5 * (o_ff + o_ff.T)
    return out
