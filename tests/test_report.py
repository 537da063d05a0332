"""report.html: self-contained, the analyst's tables and plots, warnings highlighted."""

from __future__ import annotations

import base64
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mlimpute as mi
from mlimpute.io import read_parquet
from mlimpute.report import (PooledTable, flag_diagnostics, main_parameters, observed_vs_imputed,
                             render_report)

EXAM = Path(__file__).resolve().parents[1] / "examples" / "exam_scores.parquet"


@pytest.fixture(scope="module")
def run():
    """ExamScores with holes made in ``sex`` too, so a categorical variable is imputed."""
    df = read_parquet(EXAM)
    rng = np.random.default_rng(5)
    df.loc[rng.random(len(df)) < 0.1, "sex"] = None
    model = mi.ImputationModel(cluster="school",
                               variables={"normexam": "continuous", "sex": "binary",
                                          "avslrt": mi.Variable("continuous", level=2)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mi.ConvergenceWarning)  # a short run: plumbing only
        res = mi.impute(df, model, n_imputations=4, burn=30, between=5, chains=2, seed=11)
    return df, model, res


def test_observed_vs_imputed_counts_and_levels(run):
    df, model, res = run
    got = {v.name: v for v in observed_vs_imputed(df, res.data, model)}
    assert set(got) == {"normexam", "sex", "avslrt"}
    n_missing = int(df["normexam"].isna().sum())
    assert len(got["normexam"].imputed) == 4 * n_missing
    assert len(got["normexam"].observed) == len(df) - n_missing
    # level 2: one value per cluster, observed and imputed clusters partition the schools
    cl = df.groupby("school")["avslrt"].apply(lambda s: s.isna().all())
    assert len(got["avslrt"].observed) == int((~cl).sum())
    assert len(got["avslrt"].imputed) == 4 * int(cl.sum())
    assert set(got["sex"].imputed["value"]) <= {"boy", "girl"}


def test_main_parameters_keeps_flagged_intercepts_and_variances():
    names = [f"beta1[y{i}:Intercept]" for i in range(5)] + [f"beta1[y{i}:x]" for i in range(5)]
    names += [f"omega1[y{i},y{j}]" for i in range(5) for j in range(i + 1)]
    assert len(names) > 16
    chosen = main_parameters(names, flagged=["beta1[y3:x]"])
    assert len(chosen) == 1 + 5 + 5  # flagged, intercepts, variances
    assert "beta1[y3:x]" in chosen and "beta1[y0:Intercept]" in chosen
    assert "omega1[y1,y1]" in chosen and "omega1[y1,y0]" not in chosen
    assert chosen == [p for p in names if p in chosen]  # the sampler's order
    assert main_parameters(names[:5]) == names[:5]


def test_report_is_self_contained_with_tables_plots_and_highlights(run):
    df, model, res = run
    diag = res.diagnostics().assign(rhat=1.0, ess_bulk=500.0, ess_tail=500.0)
    diag.loc[[0, 3], "rhat"] = 1.5  # two parameters past the limits, whatever the run's mixing
    flags = flag_diagnostics(diag)
    assert flags.sum() == 2
    pooled = mi.analyse(res, "normexam ~ avslrt + (1 | school)")
    html = render_report(
        title="test <run>", run={"input": "x.parquet", "seed": 11},
        pooled=[PooledTable("exam", pooled.formula, "gaussian", pooled.m, pooled.tidy(),
                            pooled.varcomp(), ("PoolingWarning: something",))],
        diagnostics=diag, traces=res.traces, parameter_names=res.parameter_names, burn=res.burn,
        imputed=observed_vs_imputed(df, res.data, model),
        warnings=["ConvergenceWarning: short", "exam: PoolingWarning: something"])
    assert "test &lt;run&gt;" in html  # escaped
    assert not re.search(r"(src|href)=\"(http|//)", html)  # nothing fetched from elsewhere
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 2  # traces; observed vs imputed
    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for b in images)
    assert html.count('<tr class="warn">') == int(flags.sum())
    for term in pooled.tidy()["term"]:
        assert f">{term}<" in html
    for col in ("conf_low", "conf_high", "fmi", "riv"):
        assert f">{col}<" in html
    assert html.count("ConvergenceWarning: short") == 1
    assert html.count("PoolingWarning: something") == 1  # at the top, not again in its section
    assert "ICC" in html  # the pooled variance components


def test_flag_diagnostics_limits():
    diag = pd.DataFrame({"parameter": ["a", "b", "c", "d"], "rhat": [1.0, 1.06, 1.0, np.nan],
                         "ess_bulk": [500, 500, 99, 500], "ess_tail": [500, 500, 500, 500]})
    assert flag_diagnostics(diag).tolist() == [False, True, True, True]  # NaN: not assessable
