"""Pooled variance components and intraclass correlations, with intervals.

mitml's ``testEstimates(extra.pars=TRUE)`` only averages variance components. Here each
component is pooled by Rubin's rules on a scale where its sampling distribution is close to
normal, using each fit's asymptotic covariance of the variance-component estimates
(``fit.varcomp_cov()``) through the delta method, and the interval is transformed back:

* variances (random-effect and residual): ``log``;
* covariances: identity (unbounded, symmetric around 0);
* a variance function's coefficients (rows ``("Residual", term, None)`` of
  ``lmm(..., dispersion=...)``): identity -- they are log-variance coefficients already
  (``log σ²_i = log σ² + w_iᵀγ``), so the log scale is their own;
* ICC / variance partition coefficient of each grouping factor: ``logit`` (with a variance
  function: at ``w = 0``, where the residual variance is σ²).

Each row is pooled on its own, so a problem in one imputation costs only the rows it touches:

* a row whose value cannot be put on its scale in some imputation (a variance estimated as 0,
  an ICC of 0 or 1) is averaged without an interval (``mean_only``);
* a row's within-imputation variance (delta method) uses only the entries of a fit's
  covariance that its gradient touches; where a fit has none (a singular fit's
  ``varcomp_cov()`` is NaN), ``Ū`` averages the imputations that have one, ``B`` still uses
  all ``m`` estimates; with fewer than two such imputations the row is ``mean_only``.

So one singular imputation leaves the residual variance, the other groups' variances and
their ICCs with intervals; only the component on the boundary loses its interval.
See :func:`mlimpute.pool` for the formulas and references.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy import stats
from scipy.special import expit

from ..errors import DataError
from ._rubin import rubin
from ._warnings import PoolingWarning

__all__ = ["VarcompPooled", "pool_varcomp"]

_INTERCEPT = ("Intercept", "(Intercept)")
Key = tuple[str | None, str | None, str | None]


@dataclass(frozen=True)
class VarcompPooled:
    """Pooled variance components; ``table(conf_level)`` gives the user-facing DataFrame."""

    keys: tuple[Key, ...]
    method: tuple[str, ...]  # rubin_log | rubin_identity | rubin_logit | mean_only
    q_bar: np.ndarray  # pooled value on the transformed scale
    t: np.ndarray  # total variance on the transformed scale
    df: np.ndarray
    riv: np.ndarray
    fmi: np.ndarray
    mean: np.ndarray  # plain average over imputations (what mitml reports)

    def table(self, conf_level: float) -> pd.DataFrame:
        half = stats.t.ppf(0.5 + conf_level / 2.0, self.df) * np.sqrt(self.t)
        lo, hi = self.q_bar - half, self.q_bar + half
        est = self.q_bar.copy()
        with np.errstate(over="ignore"):  # exp() of a huge upper limit is rightly inf
            for arr in (est, lo, hi):
                for i, meth in enumerate(self.method):
                    arr[i] = _BACK[meth](arr[i])
        return pd.DataFrame(
            {
                # object dtype: a missing label stays None, as in the fits' varcomp()
                "group": pd.Series([k[0] for k in self.keys], dtype=object),
                "term1": pd.Series([k[1] for k in self.keys], dtype=object),
                "term2": pd.Series([k[2] for k in self.keys], dtype=object),
                "estimate": est,
                "mean": self.mean,
                "conf_low": lo,
                "conf_high": hi,
                "df": self.df,
                "riv": self.riv,
                "fmi": self.fmi,
                "method": list(self.method),
            }
        )


_BACK = {
    "rubin_log": np.exp,
    "rubin_identity": lambda x: x,
    "rubin_logit": expit,
    "mean_only": lambda x: x,
}


def _norm(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
        return None
    return str(v)


def _keys(vc: pd.DataFrame, k: Any) -> list[Key]:
    missing = [c for c in ("group", "term1", "term2", "estimate") if c not in vc.columns]
    if missing:
        raise DataError(
            f"varcomp() of imputation {k} lacks column(s) {missing}; the analysis contract "
            "is group, term1, term2, estimate"
        )
    return [
        (_norm(g), _norm(a), _norm(b))
        for g, a, b in zip(vc["group"], vc["term1"], vc["term2"], strict=True)
    ]


class _Row(NamedTuple):
    """One output row before pooling: raw values, transformed values and their gradient."""

    key: Key
    method: str  # rubin_log | rubin_identity | rubin_logit
    raw: np.ndarray  # (m,) value on the natural scale
    z: np.ndarray  # (m,) value on the pooling scale
    grad: np.ndarray  # (m, K) derivative of z in the K variance components


def pool_varcomp(fits: tuple[Any, ...]) -> VarcompPooled | None:
    """Pool ``fit.varcomp()`` over the fits; ``None`` if the fits carry no variance components."""
    if not all(callable(getattr(f, "varcomp", None)) for f in fits):
        return None
    tables = [f.varcomp() for f in fits]
    if any(vc is None or len(vc) == 0 for vc in tables):  # e.g. a model without random terms
        return None
    keys, theta, cov = _components(fits, tables)
    rows = _component_rows(keys, theta) + _icc_rows(keys, theta, fits)
    z = np.stack([r.z for r in rows], axis=1)  # (m, R)
    grad = np.stack([r.grad for r in rows], axis=1)  # (m, R, K)
    var_z = _delta_variances(grad, cov)  # (m, R), NaN where a fit has no covariance for it
    on_scale = np.isfinite(z).all(axis=0)
    on_scale &= np.array([r.method != "rubin_log" or (r.raw > 0).all() for r in rows])
    has_var = np.isfinite(var_z) & (var_z > 0)
    ok = on_scale & (has_var.sum(axis=0) >= 2)
    raw_mean = np.array([r.raw.mean() for r in rows])
    q_bar, t, df, riv, fmi = (np.full(len(rows), np.nan) for _ in range(5))
    q_bar[~ok] = raw_mean[~ok]
    if ok.any():
        # Ū of a row averages the within-imputation variances that exist: a missing one is
        # replaced by the mean of the others, which leaves that average unchanged
        u = np.where(has_var, var_z, np.nan)[:, ok]
        u = np.where(np.isnan(u), np.nanmean(u, axis=0), u)
        pooled = rubin(z[:, ok], u, np.inf)
        q_bar[ok], t[ok], df[ok], riv[ok], fmi[ok] = (
            pooled.q_bar, pooled.t, pooled.df, pooled.riv, pooled.fmi)
    _warn_rows(rows, on_scale, has_var, ok)
    methods = tuple(r.method if k else "mean_only" for r, k in zip(rows, ok, strict=True))
    return VarcompPooled(tuple(r.key for r in rows), methods, q_bar, t, df, riv, fmi, raw_mean)


def _delta_variances(grad: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """``g' C g`` per imputation and row, using only the covariance entries a row's gradient
    touches: a fit whose covariance is NaN elsewhere (or everywhere: a singular fit) costs
    only the rows that need the missing entries."""
    used = grad != 0  # (m, R, K)
    missing = np.einsum("irk,ikl,irl->ir", used, np.isnan(cov), used) > 0
    with np.errstate(invalid="ignore"):  # an infinite gradient: a row already off its scale
        var = np.einsum("irk,ikl,irl->ir", grad, np.nan_to_num(cov, nan=0.0), grad)
    return np.where(missing, np.nan, var)


def _warn_rows(rows: list[_Row], on_scale: np.ndarray, has_var: np.ndarray,
               ok: np.ndarray) -> None:
    """One PoolingWarning per reason, naming the rows and imputations it concerns."""
    m = has_var.shape[0]
    boundary = [r.key for r, s in zip(rows, on_scale) if not s]
    if boundary:
        warnings.warn(
            f"variance component(s) {boundary} are on the boundary (zero variance, or an ICC of "
            "0 or 1) in at least one imputation; they are averaged without an interval "
            "(method 'mean_only')", PoolingWarning, stacklevel=4)
    no_var = [r.key for r, s, k in zip(rows, on_scale, ok) if s and not k]
    if no_var:
        warnings.warn(
            f"variance component(s) {no_var}: asymptotic variance is not available in {m - 1} "
            f"or more of {m} imputations; they are averaged without an interval "
            "(method 'mean_only')", PoolingWarning, stacklevel=4)
    partial = sorted({int(i) + 1 for j, k in enumerate(ok) if k for i in np.flatnonzero(~has_var[:, j])})
    if partial:
        warnings.warn(
            f"imputation(s) {partial} have no asymptotic variance for some variance components "
            "(a boundary fit has none); the within-imputation variance of those components "
            "averages the other imputations", PoolingWarning, stacklevel=4)


def _components(
    fits: tuple[Any, ...], tables: list[pd.DataFrame]
) -> tuple[list[Key], np.ndarray, np.ndarray]:
    """Keys, estimates ``(m, K)`` and asymptotic covariances ``(m, K, K)`` (NaN if unknown)."""
    all_keys = [_keys(vc, k) for k, vc in enumerate(tables, 1)]
    keys = all_keys[0]
    for k, other in enumerate(all_keys[1:], 2):
        if set(other) != set(keys):
            diff = sorted(set(keys) ^ set(other), key=str)
            raise DataError(
                f"variance components differ between imputation 1 and {k}: {diff}; every "
                "analysis must use the same random-effects structure"
            )
    m, n_k = len(fits), len(keys)
    theta = np.empty((m, n_k))
    cov = np.full((m, n_k, n_k), np.nan)
    for i, (f, vc) in enumerate(zip(fits, tables, strict=True)):
        order = [all_keys[i].index(key) for key in keys]
        theta[i] = vc["estimate"].to_numpy(dtype=float)[order]
        vcov = getattr(f, "varcomp_cov", None)
        if callable(vcov):
            c = np.asarray(vcov(), dtype=float)
            if c.shape == (n_k, n_k):
                cov[i] = c[np.ix_(order, order)]
    return keys, theta, cov


def _is_dispersion(key: Key) -> bool:
    """A variance function's coefficient: ``("Residual", term, None)``, a log-variance already."""
    return key[0] == "Residual" and key[1] is not None


def _component_rows(keys: list[Key], theta: np.ndarray) -> list[_Row]:
    """Variances on the log scale, covariances and log-variance coefficients on their own."""
    m, n_k = theta.shape
    rows = []
    for j, key in enumerate(keys):
        grad = np.zeros((m, n_k))
        if key[2] is None and not _is_dispersion(key):  # a variance
            with np.errstate(divide="ignore", invalid="ignore"):
                z = np.log(theta[:, j])
                grad[:, j] = 1.0 / theta[:, j]
            rows.append(_Row(key, "rubin_log", theta[:, j], z, grad))
        else:  # a covariance or a log-variance coefficient
            grad[:, j] = 1.0
            rows.append(_Row(key, "rubin_identity", theta[:, j], theta[:, j].copy(), grad))
    return rows


def _icc_rows(keys: list[Key], theta: np.ndarray, fits: tuple[Any, ...]) -> list[_Row]:
    """ICC (variance partition coefficient) rows on the logit scale."""
    m, n_k = theta.shape
    intercepts = {
        key[0]: j
        for j, key in enumerate(keys)
        if key[0] != "Residual" and key[1] in _INTERCEPT and key[2] is None
    }
    resid = [j for j, key in enumerate(keys) if key[0] == "Residual" and not _is_dispersion(key)]
    rows = []
    if resid:
        # tau_g / (sum of intercept variances + sigma^2), the VPC at covariates 0;
        # for a single grouping factor mitml's ICC. logit = log tau_g - log(rest)
        for g, j in intercepts.items():
            rest = [c for c in [*intercepts.values(), *resid] if c != j]
            s_rest = theta[:, rest].sum(axis=1)
            grad = np.zeros((m, n_k))
            with np.errstate(divide="ignore", invalid="ignore"):
                z = np.log(theta[:, j]) - np.log(s_rest)
                grad[:, j] = 1.0 / theta[:, j]
                grad[:, rest] = -1.0 / s_rest[:, None]
            icc = theta[:, j] / (theta[:, j] + s_rest)
            rows.append(_Row((g, "ICC", None), "rubin_logit", icc, z, grad))
    elif len(intercepts) == 1:
        # no residual variance (e.g. a binomial GLMM): the latent-scale ICC the fit reports,
        # whose fixed level-1 variance c (pi^2/3 for logit) makes logit(icc) = log tau - log c
        g, j = next(iter(intercepts.items()))
        icc = np.array([_icc_of(f) for f in fits], dtype=float)
        if np.isfinite(icc).all() and ((icc > 0) & (icc < 1)).all():
            grad = np.zeros((m, n_k))
            grad[:, j] = 1.0 / theta[:, j]
            rows.append(_Row((g, "ICC", None), "rubin_logit", icc, np.log(icc / (1 - icc)), grad))
    return rows


def _icc_of(fit: Any) -> float:
    icc = getattr(fit, "icc", None)
    return np.nan if icc is None else float(icc)
