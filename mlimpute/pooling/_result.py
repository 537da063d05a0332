"""Result objects of pooling: fixed schemas, built once, never mutated."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ..analysis._family import family_label
from ..errors import DataError, SpecError
from ._rubin import t_inference
from ._varcomp import VarcompPooled

__all__ = ["PooledResult", "ModelTestResult"]

TIDY_COLUMNS = (
    "term",
    "estimate",
    "std_error",
    "statistic",
    "df",
    "p_value",
    "conf_low",
    "conf_high",
    "riv",
    "fmi",
)


@dataclass(frozen=True, repr=False)
class PooledResult:
    """Estimates combined over ``m`` imputations by Rubin's rules (see :func:`mlimpute.pool`).

    Attributes
    ----------
    terms : tuple of str
        Parameter names, in the order of the first analysis.
    m : int
        Number of imputations (analyses) pooled.
    df_com : ndarray
        Complete-data degrees of freedom used for each term (``inf``: Rubin's large-sample df).
    conf_level : float
        Level of the intervals of :meth:`tidy` and :meth:`varcomp` unless one is asked for.
    full_covariance : bool
        Whether full covariance matrices were pooled (``False`` for tables of standard errors:
        then :meth:`cov_params` only has a diagonal and multiparameter tests are unavailable).
    formula, family, link : str or None
        The analysis model, when the result comes from :func:`mlimpute.analyse` or fits.
    fits : tuple or None
        The per-imputation fit results, when fits were pooled (usable in
        :func:`mlimpute.test_models`).
    """

    terms: tuple[str, ...]
    m: int
    df_com: np.ndarray
    conf_level: float
    full_covariance: bool
    q_bar: np.ndarray = field(repr=False)
    u_bar: np.ndarray = field(repr=False)  # (p, p) average within-imputation covariance
    b: np.ndarray = field(repr=False)  # (p, p) between-imputation covariance
    df: np.ndarray = field(repr=False)
    riv: np.ndarray = field(repr=False)
    fmi: np.ndarray = field(repr=False)
    per_imputation_table: pd.DataFrame = field(repr=False)
    varcomp_pooled: VarcompPooled | None = field(default=None, repr=False)
    formula: str | None = None
    family: str | None = None
    link: str | None = None
    fits: tuple[Any, ...] | None = field(default=None, repr=False, compare=False)

    # ---- the fixed-effects table -------------------------------------------------------
    @property
    def total_cov(self) -> np.ndarray:
        """``T = U + (1 + 1/m) B`` as an array."""
        return self.u_bar + (1.0 + 1.0 / self.m) * self.b

    @property
    def params(self) -> pd.Series:
        """Pooled estimates ``Q̄`` by term (mitml's ``coef()``)."""
        return pd.Series(self.q_bar, index=list(self.terms), name="estimate")

    @property
    def std_errors(self) -> pd.Series:
        return pd.Series(np.sqrt(np.diag(self.total_cov)), index=list(self.terms), name="std_error")

    def cov_params(self) -> pd.DataFrame:
        """Total covariance ``T`` (mitml's ``vcov()``); off-diagonals NaN for tables of SEs."""
        t = self.total_cov.copy()
        if not self.full_covariance:
            t[~np.eye(len(self.terms), dtype=bool)] = np.nan
        return pd.DataFrame(t, index=list(self.terms), columns=list(self.terms))

    def tidy(self, conf_level: float | None = None) -> pd.DataFrame:
        """term, estimate, std_error, statistic, df, p_value, conf_low, conf_high, riv, fmi.

        ``statistic`` is ``estimate / std_error`` referred to a t distribution on ``df``.
        """
        level = self.conf_level if conf_level is None else _level(conf_level)
        se = np.sqrt(np.diag(self.total_cov))
        statistic, p_value, lo, hi = t_inference(self.q_bar, se, self.df, level)
        return pd.DataFrame(
            {
                "term": list(self.terms),
                "estimate": self.q_bar,
                "std_error": se,
                "statistic": statistic,
                "df": self.df,
                "p_value": p_value,
                "conf_low": lo,
                "conf_high": hi,
                "riv": self.riv,
                "fmi": self.fmi,
            },
            columns=list(TIDY_COLUMNS),
        )

    def conf_int(self, conf_level: float | None = None) -> pd.DataFrame:
        """Intervals by term (mitml's ``confint()``): columns conf_low, conf_high."""
        return self.tidy(conf_level).set_index("term")[["conf_low", "conf_high"]]

    def components(self) -> pd.DataFrame:
        """Rubin's ingredients by term: ubar, b, t, df_com, df, riv, lambda, fmi.

        ``lambda = (1 + 1/m) B / T`` is the proportion of the total variance due to missing data.
        """
        u = np.diag(self.u_bar)
        b = np.diag(self.b)
        t = np.diag(self.total_cov)
        return pd.DataFrame(
            {
                "term": list(self.terms),
                "ubar": u,
                "b": b,
                "t": t,
                "df_com": self.df_com,
                "df": self.df,
                "riv": self.riv,
                "lambda": (1.0 + 1.0 / self.m) * b / t,
                "fmi": self.fmi,
            }
        )

    def per_imputation(self) -> pd.DataFrame:
        """The estimates that were pooled: imputation, term, estimate, std_error."""
        return self.per_imputation_table.copy()

    # ---- variance components ------------------------------------------------------------
    def varcomp(self, conf_level: float | None = None) -> pd.DataFrame:
        """Pooled variance components and ICCs with intervals.

        Columns: group, term1, term2, estimate, mean, conf_low, conf_high, df, riv, fmi,
        method. ``estimate`` and the interval are Rubin's rules on the transformed scale of
        ``method`` (``rubin_log`` for variances, ``rubin_identity`` for covariances,
        ``rubin_logit`` for ICCs; ``mean_only`` where no interval can be formed) transformed
        back; ``mean`` is the plain average over imputations that mitml's ``testEstimates``
        reports. ICC rows have ``term1 == "ICC"``.
        """
        if self.varcomp_pooled is None:
            raise DataError(
                "this pooled result has no variance components: they come from fit results "
                "with varcomp() (e.g. mlimpute.lmm), not from tables of estimates; pool the fits"
            )
        level = self.conf_level if conf_level is None else _level(conf_level)
        return self.varcomp_pooled.table(level)

    # ---- display -------------------------------------------------------------------------
    def summary(self) -> str:
        head = f"Pooled over m = {self.m} imputations (Rubin's rules"
        dfc = np.unique(self.df_com)
        head += (
            ", large-sample df)"
            if np.isinf(dfc).all()
            else f", Barnard-Rubin df with df_com = {', '.join(f'{d:g}' for d in dfc)})"
        )
        lines = [head]
        if self.formula:
            lines.append(f"Model: {self.formula}"
                         + (f"  [{family_label(self.family, self.link)}]" if self.family else ""))
        with pd.option_context("display.width", 120, "display.max_columns", 20):
            lines.append(self.tidy().to_string(index=False))
            if self.varcomp_pooled is not None:
                lines.append("\nVariance components:")
                lines.append(self.varcomp().to_string(index=False))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"PooledResult(m={self.m}, terms={list(self.terms)}, "
            f"df_com={np.unique(self.df_com).tolist()}, formula={self.formula!r})"
        )

    __str__ = summary


@dataclass(frozen=True)
class ModelTestResult:
    """A multiparameter test pooled over imputations (see :func:`mlimpute.test_models`).

    Attributes
    ----------
    method : {"D1", "D2", "D3"}
    statistic : float
        The pooled F statistic.
    df1, df2 : float
        Numerator (number of parameters tested, ``k``) and denominator degrees of freedom.
    p_value : float
        ``P(F(df1, df2) > statistic)``.
    riv : float
        Average relative increase in variance due to nonresponse (``r``).
    m : int
    use : {"wald", "likelihood"}
        What the per-imputation statistics are.
    ariv : {"default", "positive"}
    df_com : float or None
        Complete-data df for D1's small-sample df2 (Reiter 2007); ``None``: large-sample.
    refit : bool
        Whether REML fits were refitted by ML for a likelihood-based test.
    terms : tuple of str
        The parameters tested (D1, D2 with Wald statistics).
    """

    method: str
    statistic: float
    df1: float
    df2: float
    p_value: float
    riv: float
    m: int
    use: str
    ariv: str = "default"
    df_com: float | None = None
    refit: bool = False
    terms: tuple[str, ...] = ()

    def tidy(self) -> pd.DataFrame:
        """One row: method, statistic, df1, df2, p_value, riv."""
        return pd.DataFrame(
            {
                "method": [self.method],
                "statistic": [self.statistic],
                "df1": [self.df1],
                "df2": [self.df2],
                "p_value": [self.p_value],
                "riv": [self.riv],
            }
        )

    def __str__(self) -> str:
        return (
            f"{self.method} ({self.use}, m = {self.m}): F = {self.statistic:.4g} on "
            f"{self.df1:g} and {self.df2:.4g} df, p = {self.p_value:.4g}, RIV = {self.riv:.4g}"
        )


def f_pvalue(statistic: float, df1: float, df2: float) -> float:
    """``P(F(df1, df2) > statistic)``; ``df2 = inf`` is the chi-square limit."""
    if np.isinf(df2):
        return float(stats.chi2.sf(statistic * df1, df1))
    return float(stats.f.sf(statistic, df1, df2))


def _level(conf_level: float) -> float:
    if not 0.0 < conf_level < 1.0:
        raise SpecError(f"conf_level = {conf_level!r} must be strictly between 0 and 1, e.g. 0.95")
    return float(conf_level)
