"""Stand-ins for the analysis module's fit results, shared by the pooling tests (a helper).

``StubFit`` holds given numbers behind the analysis contract (params, cov_params(), df_resid,
varcomp(), varcomp_cov(), icc, loglik, covariance_parameters(), loglik_at(), refit()).
``OlsFit`` is a real ordinary least-squares fit with an exact normal log-likelihood, so that
the likelihood-based tests (D2 with LR statistics, D3) run end to end against mitml's ``lm``
results without a mixed-model fitter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from formulaic import model_matrix


@dataclass
class StubFit:
    params: pd.Series
    cov: pd.DataFrame
    df_resid: float | None = None
    vc: pd.DataFrame | None = None
    vc_cov: np.ndarray | None = None
    icc: float | None = None
    loglik: float = np.nan
    loglik_pooled: float = np.nan  # what loglik_at() returns (tabulated D3 ingredients)
    cov_pars: dict[str, Any] | None = None
    reml: bool = False
    ml_version: StubFit | None = None  # what refit(reml=False) returns
    formula: str = "y ~ x"
    family: str = "gaussian"
    calls: list[Any] = field(default_factory=list)

    def cov_params(self) -> pd.DataFrame:
        return self.cov

    def varcomp(self) -> pd.DataFrame:
        return self.vc

    def varcomp_cov(self) -> pd.DataFrame:
        return pd.DataFrame(self.vc_cov)

    def covariance_parameters(self) -> dict[str, Any]:
        return self.cov_pars

    def loglik_at(self, beta: np.ndarray, tau: list[np.ndarray], sigma2: float | None) -> float:
        self.calls.append((np.asarray(beta), [np.asarray(t) for t in tau], sigma2))
        return self.loglik_pooled

    def refit(self, reml: bool = False) -> StubFit:
        assert reml is False
        self.calls.append("refit")
        return self.ml_version


def stub(estimates: dict[str, float], variances: dict[str, float] | np.ndarray, **kw: Any) -> StubFit:
    """A StubFit from estimates and variances (dict: diagonal) or a full covariance matrix."""
    params = pd.Series(estimates, dtype=float)
    if isinstance(variances, dict):
        cov = np.diag([variances[t] for t in params.index])
    else:
        cov = np.asarray(variances, dtype=float)
    return StubFit(params, pd.DataFrame(cov, index=params.index, columns=params.index), **kw)


def varcomp_table(rows: list[tuple[str, str | None, str | None, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["group", "term1", "term2", "estimate"])


class OlsFit:
    """Ordinary least squares with the analysis contract's likelihood methods (no random terms)."""

    def __init__(self, formula: str, data: pd.DataFrame) -> None:
        y, x = model_matrix(formula, data)
        self.formula, self.family, self.reml = formula, "gaussian", False
        self._y = y.to_numpy(dtype=float).ravel()
        self._x = x.to_numpy(dtype=float)
        n, p = self._x.shape
        beta, *_ = np.linalg.lstsq(self._x, self._y, rcond=None)
        rss = float(np.sum((self._y - self._x @ beta) ** 2))
        self.params = pd.Series(beta, index=list(x.columns))
        self.nobs, self.df_resid = n, n - p
        xtx_inv = np.linalg.inv(self._x.T @ self._x)
        self._cov = pd.DataFrame(rss / (n - p) * xtx_inv, index=x.columns, columns=x.columns)
        self._sigma2_ml = rss / n
        self.loglik = self.loglik_at(beta, [], self._sigma2_ml)

    def cov_params(self) -> pd.DataFrame:
        return self._cov

    def covariance_parameters(self) -> dict[str, Any]:
        return {"beta": self.params.to_numpy(), "tau": [], "sigma2": self._sigma2_ml}

    def loglik_at(self, beta: np.ndarray, tau: list[np.ndarray], sigma2: float | None) -> float:
        resid = self._y - self._x @ np.asarray(beta)
        n = self._y.size
        return float(-0.5 * n * np.log(2 * np.pi * sigma2) - 0.5 * resid @ resid / sigma2)

    def refit(self, reml: bool = False) -> OlsFit:
        return self
