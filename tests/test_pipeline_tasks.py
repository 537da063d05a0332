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


def test_a_damaged_cache_file_is_deleted_and_its_job_redone(tmp_path):
    """A truncated chain file (a copy of the output folder cut short) made every later run fail
    with "File is not a zip file", naming no file (helper 37); the flow now asks
    ``store.cache_entry`` and a damaged file is deleted, so that its job runs again."""
    from mlimpute.impute import ChainResult
    from mlimpute.pipeline import store

    chain = ChainResult(chain=0, imputed={"y": np.zeros((2, 3))}, trace=np.ones((4, 2)), seconds=1.0)
    path = store.save_chain(tmp_path / "chain-1-abc.npz", chain)
    assert store.cache_entry(path) == "usable"
    path.write_bytes(path.read_bytes()[:-40])
    assert store.cache_entry(path) == "damaged" and not path.exists()
    assert store.cache_entry(path) == "absent"
    fit = store.save_pickle(tmp_path / "fit-abc.pkl", {"fit": 1})
    assert store.cache_entry(fit) == "usable"
    fit.write_bytes(fit.read_bytes()[:5])
    assert store.cache_entry(fit) == "damaged" and not fit.exists()
