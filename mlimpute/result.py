"""The result of :func:`mlimpute.impute`: M completed datasets and the record of their draws."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .spec import ImputationModel

__all__ = ["ImputationResult"]


@dataclass(frozen=True, eq=False, repr=False)
class ImputationResult:
    """M completed datasets and the record of how they were drawn.

    Attributes
    ----------
    data : DataFrame
        Long table: the input's columns (in their input dtypes) and
        ``imputation`` = 1..M, each imputation's rows in the input's row order.
    model : ImputationModel
    n_imputations, burn, between, chains : int
    seed_entropy : int or tuple
        Root entropy of the run: ``impute(..., seed=seed_entropy)`` reproduces it.
    parameter_names : list of str
    traces : list of (draws, parameters) arrays, one per chain (every post-burn-in sweep)
    chain_seconds : list of float
    """

    data: pd.DataFrame
    model: ImputationModel
    n_imputations: int
    burn: int
    between: int
    chains: int
    seed_entropy: object
    parameter_names: list[str]
    traces: list[np.ndarray]
    chain_seconds: list[float]
    index: pd.Index = field(repr=False)
    _diagnostics: pd.DataFrame = field(repr=False)

    def completed(self, k: int) -> pd.DataFrame:
        """The k-th completed dataset (1-based): the input's columns, rows and index."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"completed(k) takes the imputation's number, an integer 1..{self.n_imputations}; "
                            f"got {k!r}")
        if not 1 <= k <= self.n_imputations:
            raise IndexError(f"imputation {k} out of range 1..{self.n_imputations}")
        n = len(self.index)
        out = self.data.iloc[(k - 1) * n: k * n].drop(columns="imputation")
        out.index = self.index
        return out

    def diagnostics(self) -> pd.DataFrame:
        """Rank-normalised split R-hat and bulk/tail ESS of every monitored parameter."""
        return self._diagnostics.copy()

    def draws(self) -> np.ndarray:
        """Post-burn-in parameter draws, (chains, draws, parameters), chains cut to equal length."""
        n = min(t.shape[0] for t in self.traces)
        return np.stack([t[:n] for t in self.traces])

    def trace(self) -> pd.DataFrame:
        """Long table of the post-burn-in draws: chain, iteration, parameter, value."""
        frames = []
        for c, t in enumerate(self.traces):
            it = np.arange(self.burn + 1, self.burn + t.shape[0] + 1)
            frames.append(pd.DataFrame({
                "chain": c + 1,
                "iteration": np.repeat(it, t.shape[1]),
                "parameter": np.tile(self.parameter_names, t.shape[0]),
                "value": t.ravel(),
            }))
        return pd.concat(frames, ignore_index=True)

    def summary(self) -> pd.DataFrame:
        """Posterior mean, SD and 2.5/97.5% quantiles of the monitored parameters, all chains."""
        d = self.draws().reshape(-1, len(self.parameter_names))
        return pd.DataFrame({
            "parameter": self.parameter_names,
            "mean": d.mean(axis=0), "sd": d.std(axis=0, ddof=1),
            "q2.5": np.quantile(d, 0.025, axis=0), "q97.5": np.quantile(d, 0.975, axis=0),
        })

    def __repr__(self) -> str:
        model = self.model
        imputed = [*model.variables, *([model.outcome] if model.substantive is not None else [])]
        return (f"ImputationResult(n_imputations={self.n_imputations}, chains={self.chains}, "
                f"burn={self.burn}, between={self.between}, rows={len(self.index)}, "
                f"variables={imputed}, parameters={len(self.parameter_names)})")
