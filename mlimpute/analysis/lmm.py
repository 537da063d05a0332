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

With a variance function (``dispersion=``, :mod:`~mlimpute.analysis._dispersion`),
``ε ~ N(0, σ² V)``, ``V = diag(exp(w_iᵀγ))``. The rows scaled by ``V^{-1/2}`` follow the model
above, so the same algebra runs with prior weights ``a_i = exp(−w_iᵀγ)`` (in ``ZᵀAZ``, ``XᵀAX``,
``r²``), and the Jacobian of the scaling adds ``log|V| = Σ_i w_iᵀγ``:

    ML:    d(θ, γ)   = log|L|² + n (1 + log(2π r²/n)) + Σ_i w_iᵀγ
    REML:  d_R(θ, γ) = log|L|² + log|R_X|² + (n − p)(1 + log(2π r²/(n − p))) + Σ_i w_iᵀγ

minimised over (θ, γ) with σ² still profiled out. These are nlme's ``lme`` log-likelihoods
with ``weights = varIdent(...)`` / ``varExp(...)`` (for REML, nlme's and lme4's criteria are
the same function: neither adds ``½ log|XᵀX|``) and glmmTMB's with ``dispformula`` (for REML,
``REML = TRUE``). The fixed-effect covariance ``σ̂² (R_Xᵀ R_X)⁻¹`` of the weighted rows is the
GLS covariance at the estimates (nlme's ``vcov``; glmmTMB's adds the variance parameters'
uncertainty); the SEs of γ come from ``varcomp_cov`` (the Hessian of the deviance in the
variance components and γ).

References
----------
Bates, D., Mächler, M., Bolker, B. & Walker, S. (2015). Fitting linear mixed-effects models
using lme4. *Journal of Statistical Software* 67(1).
Goldstein, H. (1986). Multilevel mixed linear model analysis using iterative generalized least
squares. *Biometrika* 73, 43–56.
Goldstein, H. (2011). *Multilevel Statistical Models*, 4th ed. Wiley.
Pinheiro, J. C. & Bates, D. M. (2000). *Mixed-Effects Models in S and S-PLUS*. Springer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy.linalg import cho_solve, solve_triangular

from ..errors import DataError, SpecError
from ._algebra import make_algebra, sort_design
from ._design import Design, build_design
from ._dispersion import DispersionDesign, build_dispersion, dispersion_columns
from ._optim import across_boundary, boundary_cov, fd_hessian, minimize_bounded, one_blas_thread
from ._structure import Structure, theta_scale
from ._warn import warn, warn_fit
from .formula import parse_formula
from .result import MixedResult

__all__ = ["lmm", "LmmEngine", "fit_options"]

_LOG2PI = math.log(2 * math.pi)


# lme4's argument names a user brings along, and ours
R_ARGUMENTS = {"REML": "reml=", "nAGQ": "nagq=", "na.action": "na_action=", "weights": "dispersion= (a variance "
               "function) or not supported (prior weights)", "control": "maxiter= (the optimiser's settings "
               "are not exposed otherwise)", "offset": "not supported"}


def fit_options(opts: dict, allowed: dict, who: str) -> dict:
    """Merge ``opts`` into the defaults ``allowed``; unknown names raise a SpecError."""
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        r_name = R_ARGUMENTS.get(unknown[0])
        hint = f" (R's {unknown[0]} is {r_name} here)" if r_name else ""
        raise SpecError(f"{who}() got unknown option {unknown[0]!r}{hint}; known options: "
                        f"{', '.join(sorted(allowed))}")
    return {**allowed, **opts}


@dataclass(frozen=True)
class _Pieces:
    ldL2: float
    ldRX2: float
    beta: np.ndarray
    XtX: np.ndarray  # R_Xᵀ R_X (of the weighted rows, with a variance function)
    r2: float
    ldV: float  # log|V| = Σ w_iᵀγ (0 without a variance function)
    XtX_inv: np.ndarray  # its inverse, computed from the centred and scaled columns


_NO_GAMMA = np.zeros(0)


def _centre_response(design: Design) -> tuple[Design, np.ndarray]:
    """The design with ``y − ȳ`` for the solver, and what that shift moves β by.

    With a constant column in X (the intercept) the likelihood does not change: that column's
    coefficient absorbs ȳ. The penalised sums of squares then lose the cancellation of a large
    ``yᵀWy`` against the fitted part, which left ~1e-10 rounding noise in the deviance for
    Penicillin's diameters (≈ 23; its variance function's γ was off by 2e-6 there).
    """
    X, shift = design.X, np.zeros(design.X.shape[1])
    const = np.flatnonzero(np.all(X == X[:1], axis=0) & (X[0] != 0)) if X.size else np.zeros(0, dtype=int)
    if const.size == 0:
        return design, shift
    c = float(design.y.mean())
    shift[const[0]] = c / X[0, const[0]]
    return replace(design, y=design.y - c), shift


def _column_transform(X: np.ndarray) -> tuple[np.ndarray | None, float]:
    """T with X̃ = X T: every non-constant column centred (when X holds a constant column) and
    scaled to unit SD, and log|det T|; (None, 0) when nothing would change. The fit is the same
    model (same column space); β = T β̃ and REML's log|X'V⁻¹X| = log|X̃'V⁻¹X̃| − 2 log|det T|."""
    n, p = X.shape
    if n == 0 or p == 0:
        return None, 0.0
    const = np.all(X == X[:1], axis=0) & (X[0] != 0)
    c = int(np.flatnonzero(const)[0]) if const.any() else -1
    T = np.eye(p)
    for k in range(p):
        if const[k]:
            continue
        mean = float(X[:, k].mean()) if c >= 0 else 0.0
        sd = float(np.sqrt(((X[:, k] - mean) ** 2).mean()))
        if not sd > 0:
            continue
        T[k, k] = 1.0 / sd
        if c >= 0:
            T[c, k] = -mean / (sd * X[0, c])
    if np.allclose(T, np.eye(p), rtol=0, atol=1e-3) and np.allclose(np.diag(T), 1.0, rtol=1e-3):
        return None, 0.0      # already centred and scaled
    return T, float(np.log(np.diag(T)).sum())


class LmmEngine:
    """Data, structure and solver of one LMM; evaluates its (RE)ML criteria.

    ``gamma`` arguments are the variance-function coefficients (empty without one).
    """

    def __init__(self, formula: str, design: Design, options: dict, dispersion: DispersionDesign | None = None):
        self.formula = formula
        self.design = design = sort_design(design)
        self.dispersion = None if dispersion is None else dispersion.for_rows(design.rows)
        self.options = options
        self.structure = Structure.from_design(design)
        self.n, self.p = design.X.shape
        self.k = 0 if dispersion is None else dispersion.k
        # the solver works with centred and scaled columns (a year and its square, a time stamp:
        # conditioning); β, its covariance and the REML term map back exactly (_column_transform)
        self._T, self._ldT = _column_transform(design.X)
        work = design if self._T is None else replace(design, X=np.ascontiguousarray(design.X @ self._T))
        centred, self._beta_shift = _centre_response(work)
        self.algebra = make_algebra(self.structure, centred, options["algebra"])

    def _solve(self, theta: np.ndarray, gamma: np.ndarray):
        """The factorisation for theta, weighted by the variance function, and ``log|V|``."""
        if self.dispersion is None:
            return self.algebra.solve(theta), 0.0
        return self.algebra.solve(theta, w=self.dispersion.weights(gamma)), self.dispersion.log_det(gamma)

    def pieces(self, theta: np.ndarray, gamma: np.ndarray = _NO_GAMMA) -> _Pieces:
        sol, ldV = self._solve(theta, gamma)
        p = self.p
        chol = np.linalg.cholesky(sol.F)  # lower; chol[:p,:p] = R_Xᵀ, chol[p,p]² = r²
        beta = solve_triangular(chol[:p, :p].T, chol[p, :p], lower=False) + self._beta_shift if p else np.zeros(0)
        XtX = sol.F[:p, :p]
        inv = cho_solve((chol[:p, :p], True), np.eye(p)) if p else np.zeros((0, 0))
        if self._T is not None:      # back to the design's own columns: β = Tβ̃, X'V⁻¹X = T⁻ᵀ X̃'V⁻¹X̃ T⁻¹
            beta = self._T @ beta
            Ti = np.linalg.inv(self._T)
            XtX = Ti.T @ XtX @ Ti
            inv = self._T @ inv @ self._T.T
        return _Pieces(
            ldL2=sol.ldL2, ldRX2=2.0 * float(np.log(np.diag(chol)[:p]).sum()) - 2.0 * self._ldT,
            beta=beta, XtX=XtX, r2=float(chol[p, p] ** 2), ldV=ldV, XtX_inv=inv,
        )

    def profiled_deviance(self, theta: np.ndarray, reml: bool, gamma: np.ndarray = _NO_GAMMA) -> float:
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):   # far out: inf below
                sol, ldV = self._solve(theta, gamma)
                d = np.diag(np.linalg.cholesky(sol.F))  # R_X's diagonal on the first p, sqrt(r²) last
        except np.linalg.LinAlgError:
            return np.inf
        if not np.all(np.isfinite(d)) or not np.isfinite(sol.ldL2 + ldV):
            return np.inf
        logdets = sol.ldL2 + ldV
        r2 = float(d[-1] ** 2)
        if reml:
            dof = self.n - self.p
            return (logdets + 2.0 * float(np.log(d[:-1]).sum()) - 2.0 * self._ldT
                    + dof * (1 + _LOG2PI + math.log(r2 / dof)))
        return logdets + self.n * (1 + _LOG2PI + math.log(r2 / self.n))

    def centred(self, theta: np.ndarray, sigma2: float, gamma: np.ndarray) -> tuple[np.ndarray, float]:
        """θ and σ² relative to the residual variance at the dispersion columns' means, which the
        solver weighs by (``DispersionDesign.centre``), from the reported ones (σ² at w = 0)."""
        if not self.k:
            return theta, sigma2
        shift = self.dispersion.shift(gamma)
        return theta * math.exp(-0.5 * shift), sigma2 * math.exp(shift)

    def deviance(self, theta: np.ndarray, sigma2: float, reml: bool, gamma: np.ndarray = _NO_GAMMA) -> float:
        """−2 × (RE)ML log-likelihood at theta, σ² and γ (β profiled out)."""
        return self._deviance_c(*self.centred(theta, sigma2, gamma), reml, gamma)

    def _deviance_c(self, theta: np.ndarray, sigma2: float, reml: bool, gamma: np.ndarray) -> float:
        """:meth:`deviance` at θ and σ² relative to the residual variance at the dispersion
        columns' means (:meth:`centred`)."""
        pc = self.pieces(theta, gamma)
        if reml:
            return pc.ldL2 + pc.ldV + pc.ldRX2 + (self.n - self.p) * (_LOG2PI + math.log(sigma2)) + pc.r2 / sigma2
        return pc.ldL2 + pc.ldV + self.n * (_LOG2PI + math.log(sigma2)) + pc.r2 / sigma2

    # ----- the MixedResult engine protocol --------------------------------------------------
    @one_blas_thread
    def loglik_at(self, beta: np.ndarray, covs: list[np.ndarray], sigma2, gamma: np.ndarray | None = None) -> float:
        if sigma2 is None or not np.isfinite(sigma2) or sigma2 <= 0:
            raise SpecError(f"loglik_at needs a positive residual variance sigma2 for an LMM, got {sigma2!r}")
        if beta.shape != (self.p,):
            raise SpecError(f"beta must have {self.p} entries (the fixed effects), got shape {beta.shape}")
        gamma = _NO_GAMMA if gamma is None and self.k == 0 else gamma
        if gamma is None or np.shape(gamma) != (self.k,):
            raise SpecError(
                f"gamma must have {self.k} entries (the variance-function coefficients"
                f"{': ' + ', '.join(self.dispersion.names) if self.k else ''}), got {gamma!r}"
            )
        gamma = np.asarray(gamma, dtype=float)
        if self.k:
            sigma2 = float(sigma2) * math.exp(self.dispersion.shift(gamma))   # at the columns' means
        theta = self.structure.theta_from_covariances(covs, float(sigma2))
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                pc = self.pieces(theta, gamma)
        except np.linalg.LinAlgError:
            raise DataError(
                "loglik_at: the model's covariance is numerically singular at these parameters (a residual "
                "variance of the variance function, or a random-effect variance, too close to 0 beside the "
                "others); the log-likelihood there cannot be computed"
            ) from None
        d = beta - pc.beta
        rss = pc.r2 + float(d @ pc.XtX @ d)
        return -0.5 * (pc.ldL2 + pc.ldV + self.n * (_LOG2PI + math.log(sigma2)) + rss / sigma2)

    @one_blas_thread
    def varcomp_cov(self, result: MixedResult) -> np.ndarray:
        psi = np.array(result.psi)
        k = psi.size
        nan = np.full((k, k), np.nan)
        s, nv = self.structure, k - self.k  # variance components (σ² last), then γ
        # in σ²_c, the residual variance at the dispersion columns' means (uncorrelated with γ
        # where σ² at w = 0 is not: a year as predictor made the Hessian singular), then by the
        # delta method to σ² = σ²_c exp(−w̄ᵀγ)
        J = np.eye(k)
        if self.k:
            shift = self.dispersion.shift(psi[nv:])
            J[nv - 1, nv - 1] = math.exp(-shift)
            J[nv - 1, nv:] = -psi[nv - 1] * self.dispersion.centre
            psi[nv - 1] *= math.exp(shift)
        var = np.abs(psi[:nv])
        # steps of 1e-3 relative: truncation error ~1e-6, rounding error well below it; γ is a
        # log-variance coefficient, whose natural unit is 1 / SD of its column
        h = np.concatenate([1e-3 * np.maximum(var, 1e-3 * var.max()),
                            1e-3 / self.dispersion.scale if self.k else _NO_GAMMA])
        try:
            if result.singular:   # (J mixes σ² and γ only, never the NaN rows of the boundary)
                V = self._boundary_cov(result, psi, nv, h[nv - 1:])
                nan_rows = np.isnan(V).all(axis=1)
                V = J @ np.nan_to_num(V) @ J.T
                V[nan_rows, :] = V[:, nan_rows] = np.nan
                return V

            def dev(v: np.ndarray) -> float:
                covs = s.covariances_from_psi(v[: nv - 1])
                theta = s.theta_from_covariances(covs, v[nv - 1])
                return self._deviance_c(theta, v[nv - 1], result.reml, v[nv:])

            return J @ np.linalg.inv(0.5 * fd_hessian(dev, psi, h=h)) @ J.T
        except (np.linalg.LinAlgError, SpecError):
            warn("varcomp_cov: the information matrix of the variance components is singular or the "
                 "finite-difference stencil left the parameter space; returning NaN")
            return nan

    def _boundary_cov(self, result: MixedResult, psi: np.ndarray, nv: int, h_rest: np.ndarray) -> np.ndarray:
        """A singular fit: the components of the coordinates whose Cholesky diagonal is 0 (their
        variances and covariances) have no regular asymptotic variance (NaN); the others' comes
        from the deviance in the Cholesky factors with those diagonals held at 0 (lme4's
        boundary), by the delta method."""
        s = self.structure
        theta0 = self.centred(np.array(result.theta, dtype=float), float(result.sigma2), psi[nv:])[0]
        fixed = s.boundary_theta(theta0)
        nf = int((~fixed).sum())
        x0 = np.concatenate([theta0[~fixed], psi[nv - 1:]])

        def unpack(x):
            theta = theta0.copy()
            theta[~fixed] = x[:nf]
            return theta, x[nf]

        def dev(x):
            theta, sigma2 = unpack(x)
            return self._deviance_c(theta, sigma2, result.reml, x[nf + 1:])

        def to_psi(x):
            theta, sigma2 = unpack(x)
            return np.concatenate([s.psi_from_covariances(s.term_covariances(theta, sigma2)), x[nf:]])

        th = np.abs(theta0[~fixed])
        h = np.concatenate([1e-3 * np.maximum(th, 1e-3 * max(th.max(initial=0.0), 1e-3)), h_rest])
        return boundary_cov(dev, to_psi, x0, h, np.concatenate([s.boundary_mask(theta0),
                                                                np.zeros(psi.size - nv + 1, bool)]))

    def refit(self, reml: bool) -> MixedResult:
        return fit_lmm(self.formula, self.design, reml, self.options, self.dispersion)


_DEFAULTS = {"na_action": "raise", "maxiter": 1000, "algebra": "auto"}


@one_blas_thread
def fit_lmm(formula: str, design: Design, reml: bool, options: dict,
            dispersion: DispersionDesign | None = None) -> MixedResult:
    """Fit an LMM to a built design (used by :func:`lmm` and by ``refit``)."""
    engine = LmmEngine(formula, design, options, dispersion)
    s, nt, k = engine.structure, engine.structure.ntheta, engine.k
    # the optimiser sees η = SD(w) · γ, so that its steps mean the same whatever w's units
    scale = engine.dispersion.scale if k else _NO_GAMMA
    # and θ̃ = d·θ, d the root mean square of each random coefficient's column (its row of Λ):
    # a random slope of a column in large units otherwise has θ ~ 1e-4 beside the intercept's ~1
    d = theta_scale(s, engine.design)
    lower = np.append(s.theta_lower(), np.full(k, -np.inf))

    def deviance(x: np.ndarray) -> float:
        return engine.profiled_deviance(x[:nt] / d, reml, x[nt:] / scale)

    def minimise(x0: np.ndarray):
        return minimize_bounded(deviance, x0, lower, maxiter=options["maxiter"])

    opt = across_boundary(deviance, minimise, minimise(np.append(s.theta_start(), np.zeros(k))), s.scaled_restarts(d))
    theta, gamma = opt.x[:nt] / d, opt.x[nt:] / scale
    pc = engine.pieces(theta, gamma)
    sigma2 = pc.r2 / (engine.n - engine.p if reml else engine.n)   # at the dispersion columns' means
    beta_cov = sigma2 * pc.XtX_inv
    covs = s.term_covariances(theta, sigma2)
    if k:   # reported at w = 0 (module notes of _dispersion); the covariances are the same
        shift = engine.dispersion.shift(gamma)
        _far_from_zero(dispersion, shift, engine.dispersion.centre)
        sigma2, theta = sigma2 * math.exp(-shift), theta * math.exp(0.5 * shift)
    singular = s.is_singular(theta)
    warn_fit(formula, opt.converged, singular, opt.message, opt.scaled_gradient)
    runaway = engine.dispersion.runaway(gamma) if k else []
    if runaway:
        warn(f"the variance function {dispersion.formula!r} of {formula!r} sends a residual variance toward 0 or "
             f"infinity for {', '.join(runaway)}: its rows cannot tell that variance (a level with one or two rows, "
             "or a constant response there), so its coefficient is arbitrary; merge that level with another or "
             "drop the term")
    names = engine.dispersion.names if k else ()
    return MixedResult(
        formula=formula, family="gaussian", link="identity", reml=bool(reml), nagq=0,
        term_names=design.x_names, beta=pc.beta, beta_cov=beta_cov,
        varcomp_labels=tuple(s.varcomp_labels(residual=True)) + tuple(("Residual", n, None) for n in names),
        psi=np.concatenate([s.psi_from_covariances(covs), [sigma2], gamma]), term_covs=tuple(covs), theta=theta,
        sigma2=float(sigma2), loglik=-0.5 * opt.fun, nobs=design.nobs,
        group_levels=tuple(zip(s.factor_labels, s.factor_levels)), term_groups=s.term_groups,
        random_names=s.term_names, converged=opt.converged, singular=singular, message=opt.message,
        _engine=engine, dispersion=None if dispersion is None else dispersion.formula,
    )


def _far_from_zero(dispersion: DispersionDesign, shift: float, centre: np.ndarray) -> None:
    """σ² is reported where the dispersion covariates are 0, e^{-shift} times the residual variance
    at their means: beyond e^{±50} that says nothing of the data (a calendar year: e^{-201} at
    γ = 0.1), and beyond the floating-point range it cannot be written at all (γ = −0.4 per year
    overflowed in the middle of the fit)."""
    if abs(shift) <= 50:
        return
    means = ", ".join(f"{n} {m:.4g}" for n, m in zip(dispersion.names, centre))
    text = (f"σ², the residual variance where the covariates of dispersion {dispersion.formula!r} are 0, is "
            f"e^{-shift:.4g} times the one at their means ({means}); centre them (e.g. year − 2010) so that σ² "
            "is reported where the data are")
    if abs(shift) > 700:
        raise DataError(text.replace("σ², the", "the fit cannot report σ², the", 1))
    warn(text)


def lmm(formula: str, data: pd.DataFrame, reml: bool = True, dispersion: str | None = None, **opts) -> MixedResult:
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
    dispersion : str, optional
        A one-sided formula of the residual variance, ``"~ sex + ses"``: ``log σ²_i = log σ² +
        w_iᵀγ`` with ``w_i`` its model-matrix row without the intercept (formulaic's coding;
        write ``C(g)`` for a numeric-coded factor). A factor gives each level its own residual
        variance (nlme's ``varIdent``), a continuous predictor ``t`` a variance ``σ² exp(γ t)``
        (nlme's ``varExp`` with ``γ = 2δ``). ``varcomp()`` gets a row ``("Residual", term, None,
        γ)`` per coefficient; the ``("Residual", None, None)`` row is then σ², the residual
        variance where ``w = 0``. See :mod:`mlimpute.analysis._dispersion`.
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
        Malformed formula, dispersion formula (two-sided, a random term, nothing but an
        intercept) or option.
    DataError
        Unknown column, missing grouping values, non-numeric response, dependent fixed effects,
        a grouping factor with one level or more random effects than observations; a dispersion
        column that is constant or dependent on the others.

    Warns
    -----
    ConvergenceWarning
        Non-convergence (``converged`` False) or a boundary (singular) fit (``singular`` True).

    Notes
    -----
    See the module docstring for the profiled deviance, with and without a variance function.

    Multiple membership: a row i belonging to the units ``s_i1, …, s_iK`` of ``mm( … )`` with
    weights ``w_ik`` (``Σ_k w_ik = 1``; ids missing where a row has fewer units, their weights 0
    or missing; without ``weights =`` the ids present share equally) has the random part
    ``Σ_k w_ik z_iᵀ u_{s_ik}``, ``u_s ~ N(0, Σ)``, so ``y ~ N(Xβ, σ²I + Z (I ⊗ Σ) Zᵀ)`` with
    several weighted blocks in each row of ``Z``; the factor's levels are the union of the ids,
    and ``varcomp()`` names its group ``mm(s1, s2, s3)``. Fitted by the sparse solver.

    References
    ----------
    Bates, Mächler, Bolker & Walker (2015); Goldstein (2011); Pinheiro & Bates (2000), §5.2;
    Browne, W. J., Goldstein, H. & Rasbash, J. (2001). Multiple membership multiple
    classification (MMMC) models. *Statistical Modelling* 1, 103–124.
    """
    if not isinstance(reml, (bool, np.bool_)):
        raise SpecError(f"reml={reml!r} must be True (REML) or False (ML)")
    options = fit_options(opts, _DEFAULTS, "lmm")
    parsed = parse_formula(formula)
    extra = frozenset() if dispersion is None else frozenset(dispersion_columns(dispersion, data))
    design = build_design(parsed, data, kind="gaussian", na_action=options["na_action"], extra_columns=extra)
    disp = None if dispersion is None else build_dispersion(dispersion, data, design.rows)
    return fit_lmm(formula, design, bool(reml), options, disp)
