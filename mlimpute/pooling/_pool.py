"""``pool()``: Rubin's rules over the analyses of ``m`` imputed datasets."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ..errors import DataError, SpecError
from ._extract import Estimates, extract
from ._result import PooledResult, _level
from ._rubin import between_cov, rubin
from ._varcomp import pool_varcomp
from ._warnings import PoolingWarning

__all__ = ["pool", "FMI_WARN"]

#: A term whose fraction of missing information exceeds this triggers a PoolingWarning.
FMI_WARN = 0.5


def pool(fits: Any, df_com: Any = None, *, conf_level: float = 0.95) -> PooledResult:
    r"""Combine the analyses of ``m`` imputed datasets by Rubin's rules.

    Parameters
    ----------
    fits : sequence or DataFrame
        One of

        * a list of fit results, one per imputation (anything with ``params`` and
          ``cov_params()``, e.g. :func:`mlimpute.lmm`, :func:`mlimpute.glmm`); their
          ``varcomp()`` / ``varcomp_cov()`` are pooled too when present;
        * a list of ``(estimates, covariance)`` pairs: a Series by term (or a 1-D array) and a
          DataFrame / 2-D array (full covariance) or a Series / 1-D array of variances;
        * a long DataFrame with columns ``imputation, term, estimate`` and ``std_error`` (or
          ``variance``), optionally ``df_resid``: scalar pooling needs only the variances.

        Terms are matched by name; a term missing from some analyses is an error.
    df_com : None, float or array-like of float, optional
        Complete-data degrees of freedom. ``None`` (default): each fit's ``df_resid`` (their
        mean, should they differ), which gives Barnard & Rubin's (1999) small-sample df; for a
        table without ``df_resid`` the large-sample df is used with a :class:`PoolingWarning`.
        ``float('inf')``: Rubin's (1987) large-sample df, as mitml's ``testEstimates`` without
        ``df.com``. A number (or one per term) overrides. It applies to the fixed effects: the
        pooled variance components always take the large-sample df (they have no complete-data
        df of that kind).
    conf_level : float, default 0.95
        Level of the intervals.

    Returns
    -------
    PooledResult
        ``tidy()`` gives term, estimate, std_error, statistic, df, p_value, conf_low,
        conf_high, riv, fmi; ``varcomp()`` the pooled variance components and ICCs;
        ``cov_params()`` the total covariance ``T``; ``components()`` ``Ū``, ``B``, ``T``.

    Raises
    ------
    SpecError
        Fewer than two analyses, an unknown input form, or an invalid ``df_com``.
    DataError
        Terms differ between analyses, non-finite estimates, or a zero average variance
        (``Ū`` singular on its diagonal: the RIV is undefined).

    Warns
    -----
    PoolingWarning
        A term's fraction of missing information exceeds 0.5 (more imputations, or a look at
        the imputation model, are advised); no complete-data df known; a variance component on
        its boundary.

    Notes
    -----
    For a scalar estimand with estimates :math:`\hat Q_i` and variances :math:`U_i`,
    :math:`i = 1..m` (Rubin 1987, ch. 3):

    .. math::

        \bar Q = \frac1m\sum_i \hat Q_i,\quad \bar U = \frac1m\sum_i U_i,\quad
        B = \frac{1}{m-1}\sum_i (\hat Q_i-\bar Q)^2,\quad T = \bar U + (1+m^{-1})B,

    relative increase in variance :math:`r = (1+m^{-1})B/\bar U`, and
    :math:`(\bar Q - Q)/\sqrt T \sim t_\nu` with
    :math:`\nu_m = (m-1)(1+r^{-1})^2` (Rubin) or, for complete-data df :math:`\nu_{com}`,
    Barnard & Rubin (1999)

    .. math::

        \nu = (\nu_m^{-1} + \hat\nu_{obs}^{-1})^{-1},\quad
        \hat\nu_{obs} = (1-\lambda)\frac{\nu_{com}+1}{\nu_{com}+3}\nu_{com},\quad
        \lambda = \frac{r}{1+r}.

    The fraction of missing information is mitml's
    :math:`\gamma = (r + 2/(\nu+3))/(r+1)`. With :math:`B = 0`, :math:`\nu_m = \infty`,
    so :math:`\nu = \hat\nu_{obs}` (or :math:`\infty`). Matrices :math:`\bar U, B, T` are
    pooled the same way when full covariances are given.

    Variance components (from fits with ``varcomp()``): mitml only averages them; here each is
    pooled by Rubin's rules on a scale where its sampling distribution is closer to normal,
    with its variance from the fit's asymptotic covariance of the variance-component estimates
    (``varcomp_cov()``) by the delta method, and the estimate and interval are transformed
    back (Rubin 1987; Schafer 1997; van Buuren 2018, §5.2; Marshall et al. 2009):
    variances on :math:`\log\sigma^2` (:math:`\mathrm{Var} \approx \mathrm{Var}(\hat\sigma^2)/
    \hat\sigma^4`), covariances on their own scale, a variance function's coefficients
    (``lmm(..., dispersion=...)``: :math:`\log\sigma^2_i = \log\sigma^2 + w_i^\top\gamma`,
    rows ``("Residual", term)``) as they are, since they are log-variance coefficients already
    (method ``rubin_identity``, on the log-variance scale), and the ICC (variance partition coefficient
    at covariates 0) of grouping factor :math:`g`,
    :math:`\rho_g = \tau_g/(\sum_h \tau_h + \sigma^2)` over the random-intercept variances,
    on :math:`\operatorname{logit}\rho_g = \log\tau_g - \log(\sum_{h\ne g}\tau_h+\sigma^2)`.
    These intervals use the large-sample df (no complete-data df is defined for them). For a
    single grouping factor the ICC is mitml's ``ICC|group``; without a residual variance (a
    GLMM) it is the fit's latent-scale ``icc`` of a single random intercept, on
    :math:`\log\tau - \log c` with the fixed level-1 variance :math:`c`. The plain average
    mitml reports is kept in the ``mean`` column. In a simulation of a one-way random-effects
    model with 30% missing outcomes (``tests/test_pooling_coverage.py``, 5000 replications,
    Monte Carlo SE 0.003) the 95% intervals covered at 0.950 (:math:`\tau^2`), 0.947
    (:math:`\sigma^2`) and 0.949 (ICC), missing on both sides (:math:`\sigma^2`: 1.8% below,
    3.4% above); Rubin's rules on the variance scale itself gave 0.921 for :math:`\tau^2`,
    with 7.8% of misses above and 0.06% below.

    References
    ----------
    Rubin, D. B. (1987). *Multiple Imputation for Nonresponse in Surveys*. Wiley.

    Barnard, J., & Rubin, D. B. (1999). Small-sample degrees of freedom with multiple
    imputation. *Biometrika*, 86(4), 948–955.

    Schafer, J. L. (1997). *Analysis of Incomplete Multivariate Data*. Chapman & Hall.

    van Buuren, S. (2018). *Flexible Imputation of Missing Data* (2nd ed.). CRC Press.

    Marshall, A., Altman, D. G., Holder, R. L., & Royston, P. (2009). Combining estimates of
    interest in prognostic modelling studies after multiple imputation: current practice and
    guidelines. *BMC Medical Research Methodology*, 9, 57.

    Grund, S., Robitzsch, A., & Lüdtke, O. (2023). mitml: Tools for multiple imputation in
    multilevel modeling (R package 0.4-4).
    """
    level = _level(conf_level)
    est = extract(fits)
    _check_u_bar(est)
    dfc = _resolve_df_com(df_com, est)
    u_var = np.diagonal(est.u, axis1=1, axis2=2)
    pooled = rubin(est.q, u_var, dfc)
    u_bar = est.u.mean(axis=0)
    b = between_cov(est.q)
    if not est.full_cov:
        b = np.diag(np.diag(b))
    _warn_fmi(est.terms, pooled.fmi)
    varcomp = pool_varcomp(est.fits) if est.fits is not None else None
    first = est.fits[0] if est.fits else None
    return PooledResult(
        terms=est.terms,
        m=est.m,
        df_com=dfc,
        conf_level=level,
        full_covariance=est.full_cov,
        q_bar=pooled.q_bar,
        u_bar=u_bar,
        b=b,
        df=pooled.df,
        riv=pooled.riv,
        fmi=pooled.fmi,
        per_imputation_table=est.per_imputation(),
        varcomp_pooled=varcomp,
        formula=_str_or_none(getattr(first, "formula", None)),
        family=_str_or_none(getattr(first, "family", None)),
        link=_str_or_none(getattr(first, "link", None)),
        fits=est.fits,
    )


def _check_u_bar(est: Estimates) -> None:
    u_diag = np.diagonal(est.u, axis1=1, axis2=2).mean(axis=0)
    zero = [t for t, v in zip(est.terms, u_diag, strict=True) if not v > 0]
    if zero:
        raise DataError(
            f"the average within-imputation variance Ū is zero for term(s) {zero}, so Ū is "
            "singular and the relative increase in variance is undefined; such a term is "
            "usually aliased or constant in the completed data: drop it from the model"
        )


def _resolve_df_com(df_com: Any, est: Estimates) -> np.ndarray:
    p = len(est.terms)
    if df_com is None:
        if est.df_resid is not None:
            return np.full(p, float(np.mean(est.df_resid)))
        warnings.warn(
            "no complete-data degrees of freedom are known for these estimates (no df_resid); "
            "using Rubin's large-sample df. Pass df_com= (e.g. n - number of fixed effects) "
            "for Barnard-Rubin small-sample df, or df_com=float('inf') to silence this",
            PoolingWarning,
            stacklevel=3,
        )
        return np.full(p, np.inf)
    arr = np.asarray(df_com, dtype=float)
    if arr.ndim == 0:
        arr = np.full(p, float(arr))
    if arr.shape != (p,):
        raise SpecError(
            f"df_com has {arr.size} values for {p} terms; pass one number, one per term, "
            "None (each fit's df_resid) or float('inf') (large-sample)"
        )
    if np.isnan(arr).any() or (arr <= 0).any():
        raise SpecError(
            f"df_com = {df_com!r} must be positive (float('inf') for Rubin's large-sample df)"
        )
    return arr


def _warn_fmi(terms: tuple[str, ...], fmi: np.ndarray) -> None:
    high = [f"{t} ({f:.2f})" for t, f in zip(terms, fmi, strict=True) if f > FMI_WARN]
    if high:
        warnings.warn(
            f"fraction of missing information above {FMI_WARN} for {', '.join(high)}: the "
            "pooled inference leans heavily on the imputation model and its Monte Carlo error "
            "is large; use more imputations and check that the imputation model includes "
            "the analysis model's variables and structure",
            PoolingWarning,
            stacklevel=3,
        )


def _str_or_none(x: Any) -> str | None:
    return None if x is None else str(x)
