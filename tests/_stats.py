"""Summaries of imputed datasets used to compare our imputations with jomo's."""

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
