"""The pipeline's analysis checks know that mm() ids and weights are missing by design."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import mlimpute as mi
from mlimpute.config import AnalysisConfig
from mlimpute.pipeline import checks, tasks

FORMULA = "y ~ x + (1 | mm(school1, school2, school3, weights = (w1, w2, w3)))"
MM_COLUMNS = {"school1", "school2", "school3", "w1", "w2", "w3"}


@pytest.fixture()
def df():  # 400 pupils in 1-3 schools, absent ids empty (tests/fixtures/lme4/PROVENANCE.md)
    return pd.read_csv(Path(__file__).parent / "fixtures" / "lme4" / "data" / "membership.csv")


def test_columns_of_a_membership_analysis(df):
    a = AnalysisConfig(name="mm", formula=FORMULA)
    assert checks.analysis_columns(a) == {"y", "x"} | MM_COLUMNS
    assert checks.membership_columns(a) == MM_COLUMNS
    checks._check_analysis(a, df, imputed=set())  # the gaps in school2, w2, ... are not missing data
    with pytest.raises(mi.DataError, match="column 'x' has 1 missing values but is not imputed"):
        checks._check_analysis(a, df.assign(x=df["x"].where(df.index != 3)), imputed=set())
    with pytest.raises(mi.DataError, match="column 'w2' of formula .* is not in the data"):
        checks._check_analysis(a, df.drop(columns="w2"), imputed=set())


def test_complete_case_fit_keeps_units_with_fewer_memberships(df):
    table, n = tasks.complete_case(AnalysisConfig(name="mm", formula=FORMULA), df)
    assert n == len(df) and table is not None
