"""The penalised least-squares system shared by the LMM and the GLMM, and which solver to use.

For relative covariance factors ``Λ`` (from theta), prior weights ``w`` and a working response
``z``, both solvers factor

    A = Λᵀ Zᵀ W Z Λ + I,

return ``log|A|`` (lme4's ``ldL2``) and the Schur complement ``F`` of the augmented cross-product
matrix over the columns ``[X | z]`` after the spherical random effects ``u`` are eliminated:

    F = [X z]ᵀ W [X z] − [X z]ᵀ W Z Λ A⁻¹ Λᵀ Zᵀ W [X z].

The Cholesky factor of ``F`` holds ``R_X`` (lme4's ``RX``), the GLS estimate of β and the
penalised residual sum of squares (its last diagonal element squared). ``Solution.u(beta)``
(:mod:`._solution`) back-solves the conditional modes ``u`` for a given β.

Two solvers, chosen by :func:`make_algebra`:

- :class:`~mlimpute.analysis._nested.NestedAlgebra` when the grouping factors are nested in a
  chain (one factor; pupils in classes in schools): per-group sufficient statistics and batched
  ``(G, q, q)`` Cholesky factors, eliminated from the finest factor up. After the one-off
  ``O(N m²)`` cross products, one evaluation costs ``O(Σ_k G_k m³)``, independent of N.
- :class:`~mlimpute.analysis._sparse.SparseAlgebra` otherwise (crossed factors, multiple
  membership, whose rows of ``Z`` have several weighted blocks): sparse ``A``
  factored by SuperLU (``scipy.sparse.linalg.splu``) with a symmetric fill-reducing ordering
  and diagonal pivoting. CHOLMOD is not available, and SuperLU's ``U`` diagonal gives
  ``log|A|`` because its ``L`` has a unit diagonal.
"""

from __future__ import annotations

import numpy as np

from ..errors import SpecError
from ._design import Design
from ._nested import NestedAlgebra
from ._sparse import SparseAlgebra
from ._structure import Structure

__all__ = ["nesting_chain", "make_algebra", "sort_design"]


def nesting_chain(design: Design) -> list[int] | None:
    """Factor indices from finest to coarsest if each factor is nested in the next, else None.

    A multiple-membership factor is in no chain: a row belongs to several of its levels.
    """
    factors = design.factors
    if any(f.weights is not None for f in factors):
        return None
    order = sorted(range(len(factors)), key=lambda k: -factors[k].levels)
    for fine, coarse in zip(order[:-1], order[1:]):
        a, b = factors[fine], factors[coarse]
        pairs = np.unique(a.codes * b.levels + b.codes)
        if pairs.size != a.levels:
            return None
    return order


def sort_design(design: Design) -> Design:
    """The design with its rows sorted by the finest factor of the nesting chain, if any.

    The likelihood does not depend on the row order; sorted rows let the nested solver sum
    within the finest groups by ``np.add.reduceat`` without gathering (coarser levels are
    summed through their parent maps and need no order).
    """
    chain = nesting_chain(design)
    if chain is None:
        return design
    order = np.argsort(design.factors[chain[0]].codes, kind="stable")
    if np.all(order[1:] > order[:-1]):
        return design
    return design.take(order)


def make_algebra(structure: Structure, design: Design, algebra: str = "auto"):
    """Pick the solver: nested (batched) when the factors form a nesting chain, else sparse."""
    if algebra not in ("auto", "nested", "sparse"):
        raise SpecError(f"algebra={algebra!r} is not 'auto', 'nested' or 'sparse'")
    chain = nesting_chain(design)
    if algebra == "sparse" or (algebra == "auto" and chain is None):
        return SparseAlgebra(structure, design)
    if chain is None:
        raise SpecError(
            "algebra='nested' needs grouping factors nested in each other (each level of a finer factor in one "
            f"level of the next coarser one, each row in one level); {', '.join(structure.factor_labels)} are crossed "
            "or of multiple membership: use algebra='auto'"
        )
    return NestedAlgebra(structure, design, chain)
