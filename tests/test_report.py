"""report.html: self-contained, the analyst's tables and plots, warnings highlighted."""

from __future__ import annotations

import base64
import re
import struct
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mlimpute as mi
from mlimpute.io import read_parquet
from mlimpute.report import (PooledTable, flag_diagnostics, main_parameters, missing_patterns,
                             observed_vs_imputed, render_report)
from mlimpute.report._html import fmt

from _chromium import chromium, screenshot, scroll_width

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


def complete_case(df, formula):
    """What the pipeline draws beside the pooled estimates: the model on the complete rows."""
    fit = mi.lmm(formula, df.dropna(subset=["normexam", "avslrt", "school"]))
    t = fit.tidy()
    return t.assign(conf_low=t.estimate - 1.96 * t.std_error,
                    conf_high=t.estimate + 1.96 * t.std_error), fit.nobs


def render(run, **kw):
    df, model, res = run
    diag = res.diagnostics().assign(rhat=1.0, ess_bulk=500.0, ess_tail=500.0)
    diag.loc[[0, 3], "rhat"] = 1.5  # two parameters past the limits, whatever the run's mixing
    pooled = mi.analyse(res, "normexam ~ avslrt + (1 | school)")
    cc, rows = complete_case(df, pooled.formula)
    html = render_report(
        title="test <run>", run={"input": "x.parquet", "seed": 11},
        pooled=[PooledTable("exam", pooled.formula, "gaussian", pooled.m, pooled.tidy(),
                            pooled.varcomp(), ("PoolingWarning: something",), cc, rows)],
        diagnostics=diag, traces=res.traces, parameter_names=res.parameter_names, burn=res.burn,
        imputed=observed_vs_imputed(df, res.data, model),
        warnings=["ConvergenceWarning: short", "exam: PoolingWarning: something"],
        patterns=missing_patterns(df), **kw)
    return html, diag, pooled


def test_report_is_self_contained_with_tables_plots_and_highlights(run):
    html, diag, pooled = render(run)
    flags = flag_diagnostics(diag)
    assert flags.sum() == 2
    assert "test &lt;run&gt;" in html  # escaped
    assert not re.search(r"(src|href)=\"(http|//)", html)  # nothing fetched from elsewhere
    images = dict(re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html))
    assert set(images) == {"forest plot of exam", "missing-data patterns",
                           "observed and imputed values", "trace plots"}
    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for b in images.values())
    # the results come first, the run's record last
    assert html.index("forest plot") < html.index("missing-data patterns") < html.index(
        "trace plots") < html.index("<h2>The run</h2>")
    # flagged rows: in the short table of problems and again in the full one, and the parts of
    # the model they belong to in the table by part
    from mlimpute.report._data import parameter_group

    groups = {parameter_group(p) for p in diag["parameter"][flags]}
    assert html.count('<tr class="warn">') == 2 * int(flags.sum()) + len(groups)
    for term in pooled.tidy()["term"]:
        assert f">{term}<" in html
    for col in ("95% low", "95% high", "FMI", "RIV", "mean of m"):
        assert f">{col}<" in html
    assert html.count("ConvergenceWarning: short") == 1
    assert html.count("PoolingWarning: something") == 1  # at the top, not again in its section
    assert "ICC" in html and "intraclass correlation" in html and "Barnard–Rubin" in html
    assert "complete cases" in html
    assert 'name="viewport"' in html and "overflow-x:auto" in html


@pytest.mark.skipif(chromium() is None, reason="headless Chromium is not installed (Debian: "
                    "apt-get install chromium); the report's layout is checked in a browser only "
                    "where one is")
def test_report_fits_a_700_px_window_in_chromium(run, tmp_path):
    html, _, _ = render(run)
    page = tmp_path / "report.html"
    page.write_text(html, encoding="utf-8")
    for width in (700, 1280):  # no horizontal scroll: tables scroll in their box, images shrink
        assert scroll_width(page, width) <= width
    png = screenshot(page, tmp_path / "r.png", 700, 1600)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png.read_bytes()[16:24]) == (700, 1600)


def test_numbers_to_sensible_digits():
    assert [fmt(x, "estimate") for x in (0.11094, -12.3456, 1234.5, 0.5, -0.000399, 2e-5)] == \
        ["0.111", "-12.3", "1,234", "0.500", "-0.000399", "2.00e-05"]
    assert [fmt(x, "p_value") for x in (0.0001, 0.01234, 0.5)] == ["&lt;0.001", "0.012", "0.5"]  # escaped: a literal < in a cell is invalid HTML
    assert [fmt(x, "df") for x in (4046.2, 7.25, float("inf"))] == ["4,046", "7.2", "∞"]
    assert [fmt(0.34567, c) for c in ("fmi", "riv", "rhat")] == ["0.35", "0.35", "0.346"]
    assert fmt(float("nan")) == "" and fmt(123.6, "ess_bulk") == "124"


def test_missing_patterns_as_md_pattern():
    df = pd.DataFrame({"a": [1, None, 3, None, 5, 6], "b": [1, 2, None, None, 5, 6],
                       "c": [1, 2, 3, 4, 5, 6], "d": [None, 2, 3, 4, 5, None]})
    pat = missing_patterns(df)
    assert list(pat.columns) == ["c", "a", "b", "d", "rows"]  # fewest missing first
    assert pat["rows"].tolist() == [2, 1, 1, 1, 1]  # most frequent first
    assert pat.iloc[0][["c", "a", "b", "d"]].tolist() == [True, True, True, False]  # rows 0, 5
    assert int(pat["rows"].sum()) == len(df)
    rare = missing_patterns(df, max_patterns=3)
    assert rare["rows"].tolist() == [2, 1, 3] and rare.iloc[-1][["a", "b"]].isna().all()


def test_flag_diagnostics_limits():
    diag = pd.DataFrame({"parameter": ["a", "b", "c", "d"], "rhat": [1.0, 1.06, 1.0, np.nan],
                         "ess_bulk": [500, 500, 99, 500], "ess_tail": [500, 500, 500, 500]})
    assert flag_diagnostics(diag).tolist() == [False, True, True, True]  # NaN: not assessable


def test_report_says_which_imputation_model_ran_and_plots_the_imputed_outcome():
    from mlimpute.report import describe_model

    df = read_parquet(EXAM)
    smc = mi.ImputationModel(cluster="school", variables={"standlrt": "continuous"}, covariates=["sex"],
                             substantive="normexam ~ standlrt + sex + (1 + standlrt | school)")
    text = describe_model(smc)
    assert "substantive-model compatible" in text and "<code>normexam</code>" in text
    assert "<code>standlrt</code> given <code>sex</code>" in text
    joint = mi.ImputationModel(cluster="school", variables={"normexam": "continuous"})
    assert "not compatible" in describe_model(joint) and "substantive" in describe_model(joint)
    hetero = mi.ImputationModel(cluster="school", covariates=["sex"],
                                variables={"normexam": mi.Variable("continuous", variance="~ sex + (1 | school)")})
    assert ("variance functions" in describe_model(hetero)
            and "<code>normexam</code> <code>~ sex + (1 | school)</code>" in describe_model(hetero))
    assert "variance functions" not in describe_model(joint)
    assert "Stated priors" not in describe_model(joint)   # priors the user states are named, on the data's scale
    stated = mi.ImputationModel(cluster="school", covariates=["sex"], priors={"school": mi.CovariancePrior(df=3)},
                                variables={"normexam": mi.Variable("continuous", variance="~ sex")})
    assert "Stated priors (on the data's scale): <code>priors[&#x27;school&#x27;]</code> df 3." in describe_model(stated)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mi.ConvergenceWarning)  # a short run: plumbing only
        res = mi.impute(df, smc, n_imputations=2, burn=20, between=5, chains=1, seed=3)
    shown = {v.name for v in observed_vs_imputed(df, res.data, smc)}
    assert shown == {"standlrt", "normexam"}


def test_diagnostics_by_part_of_the_model():
    from mlimpute.report._data import diagnostics_by_group, parameter_group

    names = ["beta1[y:x]", "omega1[y,y]", "omega[school][y,y]", "beta[class][c:Intercept]",
             "omega2[y:Intercept,y:Intercept]", "y~beta[x]", "cut[o:2]"]
    assert [parameter_group(n) for n in names] == ["level 1", "level 1", "school", "class", "cluster",
                                                   "analysis model", "thresholds"]
    diag = pd.DataFrame({"parameter": names, "rhat": [1.0, 1.2, 1.01, 1.0, 1.0, 1.02, 1.0],
                         "ess_bulk": [500, 40, 300, 200, 100, 90, 400], "ess_tail": [600, 60, 250, 150, 80, 95, 300]})
    g = diagnostics_by_group(diag).set_index("group")
    assert g.loc["level 1", "parameters"] == 2 and g.loc["level 1", "max_rhat"] == 1.2
    assert g.loc["level 1", "min_ess_bulk"] == 40 and g.loc["school", "min_ess_tail"] == 250


def test_report_shows_the_variance_function_and_what_its_rows_mean(run):
    df, model, res = run
    pooled = mi.analyse(res, "normexam ~ avslrt + sex + (1 | school)", dispersion="~ sex")
    table = PooledTable("hetero", pooled.formula, "gaussian", pooled.m, pooled.tidy(), pooled.varcomp(),
                        dispersion="~ sex")
    html = render_report(title="t", run={}, pooled=[table], diagnostics=res.diagnostics(), traces=res.traces,
                         parameter_names=res.parameter_names, burn=res.burn, imputed=[])
    assert "residual variance log σ²<sub>i</sub> = log σ² + w<sub>i</sub>′γ, w from <code>~ sex</code>" in html
    assert ">sex[T.girl]<" in html and ">rubin_identity<" in html
    assert "exp(γ) is the ratio of residual variances" in html
    plain = PooledTable("plain", pooled.formula, "gaussian", pooled.m, pooled.tidy(), pooled.varcomp())
    html = render_report(title="t", run={}, pooled=[plain], diagnostics=res.diagnostics(), traces=res.traces,
                         parameter_names=res.parameter_names, burn=res.burn, imputed=[])
    assert "log σ²<sub>i</sub>" not in html
