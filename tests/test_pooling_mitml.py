"""mlimpute.pooling against mitml 0.4-4 (R 4.2.2, lme4 1.1-31) on jomo's ExamScores imputations.

Fixtures and their provenance: tests/fixtures/mitml/PROVENANCE.md. Two kinds of test:

* from tables (no model fitting of ours): the pooling formulas alone, to 1e-6 relative;
* through ``mlimpute.analyse`` / ``mlimpute.lmm`` (the analysis module): the whole chain, to 1e-4
  for pooled estimates and 1e-3 for the D1/D2/D3 tests, the slack being the difference between
  two optimisers (lme4's and ours) converging to the same REML/ML optimum.
"""

from __future__ import annotations

import re
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _stubs import OlsFit, StubFit, varcomp_table

import mlimpute as mi
from mlimpute.pooling import PoolingWarning

pytestmark = pytest.mark.filterwarnings("error::mlimpute.pooling.PoolingWarning")

FIX = Path(__file__).parent / "fixtures" / "mitml"
EXAM_FORMULA = "normexam ~ standlrt + sex + avslrt + (1 + standlrt | clus)"
NULL_FORMULA = "normexam ~ standlrt + (1 + standlrt | clus)"
# mitml / lme4 term names -> formulaic's
NAMES = {"(Intercept)": "Intercept", "sexgirl": "sex[T.girl]", "fluent1": "fluent[T.1]",
         "fluent2": "fluent[T.2]"}
# our varcomp rows (group, term1, term2) -> mitml's extra.pars names
VC_NAMES = {("clus", "Intercept", None): "Intercept~~Intercept|clus",
            ("clus", "standlrt", None): "standlrt~~standlrt|clus",
            ("clus", "Intercept", "standlrt"): "Intercept~~standlrt|clus",
            ("Residual", None, None): "Residual~~Residual", ("clus", "ICC", None): "ICC|clus"}
# mitml column -> ours
EST_COLS = {"Estimate": "estimate", "Std.Error": "std_error", "t.value": "statistic",
            "df": "df", "P(>|t|)": "p_value", "RIV": "riv", "FMI": "fmi"}
TEST_COLS = {"F.value": "statistic", "df1": "df1", "df2": "df2", "P(>F)": "p_value", "RIV": "riv"}


def read(name: str) -> pd.DataFrame:
    return pd.read_csv(FIX / name, keep_default_na=False, na_values=[""])  # "null" is a name


@contextmanager
def expect_warnings(*patterns: str):
    """Every pattern must match a PoolingWarning raised inside, and every warning a pattern."""
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        yield
    msgs = [str(w.message) for w in rec if issubclass(w.category, PoolingWarning)]
    for pat in patterns:
        assert any(re.search(pat, msg) for msg in msgs), f"no warning matching {pat!r} in {msgs}"
    for msg in msgs:
        assert any(re.search(pat, msg) for pat in patterns), f"unexpected warning {msg!r}"


def mitml_estimates(name: str) -> pd.DataFrame:
    ref = read(name).rename(columns=EST_COLS)
    ref["term"] = ref["term"].replace(NAMES)
    return ref.set_index("term")


def assert_estimates_equal(
    ours: pd.DataFrame, ref: pd.DataFrame, rtol: float, p_rtol: float | None = None
) -> None:
    ours = ours.set_index("term").loc[ref.index]
    for col in EST_COLS.values():
        # mitml computes p as 1 - pt(), which rounds p < 1e-16 to 0: compare those absolutely
        atol = 1e-14 if col == "p_value" else 0.0
        tol = p_rtol if col == "p_value" and p_rtol is not None else rtol
        np.testing.assert_allclose(ours[col], ref[col], rtol=tol, atol=atol, err_msg=col)


def assert_test_equal(res: mi.ModelTestResult, method: str, ref: pd.DataFrame, rtol: float) -> None:
    row = ref.rename(columns=TEST_COLS).query("method == @method").iloc[0]
    for col in TEST_COLS.values():
        np.testing.assert_allclose(getattr(res, col), row[col], rtol=rtol, err_msg=f"{method} {col}")


def exam_imputations() -> pd.DataFrame:
    return pd.read_csv(FIX / "jomo_exam_imputations.csv.gz")


# ---- from tables: the pooling formulas alone ---------------------------------------------------
def test_pool_per_imputation_table_equals_mitml_testEstimates() -> None:
    per = read("pool_exam_per_imputation.csv")
    per["term"] = per["term"].replace(NAMES)
    res = mi.pool(per, df_com=float("inf"))  # mitml without df.com: Rubin's large-sample df
    assert_estimates_equal(res.tidy(), mitml_estimates("pool_exam_estimates.csv"), rtol=1e-6)


def test_pool_with_df_com_equals_mitml_barnard_rubin() -> None:
    per = read("pool_exam_per_imputation.csv")
    per["term"] = per["term"].replace(NAMES)
    res = mi.pool(per, df_com=50)
    assert_estimates_equal(res.tidy(), mitml_estimates("pool_exam_estimates_dfcom50.csv"), rtol=1e-6)


def ml_pairs() -> tuple[list, list]:
    """lme4's per-imputation ML estimates and covariance matrices: full and null model."""
    long = read("exam_ml_full_cov.csv")
    full, null = [], []
    tested = ["sexgirl", "avslrt"]
    for _, g in long.groupby("imputation"):
        cov = g.pivot(index="row", columns="col", values="cov")
        est = g.drop_duplicates("row").set_index("row")["estimate_row"]
        full.append((est, cov))
        null.append((est.drop(tested), cov.drop(index=tested, columns=tested)))
    return full, null


def test_d1_d2_from_lme4_estimates_equal_mitml_testModels() -> None:
    full, null = ml_pairs()
    ref = read("pool_exam_testmodels.csv")
    # 1e-8: the fixture's fits were refitted from the CSV round trip of the data, which moves
    # D1 and D2 by up to 3.3e-9 relative (measured)
    assert_test_equal(mi.test_models(full, null, method="D1"), "D1", ref, rtol=1e-8)
    with pytest.warns(PoolingWarning, match="D2 with m = 10 < 20"):
        d2 = mi.test_models(full, null, method="D2")
    assert_test_equal(d2, "D2", ref, rtol=1e-8)
    d1r = mi.test_models(full, null, method="D1", df_com=50)
    assert_test_equal(d1r, "D1", read("exam_d1_reiter_dfcom50.csv"), rtol=1e-8)


def test_d3_combination_of_mitml_logliks_equals_mitml_testModels() -> None:
    ll = read("exam_d3_loglik.csv")

    def fits(model: str, n_beta: int) -> list[StubFit]:
        rows = ll[ll["model"] == model]
        pars = {"beta": np.zeros(n_beta), "tau": [np.eye(2)], "sigma2": 1.0}
        out = [StubFit(pd.Series(np.zeros(n_beta)), pd.DataFrame(np.eye(n_beta)), loglik=r.loglik,
                       loglik_pooled=r.loglik_pooled, cov_pars=pars) for r in rows.itertuples()]
        assert all(n == n_beta + 3 + 1 for n in rows["n_par"])  # lme4's logLik df
        return out

    res = mi.test_models(fits("full", 4), fits("null", 2), method="D3")
    assert_test_equal(res, "D3", read("pool_exam_testmodels.csv"), rtol=1e-6)


@pytest.fixture(scope="module")
def lm_fits() -> tuple[list[OlsFit], list[OlsFit]]:
    data = exam_imputations()
    data = data[data["Imputation"] > 0]
    full = [OlsFit("normexam ~ standlrt + sex + avslrt", g) for _, g in data.groupby("Imputation")]
    null = [OlsFit("normexam ~ standlrt", g) for _, g in data.groupby("Imputation")]
    return full, null


def test_regression_pooling_and_all_tests_equal_mitml(lm_fits) -> None:
    """lm fits recomputed here, so D2 with likelihoods and D3 run end to end (exact likelihood)."""
    full, null = lm_fits
    ref = read("exam_lm_testmodels.csv")
    with expect_warnings(r"above 0.5 for standlrt \(0.55\), avslrt \(0.81\)"):
        pooled = mi.pool(full, df_com=float("inf"))
    assert_estimates_equal(pooled.tidy(), mitml_estimates("exam_lm_estimates.csv"), rtol=1e-6)
    with expect_warnings("D1: .* r = 2.04 > 1"):
        d1 = mi.test_models(full, null, "D1")
        d1r = mi.test_models(full, null, "D1", df_com=4055)
    assert_test_equal(d1, "D1", ref[ref.use == "wald"], 1e-6)
    assert_test_equal(d1r, "D1", ref[ref.use == "wald_dfcom"], 1e-6)
    with expect_warnings("D2 with m = 10 < 20", r"D2: .* r = 2.66 > 1", r"D2: .* r = 2.49 > 1"):
        d2w = mi.test_models(full, null, "D2")
        d2l = mi.test_models(full, null, "D2", use="likelihood")
    assert_test_equal(d2w, "D2", ref[ref.use == "wald"], 1e-6)
    assert_test_equal(d2l, "D2", ref[ref.use == "likelihood"], 1e-6)
    with expect_warnings("D3: .* r = 2.21 > 1"):
        d3 = mi.test_models(full, null, "D3")
    assert_test_equal(d3, "D3", ref, 1e-6)
    assert d3.use == "likelihood" and not d3.refit


def test_varcomp_means_equal_mitml_extra_pars() -> None:
    """mitml's extra.pars are plain averages: our ``mean`` column, from lme4's VarCorr."""
    vc = read("exam_reml_varcomp_per_imputation.csv").replace({"(Intercept)": "Intercept"})
    fits = []
    for _, g in vc.groupby("imputation"):
        rows = [(r.group, None if pd.isna(r.var1) else r.var1, None if pd.isna(r.var2) else r.var2,
                 r.vcov) for r in g.itertuples()]
        fits.append(StubFit(pd.Series({"Intercept": 0.0}), pd.DataFrame([[1.0]], ["Intercept"],
                            ["Intercept"]), df_resid=4055, vc=varcomp_table(rows)))
    with pytest.warns(PoolingWarning, match="asymptotic variance is not available"):
        out = mi.pool(fits).varcomp()
    assert (out["method"] == "mean_only").all()
    ref = read("pool_exam_varcomp.csv").set_index("term")["Estimate"]
    for row in out.itertuples():
        # 1e-6: the fixture refitted lme4 on the CSV round trip of the data (~3e-7 relative)
        assert row.mean == pytest.approx(ref[VC_NAMES[(row.group, row.term1, row.term2)]], rel=1e-6)


# ---- through analyse() and the real mlimpute.lmm -----------------------------------------------
# These need mlimpute.analysis (lmm with its tidy()/varcomp()/varcomp_cov() contract). They
# are not skipped when it is missing: they fail, which is the honest state of the chain.
@pytest.fixture(scope="module")
def exam_reml() -> mi.PooledResult:
    return mi.analyse(exam_imputations(), EXAM_FORMULA, reml=True, df_com=float("inf"))


@pytest.fixture(scope="module")
def exam_ml() -> tuple[mi.PooledResult, mi.PooledResult]:
    full = mi.analyse(exam_imputations(), EXAM_FORMULA, reml=False, df_com=float("inf"))
    null = mi.analyse(exam_imputations(), NULL_FORMULA, reml=False, df_com=float("inf"))
    return full, null


def test_analyse_with_lmm_equals_mitml_estimates(exam_reml) -> None:
    assert exam_reml.m == 10  # jomo's Imputation 0 (the original data) is skipped
    # 1e-4: lme4's and our optimiser stop at slightly different points of the same REML optimum.
    # p-values 1e-3: a tail probability amplifies that (d log p / d t is about -3.5 at t = 3)
    assert_estimates_equal(exam_reml.tidy(), mitml_estimates("pool_exam_estimates.csv"),
                           rtol=1e-4, p_rtol=1e-3)


def test_analyse_with_lmm_varcomp_equals_mitml_and_has_intervals(exam_reml) -> None:
    out = exam_reml.varcomp()
    ref = read("pool_exam_varcomp.csv").set_index("term")["Estimate"]
    for row in out.itertuples():
        name = VC_NAMES[(row.group, row.term1, row.term2)]
        # variance components are flatter in the likelihood than fixed effects: 1e-3
        assert row.mean == pytest.approx(ref[name], rel=1e-3), name
        assert row.conf_low < row.estimate < row.conf_high, name
    assert set(out["method"]) == {"rubin_log", "rubin_identity", "rubin_logit"}


def test_models_with_lmm_equal_mitml_testModels(exam_ml) -> None:
    full, null = exam_ml
    ref = read("pool_exam_testmodels.csv")
    assert_test_equal(mi.test_models(full, null, method="D1"), "D1", ref, rtol=1e-3)
    with pytest.warns(PoolingWarning, match="D2 with m = 10 < 20"):
        d2 = mi.test_models(full, null, method="D2")
    assert_test_equal(d2, "D2", ref, rtol=1e-3)
    d3 = mi.test_models(full, null, method="D3")
    assert_test_equal(d3, "D3", ref, rtol=1e-3)
    assert not d3.refit


def test_d3_loglik_at_own_estimates_is_the_ml_loglik(exam_ml) -> None:
    """The likelihood D3 evaluates at pooled values is the one the fit maximised."""
    for fit in exam_ml[0].fits[:3]:
        p = fit.covariance_parameters()
        assert fit.loglik_at(p["beta"], p["tau"], p["sigma2"]) == pytest.approx(fit.loglik, rel=1e-8)


def test_d3_refits_reml_fits_by_ml_as_mitml(exam_reml, exam_ml) -> None:
    null_reml = mi.analyse(exam_imputations(), NULL_FORMULA, reml=True, df_com=float("inf"))
    res = mi.test_models(exam_reml, null_reml, method="D3")
    assert res.refit
    ref = mi.test_models(*exam_ml, method="D3")
    for col in TEST_COLS.values():
        assert getattr(res, col) == pytest.approx(getattr(ref, col), rel=1e-4), col


def test_analyse_jsp_with_a_categorical_predictor_equals_mitml() -> None:
    data = pd.read_csv(FIX / "jomo_jsp_imputations.csv.gz")
    data["fluent"] = data["fluent"].map({0: "0", 1: "1", 2: "2"})  # nominal, as in R
    with pytest.warns(PoolingWarning, match=r"above 0.5 for fluent\[T.1\] \(0.53\), fluent\[T.2\]"):
        res = mi.analyse(data, "english ~ ravens + fluent + sex + behaviour + (1 | clus)",
                         reml=True, df_com=float("inf"))
    assert_estimates_equal(res.tidy(), mitml_estimates("pool_jsp_estimates.csv"), rtol=1e-4,
                           p_rtol=1e-3)
    icc = res.varcomp().set_index("term1").loc["ICC", "mean"]
    assert icc == pytest.approx(read("pool_jsp_varcomp.csv").iloc[2]["Estimate"], rel=1e-3)


def test_analyse_an_imputation_result_of_our_sampler() -> None:
    """impute() -> analyse(): the ImputationResult route (ExamScores, the original data)."""
    data = exam_imputations().query("Imputation == 0")[["clus", "normexam", "standlrt", "sex"]]
    model = mi.ImputationModel(cluster="clus",
                               variables={"normexam": "continuous", "standlrt": "continuous"})
    res = mi.impute(data, model, n_imputations=5, burn=200, between=20, chains=1, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PoolingWarning)  # m = 5: FMI may exceed 0.5
        pooled = mi.analyse(res, "normexam ~ standlrt + sex + (1 | clus)")
    assert pooled.m == 5 and pooled.terms == ("Intercept", "standlrt", "sex[T.girl]")
    tidy = pooled.tidy().set_index("term")
    assert np.isfinite(tidy.to_numpy(dtype=float)).all()
    # the slope of standlrt is estimated near 0.56 in every analysis of these data (mitml: 0.557)
    assert tidy.loc["standlrt", "conf_low"] < 0.56 < tidy.loc["standlrt", "conf_high"]


def test_models_that_are_not_fits_of_nested_models_are_refused(exam_ml) -> None:
    """Only the fixed-effect names were compared: a null model with another response, fewer
    rows, another family or another grouping factor gave p-values (negative D3 statistics
    reported as p = 1, p = 0.002 where D1 gave 0.59)."""
    full, _ = exam_ml
    data = exam_imputations()
    other = {"response": mi.analyse(data, "standlrt ~ sex + (1 | clus)", reml=False),
             "rows": mi.analyse(data[data["standlrt"] > -2], NULL_FORMULA, reml=False)}
    with pytest.raises(mi.SpecError, match=r"different responses in imputation 1 \('normexam' against 'standlrt'\)"):
        mi.test_models(full, other["response"], method="D3")
    with pytest.raises(mi.SpecError, match=r"different numbers of rows in imputation 1"):
        mi.test_models(full, other["rows"])
    data = data.assign(grp=data["student"] % 7 if "student" in data else np.arange(len(data)) % 7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # grp is noise: its variance is 0
        null = mi.analyse(data, NULL_FORMULA.split("(")[0] + "(1 | grp)", reml=False)
    with pytest.raises(mi.SpecError, match=r"grouped by \['grp'\], which the full model lacks"):
        mi.test_models(full, null, method="D3")
