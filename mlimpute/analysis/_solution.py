"""What a penalised least-squares solver returns, and the random-effect columns it reads.

Shared by both solvers (:mod:`._nested`, :mod:`._sparse`) and by :mod:`._algebra`, which picks
one; kept apart so that neither solver imports the module that imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ._design import Design
from ._structure import Structure

__all__ = ["Solution", "factor_columns"]


@dataclass(frozen=True)
class Solution:
    """One factorisation: ``log|A|``, the Schur complement ``F`` and a back-solver for ``u``."""

    ldL2: float
    F: np.ndarray
    back: Callable[[np.ndarray], list[np.ndarray]]

    def u(self, beta: np.ndarray) -> list[np.ndarray]:
        """Conditional modes of the spherical random effects, per factor ``(levels, q_f)``."""
        return self.back(np.asarray(beta, dtype=float))


def factor_columns(structure: Structure, design: Design, f: int) -> np.ndarray:
    """The ``(N, q_f)`` raw random-effect columns of factor ``f`` (its terms side by side)."""
    return np.hstack([design.terms[t].Z for t in structure.factor_terms(f)])
