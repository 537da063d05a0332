"""Our imputations of ExamScores against jomo's, summary by summary, within Monte Carlo error.

Reference: tests/fixtures/jomo (jomo 2.7-4, same model: normexam and standlrt at level 1,
avslrt at level 2, sex as covariate, random intercept by school). For each imputed variable we
compare the mean over imputations of its mean, SD, within-cluster variance and variance of
cluster means. Monte Carlo error: each side's SD of the statistic over imputations / sqrt(M)
(imputations 100+ sweeps apart are close to independent draws); tolerance 4 combined SEs, so
a correct sampler fails a given comparison with probability ~6e-5, while a wrong variance or
a lost level-1/level-2 correlation moves these summaries by many SEs.
"""

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _stats import imputation_summaries

import mlimpute as mi

FIX = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def ours():
    df = pd.read_csv(FIX / "data" / "ExamScores.csv")
    model = mi.ImputationModel(
        cluster="school",
        variables={"normexam": "continuous", "standlrt": "continuous",
                   "avslrt": mi.Variable("continuous", level=2)},
        covariates=["sex"],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mi.ConvergenceWarning)
        res = mi.impute(df, model, n_imputations=20, burn=500, between=100, chains=4, seed=2024)
    return imputation_summaries(res.data, "school", "imputation", ["normexam", "standlrt", "avslrt"])


REF = pd.read_csv(FIX / "jomo" / "exam_summary.csv")


@pytest.mark.parametrize("row", [r for r in REF.itertuples() if r.statistic != "within_var" or r.variable != "avslrt"],
                         ids=lambda r: f"{r.variable}-{r.statistic}")
def test_summary_matches_jomo(ours, row):
    mine = ours.set_index(["variable", "statistic"]).loc[(row.variable, row.statistic)]
    se = np.hypot(mine.mcse, row.mcse)
    assert abs(mine.value - row.value) < 4 * se, (mine.value, row.value, se)


def test_level2_variable_has_no_within_cluster_variance(ours):
    within = ours.set_index(["variable", "statistic"]).loc[("avslrt", "within_var"), "value"]
    assert within < 1e-20
