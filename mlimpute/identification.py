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

__all__ = ["check_identified", "check_collinear", "check_observed_designs", "dependent_column",
           "exact_combination", "separating_direction"]


def separating_direction(x: np.ndarray, side: np.ndarray, subset: int = 2000) -> np.ndarray | None:
    """A direction β (|β|_∞ ≤ 1) with side_i x_i'β ≥ 0 for every row and > 0 for some, or None.

    Large data are first checked on ``subset`` evenly spaced rows: if those rows span the
    covariate space and are not separated, only β = 0 satisfies their constraints, so nor are
    all rows (an exact shortcut that keeps the linear program, and its memory, small)."""
    if x.shape[0] == 0 or side.all() or (~side).all():
        return None
    x = x / _rms(x)   # the tolerance below is relative: units must not matter (β is rescaled back)
    n, p = x.shape
    if n > 2 * subset:
        idx = np.unique(np.r_[np.linspace(0, n - 1, subset).astype(np.int64),
                              np.flatnonzero(side)[:p], np.flatnonzero(~side)[:p]])
        xs = x[idx]
        if np.linalg.matrix_rank(xs) == p and _separating_lp(xs, side[idx]) is None:
            return None
    return _separating_lp(x, side)


def _rms(x: np.ndarray) -> np.ndarray:
    """Each column's root mean square (1 for a zero column)."""
    r = np.sqrt((x * x).mean(axis=0)) if x.shape[0] else np.ones(x.shape[1])
    return np.where(r > 0, r, 1.0)


NEARLY = 1e-7   # smallest/largest singular value of the RMS-scaled design below this: dependent


def dependent_column(x: np.ndarray, tol: float = NEARLY) -> int | None:
    """The first column of ``x`` that is (up to ``tol``, on columns scaled to unit root mean
    square, so units do not matter) a linear combination of the columns before it, or None.
    A zero column counts as dependent."""
    if x.shape[1] == 0:
        return None
    xs = x / _rms(x)

    def dependent(k: int) -> bool:
        if not np.any(xs[:, k - 1]):
            return True
        sv = np.linalg.svd(xs[:, :k], compute_uv=False)
        return sv.size < k or sv[-1] <= tol * sv[0]

    if not dependent(x.shape[1]):
        return None
    return next(k - 1 for k in range(1, x.shape[1] + 1) if dependent(k))


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


_WEAK_PRIORS = ("ImputationModel(..., categorical_prior_sd=5) (in a TOML config: categorical_prior_sd = 5 "
                "under [model])")


def check_identified(data) -> None:
    """Raise a DataError if a variable's posterior would be improper (module notes; a
    categorical variable's only while the model keeps flat priors) or its covariance singular."""
    check_collinear(data)
    check_observed_designs(data)
    model = data.model
    if model.categorical_prior_sd is not None:
        return
    fix = f"merge or drop the category, or give weakly informative priors: {_WEAK_PRIORS}"
    for codec in data.codecs:
        if codec.kind == "continuous":
            continue
        x, names = data.level_design(codec.level)
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
                terms = ", ".join(n for n, b in zip(names, beta) if abs(b) > 1e-6 and n != "Intercept") or "the intercept"
                raise DataError(
                    f"variable {codec.name!r} is separated by its covariates ({terms}): {label} is "
                    "predicted perfectly, so its coefficients have no proper posterior under flat "
                    "priors (complete or quasi-complete separation); drop or coarsen those covariates, "
                    f"merge categories, or give weakly informative priors: {_WEAK_PRIORS}"
                )


COLLINEAR = 1e-10  # 1 − R² below this (residual SD below 1e-5 of the SD): collinear


def exact_combination(a: np.ndarray, v: np.ndarray, tol: float = COLLINEAR) -> np.ndarray | None:
    """The coefficients of ``v`` on the columns of ``a`` (scaled to unit root mean square) when
    they fit it exactly — a residual sum of squares below ``tol`` times v's centred one (``a``
    holds an intercept) — else None."""
    a = a / _rms(a)
    coef, *_ = np.linalg.lstsq(a, v, rcond=None)
    resid, vc = v - a @ coef, v - v.mean()
    return coef if resid @ resid <= tol * (vc @ vc) else None


def check_collinear(data) -> None:
    """Raise a DataError if a continuous variable is, on the rows where it and the continuous
    variables of its level before it are observed, a linear combination (to 1e-5 of its SD) of
    that level's fixed-effect design and those variables (a constant variable included).

    Its residual variance is then zero: the likelihood of Ω is unbounded, the inverse-Wishart
    prior alone keeps the posterior proper, the chain mixes badly and cluster-specific
    covariances (few rows each) become singular. The checks are on columns scaled to unit
    root-mean-square, so scale does not matter; fewer complete rows than columns decide nothing."""
    levels: dict[object, list] = {}
    for codec in data.codecs:
        if codec.kind == "continuous":
            levels.setdefault(codec.level, []).append(codec)
    for level, codecs in levels.items():
        y, miss, _ = data.unit_arrays(codecs[0])
        x, x_names = data.level_design(level)
        cols = [c.cols[0] for c in codecs]
        for k, codec in enumerate(codecs):
            rows = ~miss[:, cols[: k + 1]].any(axis=1)
            n = int(rows.sum())
            a = np.column_stack([x[rows], y[np.ix_(rows, cols[:k])]])
            if n <= a.shape[1] + 1:
                continue
            v = y[rows, cols[k]]
            constant = np.ptp(v) == 0
            coef = None if constant else exact_combination(a, v)
            if not constant and coef is None:
                continue
            names = [*x_names, *(c.name for c in codecs[:k])]
            others = [] if constant else [nm for nm, c in zip(names, coef) if abs(c) > 1e-6 * np.abs(coef).max()
                                          and nm != "Intercept"]
            others_vars = [nm for nm in others if nm in {c.name for c in codecs}]
            if not others:
                what = f"constant (every observed value is {v[0]:g})"
                fix = (f"drop {codec.name!r} from variables (and fill its missing values with that "
                       "value, if that is what they are)")
            else:
                what = "(to within 1e-5 of its standard deviation) a linear combination of " + ", ".join(map(repr, others))
                fix = (f"drop {codec.name!r} from variables and compute it afterwards from the imputed "
                       f"{', '.join(map(repr, others_vars))} (passive imputation)" if others_vars else
                       f"drop {codec.name!r} from variables and compute it afterwards from the covariates")
            raise DataError(
                f"variable {codec.name!r} is {what} on the {n} {'rows' if level == 1 else 'units'} "
                f"where {', '.join(repr(c.name) for c in codecs[: k + 1])} {'is' if k == 0 else 'are'} observed: it has no "
                f"residual variance, so the joint model's covariance is singular; {fix}"
            )


def check_observed_designs(data) -> None:
    """Raise a DataError if a variable's fixed-effect design (or its variance function's) is
    rank-deficient on the rows (units) where the variable is observed — a covariate that is
    zero, or constant, wherever the variable is seen (a site dummy of a site that never
    measured it). Its coefficient then has no data and a flat prior: the posterior is improper,
    the chain drifts and the imputations with it. Categorical variables with
    ``categorical_prior_sd`` have a proper prior and are left alone."""
    prior = data.model.categorical_prior_sd is not None
    for codec in data.codecs:
        if prior and codec.kind != "continuous":
            continue
        y, miss, _ = data.unit_arrays(codec)
        obs = codec.codes >= 0 if codec.kind != "continuous" else ~miss[:, codec.cols[0]]
        x, names = data.level_design(codec.level)
        if codec.kind == "continuous" and obs.sum() < 2:
            raise DataError(
                f"variable {codec.name!r} is observed in a single {'row' if codec.level == 1 else 'unit'}: "
                "nothing shows its spread, and its imputations would be the prior's; drop it from variables"
            )
        _observed_rank(x[obs], names, codec.name, int(obs.sum()), "its coefficient",
                       "drop the covariate (or merge its category), or leave those rows out",
                       "rows" if codec.level == 1 else "units")
    for v in data.variances:
        obs = ~data.miss1[:, v.col]
        w = np.column_stack([np.ones(data.n_rows), v.w])
        _observed_rank(w[obs], ("Intercept", *v.w_names), v.name, int(obs.sum()),
                       "its log-variance coefficient", "drop it from the variance function (or merge its category)",
                       "rows")


def _observed_rank(x: np.ndarray, names, variable: str, n: int, what: str, fix: str, rows: str) -> None:
    k = dependent_column(x, tol=1e-10)
    if k is None:
        return
    if n <= k:
        raise DataError(
            f"variable {variable!r} is observed in {n} {rows}, too few for its {len(names)} fixed effects "
            f"({', '.join(map(repr, names))}): their posterior is improper; drop it from variables "
            "or drop covariates"
        )
    col = x[:, k]
    how = ("zero" if not np.any(col) else
           f"constant ({col[0]:g})" if np.ptp(col) == 0 else
           f"a linear combination of {', '.join(map(repr, names[:k]))}")
    raise DataError(
        f"{names[k]!r} is {how} on all {n} {rows} where {variable!r} is observed: {what} for "
        f"{variable!r} has no data and a flat prior, so its posterior is improper and the imputations "
        f"would drift; {fix}"
    )
