"""The pipeline's fit tasks where a fit fails numerically (helper 32: a nearly separated
complete-case GLMM's numpy LinAlgError failed a run whose imputations and fits had all
succeeded, with a message that named no analysis)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mlimpute as mi
from mlimpute.config import AnalysisConfig
from mlimpute.pipeline import tasks


@pytest.fixture()
def failing_fit(monkeypatch):
    def fail(a, data):
        raise np.linalg.LinAlgError("Matrix is not positive definite")
    monkeypatch.setattr(tasks, "_fit", fail)


def _data():
    rng = np.random.default_rng(3)
    return pd.DataFrame({"g": np.repeat(np.arange(10), 5), "x": rng.normal(size=50), "y": rng.normal(size=50)})


def test_complete_case_comparison_that_fails_numerically_is_left_out(failing_fit):
    table, n = tasks.complete_case(AnalysisConfig(name="cmp", formula="y ~ x + (1 | g)"), _data())
    assert table is None and n == 50


def test_fit_that_fails_numerically_names_the_analysis_and_imputation(failing_fit, tmp_path):
    path = tmp_path / "imp.parquet"
    _data().assign(imputation=3).to_parquet(path)
    job = {"data_path": str(path), "imputation": 3, "out": str(tmp_path / "fit.pkl")}
    with pytest.raises(mi.ConvergenceError, match=r"\[\[analysis\]\] 'logit' on imputation 3: the fit failed "
                                                  r"numerically \(LinAlgError: Matrix is not positive definite\)"):
        tasks.fit_imputation.fn(AnalysisConfig(name="logit", formula="y ~ x + (1 | g)"), job)
    assert not (tmp_path / "fit.pkl").exists()
