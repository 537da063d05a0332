"""The results object of a mixed-model fit (LMM or GLMM), with a fixed schema.

This is the narrow contract between analysis and pooling: tidy tables of
estimates, their covariance matrices, variance components with their asymptotic covariance,
and log-likelihoods (plus ``loglik_at`` for Meng & Rubin's D3).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import SpecError

__all__ = ["MixedResult"]


class _Engine(Protocol):  # what a fitted model keeps to answer questions after the fit
    def loglik_at(self, beta: np.ndarray, covs: list[np.ndarray], sigma2: float | None) -> float: ...
    def varcomp_cov(self, result: "MixedResult") -> np.ndarray: ...
    def refit(self, reml: bool) -> "MixedResult": ...


def _frozen(a) -> np.ndarray:
    a = np.array(a, dtype=float, copy=True)
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class MixedResult:
    """A fitted linear (``family="gaussian"``) or generalised linear mixed model.

    Attributes
    ----------
    formula : str
        The formula as given.
    family, link : str
        ``"gaussian"``/``"identity"`` for :func:`~mlimpute.lmm`; ``"binomial"`` (``"logit"``,
        ``"probit"``) or ``"poisson"`` (``"log"``) for :func:`~mlimpute.glmm`.
    reml : bool
        True for a REML fit (then ``loglik`` is the REML criterion, as lme4's ``logLik``).
    nagq : int
        Quadrature points of a GLMM (1 = Laplace); 0 for an LMM.
    loglik : float
        Maximised (restricted) log-likelihood.
    nobs : int
        Rows used.
    converged : bool
        The optimiser stopped at a point that passed lme4's check (Newton-scaled gradient of
        the free parameters < 0.002, positive definite Hessian). False comes with a
        :class:`~mlimpute.ConvergenceWarning`.
    singular : bool
        Boundary fit (lme4's ``isSingular``): some random-effect covariance matrix is singular,
        e.g. a variance estimated as 0. A converged boundary fit is a valid maximum, so this
        is reported separately from ``converged``, with a ConvergenceWarning.
    theta : numpy.ndarray
        lme4's theta: relative Cholesky factors of the random terms, column by column.
    sigma2 : float or None
        Residual variance (LMM); None for a GLMM. With a variance function, the residual
        variance of a row whose dispersion predictors are 0 (the reference category).
    dispersion : str or None
        The variance function's formula (``lmm(..., dispersion="~ sex")``), else None.
    """

    formula: str
    family: str
    link: str
    reml: bool
    nagq: int
    term_names: tuple[str, ...]
    beta: np.ndarray
    beta_cov: np.ndarray
    varcomp_labels: tuple[tuple[str, str | None, str | None], ...]
    psi: np.ndarray
    term_covs: tuple[np.ndarray, ...]
    theta: np.ndarray
    sigma2: float | None
    loglik: float
    nobs: int
    group_levels: tuple[tuple[str, int], ...]
    term_groups: tuple[str, ...]
    random_names: tuple[tuple[str, ...], ...]
    converged: bool
    singular: bool
    message: str
    _engine: Any = field(repr=False, compare=False)
    dispersion: str | None = None
    _memo: dict = field(default_factory=dict, init=False, repr=False, compare=False)   # varcomp_cov, once

    def __post_init__(self) -> None:
        for name in ("beta", "beta_cov", "psi", "theta"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        object.__setattr__(self, "term_covs", tuple(_frozen(c) for c in self.term_covs))

    # ----- fixed effects --------------------------------------------------------------------
    @property
    def params(self) -> pd.Series:
        """Fixed-effect estimates indexed by term (formulaic names: ``"Intercept"``, ``"sex[T.girl]"``)."""
        return pd.Series(np.array(self.beta), index=pd.Index(self.term_names, name="term"), name="estimate")

    def cov_params(self) -> pd.DataFrame:
        """Covariance matrix of the fixed effects (terms × terms).

        LMM: ``σ² (R_Xᵀ R_X)⁻¹`` at the estimated theta, as lme4's ``vcov``. GLMM: the fixed-effect
        block of the inverse of half the Hessian of the deviance in ``(theta, β)``, as lme4's
        ``vcov`` with ``use.hessian=TRUE`` (the default for ``glmer``).
        """
        names = pd.Index(self.term_names, name="term")
        return pd.DataFrame(np.array(self.beta_cov), index=names, columns=list(self.term_names))

    @property
    def df_resid(self) -> int:
        """Complete-data residual degrees of freedom ``nobs − p`` (used by Barnard–Rubin)."""
        return self.nobs - len(self.term_names)

    def tidy(self) -> pd.DataFrame:
        """Fixed effects: term, estimate, std_error, statistic, p_value.

        ``statistic`` is estimate / std_error; ``p_value`` is two-sided from the **standard
        normal** reference for both LMMs and GLMMs (Wald z). lme4's ``summary`` gives no p-value
        for an LMM because the reference distribution is unclear; the normal reference is the
        large-sample choice, and pooling replaces it by Barnard–Rubin t-tests anyway.
        """
        se = np.sqrt(np.diag(self.beta_cov))
        z = self.beta / se
        return pd.DataFrame({
            "term": list(self.term_names), "estimate": np.array(self.beta), "std_error": se,
            "statistic": z, "p_value": 2 * stats.norm.sf(np.abs(z)),
        })

    # ----- variance components ----------------------------------------------------------------
    def varcomp(self) -> pd.DataFrame:
        """Variance components: group, term1, term2, estimate.

        Per random term in formula order the variances (``term2`` None), then the covariances
        (lower triangle, column by column), as lme4's ``as.data.frame(VarCorr(m))``; for an LMM
        a row ``("Residual", None, None, σ²)``. Term names follow formulaic
        (``"Intercept"``); the terms of ``(1 + x || g)`` keep the group name ``g`` (lme4 writes
        ``g``, ``g.1``). The label columns have object dtype so that None stays None.

        With a variance function (``lmm(..., dispersion=...)``) one last row per coefficient
        ``("Residual", term, None, γ)``, ``term`` its dispersion column (``"sex[T.girl]"``):
        ``log σ²_i = log σ² + w_iᵀγ``, so γ is a log-variance coefficient (``exp(γ)`` a ratio of
        residual variances) and σ² the residual variance where ``w = 0``.
        """
        g, t1, t2 = zip(*self.varcomp_labels)
        return pd.DataFrame({
            "group": pd.Series(g, dtype=object), "term1": pd.Series(t1, dtype=object),
            "term2": pd.Series(t2, dtype=object), "estimate": np.array(self.psi),
        })

    def varcomp_index(self) -> list[str]:
        """Labels of the varcomp rows in mitml's style: ``"Intercept~~x|school"``, ``"Residual~~Residual"``
        (and ``"log-variance:sex[T.girl]|Residual"`` for a variance function's coefficients)."""
        out = []
        for g, a, b in self.varcomp_labels:
            if g == "Residual":
                out.append("Residual~~Residual" if a is None else f"log-variance:{a}|Residual")
            else:
                out.append(f"{a}~~{a if b is None else b}|{g}")
        return out

    @property
    def dispersion_params(self) -> pd.Series:
        """The variance function's coefficients γ by dispersion term (empty without one)."""
        rows = [(a, v) for (g, a, _), v in zip(self.varcomp_labels, self.psi) if g == "Residual" and a is not None]
        return pd.Series([v for _, v in rows], index=pd.Index([a for a, _ in rows], name="term"),
                         name="log_variance", dtype=float)

    def varcomp_cov(self) -> pd.DataFrame:
        """Asymptotic covariance matrix of the :meth:`varcomp` estimates (same row order).

        Notes
        -----
        The inverse of the observed information, i.e. of minus the Hessian of the log-likelihood
        in the variance-component vector ψ (variances, covariances, residual variance) at the
        estimate, by central finite differences. LMM: the REML criterion for a REML fit, the ML
        log-likelihood with β profiled out for an ML fit (the profile Hessian equals the Schur
        complement of the full information, so this is the ψ block of the full inverse); a
        variance function's coefficients γ are part of ψ (its last entries), so their rows are
        the γ block of the inverse Hessian in (ψ, γ), which is the same in any
        parameterisation of the other components (nlme's log SDs, glmmTMB's, lme4's θ). GLMM:
        the ψ block of the inverse Hessian of the Laplace/AGQ log-likelihood in ``(ψ, β)``.
        Rows/columns are NaN (with a warning) at a boundary fit, where ψ has no regular
        asymptotic covariance. Computed once per fit (finite differences of the likelihood are
        not cheap; the warning, too, is given once); pickled with the fit.
        """
        labels = self.varcomp_index()
        if "varcomp_cov" not in self._memo:
            self._memo["varcomp_cov"] = _frozen(self._data_engine("varcomp_cov").varcomp_cov(self))
        return pd.DataFrame(self._memo["varcomp_cov"].copy(), index=labels, columns=labels)

    @property
    def ngroups(self) -> dict[str, int]:
        """Number of levels per grouping factor, in formula order."""
        return dict(self.group_levels)

    @property
    def icc(self) -> float | None:
        """Intraclass correlation (variance partition coefficient) of a random-intercept model.

        Only for a single ``(1 | g)`` term; None otherwise. LMM: ``τ₀₀ / (τ₀₀ + σ²)``; binomial
        logit: ``τ₀₀ / (τ₀₀ + π²/3)`` and probit ``τ₀₀ / (τ₀₀ + 1)`` (latent-response scale,
        Goldstein, Browne & Rasbash 2002); None for Poisson, whose VPC depends on the mean.
        With a variance function σ² is the residual variance where its predictors are 0, so
        this is the ICC there (the reference level). For a multiple-membership ``mm( … )`` term
        it is the VPC of a unit wholly in one unit.
        """
        if len(self.random_names) != 1 or self.random_names[0] != ("Intercept",):
            return None
        tau = float(self.term_covs[0][0, 0])
        level1 = {"identity": self.sigma2, "logit": math.pi**2 / 3, "probit": 1.0}.get(self.link)
        if level1 is None:
            return None
        return tau / (tau + level1)

    # ----- likelihood at given values (Meng & Rubin's D3) ----------------------------------------
    def covariance_parameters(self) -> dict[str, Any]:
        """The parameters in the form :meth:`loglik_at` takes (mitml's ``.getArgsLL``).

        Returns
        -------
        dict
            ``"beta"``: fixed effects (array); ``"tau"``: one covariance matrix per random term in
            formula order (absolute scale); ``"sigma2"``: residual variance (LMM) or None (GLMM,
            whose dispersion is fixed at 1 and is not a parameter, as in lme4's logLik df);
            with a variance function also ``"gamma"``: its coefficients (array).
        """
        out = {
            "beta": np.array(self.beta), "tau": [np.array(c) for c in self.term_covs],
            "sigma2": float(self.sigma2) if self.sigma2 is not None else None,
        }
        if self.dispersion is not None:
            out["gamma"] = self.dispersion_params.to_numpy()
        return out

    def loglik_at(self, beta, tau, sigma2=None, gamma=None) -> float:
        """ML log-likelihood of this fit's data at the given parameters, without re-optimising.

        LMM: the exact marginal Gaussian log-likelihood (never the REML criterion, also for a
        REML fit); with a variance function ``gamma`` (its coefficients) is required. GLMM: the
        same Laplace / adaptive Gauss–Hermite approximation the fit maximised; ``sigma2`` must
        be None or 1.
        """
        beta, tau = np.asarray(beta, dtype=float), [np.asarray(t, dtype=float) for t in tau]
        if self.dispersion is None:
            if gamma is not None:
                raise SpecError("gamma is the variance function's coefficients; this fit has none (fit with "
                                "lmm(..., dispersion='~ ...') for one)")
            return float(self._data_engine("loglik_at").loglik_at(beta, tau, sigma2))
        return float(self._data_engine("loglik_at").loglik_at(beta, tau, sigma2,
                                                              None if gamma is None else np.asarray(gamma, dtype=float)))

    def refit(self, reml: bool = False) -> "MixedResult":
        """Fit the same formula to the same rows again, by ML (``reml=False``) or REML."""
        return self._data_engine("refit").refit(reml)

    def without_data(self) -> "MixedResult":
        """This fit without its data (the design matrices and the fitter's state it keeps for
        :meth:`loglik_at`, :meth:`refit` and :meth:`varcomp_cov`): what the pipeline caches and
        pools. A logit fit on 1,000,000 rows pickled to 156 MB with them, a few kB without.
        :meth:`varcomp_cov` is computed first and kept; :meth:`loglik_at` and :meth:`refit`
        (likelihood-ratio tests, D3) then refuse."""
        self.varcomp_cov()
        out = copy.copy(self)
        object.__setattr__(out, "_engine", None)
        object.__setattr__(out, "_memo", dict(self._memo))
        return out

    def _data_engine(self, what: str) -> Any:
        if self._engine is None:
            raise SpecError(f"{what}() needs the fit's data, which this fit was stored without "
                            "(MixedResult.without_data, as the pipeline caches fits); fit the model "
                            "again with mlimpute.lmm / mlimpute.glmm for it")
        return self._engine

    # ----- text -----------------------------------------------------------------------------
    def summary(self) -> str:
        """Human-readable summary (returned, not printed)."""
        crit = "REML" if self.reml else ("ML" if self.family == "gaussian" else ("Laplace" if self.nagq == 1 else f"AGQ({self.nagq})"))
        lines = [
            f"Mixed model ({self.family}, {self.link}) fit by {crit}: {self.formula}",
            f"  nobs = {self.nobs}; groups: " + ", ".join(f"{g} ({n})" for g, n in self.group_levels),
            *([f"  residual variance: log σ²_i = log σ² + w_iᵀγ, w from {self.dispersion!r} (rows Residual/term)"]
              if self.dispersion is not None else []),
            f"  logLik = {self.loglik:.4f}; converged = {self.converged}; singular = {self.singular}",
            "Fixed effects:",
            self.tidy().to_string(index=False, float_format=lambda v: f"{v:.6g}"),
            "Variance components:",
            self.varcomp().to_string(index=False, float_format=lambda v: f"{v:.6g}"),
        ]
        if self.icc is not None:
            lines.append(f"ICC = {self.icc:.4f}")
        return "\n".join(lines)
