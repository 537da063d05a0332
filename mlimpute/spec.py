"""Frozen, validated specification of a joint multilevel imputation model.

The specification says *what* is imputed and *how* it is modelled; it knows nothing of the
data. Checks that need the data (columns exist, types, level-2 constancy) live in
:mod:`mlimpute.design`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np

from .errors import SpecError

__all__ = ["Variable", "ImputationModel", "CovariancePrior", "VariableKind", "CovarianceKind"]

VariableKind = Literal["continuous", "binary", "ordinal", "nominal"]
CovarianceKind = Literal["common", "cluster"]

_KINDS: tuple[str, ...] = get_args(VariableKind)
_COVARIANCES: tuple[str, ...] = get_args(CovarianceKind)


@dataclass(frozen=True)
class Variable:
    """One variable to impute.

    Parameters
    ----------
    kind : {"continuous", "binary", "ordinal", "nominal"}
        Measurement type; categorical kinds are modelled through latent normals.
    level : {1, 2}
        1 for a unit-level variable (varies within clusters), 2 for a cluster-level variable
        (constant within each cluster).
    categories : sequence, optional
        For ordinal variables, the categories in increasing order (default: the order of an
        ordered pandas Categorical, else the sorted observed values). For binary and nominal
        variables, the full set of categories when some are not observed.
    """

    kind: VariableKind
    level: Literal[1, 2] = 1
    categories: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise SpecError(
                f"variable kind {self.kind!r} is not one of {', '.join(map(repr, _KINDS))}; "
                "pick the measurement type of the column"
            )
        if self.level not in (1, 2):
            raise SpecError(f"variable level {self.level!r} must be 1 (unit) or 2 (cluster)")
        if self.categories is not None:
            cats = tuple(self.categories)
            if self.kind == "continuous":
                raise SpecError("categories= is only meaningful for categorical variables")
            if len(set(cats)) != len(cats):
                raise SpecError(f"categories {cats!r} contain duplicates")
            object.__setattr__(self, "categories", cats)

    @property
    def is_categorical(self) -> bool:
        return self.kind != "continuous"


@dataclass(frozen=True)
class CovariancePrior:
    """Inverse-Wishart prior ``IW(df, scale)`` for a covariance matrix.

    ``None`` fields take jomo's defaults: the identity scale and ``df`` equal to the dimension.
    The scale is stored as nested tuples so that the specification stays hashable.
    """

    scale: tuple[tuple[float, ...], ...] | None = None
    df: float | None = None

    def __post_init__(self) -> None:
        if self.scale is not None:
            s = np.asarray(self.scale, dtype=float)
            if s.ndim != 2 or s.shape[0] != s.shape[1]:
                raise SpecError(f"prior scale must be a square matrix, got shape {s.shape}")
            if not np.allclose(s, s.T):
                raise SpecError("prior scale must be symmetric")
            try:
                np.linalg.cholesky(s)
            except np.linalg.LinAlgError:
                raise SpecError("prior scale must be positive definite") from None
            object.__setattr__(self, "scale", tuple(tuple(float(v) for v in row) for row in s))
        if self.df is not None and not (np.isfinite(self.df) and self.df > 0):
            raise SpecError(f"prior df must be a positive number, got {self.df!r}")

    def resolve(self, dim: int, what: str) -> tuple[np.ndarray, float]:
        """Return ``(scale, df)`` for a ``dim``-dimensional covariance, checking the shape."""
        if self.scale is None:
            scale = np.eye(dim)
        else:
            scale = np.asarray(self.scale, dtype=float)
            if scale.shape != (dim, dim):
                raise SpecError(
                    f"{what} prior scale is {scale.shape[0]}x{scale.shape[1]} but the {what} "
                    f"covariance is {dim}x{dim}; give a {dim}x{dim} matrix"
                )
        df = float(dim) if self.df is None else float(self.df)
        if df <= dim - 1:
            raise SpecError(f"{what} prior df={df:g} must exceed dimension-1={dim - 1} for a proper prior")
        return scale, df


def _names(value: Sequence[str] | str | None, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    out = tuple(value)
    for v in out:
        if not isinstance(v, str) or not v:
            raise SpecError(f"{what} must be column names (strings), got {v!r}")
    if len(set(out)) != len(out):
        dup = sorted({v for v in out if out.count(v) > 1})
        raise SpecError(f"{what} lists {dup} more than once")
    return out


@dataclass(frozen=True)
class ImputationModel:
    """The joint latent-normal two-level imputation model (Goldstein, Carpenter & Browne).

    Parameters
    ----------
    cluster : str
        Name of the level-2 identifier column.
    variables : mapping of str to Variable or kind string
        The variables to impute. A bare string is shorthand for ``Variable(kind)`` at level 1.
    covariates : sequence of str
        Fully observed level-1 predictors of the level-1 variables (an intercept is implicit).
        Non-numeric columns are expanded to treatment-coded dummies.
    level2_covariates : sequence of str
        Fully observed cluster-level predictors. They enter the fixed part of both the level-2
        *and* the level-1 variables (a cluster-level predictor of unit-level outcomes is the
        common case and keeps the imputation model congenial with such analyses).
    random_slopes : sequence of str
        Level-1 covariates with a random coefficient for every level-1 variable (the intercept is
        always random).
    covariance : {"common", "cluster"}
        One level-1 covariance matrix, or cluster-specific ones drawn around a common
        inverse-Wishart mean (jomo's ``meth="random"``; continuous level-1 variables only).
        With "cluster", ``prior_l1`` gives the scale Γ of the Wishart prior of the common
        scale matrix A and its df γ − 1 (defaults: I and p1, as jomo).
    prior_l1, prior_l2 : CovariancePrior
        Inverse-Wishart priors of the level-1 covariance Ω1 and the level-2 covariance Ω2.

    Notes
    -----
    For cluster j and unit i::

        y1_ij = X1_ij B1 + Z_ij U1_j + e_ij,   e_ij ~ N(0, Ω1)
        y2_j  = X2_j B2 + U2_j,                (vec U1_j, U2_j) ~ N(0, Ω2)

    References
    ----------
    Goldstein, H., Carpenter, J. R., & Browne, W. J. (2014). Fitting multilevel multivariate
    models with missing data in responses and covariates that may include interactions and
    non-linear terms. JRSS A, 177(2), 553-564.
    Quartagno, M., & Carpenter, J. R. (2016). Multiple imputation for IPD meta-analysis: allowing
    for heterogeneity and studies with missing covariates. Statistics in Medicine, 35, 2938-2954.
    """

    cluster: str
    variables: Mapping[str, Variable | str]
    covariates: Sequence[str] = ()
    level2_covariates: Sequence[str] = ()
    random_slopes: Sequence[str] = ()
    covariance: CovarianceKind = "common"
    prior_l1: CovariancePrior = field(default_factory=CovariancePrior)
    prior_l2: CovariancePrior = field(default_factory=CovariancePrior)

    def __post_init__(self) -> None:
        if not isinstance(self.cluster, str) or not self.cluster:
            raise SpecError(f"cluster must be a column name (string), got {self.cluster!r}")
        if not isinstance(self.variables, Mapping) or not self.variables:
            raise SpecError("variables must be a non-empty mapping {column: kind or Variable}")
        norm: dict[str, Variable] = {}
        for name, v in self.variables.items():
            if not isinstance(name, str) or not name:
                raise SpecError(f"variable names must be strings, got {name!r}")
            if isinstance(v, str):
                v = Variable(v)  # type: ignore[arg-type]
            elif not isinstance(v, Variable):
                raise SpecError(
                    f"variable {name!r}: expected a kind string or mlimpute.Variable, got {v!r}"
                )
            norm[name] = v
        object.__setattr__(self, "variables", norm)
        cov = _names(self.covariates, "covariates")
        cov2 = _names(self.level2_covariates, "level2_covariates")
        slopes = _names(self.random_slopes, "random_slopes")
        object.__setattr__(self, "covariates", cov)
        object.__setattr__(self, "level2_covariates", cov2)
        object.__setattr__(self, "random_slopes", slopes)
        if self.covariance not in _COVARIANCES:
            raise SpecError(
                f"covariance={self.covariance!r} is not one of {', '.join(map(repr, _COVARIANCES))}"
            )
        roles = {"cluster": (self.cluster,), "variables": tuple(norm), "covariates": cov,
                 "level2_covariates": cov2}
        seen: dict[str, str] = {}
        for role, cols in roles.items():
            for c in cols:
                if c in seen:
                    raise SpecError(
                        f"column {c!r} appears both as {seen[c]} and as {role}; give each column one role"
                    )
                seen[c] = role
        for s in slopes:
            if s not in cov:
                raise SpecError(
                    f"random slope {s!r} is not among the level-1 covariates {list(cov)}; "
                    "add it to covariates= (random slopes are coefficients of fully observed covariates)"
                )
        if self.covariance == "cluster":
            if not any(v.level == 1 for v in norm.values()):
                raise SpecError(
                    "covariance='cluster' makes the level-1 covariance cluster-specific, but no "
                    "variable is at level 1; use covariance='common'"
                )
            cats = [n for n, v in norm.items() if v.level == 1 and v.is_categorical]
            if cats:
                raise SpecError(
                    f"covariance='cluster' is not available with categorical level-1 variables "
                    f"({', '.join(map(repr, cats))}): their latent variances are fixed, and an "
                    "inverse-Wishart prior restricted to such matrices has no tractable normalising "
                    "constant, so the hierarchical update would be approximate (jomo ignores this); "
                    "use covariance='common' or declare them at level 2"
                )
        if not isinstance(self.prior_l1, CovariancePrior) or not isinstance(self.prior_l2, CovariancePrior):
            raise SpecError("prior_l1 and prior_l2 must be mlimpute.CovariancePrior instances")

    # Convenience views -------------------------------------------------------------------
    @property
    def level1_variables(self) -> tuple[str, ...]:
        return tuple(n for n, v in self.variables.items() if v.level == 1)

    @property
    def level2_variables(self) -> tuple[str, ...]:
        return tuple(n for n, v in self.variables.items() if v.level == 2)

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column the model reads, in a stable order."""
        return (self.cluster, *self.variables, *self.covariates, *self.level2_covariates)
