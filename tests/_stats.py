"""Summaries of imputed datasets used to compare our imputations with jomo's, and of
posterior draws used to compare two samplers."""

from __future__ import annotations

import numpy as np
import pandas as pd


def imputation_summaries(long: pd.DataFrame, cluster: str, imp: str, variables: list[str]) -> pd.DataFrame:
    """Per imputation and variable: mean, SD, pooled within-cluster variance, variance of the
    cluster means. Returns the mean over imputations and its Monte Carlo SE (SD/sqrt(M)),
    one row per (variable, statistic)."""
    rows = []
    for v in variables:
        per = []
        for _, g in long.groupby(imp, sort=True):
            cm = g.groupby(cluster)[v].mean()
            within = float(((g[v] - g[cluster].map(cm)) ** 2).sum() / (len(g) - cm.size))
            per.append((g[v].mean(), g[v].std(), within, cm.var()))
        a = np.asarray(per)
        for k, stat in enumerate(["mean", "sd", "within_var", "between_var"]):
            rows.append((v, stat, a[:, k].mean(), a[:, k].std(ddof=1) / np.sqrt(len(a)), len(a)))
    return pd.DataFrame(rows, columns=["variable", "statistic", "value", "mcse", "m"])


def assert_same_means(runs: dict) -> None:
    """Each monitored parameter's mean in runs[True] (chains × draws × parameters) equals its
    mean in runs[False] within 4.5 Monte Carlo SEs (each run's SE from its bulk ESS)."""
    from mlimpute.diagnostics import ess_bulk

    m1, m0 = runs[True].mean((0, 1)), runs[False].mean((0, 1))
    se2 = [r.reshape(-1, r.shape[2]).var(0, ddof=1) / np.array([ess_bulk(r[:, :, k]) for k in range(r.shape[2])])
           for r in runs.values()]
    z = (m1 - m0) / np.sqrt(se2[0] + se2[1])
    assert np.max(np.abs(z)) < 4.5, z
