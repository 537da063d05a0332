"""``test_models()``: multiparameter tests over imputations (D1, D2, D3), as mitml 0.4-4's
``testModels`` (``R/testModels.R``, ``R/internal-pool.R``, ``R/internal-methods-likelihood.R``)."""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..errors import DataError, SpecError
from ._extract import Estimates, extract, is_fit
from ._result import ModelTestResult, PooledResult, f_pvalue
from ._rubin import between_cov
from ._warnings import PoolingWarning

__all__ = ["test_models", "MIN_M"]

#: Below these m a PoolingWarning says the test is unreliable (see test_models' Notes).
MIN_M = {"D1": 5, "D2": 20, "D3": 5}


def test_models(
    full: Any,
    null: Any,
    method: Literal["D1", "D2", "D3"] = "D1",
    *,
    use: Literal["wald", "likelihood"] = "wald",
    ariv: Literal["default", "positive"] = "default",
    df_com: float | None = None,
) -> ModelTestResult:
    r"""Test a full model against a nested null model over ``m`` imputations.

    Parameters
    ----------
    full, null : list of fit results or PooledResult
        The two models fitted on each of the same ``m`` imputed datasets (or the
        :class:`PooledResult` of :func:`mlimpute.analyse`, which keeps its fits). For D1 and
        D2 with Wald statistics, lists of ``(estimates, covariance)`` pairs with full
        covariance matrices work too. The null model's terms must all be in the full model;
        the tested parameters are the full model's other fixed effects (D1, D2-Wald: tested
        against 0).
    method : {"D1", "D2", "D3"}, default "D1"
        D1: pooled Wald test (Li, Raghunathan & Rubin 1991). D2: pooled per-imputation
        chi-square statistics (Li, Meng, Raghunathan & Rubin 1991). D3: pooled likelihood
        ratio test with the likelihood evaluated at the pooled estimates (Meng & Rubin 1992).
    use : {"wald", "likelihood"}, default "wald"
        For D2: combine per-imputation Wald statistics (mitml's default) or likelihood-ratio
        statistics (REML fits are then refitted by ML).
    ariv : {"default", "positive"}, default "default"
        ``"positive"`` truncates a negative estimate of the average RIV at 0 (D2, D3), as
        mitml's ``ariv = "positive"``.
    df_com : float, optional
        Complete-data df for D1's denominator df (Reiter 2007). ``None`` (default): the
        large-sample df of Li, Raghunathan & Rubin (1991), as mitml without ``df.com``. Note
        that this default differs from :func:`mlimpute.pool`, whose ``None`` means each fit's
        ``df_resid``: it keeps ``test_models`` equal to mitml's ``testModels`` by default.

    Returns
    -------
    ModelTestResult
        ``statistic`` (F), ``df1`` (``k``), ``df2``, ``p_value``, ``riv``; ``tidy()`` gives
        them as a one-row DataFrame.

    Raises
    ------
    SpecError
        Unknown ``method``/``use``/``ariv``, different ``m``, models not nested, or fits
        without what the method needs (D3: ``covariance_parameters()``, ``loglik_at()``).
    DataError
        A singular ``Ū`` (D1) or ``U_i`` (D2), or terms missing in some imputations.

    Warns
    -----
    PoolingWarning
        ``m`` below ``MIN_M[method]`` (5 for D1 and D3, 20 for D2) or ``m - 1 < k`` for D1;
        an average RIV above 1 (fraction of missing information above about 0.5); a negative
        RIV estimate (D2, D3 with ``ariv="default"``).

    Notes
    -----
    With :math:`k` tested parameters, estimates :math:`\hat Q_i` and covariances :math:`U_i`:

    **D1** (Li, Raghunathan & Rubin 1991). :math:`\bar Q, \bar U` averages,
    :math:`B = \frac{1}{m-1}\sum_i(\hat Q_i-\bar Q)(\hat Q_i-\bar Q)'`,
    :math:`r = (1+m^{-1})\operatorname{tr}(B\bar U^{-1})/k`,
    :math:`D_1 = \bar Q'\,[(1+r)\bar U]^{-1}\bar Q / k \sim F(k, \nu)` with, for
    :math:`t = k(m-1) > 4`, :math:`\nu = 4 + (t-4)[1 + (1-2/t)/r]^2`, else
    :math:`\nu = t(1+1/k)(1+1/r)^2/2`. With ``df_com`` (:math:`\nu_{com}`), Reiter's (2007)
    :math:`\nu = 4 + 1/z` with :math:`a = rt/(t-2)`, :math:`\nu^* = \nu_{com}(\nu_{com}+1)/
    (\nu_{com}+3)`, :math:`c_0 = 1/(t-4)`, :math:`c_1 = \nu^*-2(1+a)`, :math:`c_2 =
    \nu^*-4(1+a)` and :math:`z = 1/c_2 + c_0[a^2c_1/((1+a)^2c_2) + 8a^2c_1/((1+a)c_2^2) +
    4a^2/((1+a)c_2) + 4a^2/(c_2c_1) + 16a^2c_1/c_2^3 + 8a^2/c_2^2]`.

    **D2** (Li, Meng, Raghunathan & Rubin 1991). Per-imputation statistics :math:`d_i`
    (Wald :math:`\hat Q_i'U_i^{-1}\hat Q_i`, or LR :math:`-2(\ell_{0i}-\ell_{1i})`),
    :math:`r = (1+m^{-1})\,\mathrm{Var}(\sqrt{d_i})`,
    :math:`D_2 = [\bar d/k - r(m+1)/(m-1)]/(1+r) \sim F(k, \nu)`,
    :math:`\nu = k^{-3/m}(m-1)(1+1/r)^2`.

    **D3** (Meng & Rubin 1992). :math:`\bar d_L = \frac1m\sum_i -2(\ell_0(\hat\psi_{0i};
    Y_i)-\ell_1(\hat\psi_{1i}; Y_i))` at each imputation's own ML estimates and
    :math:`\tilde d_L` the same at the pooled estimates :math:`\bar\psi_0, \bar\psi_1`;
    :math:`r = \frac{m+1}{k(m-1)}(\bar d_L-\tilde d_L)`,
    :math:`D_3 = \tilde d_L/(k(1+r)) \sim F(k, \nu)` with D1's large-sample :math:`\nu`.
    For mixed models the pooled estimates are, as in mitml's ``.getArgsLL.lmerMod``, the
    averages of the fixed effects, of each random-effect covariance matrix and of the
    residual variance; ``k`` is the difference in the number of parameters; REML fits are
    refitted by ML first.

    All three are mitml 0.4-4's formulas, which this implementation reproduces (tests compare
    against ``testModels`` output). D2's reference distribution is a rough approximation whose
    accuracy depends on ``m`` (Li, Meng et al. 1991 present it as a screening tool), hence the
    larger ``MIN_M``; D1 and D3 estimate the ``k``-dimensional between-imputation variation
    from ``m - 1`` degrees of freedom and assume equal fractions of missing information across
    the tested parameters.

    References
    ----------
    Li, K. H., Raghunathan, T. E., & Rubin, D. B. (1991). Large-sample significance levels
    from multiply imputed data using moment-based statistics and an F reference distribution.
    *JASA*, 86(416), 1065–1073.

    Li, K. H., Meng, X.-L., Raghunathan, T. E., & Rubin, D. B. (1991). Significance levels
    from repeated p-values with multiply-imputed data. *Statistica Sinica*, 1(1), 65–92.

    Meng, X.-L., & Rubin, D. B. (1992). Performing likelihood ratio tests with
    multiply-imputed data sets. *Biometrika*, 79(1), 103–111.

    Reiter, J. P. (2007). Small-sample degrees of freedom for multi-component significance
    tests with multiple imputation for missing data. *Biometrika*, 94(2), 502–508.

    Rubin, D. B. (1987). *Multiple Imputation for Nonresponse in Surveys*. Wiley.
    """
    if method not in ("D1", "D2", "D3"):
        raise SpecError(f"method = {method!r} is not one of 'D1', 'D2', 'D3'")
    if use not in ("wald", "likelihood"):
        raise SpecError(f"use = {use!r} is not one of 'wald', 'likelihood'")
    if ariv not in ("default", "positive"):
        raise SpecError(f"ariv = {ariv!r} is not one of 'default', 'positive'")
    if use == "likelihood" and method != "D2":
        raise SpecError(f"use = 'likelihood' applies to D2 only ({method} fixes what it combines)")
    if ariv == "positive" and method == "D1":
        raise SpecError("ariv = 'positive' applies to D2 and D3 only; D1's RIV is never negative")
    if df_com is not None and method != "D1":
        raise SpecError(
            f"df_com is only used by D1 (Reiter's small-sample df), not by {method}; drop it"
        )
    if df_com is not None and not (df_com > 0):
        raise SpecError(f"df_com = {df_com!r} must be positive")
    full_items, null_items = _items(full, "full"), _items(null, "null")
    _comparable(full_items, null_items, method == "D3" or (method == "D2" and use == "likelihood"))
    if method == "D3" or (method == "D2" and use == "likelihood"):
        if isinstance(full_items, pd.DataFrame) or isinstance(null_items, pd.DataFrame):
            raise SpecError(f"{method} with likelihoods needs fit results, not tables of estimates")
        _same_m(len(full_items), len(null_items))
        _same_model(full_items, "full")
        _same_model(null_items, "null")
        if method == "D3":
            return _d3(full_items, null_items, ariv)
        d, k, refit = _lr_statistics(full_items, null_items)
        return _d2(d, k, len(full_items), ariv, "likelihood", refit, ())
    est_f, est_n = extract(full_items), extract(null_items)
    _same_m(est_f.m, est_n.m)
    m = est_f.m
    terms = _tested_terms(est_f, est_n)
    idx = [est_f.terms.index(t) for t in terms]
    q = est_f.q[:, idx]
    u = est_f.u[:, idx][:, :, idx]
    if not est_f.full_cov and len(idx) > 1:
        raise DataError(
            f"{method} with Wald statistics needs the full covariance matrix of {terms}, but only "
            "variances were given; pass fits or (estimates, covariance matrix) pairs"
        )
    if method == "D1":
        return _d1(q, u, terms, df_com)
    d = np.array([qi @ _solve(ui, qi, terms, f"U of imputation {i}") for i, (qi, ui) in
                  enumerate(zip(q, u, strict=True), 1)])
    return _d2(d, len(terms), m, ariv, "wald", False, terms)


# ---- D1 -------------------------------------------------------------------------------------
def _d1(
    q: np.ndarray, u: np.ndarray, terms: tuple[str, ...], df_com: float | None
) -> ModelTestResult:
    m, k = q.shape
    _warn_small_m("D1", m, k)
    q_bar = q.mean(axis=0)
    u_bar = u.mean(axis=0)
    b = between_cov(q)
    riv = float((1.0 + 1.0 / m) * np.trace(_solve(u_bar, b, terms, "Ū")) / k)
    stat = float(q_bar @ _solve((1.0 + riv) * u_bar, q_bar, terms, "Ū") / k)
    t = k * (m - 1)
    if df_com is not None and np.isinf(df_com):
        df_com = None  # Reiter's df tends to the large-sample df as df_com grows
    if df_com is not None and t <= 4:
        warnings.warn(
            f"Reiter's small-sample df needs k(m - 1) > 4 (here {t}); using the large-sample "
            "df of Li, Raghunathan & Rubin (1991) instead. Use more imputations",
            PoolingWarning,
            stacklevel=3,
        )
        df_com = None
    df2 = _reiter_df(riv, t, df_com) if df_com is not None else _lrr_df(riv, t, k)
    _warn_riv("D1", riv)
    return ModelTestResult(
        "D1", stat, float(k), df2, f_pvalue(stat, k, df2), float(riv), m, "wald",
        df_com=None if df_com is None else float(df_com), terms=terms,
    )


def _lrr_df(riv: float, t: int, k: int) -> float:
    """Li, Raghunathan & Rubin's (1991) denominator df (mitml's ``.D1`` without df.com)."""
    with np.errstate(divide="ignore"):
        inv_r = np.float64(1.0) / np.float64(riv)
    if t > 4:
        return float(4.0 + (t - 4.0) * (1.0 + (1.0 - 2.0 / t) * inv_r) ** 2)
    return float(t * (1.0 + 1.0 / k) * (1.0 + inv_r) ** 2 / 2.0)


def _reiter_df(riv: float, t: int, df_com: float) -> float:
    """Reiter's (2007, eq. 1-2) small-sample denominator df, as mitml's ``.D1``."""
    a = riv * t / (t - 2.0)
    vstar = (df_com + 1.0) / (df_com + 3.0) * df_com
    c0 = 1.0 / (t - 4.0)
    c1 = vstar - 2.0 * (1.0 + a)
    c2 = vstar - 4.0 * (1.0 + a)
    z = (
        1.0 / c2
        + c0 * (a**2 * c1 / ((1.0 + a) ** 2 * c2))
        + c0 * (8.0 * a**2 * c1 / ((1.0 + a) * c2**2) + 4.0 * a**2 / ((1.0 + a) * c2))
        + c0 * (4.0 * a**2 / (c2 * c1) + 16.0 * a**2 * c1 / c2**3)
        + c0 * (8.0 * a**2 / c2**2)
    )
    return float(4.0 + 1.0 / z)


# ---- D2 -------------------------------------------------------------------------------------
def _d2(
    d: np.ndarray, k: int, m: int, ariv: str, use: str, refit: bool, terms: tuple[str, ...]
) -> ModelTestResult:
    _warn_small_m("D2", m, k)
    riv = float((1.0 + 1.0 / m) * between_cov(np.sqrt(d)[:, None])[0, 0])
    stat = float((d.mean() / k - (m + 1.0) / (m - 1.0) * riv) / (1.0 + riv))
    with np.errstate(divide="ignore"):
        df2 = float(k ** (-3.0 / m) * (m - 1.0) * (1.0 + np.float64(1.0) / riv) ** 2)
    if ariv == "positive":
        riv = max(0.0, riv)  # mitml truncates the reported r only; D2's r is never negative
    _warn_riv("D2", riv)
    p_value = f_pvalue(stat, k, df2) if stat > 0 else 1.0
    return ModelTestResult(
        "D2", stat, float(k), df2, p_value, riv, m, use, ariv, None, refit, terms
    )


def _lr_statistics(full: list[Any], null: list[Any]) -> tuple[np.ndarray, int, bool]:
    """Per-imputation LR statistics ``-2 (l0 - l1)`` from ML fits (refitting REML fits)."""
    full_ml, refit_f = _ml_fits(full, "D2 with use='likelihood'")
    null_ml, refit_n = _ml_fits(null, "D2 with use='likelihood'")
    ll1 = np.array([f.loglik for f in full_ml], dtype=float)
    ll0 = np.array([f.loglik for f in null_ml], dtype=float)
    k = _n_par(full_ml[0]) - _n_par(null_ml[0])
    _check_k(k)
    diff = ll0 - ll1
    diff[np.isclose(ll0, ll1, rtol=1.5e-8, atol=0.0)] = 0.0  # mitml: all.equal() -> exactly 0
    return np.maximum(-2.0 * diff, 0.0), k, refit_f or refit_n


# ---- D3 -------------------------------------------------------------------------------------
def _d3(full: list[Any], null: list[Any], ariv: str) -> ModelTestResult:
    full_ml, refit_f = _ml_fits(full, "D3")
    null_ml, refit_n = _ml_fits(null, "D3")
    m = len(full_ml)
    ll1, ll1_pooled, n1 = _user_loglik(full_ml)
    ll0, ll0_pooled, n0 = _user_loglik(null_ml)
    k = n1 - n0
    _check_k(k)
    _warn_small_m("D3", m, k)
    dl_bar = float(np.mean(-2.0 * (ll0 - ll1)))
    dl_tilde = float(np.mean(-2.0 * (ll0_pooled - ll1_pooled)))
    riv = (m + 1.0) / (k * (m - 1.0)) * (dl_bar - dl_tilde)
    if ariv == "positive":
        riv = max(0.0, riv)
    stat = dl_tilde / (k * (1.0 + riv))
    df2 = _lrr_df(riv, k * (m - 1), k)
    _warn_riv("D3", riv)
    p_value = f_pvalue(stat, k, df2) if stat > 0 else 1.0
    return ModelTestResult(
        "D3", stat, float(k), df2, p_value, float(riv), m, "likelihood", ariv, None,
        refit_f or refit_n,
    )


def _user_loglik(fits: list[Any]) -> tuple[np.ndarray, np.ndarray, int]:
    """Log-likelihoods at each fit's own estimates and at the averaged parameters.

    As mitml's ``.evaluateUserLogLik``: average the fixed effects, each random-effect
    covariance matrix and the residual variance over imputations (and a variance function's
    log-variance coefficients, ``"gamma"``, when the fits have one), then evaluate every
    imputation's likelihood there.
    """
    unsupported = SpecError(
        f"D3 needs fits with covariance_parameters() and loglik_at() (linear mixed models "
        f"from mlimpute.lmm); a {type(fits[0]).__name__} does not provide them. Use D1 or D2"
    )
    if not all(
        callable(getattr(f, "covariance_parameters", None))
        and callable(getattr(f, "loglik_at", None))
        for f in fits
    ):
        raise unsupported
    pars = [f.covariance_parameters() for f in fits]
    if any(p is None for p in pars):
        raise unsupported
    beta = np.mean([np.asarray(p["beta"], dtype=float) for p in pars], axis=0)
    n_tau = len(pars[0]["tau"])
    tau = [np.mean([np.asarray(p["tau"][j], dtype=float) for p in pars], axis=0)
           for j in range(n_tau)]
    sig = [p.get("sigma2") for p in pars]
    sigma2 = None if sig[0] is None else float(np.mean(np.asarray(sig, dtype=float)))
    extra = {}
    if "gamma" in pars[0]:
        extra["gamma"] = np.mean([np.asarray(p["gamma"], dtype=float) for p in pars], axis=0)
    ll = np.array([f.loglik for f in fits], dtype=float)
    try:
        ll_pooled = np.array([f.loglik_at(beta, tau, sigma2, **extra) for f in fits], dtype=float)
    except NotImplementedError as err:  # e.g. a GLMM whose likelihood is not evaluable here
        raise unsupported from err
    return ll, ll_pooled, _n_par(fits[0])


# ---- shared helpers ---------------------------------------------------------------------
def _same_m(m_full: int, m_null: int) -> None:
    if m_full != m_null:
        raise SpecError(
            f"the full model has {m_full} fits and the null model {m_null}; "
            "fit both on the same m imputed datasets"
        )


def _signature(fit: Any) -> tuple:
    """A fit's fixed-effect terms and random terms (with their grouping), as far as it has them."""
    params = getattr(fit, "params", None)
    fixed = tuple(getattr(fit, "term_names", None) or (params.index if params is not None else ()))
    return fixed, tuple(getattr(fit, "random_names", ()) or ()), tuple(getattr(fit, "term_groups", ()) or ())


def _same_model(fits: list[Any], which: str) -> None:
    """A likelihood-ratio test combines each imputation's fit of one model: every fit must be there
    and of the same terms (D1 and D2-Wald check the terms when they extract the estimates)."""
    for i, f in enumerate(fits, 1):
        if f is None:
            raise DataError(
                f"the {which} model's fit of imputation {i} is None (did that fit fail?); refit it, or "
                "leave that imputation out of both models"
            )
    first = _signature(fits[0])
    for i, f in enumerate(fits[1:], 2):
        sig = _signature(f)
        if sig != first:
            what = "fixed effects" if sig[0] != first[0] else "random terms"
            a = first[0] if sig[0] != first[0] else list(zip(first[2], first[1]))
            b = sig[0] if sig[0] != first[0] else list(zip(sig[2], sig[1]))
            raise DataError(
                f"the {which} model's fits are not of one model: imputation 1 has the {what} {list(a)}, "
                f"imputation {i} {list(b)}; fit the same formula to every imputation"
            )


def _comparable(full: Any, null: Any, likelihood: bool) -> None:
    """Fits of the two models must describe the same data: the same response, family and link
    and number of rows in every imputation; for a likelihood-ratio test (D3, D2 on likelihoods)
    the null model's grouping factors must be among the full model's. (Tables of estimates
    carry none of this: nothing to check.)"""
    if isinstance(full, pd.DataFrame) or isinstance(null, pd.DataFrame):
        return
    for i, (f, n) in enumerate(zip(full, null), 1):
        for what, get in (("responses", _response), ("families", lambda fit: getattr(fit, "family", None)),
                          ("links", lambda fit: getattr(fit, "link", None)),
                          ("numbers of rows", lambda fit: getattr(fit, "nobs", None))):
            a, b = get(f), get(n)
            if a is not None and b is not None and a != b:
                raise SpecError(
                    f"the full and null models have different {what} in imputation {i} ({a!r} against "
                    f"{b!r}): they are not fits of nested models to the same data; fit both to the same "
                    "rows with the same response and family"
                )
        groups_f, groups_n = getattr(f, "term_groups", None), getattr(n, "term_groups", None)
        if likelihood and groups_f is not None and groups_n is not None and not set(groups_n) <= set(groups_f):
            extra = sorted(set(groups_n) - set(groups_f))
            raise SpecError(
                f"the null model has random terms grouped by {extra}, which the full model lacks: the "
                "models are not nested, and a likelihood-ratio test between them means nothing"
            )


def _response(fit: Any) -> str | None:
    formula = getattr(fit, "formula", None)
    return str(formula).split("~")[0].strip() if formula else None


def _items(x: Any, which: str) -> Any:
    """The fits (or pairs, or a per-imputation table) behind ``x``."""
    if isinstance(x, pd.DataFrame):
        return x
    if isinstance(x, PooledResult):
        if x.fits is None:
            raise SpecError(
                f"the {which} model's PooledResult was pooled from tables and keeps no fits; "
                "pass the list of fits (or the result of mlimpute.analyse)"
            )
        return list(x.fits)
    if isinstance(x, (str, bytes)) or not hasattr(x, "__len__"):
        raise SpecError(f"the {which} model must be a list of fits, got {type(x).__name__}")
    items = list(x)
    if len(items) < 2:
        raise SpecError(f"the {which} model has {len(items)} fit(s); a pooled test needs m >= 2")
    return items


def _ml_fits(fits: Any, what: str) -> tuple[list[Any], bool]:
    """ML versions of the fits: REML fits are refitted by ML, as mitml's ``.updateML``."""
    if isinstance(fits, pd.DataFrame) or not all(is_fit(f) for f in fits):
        raise SpecError(f"{what} needs fit results (with loglik), not tables of estimates")
    out, refit = [], False
    for f in fits:
        if getattr(f, "reml", False):
            if not callable(getattr(f, "refit", None)):
                raise SpecError(
                    f"{what} needs ML fits, and this REML fit has no refit(); fit by ML"
                )
            f = f.refit(reml=False)
            refit = True
        out.append(f)
    return out, refit


def _n_par(fit: Any) -> int:
    """Number of model parameters (lme4's logLik df): fixed effects + covariance parameters."""
    if callable(getattr(fit, "covariance_parameters", None)):
        p = fit.covariance_parameters()
        n = len(np.atleast_1d(p["beta"]))
        n += sum(np.atleast_2d(t).shape[0] * (np.atleast_2d(t).shape[0] + 1) // 2 for t in p["tau"])
        return n + (p.get("sigma2") is not None) + len(p.get("gamma", ()))
    return len(fit.params) + (len(fit.varcomp()) if callable(getattr(fit, "varcomp", None)) else 0)


def _check_k(k: int) -> None:
    if k <= 0:
        raise SpecError(
            f"the full model has {k} parameter(s) more than the null model; the null model "
            "must be nested in the full one (did you swap full and null?)"
        )


def _tested_terms(est_f: Estimates, est_n: Estimates) -> tuple[str, ...]:
    extra_null = [t for t in est_n.terms if t not in est_f.terms]
    if extra_null:
        raise SpecError(
            f"null-model term(s) {extra_null} are not in the full model; the models must be "
            "nested (did you swap full and null?)"
        )
    terms = tuple(t for t in est_f.terms if t not in est_n.terms)
    if not terms:
        raise SpecError(
            "the full and null models have the same fixed effects; nothing to test (tests of "
            "variance components need D3, which compares likelihoods)"
        )
    return terms


def _solve(a: np.ndarray, b: np.ndarray, terms: tuple[str, ...], what: str) -> np.ndarray:
    """``a^{-1} b`` for a symmetric positive-definite ``a``; singular ``a`` is a DataError.

    Singularity is judged on the correlation matrix ``D^{-1/2} a D^{-1/2}``, so that a term's
    units do not decide it (a covariate in micro-units made the raw eigenvalue ratio 1e-15)."""
    a = np.atleast_2d(a)
    d = np.diag(a).copy()
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled = a / np.sqrt(np.outer(d, d))
    eig = np.linalg.eigvalsh(scaled) if np.all(d > 0) and np.all(np.isfinite(scaled)) else np.array([0.0, 0.0])
    if not (eig[0] > eig[-1] * 1e-12 and eig[-1] > 0):
        eig = np.linalg.eigvalsh(a)
        raise DataError(
            f"the covariance matrix {what} of the tested terms {list(terms)} is singular "
            f"(eigenvalues {eig.min():.3g} .. {eig.max():.3g}); a tested term is aliased, "
            "constant, or duplicated: drop it from the full model"
        )
    return np.linalg.solve(a, b)


def _warn_small_m(method: str, m: int, k: int) -> None:
    reasons = []
    if m < MIN_M[method]:
        reasons.append(f"m = {m} < {MIN_M[method]}")
    if method in ("D1", "D3") and m - 1 < k:
        reasons.append(
            f"m - 1 = {m - 1} < k = {k} tested parameters (the between-imputation covariance "
            "is rank-deficient; the test rests on equal fractions of missing information)"
        )
    if reasons:
        warnings.warn(
            f"{method} with {'; '.join(reasons)}: its p-value may be inaccurate; use more "
            "imputations" + (" or D1/D3" if method == "D2" else ""),
            PoolingWarning,
            stacklevel=4,
        )


def _warn_riv(method: str, riv: float) -> None:
    if riv > 1.0:
        warnings.warn(
            f"{method}: average relative increase in variance r = {riv:.3g} > 1 (fraction of "
            "missing information above about 0.5): the test leans heavily on the imputation "
            "model; use more imputations and check the imputation model",
            PoolingWarning,
            stacklevel=4,
        )
    elif riv < 0:
        warnings.warn(
            f"{method}: the estimated average relative increase in variance is negative "
            f"(r = {riv:.3g}), a sign of too few imputations or of likelihoods evaluated "
            "inconsistently; consider ariv='positive' or more imputations",
            PoolingWarning,
            stacklevel=4,
        )
