"""Variance functions of an LMM: a log-linear model of the level-1 (residual) variance.

Notes
-----
With ``dispersion="~ sex + ses"`` the residual of row ``i`` has variance

    Var(e_i) = σ² v_i,    log v_i = w_iᵀ γ,    i.e.  log σ²_i = log σ² + w_iᵀ γ,

where ``w_i`` is the row's model-matrix row of the dispersion formula (formulaic's coding,
e.g. ``sex[T.girl]``) *without* its intercept: the intercept is ``log σ²`` itself, so γ = 0 is
the homoscedastic model and σ² is the residual variance of a row with ``w_i = 0`` (the
reference category, a continuous predictor at 0). ``exp(γ_j)`` is a ratio of residual
variances. In the fit each row gets the prior weight ``a_i = 1/v_i = exp(−w_iᵀγ)``: the
weighted rows ``a_i^{1/2} (y_i, x_i, z_i)`` follow the homoscedastic LMM, and the Jacobian of
that scaling adds ``Σ_i log v_i = (Σ_i w_i)ᵀ γ`` to the (RE)ML deviance (see
:mod:`~mlimpute.analysis.lmm`).

Relation to other packages (conversions used by the tests):

- nlme's ``varIdent(form = ~ 1 | g)``: ``σ_g = σ δ_g`` with ``δ = 1`` for nlme's reference
  stratum (the first level in data order); with the same reference,
  ``γ_g = 2 log δ_g`` (``coef(varStruct, unconstrained = TRUE)`` is ``log δ_g``). Our
  reference is formulaic's first level (sorted), so γ of another level is
  ``2 (log δ_g − log δ_ref)``.
- nlme's ``varExp(form = ~ t)``: ``Var(e_i) = σ² exp(2 δ t_i)``, so ``γ = 2δ``.
- glmmTMB's ``dispformula = ~ d`` (gaussian family) has an intercept: before version 1.1.9
  it models ``log σ²_i = d_iᵀ α`` (so ``log σ² = α_0`` and ``γ = α``), from 1.1.9 on
  ``log σ_i = d_iᵀ α`` (so ``log σ² = 2α_0`` and ``γ = 2α``).

References
----------
Pinheiro, J. C. & Bates, D. M. (2000). *Mixed-Effects Models in S and S-PLUS*. Springer,
§5.2 (variance functions: ``varIdent``, ``varExp``).
Brooks, M. E., Kristensen, K., van Benthem, K. J., Magnusson, A., Berg, C. W., Nielsen, A.,
Skaug, H. J., Mächler, M. & Bolker, B. M. (2017). glmmTMB balances speed and flexibility among
packages for zero-inflated generalized linear mixed modeling. *The R Journal* 9(2), 378–400.
Goldstein, H. (2011). *Multilevel Statistical Models*, 4th ed. Wiley, §3.1 (complex level-1
variation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import DataError, SpecError
from ._design import _check_columns, _check_rank, _matrix, formula_columns
from .formula import _has_grouping_bar, intercept_dropped

__all__ = ["DispersionDesign", "dispersion_rhs", "dispersion_columns", "build_dispersion"]


@dataclass(frozen=True)
class DispersionDesign:
    """The dispersion model matrix ``W`` (no intercept) of the rows ``rows`` of the data.

    ``scale`` holds the column SDs: the optimiser works with ``η = scale · γ`` so that a unit
    step means the same whatever the units of the predictors. ``centre`` holds the column means:
    the fit weighs the rows by ``exp(−(w_i − w̄)ᵀγ)``, relative to the residual variance at the
    mean ``σ²_c = σ² exp(w̄ᵀγ)`` (a year as predictor: σ², the variance at year 0, moved by a factor
    e²⁰¹⁰ᵞ with γ, and with it every relative covariance factor θ; the optimiser stopped 12
    log-likelihood units short), and reports σ² at ``w = 0`` as documented.
    """

    formula: str
    names: tuple[str, ...]
    W: np.ndarray  # (n, k)
    rows: np.ndarray  # (n,) positions in the data the design was built from
    scale: np.ndarray  # (k,)
    centre: np.ndarray  # (k,)

    @property
    def k(self) -> int:
        return len(self.names)

    def for_rows(self, rows: np.ndarray) -> "DispersionDesign":
        """The same design for ``rows`` (a reordering of ``self.rows``, e.g. a sorted design's)."""
        order = np.argsort(self.rows, kind="stable")
        index = order[np.searchsorted(self.rows, rows, sorter=order)]
        return DispersionDesign(self.formula, self.names, np.ascontiguousarray(self.W[index]), rows, self.scale,
                                self.centre)

    def weights(self, gamma: np.ndarray) -> np.ndarray:
        """Prior weights ``a_i = exp(−(w_i − w̄)ᵀγ)``: inverse variances relative to ``σ²_c``."""
        return np.exp(-(self.W @ gamma - self.centre @ gamma))   # (no N × k temporary: a hot path)

    def log_det(self, gamma: np.ndarray) -> float:
        """``Σ_i log v_i = Σ_i (w_i − w̄)ᵀγ``: what the row scaling adds to the deviance."""
        return float((self.W - self.centre).sum(axis=0) @ gamma)

    def runaway(self, gamma: np.ndarray) -> list[str]:
        """The terms whose coefficient makes the residual variances of its rows differ by more
        than a factor 10⁵ (SDs by 316) over the column's range: a variance running to 0 or ∞ (a level of a
        factor with one or two rows, or a constant response), whose estimate is arbitrary."""
        spread = np.abs(gamma) * (self.W.max(axis=0) - self.W.min(axis=0))
        out = []
        for j in np.flatnonzero(spread > math.log(1e5)):
            col = self.W[:, j]
            rows = int(np.count_nonzero(col)) if set(np.unique(col)) <= {0.0, 1.0} else None
            out.append(f"{self.names[j]!r} (γ = {gamma[j]:.3g}"
                       + (f", {rows} row{'s' if rows != 1 else ''})" if rows is not None else ")"))
        return out

    def shift(self, gamma: np.ndarray) -> float:
        """``log σ²_c − log σ² = w̄ᵀγ``."""
        return float(self.centre @ gamma)


def dispersion_rhs(dispersion: str) -> str:
    """The right-hand side of a one-sided dispersion formula (``"~ sex"`` or ``"sex"``)."""
    if not isinstance(dispersion, str):
        raise SpecError(f"dispersion must be a one-sided formula string like '~ sex', got {type(dispersion).__name__}")
    lhs, tilde, rhs = dispersion.partition("~")
    if not tilde:
        lhs, rhs = "", dispersion
    if lhs.strip():
        raise SpecError(
            f"dispersion {dispersion!r} has a left-hand side {lhs.strip()!r}; it models the residual variance of the "
            "model's response, so write it one-sided, like '~ sex'"
        )
    if "~" in rhs:
        raise SpecError(f"dispersion {dispersion!r} has more than one '~'; write it like '~ sex + ses'")
    rhs = rhs.strip()
    if not rhs:
        raise SpecError(f"dispersion {dispersion!r} is empty; write the predictors of the residual variance, like '~ sex'")
    kept = intercept_dropped(rhs)
    if kept is not None:
        raise SpecError(
            f"dispersion {dispersion!r} removes the intercept, which is the residual variance σ² itself and is "
            "always there (the other terms are log-ratios to it): "
            + (f"write '~ {kept}'" if kept else "leave dispersion out for a constant residual variance")
        )
    if _has_grouping_bar(rhs):
        raise SpecError(
            f"dispersion {dispersion!r} has a random term ('|'); the analysis model's variance function is "
            "log-linear in fixed predictors only: remove the bar term (a factor such as '~ C(school)' gives "
            "each of its levels its own residual variance)"
        )
    return rhs


def dispersion_columns(dispersion: str, data: pd.DataFrame | None = None) -> set[str]:
    """The data columns a dispersion formula reads (checked against ``data`` when given)."""
    rhs = dispersion_rhs(dispersion)
    cols = formula_columns(rhs, f"dispersion formula {dispersion!r}", () if data is None else data.columns)
    if data is not None:
        _check_columns(cols, data, dispersion)
    return cols


def build_dispersion(dispersion: str, data: pd.DataFrame, rows: np.ndarray) -> DispersionDesign:
    """Build ``W`` for the rows ``rows`` (positions) of ``data``.

    Raises
    ------
    SpecError
        Not a one-sided formula, a random term, or no column besides the intercept.
    DataError
        An unknown column, a constant column, or columns that are linearly dependent together
        with the intercept (which is σ²). Missing values are the caller's business
        (:func:`~mlimpute.analysis._design.build_design` with ``extra_columns``).
    """
    rhs = dispersion_rhs(dispersion)
    what = f"dispersion formula {dispersion!r}"
    cols = dispersion_columns(dispersion, data)
    df = data.iloc[rows][sorted(cols)].reset_index(drop=True)
    labels = data.index[rows]
    mm = _matrix(rhs, df, what, labels)
    names = tuple(str(c) for c in mm.columns)
    W = np.asarray(mm, dtype=float)
    keep = [j for j, n in enumerate(names) if n != "Intercept"]
    if not keep:
        raise SpecError(
            f"dispersion {dispersion!r} has no column besides the intercept, which is the residual variance σ² "
            "itself; give a predictor (like '~ sex') or leave dispersion out for a constant residual variance"
        )
    names, W = tuple(names[j] for j in keep), np.ascontiguousarray(W[:, keep])
    sd = W.std(axis=0)
    for j in np.flatnonzero(sd <= 1e-12 * np.maximum(1.0, np.abs(W).max(axis=0))):
        unused = W[0, j] == 0 and "[" in names[j]   # a level of a pandas Categorical that no row has
        raise DataError(
            f"dispersion column {names[j]!r} of {dispersion!r} is constant ({W[0, j]:g}) in the rows used; its "
            "coefficient cannot be told apart from the residual variance σ²: "
            + ("a category no row has? drop it with .cat.remove_unused_categories()" if unused else
               "drop it from the dispersion formula")
        )
    _check_rank(np.column_stack([np.ones(len(W)), W]), ("(residual variance σ²)",) + names,
                what=f"columns of {what} with its intercept (σ²)")
    return DispersionDesign(formula=dispersion, names=names, W=W, rows=np.asarray(rows), scale=sd,
                            centre=W.mean(axis=0))
