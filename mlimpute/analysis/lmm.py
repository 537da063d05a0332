"""Linear mixed models by ML and REML: lme4's profiled deviance, minimised over theta.

Notes
-----
Model: ``y = Xβ + Z b + ε``, ``b = Λ_θ u``, ``u ~ N(0, σ² I)``, ``ε ~ N(0, σ² I)`` (Bates,
Mächler, Bolker & Walker 2015). With ``L L' = Λᵀ Zᵀ Z Λ + I`` and the penalised residual sum of
squares ``r²(θ) = min_{β,u} ‖y − Xβ − ZΛu‖² + ‖u‖²``, the profiled deviances are

    ML:    d(θ)   = log|L|² + n (1 + log(2π r²/n))
    REML:  d_R(θ) = log|L|² + log|R_X|² + (n − p)(1 + log(2π r²/(n − p)))

(σ² and β profiled out; σ̂² = r²/n or r²/(n − p)). Both pieces come from
:mod:`~mlimpute.analysis._algebra`: per-cluster sufficient statistics for nested factors (one
evaluation costs ``O(Σ G_k m³)``, independent of n), SuperLU for crossed ones. The fixed-effect
covariance is ``σ̂² (R_Xᵀ R_X)⁻¹``, as lme4's ``vcov``. Minimisation: L-BFGS-B with Newton
polishing (:mod:`~mlimpute.analysis._optim`).

References
----------
Bates, D., Mächler, M., Bolker, B. & Walker, S. (2015). Fitting linear mixed-effects models
using lme4. *Journal of Statistical Software* 67(1).
Goldstein, H. (1986). Multilevel mixed linear model analysis using iterative generalized least
squares. *Biometrika* 73, 43–56.
Goldstein, H. (2011). *Multilevel Statistical Models*, 4th ed. Wiley.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.linalg import cho_solve, solve_triangular

from ..errors import SpecError
from ._algebra import make_algebra, sort_design
from ._design import Design, build_design
from ._optim import fd_hessian, minimize_bounded, one_blas_thread
from ._structure import Structure
from ._warn import warn, warn_fit
from .formula import parse_formula
from .result import MixedResult

__all__ = ["lmm", "LmmEngine", "fit_options"]

_LOG2PI = math.log(2 * math.pi)


def fit_options(opts: dict, allowed: dict, who: str) -> dict:
    """Merge ``opts`` into the defaults ``allowed``; unknown names raise a SpecError."""
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise SpecError(f"{who}() got unknown option {unknown[0]!r}; known options: {', '.join(sorted(allowed))}")
    return {**allowed, **opts}


@dataclass(frozen=True)
class _Pieces:
    ldL2: float
    ldRX2: float
    beta: np.ndarray
    XtX: np.ndarray  # R_Xᵀ R_X
    r2: float


class LmmEngine:
    """Data, structure and solver of one LMM; evaluates its (RE)ML criteria."""

    def __init__(self, formula: str, design: Design, options: dict):
        self.formula = formula
        self.design = design = sort_design(design)
        self.options = options
        self.structure = Structure.from_design(design)
        self.algebra = make_algebra(self.structure, design, options["algebra"])
        self.n, self.p = design.X.shape

    def pieces(self, theta: np.ndarray) -> _Pieces:
        sol = self.algebra.solve(theta)
        p = self.p
        chol = np.linalg.cholesky(sol.F)  # lower; chol[:p,:p] = R_Xᵀ, chol[p,p]² = r²
        beta = solve_triangular(chol[:p, :p].T, chol[p, :p], lower=False) if p else np.zeros(0)
        return _Pieces(
            ldL2=sol.ldL2, ldRX2=2.0 * float(np.log(np.diag(chol)[:p]).sum()),
            beta=beta, XtX=sol.F[:p, :p], r2=float(chol[p, p] ** 2),
        )

    def profiled_deviance(self, theta: np.ndarray, reml: bool) -> float:
        try:
            sol = self.algebra.solve(theta)
            d = np.diag(np.linalg.cholesky(sol.F))  # R_X's diagonal on the first p, sqrt(r²) last
        except np.linalg.LinAlgError:
            return np.inf
        ldL2 = sol.ldL2
        r2 = float(d[-1] ** 2)
        if reml:
            dof = self.n - self.p
            return ldL2 + 2.0 * float(np.log(d[:-1]).sum()) + dof * (1 + _LOG2PI + math.log(r2 / dof))
        return ldL2 + self.n * (1 + _LOG2PI + math.log(r2 / self.n))

    def deviance(self, theta: np.ndarray, sigma2: float, reml: bool) -> float:
        """−2 × (RE)ML log-likelihood at theta and σ² (β profiled out)."""
        pc = self.pieces(theta)
        if reml:
            return pc.ldL2 + pc.ldRX2 + (self.n - self.p) * (_LOG2PI + math.log(sigma2)) + pc.r2 / sigma2
        return pc.ldL2 + self.n * (_LOG2PI + math.log(sigma2)) + pc.r2 / sigma2

    # ----- the MixedResult engine protocol --------------------------------------------------
    @one_blas_thread
    def loglik_at(self, beta: np.ndarray, covs: list[np.ndarray], sigma2) -> float:
        if sigma2 is None or not np.isfinite(sigma2) or sigma2 <= 0:
            raise SpecError(f"loglik_at needs a positive residual variance sigma2 for an LMM, got {sigma2!r}")
        if beta.shape != (self.p,):
            raise SpecError(f"beta must have {self.p} entries (the fixed effects), got shape {beta.shape}")
        theta = self.structure.theta_from_covariances(covs, float(sigma2))
        pc = self.pieces(theta)
        d = beta - pc.beta
        rss = pc.r2 + float(d @ pc.XtX @ d)
        return -0.5 * (pc.ldL2 + self.n * (_LOG2PI + math.log(sigma2)) + rss / sigma2)

    @one_blas_thread
    def varcomp_cov(self, result: MixedResult) -> np.ndarray:
        psi = np.array(result.psi)
        k = psi.size
        nan = np.full((k, k), np.nan)
        if result.singular:
            warn("varcomp_cov: boundary (singular) fit, the variance components have no regular "
                 "asymptotic covariance; returning NaN")
            return nan
        s = self.structure

        def dev(v: np.ndarray) -> float:
            covs = s.covariances_from_psi(v[:-1])
            theta = s.theta_from_covariances(covs, v[-1])
            return self.deviance(theta, v[-1], result.reml)

        try:
            # steps of 1e-3 relative: truncation error ~1e-6, rounding error well below it
            H = fd_hessian(dev, psi, h=1e-3 * np.maximum(np.abs(psi), 1e-3 * np.abs(psi).max()))
            return np.linalg.inv(0.5 * H)
        except (np.linalg.LinAlgError, SpecError):
            warn("varcomp_cov: the information matrix of the variance components is singular or the "
                 "finite-difference stencil left the parameter space; returning NaN")
            return nan

    def refit(self, reml: bool) -> MixedResult:
        return fit_lmm(self.formula, self.design, reml, self.options)


_DEFAULTS = {"na_action": "raise", "maxiter": 1000, "algebra": "auto"}


@one_blas_thread
def fit_lmm(formula: str, design: Design, reml: bool, options: dict) -> MixedResult:
    """Fit an LMM to a built design (used by :func:`lmm` and by ``refit``)."""
    engine = LmmEngine(formula, design, options)
    s = engine.structure
    opt = minimize_bounded(lambda th: engine.profiled_deviance(th, reml), s.theta_start(), s.theta_lower(),
                           maxiter=options["maxiter"])
    theta = opt.x
    pc = engine.pieces(theta)
    sigma2 = pc.r2 / (engine.n - engine.p if reml else engine.n)
    beta_cov = sigma2 * cho_solve((np.linalg.cholesky(pc.XtX), True), np.eye(engine.p)) if engine.p else np.zeros((0, 0))
    covs = s.term_covariances(theta, sigma2)
    singular = s.is_singular(theta)
    warn_fit(formula, opt.converged, singular, opt.message, opt.scaled_gradient)
    return MixedResult(
        formula=formula, family="gaussian", link="identity", reml=bool(reml), nagq=0,
        term_names=design.x_names, beta=pc.beta, beta_cov=beta_cov,
        varcomp_labels=tuple(s.varcomp_labels(residual=True)),
        psi=np.append(s.psi_from_covariances(covs), sigma2), term_covs=tuple(covs), theta=theta,
        sigma2=float(sigma2), loglik=-0.5 * opt.fun, nobs=design.nobs,
        group_levels=tuple(zip(s.factor_labels, s.factor_levels)), term_groups=s.term_groups,
        random_names=s.term_names, converged=opt.converged, singular=singular, message=opt.message,
        _engine=engine,
    )


def lmm(formula: str, data: pd.DataFrame, reml: bool = True, **opts) -> MixedResult:
    """Fit a linear mixed model with an lme4-style formula, by REML (default) or ML.

    Parameters
    ----------
    formula : str
        ``"y ~ x + C(g) + x:z + (1 + x | school) + (1 | class)"``: fixed part and random-term
        expressions in formulaic's syntax; bars as lme4 (``(0 + x | g)``, ``(1 + x || g)``,
        ``(1 | a:b)``, ``(1 | a/b)``); multiple membership
        ``(1 | mm(s1, s2, s3, weights = (w1, w2, w3)))`` (see Notes).
    data : pandas.DataFrame
    reml : bool
        REML (True, lme4's default) or ML.
    **opts
        ``na_action`` ("raise" or "drop": missing values outside the grouping factors raise a
        DataError unless "drop" keeps the complete cases, like lme4's ``na.omit``);
        ``maxiter`` (optimiser iterations, default 1000); ``algebra`` ("auto", "nested",
        "sparse": the solver; "auto" picks per-cluster statistics for nested factors).

    Returns
    -------
    MixedResult
        ``tidy()`` p-values use the standard normal reference (lme4 gives none).

    Raises
    ------
    SpecError
        Malformed formula or option.
    DataError
        Unknown column, missing grouping values, non-numeric response, dependent fixed effects,
        a grouping factor with one level or more random effects than observations.

    Warns
    -----
    ConvergenceWarning
        Non-convergence (``converged`` False) or a boundary (singular) fit (``singular`` True).

    Notes
    -----
    See the module docstring for the profiled deviance.

    Multiple membership: a row i belonging to the units ``s_i1, …, s_iK`` of ``mm( … )`` with
    weights ``w_ik`` (``Σ_k w_ik = 1``; ids missing where a row has fewer units, their weights 0
    or missing; without ``weights =`` the ids present share equally) has the random part
    ``Σ_k w_ik z_iᵀ u_{s_ik}``, ``u_s ~ N(0, Σ)``, so ``y ~ N(Xβ, σ²I + Z (I ⊗ Σ) Zᵀ)`` with
    several weighted blocks in each row of ``Z``; the factor's levels are the union of the ids,
    and ``varcomp()`` names its group ``mm(s1, s2, s3)``. Fitted by the sparse solver.

    References
    ----------
    Bates, Mächler, Bolker & Walker (2015); Goldstein (2011); Browne, W. J., Goldstein, H. &
    Rasbash, J. (2001). Multiple membership multiple classification (MMMC) models. *Statistical
    Modelling* 1, 103–124.
    """
    options = fit_options(opts, _DEFAULTS, "lmm")
    design = build_design(parse_formula(formula), data, kind="gaussian", na_action=options["na_action"])
    return fit_lmm(formula, design, bool(reml), options)
