"""Penalised least squares for nested grouping factors, by per-group sufficient statistics.

Notes
-----
Order the factors from finest (k = 1, e.g. classes) to coarsest (k = K, e.g. schools) and let
``W = [Z_1 | … | Z_K | X | z]``. For each finest group ``g`` the cross products ``W_gᵀ W_g``
(weighted) are all the data the fit needs. Scaled by ``Λ̃ = diag(Λ_1, …, Λ_K, I)`` each
group's matrix is

    M_g = [[A_g, B_g], [B_gᵀ, C_g]],   A_g = Λ_1ᵀ Z_gᵀ Z_g Λ_1 + I.

Because the ``u_1`` blocks of different groups do not touch, ``u_1`` is eliminated group by
group: ``L_g = chol(A_g)``, ``log|A| += 2 Σ log diag L_g`` and the Schur complements
``C_g − (L_g⁻¹ B_g)ᵀ (L_g⁻¹ B_g)`` are summed within each level-2 group, which gives the level-2
groups' matrices (to which the identity for ``u_2`` is added); and so on up to the top, where
the sum over all top-level groups is ``F``. This is the bottom-up recursion of multilevel
likelihoods (cf. Goldstein 1986's IGLS, which uses the same block structure) written as a block
Cholesky factorisation of lme4's sparse system (Bates et al. 2015, eq. 18).

Layout: the per-group matrices are stored *component-major*, ``(rows, cols, G)``, so that every
arithmetic step is a vector operation over contiguous length-G arrays (or a GEMM), and the block
of the fixed columns ``[X | z]`` is never formed per group: it is their total cross product
minus one GEMM per level.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from ._solution import Solution, factor_columns
from ._design import Design
from ._structure import Structure

__all__ = ["NestedAlgebra", "group_crossprods", "stacked_cholesky", "stacked_forward"]


def group_crossprods(Wt: np.ndarray, starts: np.ndarray, w: np.ndarray | None = None,
                     scratch: dict | None = None) -> np.ndarray:
    """``(m, m, G)`` stack of ``Σ_{i in g} w_i W_i W_iᵀ`` for rows sorted by group.

    ``Wt`` is ``Wᵀ`` (``m × n``, rows contiguous) and ``starts`` the first row of each group.
    The ``m(m+1)/2`` pair products are written into a reused buffer (``scratch``) and summed
    by ``np.add.reduceat``: allocating and freeing the multi-megabyte temporaries on every
    PIRLS iteration made this 10x slower here (page faults).
    """
    m, n = Wt.shape
    iu, ju = np.triu_indices(m)
    Wtw = Wt if w is None else Wt * w
    if 4 * starts.size < iu.size:
        # many columns, few groups (72 fixed columns, 40 groups: 2,900 pair products a PIRLS
        # step against 40 matrix products): one product per group
        out = np.empty((m, m, starts.size))
        ends = np.append(starts[1:], n)
        for g in range(starts.size):
            prod = Wtw[:, starts[g]:ends[g]] @ Wt[:, starts[g]:ends[g]].T
            out[:, :, g] = 0.5 * (prod + prod.T)   # symmetric to the bit, as the pair sums are
        return out
    block = int(min(iu.size, max(1, 4_000_000 // max(n, 1))))
    key = (block, n)
    scratch = {} if scratch is None else scratch
    if key not in scratch:
        scratch.clear()
        scratch[key] = np.empty((block, n))
    buf = scratch[key]
    out = np.empty((m, m, starts.size))
    for a in range(0, iu.size, block):
        b = min(a + block, iu.size)
        for k in range(a, b):
            np.multiply(Wt[iu[k]], Wtw[ju[k]], out=buf[k - a])
        sums = np.add.reduceat(buf[: b - a], starts, axis=1)
        out[iu[a:b], ju[a:b]] = sums
        out[ju[a:b], iu[a:b]] = sums
    return out


def stacked_cholesky(A: np.ndarray) -> np.ndarray:
    """Lower Cholesky factors of a ``(q, q, G)`` stack of positive definite matrices.

    Column by column with vector arithmetic over the G matrices (q is small in mixed models).
    """
    q = A.shape[0]
    L = np.zeros_like(A)
    with np.errstate(invalid="ignore"):
        for j in range(q):
            d = A[j, j].copy()
            for k in range(j):
                d -= L[j, k] * L[j, k]
            L[j, j] = np.sqrt(d)
            for i in range(j + 1, q):
                off = A[i, j].copy()
                for k in range(j):
                    off -= L[i, k] * L[j, k]
                L[i, j] = off / L[j, j]
    if not np.all(np.diagonal(L) > 0):  # also catches NaN from a negative pivot
        raise np.linalg.LinAlgError("matrix not positive definite")
    return L


def stacked_forward(L: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``L⁻¹ B`` per group for ``L`` ``(q, q, G)`` lower triangular and ``B`` ``(q, r, G)``."""
    X = np.empty_like(B)
    for i in range(L.shape[0]):
        acc = B[i].copy()
        for k in range(i):
            acc -= L[i, k] * X[k]
        X[i] = acc / L[i, i]
    return X


def _stacked_backward(L: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``L⁻ᵀ b`` per group for ``L`` ``(q, q, G)`` lower triangular and ``b`` ``(q, G)``."""
    q = L.shape[0]
    x = np.empty_like(b)
    for i in range(q - 1, -1, -1):
        acc = b[i].copy()
        for k in range(i + 1, q):
            acc -= L[k, i] * x[k]
        x[i] = acc / L[i, i]
    return x


class NestedAlgebra:
    """Block-Cholesky solver for factors nested in a chain (see the module notes)."""

    def __init__(self, structure: Structure, design: Design, chain: list[int]):
        self.structure = structure
        self.chain = chain
        Zs = [factor_columns(structure, design, f) for f in chain]
        self.q = [z.shape[1] for z in Zs]
        self.G = [design.factors[f].levels for f in chain]
        codes = [design.factors[f].codes for f in chain]
        groups = codes[0]
        if np.any(np.diff(groups) < 0):
            raise ValueError("NestedAlgebra needs the rows sorted by group: build the design with sort_design()")
        self.parents: list[np.ndarray] = []
        self.agg: list[sparse.csr_matrix] = []  # level k+1 x level k indicator, transposed for right products
        for k in range(len(chain) - 1):
            parent = np.empty(self.G[k], dtype=np.int64)
            parent[codes[k]] = codes[k + 1]
            self.parents.append(parent)
            self.agg.append(sparse.csr_matrix((np.ones(self.G[k]), (np.arange(self.G[k]), parent)),
                                              shape=(self.G[k], self.G[k + 1])))
        self.parents.append(np.zeros(self.G[-1], dtype=np.int64))
        self.starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
        self.Zt = np.ascontiguousarray(np.hstack(Zs).T)
        self.Xt = np.ascontiguousarray(design.X.T)
        self.y = design.y
        self.Q = self.Zt.shape[0]
        self._scratch: dict = {}
        self._M0 = group_crossprods(np.vstack([self.Zt, self.Xt, self.y]), self.starts)
        self._F0 = self._M0[self.Q :, self.Q :].sum(axis=2)

    def _scaled_rows(self, theta: np.ndarray, M0: np.ndarray) -> np.ndarray:
        """The random-effect rows of ``Λ̃ᵀ M0_g Λ̃`` for every group, ``Λ̃ = diag(Λ_1, …, Λ_K, I)``.

        Returns ``(Q, m, G)``: one GEMM for the left factor, Q small GEMMs for the right one.
        """
        lams = self.structure.factor_lambdas(theta)
        Q, (_, m, G) = self.Q, M0.shape
        lam = np.zeros((Q, Q))
        at = 0
        for f in self.chain:
            q = lams[f].shape[0]
            lam[at : at + q, at : at + q] = lams[f]
            at += q
        rows = (lam.T @ M0[:Q].reshape(Q, m * G)).reshape(Q, m, G)
        for a in range(Q):  # (R Λ)[a] = Λᵀ R[a] over the random-effect columns
            rows[a, :Q] = lam.T @ rows[a, :Q]
        return rows

    def solve(self, theta: np.ndarray, w: np.ndarray | None = None, z: np.ndarray | None = None, with_x: bool = True) -> Solution:
        """Factor ``A`` for these theta, weights and working response (None: unit weights, y)."""
        if w is None and z is None and with_x:
            M0, F = self._M0, self._F0.copy()
        else:
            rows = [self.Zt] + ([self.Xt] if with_x else []) + [(self.y if z is None else z)[None, :]]
            M0 = group_crossprods(np.vstack(rows), self.starts, w, self._scratch)
            F = M0[self.Q :, self.Q :].sum(axis=2)
        M = self._scaled_rows(theta, M0)
        r = F.shape[0]
        ldL2 = 0.0
        stored = []
        for k, q in enumerate(self.q):
            A = M[:q, :q].copy()
            for i in range(q):
                A[i, i] += 1.0
            L = stacked_cholesky(A)
            LB = stacked_forward(L, M[:q, q:])
            ldL2 += 2.0 * float(sum(np.log(L[i, i]).sum() for i in range(q)))
            stored.append((L, LB))
            for i in range(q):
                F -= LB[i, -r:] @ LB[i, -r:].T
            Qc = LB.shape[1] - r  # columns of the coarser random effects
            if Qc:
                S = M[q:, q:].copy()
                for i in range(q):
                    S -= LB[i, :Qc, None, :] * LB[i, None, :, :]
                M = np.ascontiguousarray((S.reshape(-1, S.shape[2]) @ self.agg[k]).reshape(Qc, Qc + r, -1))

        def back(beta: np.ndarray) -> list[np.ndarray]:
            x = np.asarray(beta, dtype=float)[:, None]  # (len, groups): the coarser unknowns
            us: list[np.ndarray] = [None] * len(self.q)  # type: ignore[list-item]
            for k in range(len(self.q) - 1, -1, -1):
                L, LB = stored[k]
                xk = x[:, self.parents[k]]
                rhs = LB[:, -1] - np.einsum("icg,cg->ig", LB[:, :-1], xk)
                us[k] = _stacked_backward(L, rhs)
                x = np.vstack([us[k], xk])
            out: list[np.ndarray] = [None] * len(self.q)  # type: ignore[list-item]
            for k, f in enumerate(self.chain):
                out[f] = us[k].T
            return out

        return Solution(ldL2=ldL2, F=F, back=back)
