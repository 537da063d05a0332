"""Pooled variance components and intraclass correlations, with intervals.

mitml's ``testEstimates(extra.pars=TRUE)`` only averages variance components. Here each
component is pooled by Rubin's rules on a scale where its sampling distribution is close to
normal, using each fit's asymptotic covariance of the variance-component estimates
(``fit.varcomp_cov()``) through the delta method, and the interval is transformed back:

* variances (random-effect and residual): ``log``;
* covariances: identity (unbounded, symmetric around 0);
* ICC / variance partition coefficient of each grouping factor: ``logit``.

See :func:`mlimpute.pool` for the formulas and references.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

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


def pool_varcomp(fits: tuple[Any, ...]) -> VarcompPooled | None:
    """Pool ``fit.varcomp()`` over the fits; ``None`` if the fits carry no variance components."""
    if not all(callable(getattr(f, "varcomp", None)) for f in fits):
        return None
    tables = [f.varcomp() for f in fits]
    if any(vc is None or len(vc) == 0 for vc in tables):  # e.g. a model without random terms
        return None
    keys = _keys(tables[0], 1)
    for k, vc in enumerate(tables[1:], 2):
        other = _keys(vc, k)
        if set(other) != set(keys):
            diff = sorted(set(keys) ^ set(other), key=str)
            raise DataError(
                f"variance components differ between imputation 1 and {k}: {diff}; every "
                "analysis must use the same random-effects structure"
            )
    m = len(fits)
    theta = np.empty((m, len(keys)))
    cov = np.full((m, len(keys), len(keys)), np.nan)
    for i, (f, vc) in enumerate(zip(fits, tables, strict=True)):
        order = [_keys(vc, i + 1).index(key) for key in keys]
        theta[i] = vc["estimate"].to_numpy(dtype=float)[order]
        vcov = getattr(f, "varcomp_cov", None)
        if callable(vcov):
            c = np.asarray(vcov(), dtype=float)
            if c.shape == (len(keys), len(keys)):
                cov[i] = c[np.ix_(order, order)]
    rows, grads = _rows(keys, theta, fits)
    out_keys, methods, q_bar, t, df, riv, fmi, mean = [], [], [], [], [], [], [], []
    boundary = []
    for key, meth, (z, grad) in zip(keys + [r[0] for r in rows], _methods(keys, rows), grads):
        out_keys.append(key)
        val_raw = _raw_value(key, keys, theta, rows)
        mean.append(val_raw.mean())
        var_z = np.einsum("ik,ikl,il->i", grad, cov, grad)
        ok = np.isfinite(z).all() and np.isfinite(var_z).all() and (var_z > 0).all()
        if meth == "rubin_log" and (val_raw <= 0).any():
            ok = False
        if not ok:
            boundary.append(key)
            methods.append("mean_only")
            q_bar.append(val_raw.mean())
            t.append(np.nan)
            df.append(np.nan)
            riv.append(np.nan)
            fmi.append(np.nan)
            continue
        pooled = rubin(z[:, None], var_z[:, None], np.inf)
        methods.append(meth)
        q_bar.append(pooled.q_bar[0])
        t.append(pooled.t[0])
        df.append(pooled.df[0])
        riv.append(pooled.riv[0])
        fmi.append(pooled.fmi[0])
    if boundary:
        warnings.warn(
            f"variance component(s) {boundary} are on the boundary (zero variance), or their "
            "asymptotic variance is not available, in at least one imputation; they are "
            "averaged without an interval (method 'mean_only')",
            PoolingWarning,
            stacklevel=3,
        )
    return VarcompPooled(
        tuple(out_keys),
        tuple(methods),
        np.asarray(q_bar),
        np.asarray(t),
        np.asarray(df),
        np.asarray(riv),
        np.asarray(fmi),
        np.asarray(mean),
    )


def _rows(
    keys: list[Key], theta: np.ndarray, fits: tuple[Any, ...]
) -> tuple[list[tuple[Key, np.ndarray]], list[tuple[np.ndarray, np.ndarray]]]:
    """ICC rows and the (transformed value, gradient) of every output row, per imputation.

    Returns ``rows`` = [(key, icc values (m,))] and, for every component then every ICC row,
    ``(z (m,), grad (m, K))`` with ``grad`` the derivative of ``z`` in the components.
    """
    m, n_k = theta.shape
    grads: list[tuple[np.ndarray, np.ndarray]] = []
    for j, key in enumerate(keys):
        grad = np.zeros((m, n_k))
        if key[2] is None:  # a variance: log scale
            with np.errstate(divide="ignore", invalid="ignore"):
                z = np.log(theta[:, j])
                grad[:, j] = 1.0 / theta[:, j]
        else:  # a covariance: identity
            z = theta[:, j].copy()
            grad[:, j] = 1.0
        grads.append((z, grad))
    rows: list[tuple[Key, np.ndarray]] = []
    intercepts = {
        key[0]: j
        for j, key in enumerate(keys)
        if key[0] != "Residual" and key[1] in _INTERCEPT and key[2] is None
    }
    resid = [j for j, key in enumerate(keys) if key[0] == "Residual"]
    if resid:
        # variance partition coefficient of each grouping factor at covariates 0:
        # tau_g / (sum of intercept variances + sigma^2); for one grouping factor, mitml's ICC
        others_all = list(intercepts.values()) + resid
        for g, j in intercepts.items():
            rest = [c for c in others_all if c != j]
            s_rest = theta[:, rest].sum(axis=1)
            icc = theta[:, j] / (theta[:, j] + s_rest)
            grad = np.zeros((m, n_k))
            with np.errstate(divide="ignore", invalid="ignore"):
                z = np.log(theta[:, j]) - np.log(s_rest)  # logit(icc)
                grad[:, j] = 1.0 / theta[:, j]
                for c in rest:
                    grad[:, c] = -1.0 / s_rest
            rows.append(((g, "ICC", None), icc))
            grads.append((z, grad))
    elif len(intercepts) == 1:
        # no residual variance (e.g. a binomial GLMM): latent-scale ICC from the fit's own icc,
        # whose fixed level-1 variance c (pi^2/3 for logit) is recovered as tau (1 - icc) / icc
        g, j = next(iter(intercepts.items()))
        icc = np.array([_icc_of(f) for f in fits], dtype=float)
        if np.isfinite(icc).all() and ((icc > 0) & (icc < 1)).all():
            grad = np.zeros((m, n_k))
            grad[:, j] = 1.0 / theta[:, j]
            z = np.log(icc / (1.0 - icc))
            rows.append(((g, "ICC", None), icc))
            grads.append((z, grad))
    return rows, grads


def _methods(keys: list[Key], rows: list[tuple[Key, np.ndarray]]) -> list[str]:
    meth = ["rubin_log" if k[2] is None else "rubin_identity" for k in keys]
    return meth + ["rubin_logit"] * len(rows)


def _raw_value(
    key: Key, keys: list[Key], theta: np.ndarray, rows: list[tuple[Key, np.ndarray]]
) -> np.ndarray:
    if key in keys:
        return theta[:, keys.index(key)]
    return dict(rows)[key]


def _icc_of(fit: Any) -> float:
    icc = getattr(fit, "icc", None)
    return np.nan if icc is None else float(icc)
