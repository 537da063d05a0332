"""Generalised linear mixed models: Laplace approximation and adaptive Gauss–Hermite quadrature.

Notes
-----
Model: ``g(E[y | b]) = η = Xβ + Zb``, ``b = Λ_θ u``, ``u ~ N(0, I)``, y binomial (0/1; links
logit, probit) or Poisson (log link). For given (θ, β), PIRLS (:mod:`._pirls`) finds the mode
``u*`` of ``log p(y | u) − ½‖u‖²`` and the Laplace deviance is

    d(θ, β) = −2 Σ_i log p(y_i | u*) + ‖u*‖² + log|L|²,   L Lᵀ = ΛᵀZᵀW(u*)ZΛ + I,

with Fisher weights W, as lme4's ``glmer`` (Bates et al. 2015; Pinheiro & Chao 2006). With
``nagq > 1`` and a single scalar random term, each cluster's integral is replaced by
adaptive Gauss–Hermite quadrature centred at ``u*_j`` with scale ``1/L_jj`` (lme4's
``glmerAGQ``):

    d = Σ_j devc_j(u*) + log|L|² − 2 Σ_j log Σ_k w_k exp(−½[devc_j(u*_j + z_k/L_jj) − devc_j(u*)] + z_k²/2),

``devc_j(u) = −2 Σ_{i∈j} log p(y_i | u) + u²``, ``(z_k, w_k)`` Gauss–Hermite nodes and weights for
the standard normal density. ``nagq = 1`` is the Laplace approximation.

Fitting follows glmer: stage 1 minimises the Laplace deviance over θ with β at its joint mode
(nAGQ = 0), stage 2 minimises ``d(θ, β)`` over both, from stage 1 (β whitened by stage 1's
covariance so the optimiser sees a well-scaled problem). ``cov(β̂) = 2 [H⁻¹]_ββ`` with ``H`` the
finite-difference Hessian of d in (θ, β), as lme4's ``vcov`` (``use.hessian=TRUE``).

References
----------
Bates, D., Mächler, M., Bolker, B. & Walker, S. (2015). Fitting linear mixed-effects models
using lme4. *Journal of Statistical Software* 67(1).
Pinheiro, J. C. & Chao, E. C. (2006). Efficient Laplacian and adaptive Gaussian quadrature
algorithms for multilevel generalized linear mixed models. *JCGS* 15, 58–81.
Goldstein, H. (2011). *Multilevel Statistical Models*, 4th ed. Wiley.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from numpy.polynomial.hermite_e import hermegauss

from ..errors import SpecError
from ._algebra import make_algebra, sort_design
from ._solution import factor_columns
from ._design import Design, build_design
from ._family import Family, get_family
from ._optim import across_boundary, boundary_cov, fd_hessian, minimize_bounded, one_blas_thread
from ._pirls import Mode, Pirls
from ._structure import Structure, theta_scale
from .formula import parse_formula
from ._warn import warn, warn_fit
from .lmm import fit_options
from .result import MixedResult

__all__ = ["glmm", "GlmmEngine", "check_nagq"]


def check_nagq(formula: str, design: Design, nagq: int) -> None:
    """Adaptive Gauss-Hermite quadrature (nagq > 1) needs one scalar random term of a nested
    factor; raise a SpecError otherwise."""
    if nagq <= 1:
        return
    if len(design.terms) != 1 or len(design.terms[0].names) != 1:
        raise SpecError(
            f"nagq={nagq} (adaptive Gauss-Hermite) needs a single scalar random term like (1 | g); "
            f"{formula!r} has {sum(len(t.names) for t in design.terms)} random coefficients: use nagq=1 (Laplace)"
        )
    if design.factors[0].weights is not None:
        raise SpecError(
            f"nagq={nagq} (adaptive Gauss-Hermite) integrates cluster by cluster, but the multiple-membership "
            f"factor {design.factors[0].label!r} links the clusters of a row: use nagq=1 (Laplace)"
        )


class GlmmEngine:
    """Data, structure, solver and family of one GLMM; evaluates its Laplace/AGQ deviance."""

    def __init__(self, formula: str, design: Design, family: Family, nagq: int, options: dict):
        design = sort_design(design)
        self.formula, self.design, self.family, self.nagq, self.options = formula, design, family, nagq, options
        self.structure = Structure.from_design(design)
        self.algebra = make_algebra(self.structure, design, options["algebra"])
        self.pirls = Pirls(design, self.structure, self.algebra, family)
        self.p = design.X.shape[1]
        check_nagq(formula, design, nagq)
        if nagq > 1:
            nodes, weights = hermegauss(nagq)
            self.nodes, self.weights = nodes, weights / math.sqrt(2 * math.pi)
            self.zcol = factor_columns(self.structure, design, 0)[:, 0]

    def deviance(self, theta: np.ndarray, beta: np.ndarray, u0=None) -> tuple[float, Mode]:
        mode = self.pirls.fixed_beta(theta, beta, u0)
        if self.nagq == 1:
            return mode.laplace, mode
        return self._agq(theta, beta, mode), mode

    def _agq(self, theta: np.ndarray, beta: np.ndarray, mode: Mode) -> float:
        y, codes, J = self.design.y, self.design.factors[0].codes, self.design.factors[0].levels
        lam, off, z = float(theta[0]), self.design.X @ beta, self.zcol
        u = mode.u[0][:, 0]
        sd = 1.0 / np.sqrt(lam**2 * np.bincount(codes, weights=mode.w * z * z, minlength=J) + 1.0)

        def devc(v: np.ndarray) -> np.ndarray:
            ll = self.family.loglik(y, off + lam * z * v[codes])
            return -2.0 * np.bincount(codes, weights=ll, minlength=J) + v * v

        d0 = devc(u)
        acc = np.zeros(J)
        for zk, wk in zip(self.nodes, self.weights):
            acc += wk * np.exp(-0.5 * (devc(u + zk * sd) - d0) + 0.5 * zk * zk)
        return float(d0.sum() + mode.ldL2 - 2.0 * np.log(acc).sum())

    # ----- the MixedResult engine protocol --------------------------------------------------
    @one_blas_thread
    def loglik_at(self, beta: np.ndarray, covs: list[np.ndarray], sigma2) -> float:
        if sigma2 is not None and not np.isclose(float(sigma2), 1.0):
            raise SpecError(f"a {self.family.name} GLMM has no residual variance; pass sigma2=None or 1.0, not {sigma2!r}")
        if beta.shape != (self.p,):
            raise SpecError(f"beta must have {self.p} entries (the fixed effects), got shape {beta.shape}")
        theta = self.structure.theta_from_covariances(covs, 1.0)
        return -0.5 * self.deviance(theta, beta)[0]

    @one_blas_thread
    def varcomp_cov(self, result: MixedResult) -> np.ndarray:
        psi, k = np.array(result.psi), result.psi.size
        s = self.structure
        C = np.linalg.cholesky(np.array(result.beta_cov))
        beta0 = np.array(result.beta)
        warm = [None]
        # a singular fit: as LmmEngine._boundary_cov, in the Cholesky factors with their zero
        # diagonals held at 0; otherwise in psi
        theta0 = np.array(result.theta, dtype=float)
        fixed = s.boundary_theta(theta0) if result.singular else np.zeros(theta0.size, bool)
        nf = int((~fixed).sum())

        def theta_of(x):
            if not result.singular:
                return s.theta_from_covariances(s.covariances_from_psi(x[:k]), 1.0)
            theta = theta0.copy()
            theta[~fixed] = x[:nf]
            return theta

        def dev(x: np.ndarray) -> float:
            d, mode = self.deviance(theta_of(x), beta0 + C @ x[-self.p:] if self.p else beta0, warm[0])
            warm[0] = mode.u
            return d

        head = theta0[~fixed] if result.singular else psi
        x0 = np.concatenate([head, np.zeros(self.p)])
        # steps of 1e-3 (relative for psi, in standard errors for beta): see fit_glmm's Hessian
        h = np.concatenate([1e-3 * np.maximum(np.abs(head), 1e-3 * max(np.abs(head).max(initial=0.0), 1e-3)),
                            np.full(self.p, 1e-3)])
        try:
            if result.singular:
                return boundary_cov(dev, lambda x: s.psi_from_covariances(s.term_covariances(theta_of(x), 1.0)),
                                    x0, h, s.boundary_mask(theta0))
            V = 2.0 * np.linalg.inv(fd_hessian(dev, x0, h=h))
        except (np.linalg.LinAlgError, SpecError):
            warn("varcomp_cov: the information matrix of the variance components is singular or the "
                 "finite-difference stencil left the parameter space; returning NaN")
            return np.full((k, k), np.nan)
        return V[:k, :k]

    def refit(self, reml: bool) -> MixedResult:
        if reml:
            raise SpecError("REML is not defined for a GLMM; refit(reml=False) refits by maximum likelihood")
        return fit_glmm(self.formula, self.design, self.family, self.nagq, self.options)


_DEFAULTS = {"na_action": "raise", "maxiter": 1000, "algebra": "auto"}


@one_blas_thread
def whitening(F: np.ndarray) -> np.ndarray:
    """C with C C' = F⁻¹ (the fixed effects' conditional covariance), the coordinates stage 2
    optimises β in. Where F is singular to rounding — a coefficient nearly separated, whose
    information is ~1e-10 of the others' (glmer: SE 1.5e5) — its eigenvalues are floored at
    1e-14 of the largest: C only scales the optimiser's coordinates, so any invertible C serves,
    and the separated direction gets a wide one."""
    if F.shape[0] == 0:
        return np.zeros((0, 0))
    try:
        return np.linalg.cholesky(np.linalg.inv(F))
    except np.linalg.LinAlgError:
        lam, V = np.linalg.eigh(0.5 * (F + F.T))
        floor = 1e-14 * max(float(lam.max()), 1e-300)
        return V / np.sqrt(np.maximum(lam, floor))


def fit_glmm(formula: str, design: Design, family: Family, nagq: int, options: dict) -> MixedResult:
    """Fit a GLMM to a built design (used by :func:`glmm` and by ``refit``)."""
    engine = GlmmEngine(formula, design, family, nagq, options)
    s, p = engine.structure, engine.p
    lower = s.theta_lower()

    # stage 1: theta with beta at its joint mode (lme4's nAGQ = 0), for starting values
    last: list[Mode | None] = [None]

    # the optimisers see θ̃ = d·θ, d the size of each random coefficient's column (as fit_lmm)
    d = theta_scale(s, engine.design)

    def joint(theta: np.ndarray, start: Mode | None, tol: float | None = None) -> Mode:
        # warm-started from the previous θ's modes, PIRLS can fail to converge where a cold start
        # does not (a study's completed dataset: the stage-1 deviance 7.7e7 at θ where it is 2,387,
        # so stage 2 started from a wrong β and stopped 61 log-likelihood units below the optimum)
        try:
            mode = engine.pirls.joint(theta, start, tol=tol)
        except np.linalg.LinAlgError:   # its penalised system lost definiteness on the way
            if start is None:
                raise
            mode = None
        if start is not None and (mode is None or not mode.converged):
            cold = engine.pirls.joint(theta, None, tol=tol)
            if mode is None or cold.converged or cold.laplace < mode.laplace:
                return cold
        return mode

    def dev1(theta: np.ndarray) -> float:  # rough modes suffice for starting values
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):   # far out: inf below
                last[0] = joint(theta / d, last[0], tol=1e-6)
        except np.linalg.LinAlgError:   # PIRLS failed at this θ (a Poisson fit's weights
            return np.inf               # overflowing far from the optimum): the optimiser backs off
        return last[0].laplace

    opt1 = minimize_bounded(dev1, s.theta_start(), lower, maxiter=options["maxiter"], polish=0, gtol=1e-3, ftol=1e-8)
    mode1 = joint(opt1.x / d, last[0])
    beta1 = mode1.beta
    C = whitening(mode1.F[:p, :p])

    # stage 2: (theta, beta) on the Laplace / AGQ deviance, beta = beta1 + C gamma
    nt = s.ntheta
    warm = [mode1.u]

    def dev2(x: np.ndarray) -> float:
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                dev, mode = engine.deviance(x[:nt] / d, beta1 + C @ x[nt:], warm[0])
        except np.linalg.LinAlgError:   # as in dev1
            return np.inf
        warm[0] = mode.u
        return dev

    lower2 = np.concatenate([lower, np.full(p, -np.inf)])
    # β is whitened, so a Hessian step of 1e-3 is 1e-3 standard errors: small enough for the
    # truncation error (~1e-6 relative), large enough to keep PIRLS rounding out of H
    opt = minimize_bounded(dev2, np.concatenate([opt1.x, np.zeros(p)]), lower2, maxiter=options["maxiter"],
                           hess_rel=1e-3, newton_first=True)
    opt = across_boundary(dev2, lambda x0: minimize_bounded(dev2, x0, lower2, maxiter=options["maxiter"], hess_rel=1e-3),
                          opt, s.scaled_restarts(d))
    theta, beta = opt.x[:nt] / d, beta1 + C @ opt.x[nt:]
    fixed = np.flatnonzero(opt.free >= nt)
    try:
        if fixed.size != p:
            raise np.linalg.LinAlgError
        V = 2.0 * np.linalg.inv(opt.hessian)
        beta_cov = C @ V[np.ix_(fixed, fixed)] @ C.T
        if np.any(np.linalg.eigvalsh(beta_cov) <= 0):
            raise np.linalg.LinAlgError
    except np.linalg.LinAlgError:
        warn(f"the Hessian of {formula!r} is not positive definite; fixed-effect covariance from the "
             "PIRLS system (conditional on theta) instead")
        beta_cov = np.linalg.inv(engine.pirls.joint(theta).F[:p, :p])

    converged, message = opt.converged, opt.message
    if not engine.pirls.fixed_beta(theta, beta, warm[0]).converged:
        converged, message = False, f"PIRLS found no conditional mode at the estimates; {message}"
    covs = s.term_covariances(theta, 1.0)
    singular = s.is_singular(theta)
    warn_fit(formula, converged, singular, message, opt.scaled_gradient)
    return MixedResult(
        formula=formula, family=family.name, link=family.link, reml=False, nagq=nagq,
        term_names=design.x_names, beta=beta, beta_cov=beta_cov,
        varcomp_labels=tuple(s.varcomp_labels(residual=False)), psi=s.psi_from_covariances(covs),
        term_covs=tuple(covs), theta=theta, sigma2=None, loglik=-0.5 * opt.fun, nobs=design.nobs,
        group_levels=tuple(zip(s.factor_labels, s.factor_levels)), term_groups=s.term_groups,
        random_names=s.term_names, converged=converged, singular=singular, message=message,
        _engine=engine,
    )


def glmm(formula: str, data: pd.DataFrame, family: str = "binomial", link: str | None = None, nagq: int = 1,
         **opts) -> MixedResult:
    """Fit a generalised linear mixed model (binomial or Poisson) by Laplace or adaptive quadrature.

    Parameters
    ----------
    formula : str
        lme4-style formula, as for :func:`~mlimpute.lmm` (multiple membership included, with
        ``nagq=1``).
    data : pandas.DataFrame
    family : {"binomial", "poisson"}
        Binomial: the response is 0/1 numeric, bool, or a two-level categorical/string column
        whose **second** level (category order, else sorted) is coded 1, like an R factor.
        Poisson: non-negative integer counts.
    link : {"logit", "probit", "log"}, optional
        Default: the canonical link (logit for binomial, log for Poisson).
    nagq : int
        1 = Laplace approximation (lme4's default); > 1 = adaptive Gauss–Hermite quadrature with
        that many nodes, only for a single scalar random term such as ``(1 | school)``.
    **opts
        ``na_action`` ("raise"/"drop"), ``maxiter``, ``algebra`` -- as for :func:`~mlimpute.lmm`.

    Returns
    -------
    MixedResult
        Wald z statistics and normal p-values in ``tidy()``, as glmer's summary.

    Raises
    ------
    SpecError
        Unknown family/link, ``nagq`` < 1 or > 25, ``nagq > 1`` with a non-scalar random part
        or a multiple-membership factor.
    DataError
        As :func:`~mlimpute.lmm`, plus a binomial response that is not 0/1 or a Poisson response
        that is not a count.

    Warns
    -----
    ConvergenceWarning
        Non-convergence (``converged`` False) or a boundary (singular) fit.

    Notes
    -----
    See the module docstring for the deviance and the two-stage fit. ``loglik`` is always the
    full log-likelihood (approximation): for non-binary families glmer's nAGQ > 1 ``logLik``
    sums deviance residuals instead and so omits the saturated log-likelihood
    ``Σ log p(y | μ = y)`` (a constant); estimates are unaffected.

    Multiple membership ``(1 | mm(s1, s2, weights = (w1, w2)))``: ``η_i = x_iᵀβ + Σ_k w_ik z_iᵀ u_{s_ik}``
    (see :func:`~mlimpute.lmm`); the Laplace approximation is as above with that ``Z``.

    References
    ----------
    Bates et al. (2015); Pinheiro & Chao (2006); Goldstein (2011); Browne, Goldstein & Rasbash
    (2001), *Statistical Modelling* 1, 103–124.
    """
    fam = get_family(family, link)
    if not isinstance(nagq, (int, np.integer)) or isinstance(nagq, bool) or not 1 <= nagq <= 25:
        raise SpecError(f"nagq={nagq!r} must be an integer from 1 (Laplace) to 25 (adaptive Gauss-Hermite nodes)")
    options = fit_options(opts, _DEFAULTS, "glmm")
    design = build_design(parse_formula(formula), data, kind=fam.name, na_action=options["na_action"])
    return fit_glmm(formula, design, fam, int(nagq), options)
