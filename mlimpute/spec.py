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

__all__ = ["Variable", "ImputationModel", "CovariancePrior", "VariableKind", "CovarianceKind",
           "Family", "Link", "Crossed", "Membership", "Classification"]

VariableKind = Literal["continuous", "binary", "ordinal", "nominal"]
CovarianceKind = Literal["common", "cluster"]
Family = Literal["gaussian", "binomial"]
Link = Literal["identity", "logit", "probit"]

_KINDS: tuple[str, ...] = get_args(VariableKind)
_COVARIANCES: tuple[str, ...] = get_args(CovarianceKind)


@dataclass(frozen=True)
class Variable:
    """One variable to impute.

    Parameters
    ----------
    kind : {"continuous", "binary", "ordinal", "nominal"}
        Measurement type; categorical kinds are modelled through latent normals.
    level : 1, 2 or str
        1 for a unit-level variable (varies within clusters), 2 for a cluster-level variable
        (constant within each cluster) when there is one cluster column, or the name of the
        classification at which it is measured (``level="school"``) with several.
    categories : sequence, optional
        For ordinal variables, the categories in increasing order (default: the order of an
        ordered pandas Categorical, else the sorted observed values). For binary and nominal
        variables, the full set of categories when some are not observed.
    variance : str, optional
        A variance function of a continuous level-1 variable: its residual variance given the
        other level-1 variables (those without a function, and the earlier ones with) is
        multiplied by ``exp(w_i'γ + v_k)``, ``w`` the columns of a one-sided formula of complete
        covariates (``"~ sex + ses"``; no intercept: Ω1 keeps the baseline) and ``v_k`` an
        optional random effect of a classification on the log-variance (``"~ sex + (1 |
        school)"``), correlated with that classification's other random effects (a
        location-scale model, Leckie et al. 2014).
    """

    kind: VariableKind
    level: Literal[1, 2] | str = 1
    categories: tuple[Any, ...] | None = None
    variance: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise SpecError(
                f"variable kind {self.kind!r} is not one of {', '.join(map(repr, _KINDS))}; "
                "pick the measurement type of the column"
            )
        if not (self.level in (1, 2) and not isinstance(self.level, bool)) and not (
                isinstance(self.level, str) and self.level):
            raise SpecError(
                f"variable level {self.level!r} must be 1 (unit), 2 (cluster) or the name of a "
                "classification (e.g. level='school')")
        if self.variance is not None:
            if self.kind != "continuous" or self.level != 1:
                article = "an" if self.kind[0] in "aeiou" else "a"
                raise SpecError(
                    f"variance={self.variance!r} is for continuous level-1 variables ({article} "
                    f"{self.kind} variable at level {self.level!r} has no residual variance to model)"
                )
            if not isinstance(self.variance, str) or not self.variance.strip().startswith("~") \
                    or not self.variance.strip()[1:].strip():
                raise SpecError(
                    f"variance={self.variance!r} must be a one-sided formula like '~ sex + ses' or "
                    "'~ sex + (1 | school)'"
                    + (" (it is empty)" if isinstance(self.variance, str) and self.variance.strip() == "~" else "")
                )
            from .analysis.formula import intercept_dropped

            kept = intercept_dropped(self.variance.strip()[1:].strip())
            if kept is not None:
                raise SpecError(
                    f"variance={self.variance!r} removes the intercept, which is the baseline variance itself and "
                    "is always there (the other terms are log-ratios to it): "
                    + (f"write '~ {kept}'" if kept else "give covariates (~ sex) or a random effect (~ (1 | school))")
                )
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

    ``None`` fields take jomo's defaults: the identity scale and ``df`` equal to the dimension
    (on the standardised scale the sampler works on unless ``standardize=False``; a scale given
    here is on the data's scale: see :mod:`mlimpute.scaling`).
    The scale is stored as nested tuples so that the specification stays hashable.
    """

    scale: tuple[tuple[float, ...], ...] | None = None
    df: float | None = None

    def __post_init__(self) -> None:
        if self.scale is not None:
            try:
                s = np.asarray(self.scale, dtype=float)
            except (TypeError, ValueError):
                raise SpecError(f"prior scale must be a square matrix of numbers, got {self.scale!r}") from None
            if s.ndim != 2 or s.shape[0] != s.shape[1]:
                raise SpecError(f"prior scale must be a square matrix, got shape {s.shape}")
            if not np.isfinite(s).all():
                raise SpecError(f"prior scale must hold finite numbers, got {s.tolist()}")
            if not np.allclose(s, s.T):
                raise SpecError("prior scale must be symmetric")
            try:
                np.linalg.cholesky(s)
            except np.linalg.LinAlgError:
                raise SpecError("prior scale must be positive definite") from None
            object.__setattr__(self, "scale", tuple(tuple(float(v) for v in row) for row in s))
        if self.df is not None and (isinstance(self.df, bool) or not isinstance(self.df, (int, float, np.integer, np.floating))):
            raise SpecError(f"prior df must be a number, got {self.df!r}")
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


@dataclass(frozen=True)
class Crossed:
    """Cross-classified clusters: every unit belongs to one unit of each classification, and
    the classifications are not nested (pupils in primary × secondary schools).

    ``mi.ImputationModel(cluster=mi.Crossed("primary", "secondary"), ...)``
    """

    names: tuple[str, ...]

    def __init__(self, *names: str):
        object.__setattr__(self, "names", _names(list(names), "Crossed(...)"))
        if len(self.names) < 2:
            raise SpecError("Crossed(...) needs at least two cluster columns, e.g. Crossed('primary', 'secondary')")


@dataclass(frozen=True)
class Membership:
    """Multiple membership: a unit belongs to several units of one classification with weights
    (pupils who changed school): ``Membership(["school1", "school2"], weights=["w1", "w2"])``.

    Row i's random effect is ``Σ_k w_ik u_{s_ik}`` over its id columns; an id may be missing for
    units with fewer memberships (its weight then missing or 0); the weights of a unit sum to 1.
    ``name`` labels the classification in outputs (default ``mm(school1, school2)``).
    """

    ids: tuple[str, ...]
    weights: tuple[str, ...]
    name: str | None = None

    def __post_init__(self) -> None:
        ids = _names(self.ids, "Membership ids")
        weights = _names(self.weights, "Membership weights")
        if not ids:
            raise SpecError("Membership(ids, weights) needs at least one id column")
        if len(ids) != len(weights):
            raise SpecError(
                f"Membership has {len(ids)} id columns {list(ids)} but {len(weights)} weight columns "
                f"{list(weights)}; give one weight column per id column"
            )
        if set(ids) & set(weights):
            raise SpecError(f"Membership: columns {sorted(set(ids) & set(weights))} are both ids and weights")
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "weights", weights)
        if self.name is None:
            object.__setattr__(self, "name", f"mm({', '.join(ids)})")
        elif not isinstance(self.name, str) or not self.name:
            raise SpecError(f"Membership name must be a non-empty string, got {self.name!r}")


@dataclass(frozen=True)
class Classification:
    """One classification of the model's structure (derived from ``ImputationModel.cluster``).

    ``kind``: "nested" (its units are the combinations of ``columns``, outermost first, as
    lme4's ``school/class``), "crossed", or "membership" (``columns`` the id columns,
    ``weights`` their weight columns).
    """

    name: str
    kind: Literal["nested", "crossed", "membership"]
    columns: tuple[str, ...]
    weights: tuple[str, ...] = ()


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
    cluster : str, list of str, Crossed or Membership
        The clustering: one identifier column (the two-level model (6)); a list of columns,
        outermost first, for nested classifications (``["school", "class"]``, as lme4's
        ``school/class``: a class is the combination of its school and class ids);
        ``Crossed("primary", "secondary")`` for cross-classified ones; or
        ``Membership(["s1", "s2"], weights=["w1", "w2"])`` for multiple membership. With more
        than one classification every classification gets its own random intercepts and
        covariance matrix (``random_slopes`` and cluster-specific covariances need a single
        cluster column; a substantive model takes random terms of any classification), and a
        variable's ``level`` names the classification at which it is measured.
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
    priors : mapping of str to CovariancePrior
        With several classifications or a variance function (the general sampler): the
        inverse-Wishart prior of a classification's covariance Ω^(c), by classification name
        (default: identity scale on the standardised scale, df its dimension). Ω^(c)'s coordinates
        are, in order, the classification's effects on the level-1 variables, on the variables
        of the classifications nested in it, its log-variance effects, then its own variables'
        residuals (a wrong-sized scale is refused with that list); a stated scale is on the
        data's scale. The two-level model's Ω2 takes ``prior_l2``.
    substantive : str, optional
        The analysis model, an lme4-style formula as for :func:`mlimpute.lmm`
        (``"y ~ x * z + I(x**2) + (1 + x | g)"``), whose random terms are grouped by ``cluster``.
        The imputation model becomes ``p(y | covariates) · p(incomplete covariates | complete
        covariates)``: the analysis model of the outcome y times model (6) of the variables in
        ``variables`` (the incomplete covariates, which then need not include y), so that random
        slopes, interactions and non-linear terms of the analysis are imputed compatibly
        (Goldstein, Carpenter & Browne 2014). Complete variables of the formula need not be
        listed in ``covariates``: those not listed are added to the covariates of the
        incomplete variables' model (to ``level2_covariates`` where constant within clusters),
        as jomo.lmer does — leaving them out would impute the incomplete covariates as if
        independent of them; and the cluster means of those that vary within clusters (listed
        or not) join the fixed part of the variables measured on clusters (or on a
        classification's units), as ``mean(x|g)``, for the same reason.
    family : {"gaussian", "binomial"}
        The substantive model's outcome distribution (linear or binary mixed model).
    link : {"logit", "probit"}, optional
        For ``family="binomial"`` (default "logit", as glmer); "identity" for gaussian.
    prior_substantive : CovariancePrior
        Inverse-Wishart prior of the substantive model's random-effect covariance; by default,
        per covariance block (one per random term, or per column of a ``||`` term; with several
        classifications, each term's), df = its dimension w and the scale (2w + 1) times the
        complete-case estimate, so that the prior's mode is that estimate (jomo.lmer takes the
        estimate itself as the scale, which pulls weakly identified variances toward a fifth of
        it). A stated scale covers all q effects in the formula's order (block-diagonal).
    categorical_prior_sd : float, optional
        Weakly informative N(0, sd²) priors on the fixed effects of the categorical variables'
        latent columns and on ordinal thresholds (their latent scale is 1: 2.5–5 is weak). The
        default (None) keeps flat priors, as jomo; a declared category that is never observed, or
        a categorical variable separated by a covariate, then has no proper posterior and is
        refused before sampling, naming this option as a fix.
    standardize : bool
        Fit the model to centred and scaled continuous variables and scaled covariates, with
        every prior defined on that scale, and report everything on the data's scale (default
        True; see :mod:`mlimpute.scaling`): the default priors then mean the same for any units
        of measurement. False keeps the data's scale (jomo's convention). With a substantive
        model the joint part is scaled and the analysis model's own parameters stay on the
        data's scale (their priors come from the complete-case fit).

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

    cluster: str | Sequence[str] | Crossed | Membership
    variables: Mapping[str, Variable | str]
    covariates: Sequence[str] = ()
    level2_covariates: Sequence[str] = ()
    random_slopes: Sequence[str] = ()
    covariance: CovarianceKind = "common"
    prior_l1: CovariancePrior = field(default_factory=CovariancePrior)
    prior_l2: CovariancePrior = field(default_factory=CovariancePrior)
    substantive: str | None = None
    family: Family = "gaussian"
    link: Link | None = None
    prior_substantive: CovariancePrior = field(default_factory=CovariancePrior)
    categorical_prior_sd: float | None = None
    standardize: bool = True
    priors: Mapping[str, CovariancePrior] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._normalise_cluster()
        if not isinstance(self.variables, Mapping) or (not self.variables and self.substantive is None):
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
        roles = {"cluster": self.cluster_columns, "variables": tuple(norm), "covariates": cov,
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
        if not all(isinstance(p, CovariancePrior) for p in (self.prior_l1, self.prior_l2, self.prior_substantive)):
            raise SpecError("prior_l1, prior_l2 and prior_substantive must be mlimpute.CovariancePrior instances")
        if not isinstance(self.standardize, bool):
            raise SpecError(f"standardize={self.standardize!r} must be True or False")
        if self.categorical_prior_sd is not None and not (
                isinstance(self.categorical_prior_sd, (int, float)) and not isinstance(self.categorical_prior_sd, bool)
                and np.isfinite(self.categorical_prior_sd) and self.categorical_prior_sd > 0):
            raise SpecError(f"categorical_prior_sd={self.categorical_prior_sd!r} must be a positive number (e.g. 5)")
        self._check_levels(norm)
        self._check_substantive()
        if self.general and self.prior_l2 != CovariancePrior():
            raise SpecError(
                "prior_l2 is the prior of the two-level model's level-2 covariance; with several "
                "classifications or variance functions each classification's covariance has its "
                "own: give them as priors={'<classification>': CovariancePrior(...)}"
            )
        self._check_priors()

    def _check_priors(self) -> None:
        if not isinstance(self.priors, Mapping):
            raise SpecError(f"priors must be a mapping {{classification name: CovariancePrior}}, got {self.priors!r}")
        names = [c.name for c in self.classifications]
        for name, p in self.priors.items():
            if not isinstance(p, CovariancePrior):
                raise SpecError(f"priors[{name!r}] must be an mlimpute.CovariancePrior, got {p!r}")
            if not self.general:
                raise SpecError(
                    f"priors={{{name!r}: ...}} is for several classifications or variance functions; the "
                    "two-level model's level-2 covariance takes prior_l2=CovariancePrior(...) "
                    "([model.prior_l2] in a TOML config)"
                )
            if name not in names:
                raise SpecError(f"priors names {name!r}, which is not a classification of this model "
                                f"({', '.join(map(repr, names))})")
        object.__setattr__(self, "priors", dict(self.priors))

    def _normalise_cluster(self) -> None:
        c = self.cluster
        if isinstance(c, (Crossed, Membership)):
            return
        if isinstance(c, str):
            if not c:
                raise SpecError("cluster must be a column name, got ''")
            return
        if isinstance(c, Sequence) and c and all(isinstance(v, str) and v for v in c):
            names = _names(list(c), "cluster")
            object.__setattr__(self, "cluster", names[0] if len(names) == 1 else names)
            return
        raise SpecError(
            f"cluster must be a column name, a list of nested cluster columns (outermost first), "
            f"mlimpute.Crossed(...) or mlimpute.Membership(...); got {c!r}"
        )

    def _check_levels(self, norm: dict[str, "Variable"]) -> None:
        """Levels name classifications; features of model (6) that need one cluster column."""
        names = [c.name for c in self.classifications]
        for name, v in norm.items():
            if isinstance(v.level, str):
                if self.two_level and v.level == self.cluster:
                    norm[name] = Variable(v.kind, level=2, categories=v.categories, variance=v.variance)
                    continue
                if v.level not in names:
                    raise SpecError(
                        f"variable {name!r} has level={v.level!r}, which is not a classification of "
                        f"this model ({', '.join(map(repr, names))}); use one of those, or 1 for the unit"
                    )
                if self.classification(v.level).kind == "membership":
                    raise SpecError(
                        f"variable {name!r} is measured at the multiple-membership classification "
                        f"{v.level!r}: its values would be per school, but each row has several "
                        "schools; impute such a variable in a table of the schools, and use it here "
                        "as a complete covariate"
                    )
            elif v.level == 2 and not self.two_level:
                raise SpecError(
                    f"variable {name!r} has level=2, but the model has several classifications "
                    f"({', '.join(map(repr, names))}); name the one at which it is measured, e.g. "
                    f"level={names[-1]!r}"
                )
        vf = [n for n, v in norm.items() if v.variance is not None]
        if vf:
            for what, bad in (("random_slopes", bool(self.random_slopes)),
                              ("covariance='cluster'", self.covariance == "cluster"),
                              ("a multiple-membership classification",
                               any(c.kind == "membership" for c in self.classifications))):
                if bad:
                    raise SpecError(
                        f"the variance function of {vf[0]!r} cannot be combined with {what} yet; "
                        "drop one of them"
                    )
            self._check_variance_terms(norm, names)
        if not self.two_level:
            for what, bad in (("random_slopes", bool(self.random_slopes)),
                              ("covariance='cluster'", self.covariance == "cluster")):
                if bad:
                    raise SpecError(
                        f"{what} needs a single cluster column; this model has the classifications "
                        f"{', '.join(map(repr, names))} (each with random intercepts)"
                    )

    @property
    def two_level(self) -> bool:
        """One cluster column: the two-level model (6)."""
        return isinstance(self.cluster, str)

    @property
    def general(self) -> bool:
        """Sampled by the general sampler (several classifications or variance functions); the
        two-level model (6) otherwise has its own, with random slopes and cluster covariances."""
        return not self.two_level or any(v.variance is not None for v in self.variables.values())

    @property
    def classifications(self) -> tuple["Classification", ...]:
        """The classifications of the structure (nested ones outermost first)."""
        c = self.cluster
        if isinstance(c, str):
            return (Classification(c, "nested", (c,)),)
        if isinstance(c, Crossed):
            return tuple(Classification(n, "crossed", (n,)) for n in c.names)
        if isinstance(c, Membership):
            return (Classification(c.name, "membership", c.ids, c.weights),)
        return tuple(Classification(n, "nested", tuple(c[:k + 1])) for k, n in enumerate(c))

    def classification(self, name: str) -> "Classification":
        for c in self.classifications:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def cluster_columns(self) -> tuple[str, ...]:
        """Every column that defines the structure (ids, and weights for multiple membership)."""
        c = self.cluster
        if isinstance(c, str):
            return (c,)
        if isinstance(c, Crossed):
            return c.names
        if isinstance(c, Membership):
            return (*c.ids, *c.weights)
        return tuple(c)

    def _check_variance_terms(self, variables: dict, names: list[str]) -> None:
        """A variance function has at most one random term, one random intercept of a
        classification of the model: said here, with the model's other refusals (and a TOML
        file's name), rather than when the data are read (``structure.variance_data``)."""
        from .analysis.formula import parse_formula

        groups = [*names, *([self.cluster] if self.two_level else [])]
        for name, v in variables.items():
            if v.variance is None:
                continue
            where = f"variance={v.variance!r} of {name!r}"
            try:
                terms = parse_formula(f"__lhs__ {v.variance.strip()}").random
            except SpecError as exc:
                raise SpecError(f"cannot read {where}: {str(exc).replace('__lhs__ ', '')}") from None
            if len(terms) > 1:
                raise SpecError(f"{where}: it has more than one random term ({terms[1].text!r} is another); a "
                                "variance function takes one random intercept, of one classification")
            for term in terms:
                if term.expr.replace(" ", "") != "1" or term.group_label not in groups:
                    raise SpecError(
                        f"{where}: its random term {term.text!r} must be one random intercept of a "
                        f"classification of the model ({', '.join(map(repr, names))}), like '(1 | {names[-1]})'"
                    )

    def _check_substantive(self) -> None:
        if self.family not in ("gaussian", "binomial"):
            raise SpecError(f"family={self.family!r} is not 'gaussian' or 'binomial'")
        links = {"gaussian": ("identity",), "binomial": ("logit", "probit")}[self.family]
        if self.link is not None and self.link not in links:
            raise SpecError(
                f"link={self.link!r} is not available for family={self.family!r}; use one of "
                f"{', '.join(map(repr, links))}"
            )
        if self.substantive is None:
            if self.family != "gaussian" or self.link is not None:
                raise SpecError("family= and link= describe the substantive model: give substantive= too")
            return
        if not isinstance(self.substantive, str):
            raise SpecError(f"substantive must be a formula string like 'y ~ x + (1 | g)', got {self.substantive!r}")
        from .substantive import parse_substantive  # the formula parser lives with the analysis

        parse_substantive(self)

    @property
    def resolved_link(self) -> str:
        """The substantive model's link: as given, else identity (gaussian) or logit (binomial)."""
        if self.link is not None:
            return self.link
        return "identity" if self.family == "gaussian" else "logit"

    @property
    def outcome(self) -> str | None:
        """The substantive model's outcome column (None without a substantive model)."""
        if self.substantive is None:
            return None
        from .substantive import parse_substantive, _unquote

        return _unquote(parse_substantive(self).response)

    # Convenience views -------------------------------------------------------------------
    def variables_at(self, level: int | str) -> tuple[str, ...]:
        """Names of the variables measured at ``level`` (1, 2, or a classification's name)."""
        return tuple(n for n, v in self.variables.items() if v.level == level)

    @property
    def level1_variables(self) -> tuple[str, ...]:
        return tuple(n for n, v in self.variables.items() if v.level == 1)

    @property
    def level2_variables(self) -> tuple[str, ...]:
        return tuple(n for n, v in self.variables.items() if v.level == 2)

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column the model reads, in a stable order."""
        extra: tuple[str, ...] = ()
        if self.substantive is not None:
            from .substantive import parse_substantive, substantive_variables

            known = {self.cluster, *self.variables, *self.covariates, *self.level2_covariates}
            extra = (self.outcome, *sorted(substantive_variables(parse_substantive(self)) - known))
        return (*self.cluster_columns, *self.variables, *self.covariates, *self.level2_covariates, *extra)
