"""The covariance structure of the random effects: lme4's theta and its maps to covariances.

Each random term ``t`` with ``q_t`` columns has a lower-triangular *relative* Cholesky factor
``Λ_t`` (relative to the residual SD for an LMM; absolute for a GLMM), stored column by column
in ``theta`` as lme4 does, so that the term's covariance matrix is ``σ² Λ_t Λ_tᵀ``. Terms that
share a grouping factor form one block-diagonal factor ``Λ_f`` for that factor.

The *variance-component vector* ``psi`` lists, per term in formula order, the variances and then
the covariances (lower triangle, column by column), as lme4's ``as.data.frame(VarCorr(m))``;
for an LMM the residual variance comes last.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import SpecError
from ._design import Design

__all__ = ["Structure", "psd_cholesky", "theta_scale"]


def psd_cholesky(a: np.ndarray) -> np.ndarray:
    """Lower-triangular ``L`` with ``L Lᵀ = a`` for a symmetric positive *semi*-definite ``a``.

    Notes
    -----
    ``a = V D Vᵀ``; with ``B = V D^{1/2}`` and ``Bᵀ = Q R`` we get ``a = Rᵀ R`` and ``L = Rᵀ``
    (signs fixed so that the diagonal is non-negative). Works where ``numpy.linalg.cholesky``
    fails on a singular matrix, which happens for boundary fits.
    """
    a = 0.5 * (a + a.T)
    try:
        return np.linalg.cholesky(a)
    except np.linalg.LinAlgError:
        pass
    vals, vecs = np.linalg.eigh(a)
    if vals.min() < -1e-10 * max(1.0, abs(vals).max()):
        raise SpecError(f"covariance matrix {a.tolist()} is not positive semi-definite (eigenvalue {vals.min():.3g})")
    b = vecs * np.sqrt(np.clip(vals, 0.0, None))
    r = np.linalg.qr(b.T, mode="r")
    sign = np.where(np.diag(r) < 0, -1.0, 1.0)
    return (sign[:, None] * r).T


@dataclass(frozen=True)
class Structure:
    """Random terms, grouping factors and the theta layout of one model."""

    term_groups: tuple[str, ...]
    term_names: tuple[tuple[str, ...], ...]
    factor_labels: tuple[str, ...]
    factor_levels: tuple[int, ...]

    @classmethod
    def from_design(cls, design: Design) -> "Structure":
        return cls(
            term_groups=tuple(t.group for t in design.terms),
            term_names=tuple(t.names for t in design.terms),
            factor_labels=tuple(f.label for f in design.factors),
            factor_levels=tuple(f.levels for f in design.factors),
        )

    # ----- layout -------------------------------------------------------------------------
    @property
    def term_q(self) -> tuple[int, ...]:
        return tuple(len(n) for n in self.term_names)

    @property
    def theta_sizes(self) -> tuple[int, ...]:
        return tuple(q * (q + 1) // 2 for q in self.term_q)

    @property
    def ntheta(self) -> int:
        return sum(self.theta_sizes)

    def factor_terms(self, f: int) -> list[int]:
        """Indices of the terms of factor ``f``, in formula order."""
        return [t for t, g in enumerate(self.term_groups) if g == self.factor_labels[f]]

    def factor_q(self, f: int) -> int:
        return sum(self.term_q[t] for t in self.factor_terms(f))

    def _tril(self, q: int) -> tuple[np.ndarray, np.ndarray]:
        """Row/column indices of a lower triangle, column by column (lme4's theta order)."""
        rows, cols = zip(*[(i, j) for j in range(q) for i in range(j, q)])
        return np.array(rows), np.array(cols)

    def theta_diagonal(self) -> np.ndarray:
        """Boolean mask of the theta entries that are diagonal elements of a Λ_t."""
        out = []
        for q in self.term_q:
            rows, cols = self._tril(q)
            out.append(rows == cols)
        return np.concatenate(out)

    def theta_start(self) -> np.ndarray:
        """lme4's start: every Λ_t the identity."""
        return self.theta_diagonal().astype(float)

    def theta_lower(self) -> np.ndarray:
        """Bounds: diagonal elements of Λ_t are non-negative, off-diagonals free."""
        return np.where(self.theta_diagonal(), 0.0, -np.inf)

    # ----- theta <-> matrices -------------------------------------------------------------
    def term_lambdas(self, theta: np.ndarray) -> list[np.ndarray]:
        out, start = [], 0
        for q, size in zip(self.term_q, self.theta_sizes):
            lam = np.zeros((q, q))
            rows, cols = self._tril(q)
            lam[rows, cols] = theta[start : start + size]
            out.append(lam)
            start += size
        return out

    def factor_lambdas(self, theta: np.ndarray) -> list[np.ndarray]:
        """Per factor, the block-diagonal ``Λ_f`` of its terms."""
        lams = self.term_lambdas(theta)
        out = []
        for f in range(len(self.factor_labels)):
            q = self.factor_q(f)
            block, at = np.zeros((q, q)), 0
            for t in self.factor_terms(f):
                k = self.term_q[t]
                block[at : at + k, at : at + k] = lams[t]
                at += k
            out.append(block)
        return out

    def term_covariances(self, theta: np.ndarray, scale: float) -> list[np.ndarray]:
        """``scale · Λ_t Λ_tᵀ`` per term (scale = σ² for an LMM, 1 for a GLMM)."""
        return [scale * lam @ lam.T for lam in self.term_lambdas(theta)]

    def theta_from_covariances(self, covs, scale: float) -> np.ndarray:
        """Inverse of :meth:`term_covariances` (any PSD matrices; validates their shapes)."""
        covs = list(covs)
        if len(covs) != len(self.term_q):
            raise SpecError(f"expected {len(self.term_q)} covariance matrices (one per random term), got {len(covs)}")
        parts = []
        for t, (cov, q) in enumerate(zip(covs, self.term_q)):
            cov = np.atleast_2d(np.asarray(cov, dtype=float))
            if cov.shape != (q, q) or not np.allclose(cov, cov.T, rtol=1e-8, atol=1e-12):
                raise SpecError(
                    f"covariance matrix {t} must be a symmetric {q}x{q} matrix for term "
                    f"{self.term_groups[t]}: {', '.join(self.term_names[t])}; got shape {cov.shape}"
                )
            lam = psd_cholesky(cov / scale)
            rows, cols = self._tril(q)
            parts.append(lam[rows, cols])
        return np.concatenate(parts)

    def boundary_theta(self, theta: np.ndarray, tol: float = 1e-4) -> np.ndarray:
        """The theta entries that are diagonal elements of a Λ_t at (or within tol of) zero."""
        return self.theta_diagonal() & (theta < tol)

    def boundary_restarts(self, theta: np.ndarray, scale: np.ndarray,
                          tol: float = 1e-4) -> list[tuple[np.ndarray, bool]]:
        """Points beside a singular optimum ``theta`` for ``_optim.across_boundary``, as
        ``(point, screened)``, for each diagonal element Λ_t[k, k] at (or within tol of) zero:

        - where column k has a non-zero entry below the diagonal, the column negated below it
          (unscreened: the optimiser restarts there): the same covariance (Λ D Dᵀ Λᵀ, D = diag(±1))
          on the other side of the bound. The deviance's slope in Λ_t[k, k] is odd in those
          entries, so a bounded optimiser can stop at 0 when the better side has the other sign
          (a random slope alone, the intercept's variance at 0, where the optimum has it
          positive and their correlation −1: 0.29 log-likelihood units higher on one dataset);
        - where column k is zero below too, Λ_t[k, k] moved off 0 by 0.01, 0.1 and 0.3 times
          ``scale`` (the optimiser's unit of each entry), alone and with each entry below it
          moved by as much of either sign (screened: the optimiser restarts from the lowest of
          them only if it is below the optimum): the deviance is even in the column, so its
          gradient there is 0 even where 0 is a saddle (an ``||`` variance, a correlated term's
          last diagonal, a whole nested term at 0: 4e-4 to 0.042 below lme4's best in 9 of
          1,500 simulated fits);
        - in both cases, for each other coordinate l of the term with a variance, the covariance
          with coordinate k made a small multiple of l's effect, b_k = c b_l (Σ → TΣTᵀ,
          T = I + c e_k e_lᵀ, c = ±0.001, 0.01, 0.1, 0.3 units of Λ_t[k, k] over l's SD), refactored
          (screened): near Σ, but far in Λ when l comes after k, where the factor needs l's
          variance moved into column k (an intercept's variance at 0 beside a random slope, whose
          optimum has both and a correlation of ±0.9997: 0.003 to 0.064 log-likelihood units
          higher in three fits with a variance function, where nlme and glmmTMB reach it)."""
        out, start = [], 0
        zero = self.boundary_theta(theta, tol)
        for q, size in zip(self.term_q, self.theta_sizes):
            rows, cols = self._tril(q)
            idx = start + np.arange(size)
            start += size
            for k in range(q):
                diag = idx[(rows == k) & (cols == k)][0]
                if not zero[diag]:
                    continue
                below = idx[(rows > k) & (cols == k)]
                out += [(t, True) for t in self._correlated(theta, idx, rows, cols, q, k, scale[diag])]
                if below.size and np.any(np.abs(theta[below]) > tol):
                    alt = theta.copy()
                    alt[below] = -alt[below]
                    out.append((alt, False))
                    continue
                for step in (0.01, 0.1, 0.3):
                    alt = theta.copy()
                    alt[diag] = step * scale[diag]
                    out.append((alt, True))
                    for j in below:   # with a covariance of either sign
                        for sign in (1.0, -1.0):
                            both = alt.copy()
                            both[j] = sign * step * scale[j]
                            out.append((both, True))
        return out

    @staticmethod
    def _correlated(theta: np.ndarray, idx: np.ndarray, rows: np.ndarray, cols: np.ndarray, q: int, k: int,
                    unit: float) -> list[np.ndarray]:
        """``boundary_restarts``' points with b_k = c b_l, for each coordinate l ≠ k of the term."""
        lam = np.zeros((q, q))
        lam[rows, cols] = theta[idx]
        sigma = lam @ lam.T
        out = []
        for l in range(q):
            if l == k or sigma[l, l] <= 0:
                continue
            for step in (0.001, 0.01, 0.1, 0.3):   # (the better side can be narrow: 0.0016 wide)
                for sign in (1.0, -1.0):
                    T = np.eye(q)
                    T[k, l] = sign * step * unit / math.sqrt(sigma[l, l])
                    alt = theta.copy()
                    alt[idx] = psd_cholesky(T @ sigma @ T.T)[rows, cols]
                    out.append(alt)
        return out

    def scaled_restarts(self, d: np.ndarray) -> Callable[[np.ndarray], list[tuple[np.ndarray, bool]]]:
        """:meth:`boundary_restarts` for an optimiser that sees x = (d·θ, other parameters), as
        both fitters' ``across_boundary`` takes them (the other parameters kept)."""
        nt = self.ntheta
        return lambda x: [(np.append(t * d, x[nt:]), screened)
                          for t, screened in self.boundary_restarts(x[:nt] / d, 1.0 / d)]

    def is_singular(self, theta: np.ndarray, tol: float = 1e-4) -> bool:
        """lme4's ``isSingular``: a diagonal element of some Λ_t at (or within tol of) zero."""
        return bool(self.boundary_theta(theta, tol).any())

    # ----- variance components --------------------------------------------------------------
    def varcomp_labels(self, residual: bool) -> list[tuple[str, str | None, str | None]]:
        """(group, term1, term2) per row of ``psi``: variances then covariances, per term."""
        out: list[tuple[str, str | None, str | None]] = []
        for group, names in zip(self.term_groups, self.term_names):
            out += [(group, n, None) for n in names]
            out += [(group, names[j], names[i]) for j in range(len(names)) for i in range(j + 1, len(names))]
        if residual:
            out.append(("Residual", None, None))
        return out

    def psi_from_covariances(self, covs: list[np.ndarray]) -> np.ndarray:
        out = []
        for cov in covs:
            q = cov.shape[0]
            out += [cov[i, i] for i in range(q)]
            out += [cov[i, j] for j in range(q) for i in range(j + 1, q)]
        return np.array(out)

    def boundary_mask(self, theta: np.ndarray, tol: float = 1e-4) -> np.ndarray:
        """Which random-effect components of ``psi`` lie on the boundary of a singular fit: in
        each term, a coordinate whose diagonal element of Λ_t is below ``tol`` (lme4's
        ``isSingular``, ``boundary_theta``) — its variance and its covariances."""
        out = []
        for lam in self.term_lambdas(theta):
            flat = np.diag(lam) < tol
            q = flat.size
            out += [bool(flat[i]) for i in range(q)]
            out += [bool(flat[i] or flat[j]) for j in range(q) for i in range(j + 1, q)]
        return np.array(out, bool)

    def covariances_from_psi(self, psi: np.ndarray) -> list[np.ndarray]:
        out, at = [], 0
        for q in self.term_q:
            cov = np.zeros((q, q))
            cov[np.diag_indices(q)] = psi[at : at + q]
            at += q
            for j in range(q):
                for i in range(j + 1, q):
                    cov[i, j] = cov[j, i] = psi[at]
                    at += 1
            out.append(cov)
        return out


def theta_scale(s: Structure, design) -> np.ndarray:
    """Per theta entry, the root mean square of the random-effect column of its row of Λ (1 for
    a zero column): the optimiser works with θ̃ = d·θ, lme4's θ for columns scaled to unit size
    (the same model; its start, Λ̃ = I, then suits any units)."""
    out = []
    for t, q in zip(design.terms, s.term_q):
        rms = np.sqrt((np.asarray(t.Z, dtype=float) ** 2).mean(axis=0)) if len(t.Z) else np.ones(q)
        rms = np.where(rms > 0, rms, 1.0)
        rows, _ = s._tril(q)
        out.append(rms[rows])
    return np.concatenate(out) if out else np.zeros(0)
