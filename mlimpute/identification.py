"""Is the joint model's posterior proper? Checks before sampling.

With flat priors on the fixed effects and on ordinal thresholds (jomo's choice and ours by
default), two situations leave a categorical variable's parameters without a proper posterior,
and a chain then drifts without a word:

- a declared category that is never observed (its latent mean or threshold can move to ±∞);
- complete or quasi-complete separation: some combination of the fully observed covariates of
  the variable's fixed part sorts its observed categories perfectly (for a binary split of them:
  the two categories of a binary variable; each "≤ k versus > k" of an ordinal; each category
  against the others of a nominal variable), so the likelihood keeps increasing along a
  direction of its coefficients (Albert & Anderson 1984).

Separation is found by a linear program (Konis 2007): maximise Σ_i s_i x_i'β subject to
s_i x_i'β ≥ 0 and |β| ≤ 1, s_i = ±1 the side of observation i; a positive optimum is a
separating direction. Either finding raises a DataError naming the variable, the category or
split and the fixes, one of which is ``categorical_prior_sd`` (weakly informative normal priors
that make the posterior proper).

References
----------
Albert, A., & Anderson, J. A. (1984). On the existence of maximum likelihood estimates in
logistic regression models. Biometrika, 71(1), 1-10.
Konis, K. (2007). Linear programming algorithms for detecting separated data in binary logistic
regression models. DPhil thesis, University of Oxford.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linprog

from .errors import DataError

__all__ = ["check_identified", "separating_direction"]


def separating_direction(x: np.ndarray, side: np.ndarray, subset: int = 2000) -> np.ndarray | None:
    """A direction β (|β|_∞ ≤ 1) with side_i x_i'β ≥ 0 for every row and > 0 for some, or None.

    Large data are first checked on ``subset`` evenly spaced rows: if those rows span the
    covariate space and are not separated, only β = 0 satisfies their constraints, so nor are
    all rows (an exact shortcut that keeps the linear program, and its memory, small)."""
    if x.shape[0] == 0 or side.all() or (~side).all():
        return None
    n, p = x.shape
    if n > 2 * subset:
        idx = np.unique(np.r_[np.linspace(0, n - 1, subset).astype(np.int64),
                              np.flatnonzero(side)[:p], np.flatnonzero(~side)[:p]])
        xs = x[idx]
        if np.linalg.matrix_rank(xs) == p and _separating_lp(xs, side[idx]) is None:
            return None
    return _separating_lp(x, side)


def _separating_lp(x: np.ndarray, side: np.ndarray) -> np.ndarray | None:
    s = np.where(side, 1.0, -1.0)
    a = s[:, None] * x
    # maximise Σ a_i β subject to a β ≥ 0 (−a β ≤ 0), −1 ≤ β ≤ 1
    res = linprog(-a.sum(axis=0), A_ub=-a, b_ub=np.zeros(a.shape[0]), bounds=[(-1, 1)] * x.shape[1],
                  method="highs")
    if res.status != 0 or -res.fun <= 1e-8 * np.abs(a).sum():
        return None
    return res.x


def _splits(codec, codes: np.ndarray):
    """(label, side) pairs of the binary splits whose separation leaves the posterior improper."""
    K = codec.n_categories
    cats = codec.categories
    if codec.kind == "binary":
        yield f"{cats[1]!r} against {cats[0]!r}", codes == 1
    elif codec.kind == "ordinal":
        for k in range(K - 1):
            yield f"categories up to {cats[k]!r} against those above", codes > k
    else:
        for k in range(K):
            yield f"{cats[k]!r} against the other categories", codes == k


def check_identified(data) -> None:
    """Raise a DataError if a categorical variable's posterior would be improper (module notes)
    and the model keeps flat priors."""
    model = data.model
    if model.categorical_prior_sd is not None:
        return
    fix = ("merge or drop the category, or give weakly informative priors: "
           "ImputationModel(..., categorical_prior_sd=5)")
    for codec in data.codecs:
        if codec.kind == "continuous":
            continue
        if codec.level == 1:
            x = data.x1
        elif codec.level == 2:
            x = data.x2
        else:
            x = next(c for c in data.classes if c.name == codec.level).x
        codes = codec.codes
        obs = codes >= 0
        counts = np.bincount(codes[obs], minlength=codec.n_categories)
        empty = [codec.categories[k] for k in np.flatnonzero(counts == 0)]
        if empty:
            raise DataError(
                f"variable {codec.name!r} declares category {empty[0]!r}, which is never observed: its "
                f"latent {'threshold' if codec.kind == 'ordinal' else 'mean'} has no proper posterior "
                f"under flat priors and the chain would drift; {fix}"
            )
        xo = x[obs]
        for label, side in _splits(codec, codes[obs]):
            beta = separating_direction(xo, side)
            if beta is not None:
                names = data.x1_names if codec.level == 1 else (data.x2_names if codec.level == 2 else
                                                                next(c for c in data.classes if c.name == codec.level).x_names)
                terms = ", ".join(n for n, b in zip(names, beta) if abs(b) > 1e-6 and n != "Intercept") or "the intercept"
                raise DataError(
                    f"variable {codec.name!r} is separated by its covariates ({terms}): {label} is "
                    "predicted perfectly, so its coefficients have no proper posterior under flat "
                    "priors (complete or quasi-complete separation); drop or coarsen those covariates, "
                    f"merge categories, or give weakly informative priors: "
                    "ImputationModel(..., categorical_prior_sd=5)"
                )
