"""Rubin's rules for scalar estimands, with Barnard–Rubin degrees of freedom.

Pure array code: no pandas, no fit objects. Every formula here is the one in mitml 0.4-4's
``.pool.estimates`` (``R/testEstimates.R``), so that pooled tables agree with mitml to
floating-point accuracy.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import stats

__all__ = [
    "RubinPooled",
    "rubin",
    "between_cov",
    "barnard_rubin_df",
    "fraction_missing_info",
    "t_inference",
]


class RubinPooled(NamedTuple):
    """Rubin's combined quantities for ``p`` scalar estimands (arrays of length ``p``)."""

    q_bar: np.ndarray  # average estimate
    u_bar: np.ndarray  # average within-imputation variance
    b: np.ndarray  # between-imputation variance
    t: np.ndarray  # total variance  U + (1 + 1/m) B
    riv: np.ndarray  # relative increase in variance  (1 + 1/m) B / U
    df: np.ndarray  # Barnard–Rubin (finite df_com) or Rubin (df_com = inf) degrees of freedom
    fmi: np.ndarray  # fraction of missing information, mitml's definition


def between_cov(q: np.ndarray) -> np.ndarray:
    """Between-imputation covariance ``B`` of the rows of ``q`` (m, p), shape (p, p).

    Computed from deviations to the first imputation: the same matrix, but exactly 0 when the
    imputations agree (a plain ``np.cov`` leaves ~1e-32 rounding from the mean).
    """
    d = np.asarray(q, dtype=float) - np.asarray(q, dtype=float)[0]
    return np.atleast_2d(np.cov(d, rowvar=False, ddof=1))


def barnard_rubin_df(riv: np.ndarray, m: int, df_com: np.ndarray | float) -> np.ndarray:
    """Degrees of freedom of Rubin (1987) and Barnard & Rubin (1999).

    ``nu_m = (m - 1) (1 + 1/r)^2``; for a finite complete-data ``df_com``,
    ``nu_obs = (1 - lambda) (df_com + 1) / (df_com + 3) df_com`` with ``lambda = r / (1 + r)``
    and ``nu = 1 / (1/nu_m + 1/nu_obs)``. ``r = 0`` (no between-imputation variance) gives
    ``nu_m = inf``, so ``nu = nu_obs`` (or ``inf`` for ``df_com = inf``).
    """
    riv = np.asarray(riv, dtype=float)
    with np.errstate(divide="ignore"):
        nu_m = (m - 1) * (1.0 + 1.0 / riv) ** 2
    df_com = np.broadcast_to(np.asarray(df_com, dtype=float), riv.shape)
    lam = riv / (riv + 1.0)
    finite = np.isfinite(df_com)
    # (df_com + 1) / (df_com + 3) * df_com is inf/inf for df_com = inf: keep the inf branch apart
    nu_obs = np.full(riv.shape, np.inf)
    dfc = df_com[finite]
    nu_obs[finite] = (1.0 - lam[finite]) * ((dfc + 1.0) / (dfc + 3.0)) * dfc
    with np.errstate(divide="ignore"):
        return 1.0 / (1.0 / nu_m + 1.0 / nu_obs)


def fraction_missing_info(riv: np.ndarray, df: np.ndarray) -> np.ndarray:
    """mitml's fraction of missing information, ``(r + 2 / (nu + 3)) / (r + 1)``."""
    riv = np.asarray(riv, dtype=float)
    return (riv + 2.0 / (np.asarray(df, dtype=float) + 3.0)) / (riv + 1.0)


def rubin(q: np.ndarray, u: np.ndarray, df_com: np.ndarray | float) -> RubinPooled:
    """Combine ``m`` estimates of ``p`` scalars.

    Parameters
    ----------
    q : ndarray, shape (m, p)
        Per-imputation estimates.
    u : ndarray, shape (m, p)
        Per-imputation sampling variances (squared standard errors).
    df_com : float or ndarray of shape (p,)
        Complete-data degrees of freedom; ``inf`` for Rubin's large-sample df.
    """
    q = np.asarray(q, dtype=float)
    u = np.asarray(u, dtype=float)
    m = q.shape[0]
    q_bar = q.mean(axis=0)
    u_bar = u.mean(axis=0)
    b = np.diag(between_cov(q)).copy()
    t = u_bar + (1.0 + 1.0 / m) * b
    riv = (1.0 + 1.0 / m) * b / u_bar
    df = barnard_rubin_df(riv, m, df_com)
    return RubinPooled(q_bar, u_bar, b, t, riv, df, fraction_missing_info(riv, df))


def t_inference(
    estimate: np.ndarray, std_error: np.ndarray, df: np.ndarray, conf_level: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """t statistic (against 0), two-sided p-value and a ``conf_level`` interval on ``df``."""
    estimate = np.asarray(estimate, dtype=float)
    std_error = np.asarray(std_error, dtype=float)
    statistic = estimate / std_error
    # stats.t.sf keeps precision for tiny p-values (mitml's 1 - pt() rounds them to 0)
    p_value = 2.0 * stats.t.sf(np.abs(statistic), df)
    half = stats.t.ppf(0.5 + conf_level / 2.0, df) * std_error
    return statistic, p_value, estimate - half, estimate + half
