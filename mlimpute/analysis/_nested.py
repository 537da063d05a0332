"""Penalised least squares for nested grouping factors, by per-group sufficient statistics.

Notes
-----
Order the factors from finest (k = 1, e.g. classes) to coarsest (k = K, e.g. schools) and let
``W = [Z_1 | … | Z_K | X | z]``. For each finest group ``g`` the cross products ``W_gᵀ W_g``
(weighted) form a ``(G_1, m, m)`` stack; they are all the data the fit needs. Scaled by
``Λ̃ = diag(Λ_1, …, Λ_K, I)`` each group's matrix is

    M_g = [[A_g, B_g], [B_gᵀ, C_g]],   A_g = Λ_1ᵀ Z_gᵀ Z_g Λ_1 + I.

Because the ``u_1`` blocks of different groups do not touch, ``u_1`` is eliminated group by
group: ``L_g = chol(A_g)``, ``log|A| += 2 Σ log diag L_g`` and the Schur complements
``C_g − (L_g⁻¹ B_g)ᵀ (L_g⁻¹ B_g)`` are summed within each level-2 group, which gives the level-2
groups' matrices (to which the identity for ``u_2`` is added); and so on up to the top, where
the sum over all top-level groups is ``F``. This is the bottom-up recursion of multilevel
likelihoods (cf. Goldstein 1986's IGLS, which uses the same block structure) written as a block
Cholesky factorisation of lme4's sparse system (Bates et al. 2015, eq. 18).
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from ._algebra import Solution, factor_columns
from ._design import Design
from ._structure import Structure

__all__ = ["NestedAlgebra", "group_crossprods", "batched_forward"]


def group_crossprods(Wt: np.ndarray, starts: np.ndarray, w: np.ndarray | None = None,
                     scratch: dict | None = None) -> np.ndarray:
    """``(G, m, m)`` stack of ``Σ_{i in g} w_i W_i W_iᵀ`` for rows sorted by group.

    ``Wt`` is ``Wᵀ`` (``m × n``, rows contiguous) and ``starts`` the first row of each group.
    The ``m(m+1)/2`` pair products are written into a reused buffer (``scratch``) and summed
    by ``np.add.reduceat``: allocating and freeing the multi-megabyte temporaries on every
    PIRLS iteration made this 10x slower here (page faults).
    """
    m, n = Wt.shape
    iu, ju = np.triu_indices(m)
    Wtw = Wt if w is None else Wt * w
    block = int(min(iu.size, max(1, 4_000_000 // max(n, 1))))
    key = (block, n)
    scratch = {} if scratch is None else scratch
    if key not in scratch:
        scratch.clear()
        scratch[key] = np.empty((block, n))
    buf = scratch[key]
    sums = np.empty((iu.size, starts.size))
    for a in range(0, iu.size, block):
        b = min(a + block, iu.size)
        for k in range(a, b):
            np.multiply(Wt[iu[k]], Wtw[ju[k]], out=buf[k - a])
        sums[a:b] = np.add.reduceat(buf[: b - a], starts, axis=1)
    out = np.empty((starts.size, m, m))
    out[:, iu, ju] = sums.T
    out[:, ju, iu] = sums.T
    return out


def batched_forward(L: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``L⁻¹ B`` for a stack of lower-triangular ``L`` ``(G, q, q)`` and ``B`` ``(G, q, r)``.

    A loop over the (small) q rows, vectorised over groups and columns; much faster than a
    batched general solve for the ``q ≤ 4`` blocks of mixed models.
    """
    q = L.shape[1]
    X = np.empty_like(B)
    for i in range(q):
        acc = B[:, i, :] - np.einsum("gk,gkr->gr", L[:, i, :i], X[:, :i, :]) if i else B[:, i, :]
        X[:, i, :] = acc / L[:, i, i][:, None]
    return X


def _batched_backward(L: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``L⁻ᵀ b`` for lower-triangular ``L`` ``(G, q, q)`` and ``b`` ``(G, q)``."""
    q = L.shape[1]
    x = np.empty_like(b)
    for i in range(q - 1, -1, -1):
        acc = b[:, i] - np.einsum("gk,gk->g", L[:, i + 1 :, i], x[:, i + 1 :]) if i < q - 1 else b[:, i]
        x[:, i] = acc / L[:, i, i]
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
        self.groups = codes[0]
        self.parents: list[np.ndarray] = []
        self.agg: list[sparse.csr_matrix] = []
        for k in range(len(chain)):
            if k + 1 < len(chain):
                parent = np.empty(self.G[k], dtype=np.int64)
                parent[codes[k]] = codes[k + 1]
            else:
                parent = np.zeros(self.G[k], dtype=np.int64)
            self.parents.append(parent)
            nparent = self.G[k + 1] if k + 1 < len(chain) else 1
            self.agg.append(sparse.csr_matrix((np.ones(self.G[k]), (parent, np.arange(self.G[k]))), shape=(nparent, self.G[k])))
        if np.any(np.diff(self.groups) < 0):
            raise ValueError("NestedAlgebra needs the rows sorted by group: build the design with sort_design()")
        self.starts = np.flatnonzero(np.r_[True, self.groups[1:] != self.groups[:-1]])
        self.Zt = np.ascontiguousarray(np.hstack(Zs).T)
        self.Xt = np.ascontiguousarray(design.X.T)
        self.y = design.y
        self._scratch: dict = {}
        self._M0 = group_crossprods(np.vstack([self.Zt, self.Xt, self.y]), self.starts)

    def _scale(self, theta: np.ndarray, M0: np.ndarray) -> np.ndarray:
        lams = self.structure.factor_lambdas(theta)
        m = M0.shape[1]
        lam = np.eye(m)
        at = 0
        for f in self.chain:
            q = lams[f].shape[0]
            lam[at : at + q, at : at + q] = lams[f]
            at += q
        Q = at
        M = M0.copy()
        M[:, :Q, :] = np.einsum("ji,gjk->gik", lam[:Q, :Q], M0[:, :Q, :])
        M[:, :, :Q] = M[:, :, :Q] @ lam[:Q, :Q]
        return M

    def solve(self, theta: np.ndarray, w: np.ndarray | None = None, z: np.ndarray | None = None, with_x: bool = True) -> Solution:
        """Factor ``A`` for these theta, weights and working response (None: unit weights, y)."""
        if w is None and z is None and with_x:
            M0 = self._M0
        else:
            rows = [self.Zt] + ([self.Xt] if with_x else []) + [(self.y if z is None else z)[None, :]]
            M0 = group_crossprods(np.vstack(rows), self.starts, w, self._scratch)
        M = self._scale(theta, M0)
        ldL2 = 0.0
        stored = []
        for k, q in enumerate(self.q):
            A = M[:, :q, :q] + np.eye(q)
            L = np.linalg.cholesky(A)
            LB = batched_forward(L, M[:, :q, q:])
            ldL2 += 2.0 * float(np.log(np.diagonal(L, axis1=1, axis2=2)).sum())
            S = M[:, q:, q:] - np.einsum("gir,gis->grs", LB, LB)
            stored.append((L, LB))
            r = S.shape[1]
            M = (self.agg[k] @ S.reshape(S.shape[0], r * r)).reshape(-1, r, r)
        F = M[0]

        def back(beta: np.ndarray) -> list[np.ndarray]:
            x = np.broadcast_to(beta, (1, beta.shape[0]))
            us: list[np.ndarray] = [None] * len(self.q)  # type: ignore[list-item]
            for k in range(len(self.q) - 1, -1, -1):
                L, LB = stored[k]
                xk = x[self.parents[k]]
                rhs = LB[:, :, -1] - np.einsum("gir,gr->gi", LB[:, :, :-1], xk)
                us[k] = _batched_backward(L, rhs)
                x = np.column_stack([us[k], xk])
            out: list[np.ndarray] = [None] * len(self.q)  # type: ignore[list-item]
            for k, f in enumerate(self.chain):
                out[f] = us[k]
            return out

        return Solution(ldL2=ldL2, F=F, back=back)
