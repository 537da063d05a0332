"""Penalised least squares for crossed (or any) grouping factors with sparse matrices.

Notes
-----
``Z`` is the ``N × Q`` sparse random-effects design with the columns of factor ``f`` ordered
level by level (``offset_f + level · q_f + column``); a row of a multiple-membership factor has
one weighted block per membership (:mod:`._membership`). ``Λ`` is ``Λ`` the ``Q × Q`` block-diagonal
matrix that repeats each ``Λ_f`` once per level. Its non-zero pattern is fixed, so each
evaluation only refills ``Λ.data`` from theta through an index map (lme4's ``Lind``).

``A = Λᵀ Zᵀ W Z Λ + I`` is factored by SuperLU without off-diagonal pivoting
(``diag_pivot_thresh=0``), which is stable for a symmetric positive definite ``A``; SuperLU's
``L`` has a unit diagonal, so ``log|A| = Σ log U_ii``. The fill-reducing ordering (minimum
degree on ``A + Aᵀ``) depends only on the sparsity pattern, which theta does not change: it is
computed once and ``A`` is permuted symmetrically before each factorisation in natural order.
Computing the ordering took ~85% of a factorisation for 1,000 x 500 crossed levels here.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import splu

from ._membership import factor_entries
from ._solution import Solution, factor_columns
from ._design import Design
from ._structure import Structure

__all__ = ["SparseAlgebra"]


class SparseAlgebra:
    """SuperLU-based solver for any random-effects structure."""

    def __init__(self, structure: Structure, design: Design):
        self.structure = structure
        n = design.nobs
        self.offsets, self.qs, self.levels = [], [], []
        zrows, zcols, zdata = [], [], []
        lrows, lcols, lind = [], [], []
        theta_start = np.cumsum((0,) + structure.theta_sizes)
        at = 0
        for f in range(len(structure.factor_labels)):
            Zf = factor_columns(structure, design, f)
            nlev, q = design.factors[f].levels, Zf.shape[1]
            rows, codes, weights = factor_entries(design.factors[f])
            for c in range(q):
                zrows.append(rows)
                zcols.append(at + codes * q + c)
                zdata.append(Zf[rows, c] if weights is None else weights * Zf[rows, c])
            # pattern of Λ_f: lower triangles of its terms' blocks, theta index of each entry
            block = []
            a = 0
            for t in structure.factor_terms(f):
                qt = structure.term_q[t]
                k = theta_start[t]
                for j in range(qt):
                    for i in range(j, qt):
                        block.append((a + i, a + j, k))
                        k += 1
                a += qt
            bi, bj, bk = (np.array(v) for v in zip(*block))
            base = at + np.arange(nlev)[:, None] * q
            lrows.append((base + bi).ravel())
            lcols.append((base + bj).ravel())
            lind.append(np.broadcast_to(bk, (nlev, bk.size)).ravel())
            self.offsets.append(at)
            self.qs.append(q)
            self.levels.append(nlev)
            at += nlev * q
        self.Q = at
        self.Z = sparse.csc_matrix(
            (np.concatenate(zdata), (np.concatenate(zrows), np.concatenate(zcols))), shape=(n, self.Q)
        )
        rows, cols, ind = np.concatenate(lrows), np.concatenate(lcols), np.concatenate(lind)
        order = sparse.csc_matrix((np.arange(1, rows.size + 1, dtype=float), (rows, cols)), shape=(self.Q, self.Q))
        self._lam_pattern = order
        self._lind = ind[order.data.astype(np.int64) - 1]
        self.X, self.y = design.X, design.y
        self._cache = self._crossprods(None, self.y, True)
        self._order: np.ndarray | None = None

    def _crossprods(self, w, z, with_x):
        cols = np.column_stack(([self.X] if with_x else []) + [z[:, None]])
        Zw = self.Z if w is None else sparse.diags(w) @ self.Z
        colsw = cols if w is None else cols * w[:, None]
        ZtZ = (self.Z.T @ Zw).tocsc()
        ZtC = np.asarray(Zw.T @ cols)
        CtC = cols.T @ colsw
        return ZtZ, ZtC, CtC

    def lam(self, theta: np.ndarray) -> sparse.csc_matrix:
        lam = self._lam_pattern.copy()
        lam.data = theta[self._lind].astype(float)
        return lam

    def solve(self, theta: np.ndarray, w: np.ndarray | None = None, z: np.ndarray | None = None, with_x: bool = True) -> Solution:
        """Factor ``A`` for these theta, weights and working response (None: unit weights, y)."""
        if w is None and z is None and with_x:
            ZtZ, ZtC, CtC = self._cache
        else:
            ZtZ, ZtC, CtC = self._crossprods(w, self.y if z is None else z, with_x)
        lam = self.lam(theta)
        A = (lam.T @ ZtZ @ lam + sparse.identity(self.Q, format="csc")).tocsc()
        if self._order is None:  # fill-reducing symmetric ordering, once (see the module notes)
            first = splu(A, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
            self._order = np.argsort(first.perm_c)  # A Pc = A[:, order]
        p = self._order
        lu = splu(A[p][:, p].tocsc(), permc_spec="NATURAL", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
        ldL2 = float(np.log(np.abs(lu.U.diagonal())).sum())
        C = np.asarray(lam.T @ ZtC)
        S = np.empty_like(C)
        S[p] = lu.solve(C[p])
        F = CtC - C.T @ S

        def back(beta: np.ndarray) -> list[np.ndarray]:
            u = S[:, -1] - S[:, :-1] @ beta
            return [
                u[off : off + nlev * q].reshape(nlev, q) for off, nlev, q in zip(self.offsets, self.levels, self.qs)
            ]

        return Solution(ldL2=ldL2, F=F, back=back)
