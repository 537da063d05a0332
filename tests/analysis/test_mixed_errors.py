"""Bad input is refused with messages that name the column, the value and the fix;
singular fits and non-convergence are reported through ``singular``/``converged`` and a warning."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import mlimpute as mi


@pytest.fixture(scope="module")
def df():
    rng = np.random.default_rng(3)
    J, n = 20, 10
    g = np.repeat(np.arange(J), n)
    x = rng.normal(size=J * n)
    y = 1 + 0.5 * x + rng.normal(0, 0.7, J)[g] + rng.normal(size=J * n)
    yb = (y > 1).astype(int)
    return pd.DataFrame({"y": y, "x": x, "g": g, "yb": yb, "h": g % 4, "label": np.where(yb == 1, "yes", "no")})


def test_unknown_column(df):
    with pytest.raises(mi.DataError, match="column 'xx' in formula .* is not in the data; did you mean 'x'"):
        mi.lmm("y ~ xx + (1 | g)", df)
    with pytest.raises(mi.DataError, match="column 'school' .* not in the data"):
        mi.glmm("yb ~ x + (1 | school)", df)


def test_what_an_r_user_writes(df):
    """R's idioms get what to write instead (helper 32): factor(), cbind(), REML=; and
    formulaic's colour codes do not reach the message."""
    with pytest.raises(mi.DataError, match=r"column 'factor' .* R's factor\(x\) is C\(x\) here"):
        mi.lmm("y ~ factor(h) + (1 | g)", df)
    with pytest.raises(mi.SpecError, match=r"'\.' \(R's all other columns\) is not read here; name the predictors"):
        mi.lmm("y ~ . + (1 | g)", df)
    with pytest.raises(mi.DataError, match=r"R's sqrt\(x\) is np.sqrt\(x\) here"):
        mi.lmm("y ~ sqrt(x) + (1 | g)", df)   # helper 35: "did you mean 'x'?"
    with pytest.raises(mi.DataError, match=r"formulaic's cr\(x, df\) is a natural cubic"):
        mi.lmm("y ~ ns(x, 3) + (1 | g)", df)
    with pytest.raises(mi.DataError, match=r"mytransform\(\) is not a function formulaic knows"):
        mi.lmm("y ~ mytransform(x) + (1 | g)", df)
    with pytest.raises(mi.DataError, match=r"R's ordered\(x\) is C\(x, contr.poly\) here"):
        mi.lmm("y ~ ordered(h) + (1 | g)", df)
    with pytest.raises(mi.SpecError, match=r"R's binomial\(link='probit'\) is family='binomial', link='probit' here"):
        mi.glmm("yb ~ x + (1 | g)", df, family="binomial(link='probit')")
    with pytest.raises(mi.SpecError, match=r"a nested grouping needs the classifications .*cluster=\['g', 'h'\]"):
        mi.ImputationModel(cluster="g", variables={"x": "continuous"}, substantive="y ~ x + (1 | g/h)")
    with pytest.raises(mi.SpecError, match=r"a term is not valid Python .*factor\(x\) is C\(x\)"):
        mi.lmm("y ~ as.factor(h) + (1 | g)", df)   # ast.parse's bare SyntaxError had escaped (helper 34)
    model = mi.ImputationModel(cluster="g", variables={"x": "continuous"}, substantive="y ~ factor(h) + x + (1 | g)")
    with pytest.raises(mi.DataError, match=r"column\(s\) 'factor' of substantive=.*R's factor\(x\) is C\(x\)") as err:
        mi.impute(df.assign(x=df["x"].where(df.index % 7 > 0)), model, n_imputations=1, burn=1, chains=1)
    assert "read by substantive=" not in str(err.value)   # the list of columns named 'h': not the culprit
    with pytest.raises(mi.DataError, match=r"not cbind\(successes, failures\): give each trial its own row"):
        mi.glmm("cbind(yb, 1 - yb) ~ x + (1 | g)", df)
    with pytest.raises(mi.SpecError, match=r"unknown option 'REML' \(R's REML is reml= here\)"):
        mi.lmm("y ~ x + (1 | g)", df, REML=False)
    with pytest.raises(mi.SpecError) as err:
        mi.lmm("y ~ exam score + (1 | g)", df)
    assert "\x1b" not in str(err.value) and "exam score" in str(err.value)
    assert str(mi.DataError("\x1b[1;31mname\x1b[0m")) == "name"


def test_grouping_factor_with_missing_values(df):
    bad = df.assign(g=df["g"].astype(float).where(df.index % 50 != 7))
    with pytest.raises(mi.DataError, match=r"grouping factor 'g' has 4 missing values \(index labels 7, 57, 107, 157\).*drop those rows"):
        mi.lmm("y ~ x + (1 | g)", bad)
    with pytest.raises(mi.DataError, match="grouping factor 'g' has 4 missing values"):
        mi.lmm("y ~ x + (1 | g)", bad, na_action="drop")  # never dropped silently
    # rows are named by the data's own index, not by position
    with pytest.raises(mi.DataError, match=r"\(index labels 1007, 1057, 1107, 1157\)"):
        mi.lmm("y ~ x + (1 | g)", bad.set_axis(bad.index + 1000))
    with pytest.raises(mi.DataError, match=r"first at index label r5\)"):
        mi.glmm("yb ~ x + (1 | g)", df.assign(yb=np.where(df.index == 5, 2, df["yb"]))
                .set_axis([f"r{i}" for i in df.index]))


def test_missing_values_elsewhere(df):
    bad = df.assign(x=df["x"].where(df.index % 10 != 0))
    with pytest.raises(mi.DataError, match=r"columns 'x' \(20\) have missing values.*na_action='drop'"):
        mi.lmm("y ~ x + (1 | g)", bad)
    fit = mi.lmm("y ~ x + (1 | g)", bad, na_action="drop")
    assert fit.nobs == 180


def test_binary_outcome_not_0_1(df):
    bad = df.assign(yb=np.where(df.index == 5, 2, df["yb"]))
    with pytest.raises(mi.DataError, match=r"response 'yb' has values other than 0 and 1 \(2\.0; first at index label 5\)"):
        mi.glmm("yb ~ x + (1 | g)", bad)
    three = df.assign(label=np.where(df.index % 3 == 0, "maybe", df["label"]))
    with pytest.raises(mi.DataError, match=r"response 'label' has 3 categories \(maybe, no, yes\).*needs two"):
        mi.glmm("label ~ x + (1 | g)", three)


def test_count_outcome_not_a_count(df):
    with pytest.raises(mi.DataError, match="response 'y' has values that are not non-negative integers"):
        mi.glmm("y ~ x + (1 | g)", df, family="poisson")


def test_non_numeric_lmm_response(df):
    with pytest.raises(mi.DataError, match="response 'label' is not numeric.*glmm\\(family='binomial'\\)"):
        mi.lmm("label ~ x + (1 | g)", df)


def test_dependent_fixed_effects(df):
    # x2 = 2x: the later column is the one named (lme4 drops it), whatever the units
    for scale in (1.0, 1e14, 1e-12):
        with pytest.raises(mi.DataError, match=r"linearly dependent: 'x2' is a combination of 'Intercept', 'x' "
                                               r"in these data \(to within 1e-7 of the columns' scale\); remove"):
            mi.lmm("y ~ x + x2 + (1 | g)", df.assign(x=scale * df["x"], x2=2 * scale * df["x"]))
    with pytest.raises(mi.DataError, match=r"'c' is a combination of 'Intercept', 'x'"):
        mi.lmm("y ~ x + c + (1 | g)", df.assign(c=3.0))
    with pytest.raises(mi.DataError, match=r"'x2' is a combination"):   # lme4 drops it too (tolerance 1e-7)
        mi.lmm("y ~ x + x2 + (1 | g)", df.assign(x2=df["x"] + 1e-9 * np.random.default_rng(0).normal(size=len(df))))


def test_large_scale_predictor_fits(df):
    """A column in huge units is not dependent: the rank check was on unscaled columns and
    refused x·1e14, blaming the intercept. Scaled by 1e3 or 1e14 the fit is the same, its
    coefficient rescaled; a time stamp (offset 1.7e12) is fitted, not refused."""
    a = mi.lmm("y ~ ts + (1 | g)", df.assign(ts=df["x"]))
    for scale in (1e3, 1e14):
        b = mi.lmm("y ~ ts + (1 | g)", df.assign(ts=scale * df["x"]))
        assert b.params["ts"] * scale == pytest.approx(a.params["ts"], rel=1e-8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mi.ConvergenceWarning)
        mi.lmm("y ~ ts + (1 | g)", df.assign(ts=1.7e12 + 1e6 * df["x"]))


def test_degenerate_responses(df):
    """A constant response, one equal to a predictor, or one with an infinite value: numpy
    failed in the middle of the fit; a binary outcome of one category ran to intercept −29.7
    (SE 7e3) without a word. Now refused, naming the response."""
    with pytest.raises(mi.DataError, match=r"response 'y' takes the single value 3 in the rows used"):
        mi.lmm("y ~ x + (1 | g)", df.assign(y=3.0))
    with pytest.raises(mi.DataError, match=r"response 'y' is a linear combination of its fixed effects \('x'\)"):
        mi.lmm("y ~ x + (1 | g)", df.assign(y=2 * df["x"] + 1))
    with pytest.raises(mi.DataError, match=r"response 'y' holds infinite values \(first at index label 4\)"):
        mi.lmm("y ~ x + (1 | g)", df.assign(y=np.where(np.arange(len(df)) == 4, np.inf, df["y"])))
    with pytest.raises(mi.DataError, match=r"response 'yb' takes the single value 0 .*needs both categories"):
        mi.glmm("yb ~ x + (1 | g)", df.assign(yb=0), family="binomial")


def test_column_names_the_formula_language_reads_otherwise(df):
    """R-style dotted names get the backtick hint (formulaic reads x.v as an attribute); a
    non-ASCII grouping column is a column name; offset() says it is not supported."""
    d = df.rename(columns={"x": "x.v"}).assign(**{"groupé": df["g"]})
    with pytest.raises((mi.SpecError, mi.DataError), match=r"go in backticks: `x.v`"):
        mi.lmm("y ~ x.v + (1 | g)", d)
    assert mi.lmm("y ~ `x.v` + (1 | groupé)", d).nobs == len(d)
    with pytest.raises(mi.DataError, match=r"offset\(\) terms are not supported"):
        mi.lmm("y ~ offset(h) + (1 | g)", df)


def test_non_identified_fit_says_why(df):
    """A fixed effect the random effects duplicate: the gradient is far below lme4's tolerance
    and the Hessian singular; the warning said 'did not converge (gradient 5.7e-09 ...)'."""
    with pytest.warns(mi.ConvergenceWarning, match=r"Hessian is not positive definite at the optimum .* not "
                                                   r"identified by these data"):
        mi.lmm("y ~ C(g) + (1 | g)", df)


def test_nullable_string_columns_are_categories(df):
    """pandas' nullable string dtype (df.convert_dtypes(), string[pyarrow]) as a predictor: the
    analysis failed with numpy's 'could not convert string to float'; it is a factor, as
    object columns are."""
    d = df.assign(sex=np.where(df["h"] % 2 == 0, "boy", "girl"))
    want = mi.lmm("y ~ x + sex + (1 | g)", d).params
    for dtype in ("string", "string[pyarrow]"):
        got = mi.lmm("y ~ x + sex + (1 | g)", d.astype({"sex": dtype})).params
        np.testing.assert_allclose(got, want, rtol=1e-10)
    assert mi.lmm("y ~ x + (1 | g)", d.astype({"sex": "string"}), dispersion="~ sex").converged


def test_stateful_transforms_read_their_column(df):
    """scale(x), center(x), poly(x, 2): formulaic reports no column for them, so x was left out
    of the frame and the fit said 'name x is not defined'. The fit equals the one on the
    transformed column."""
    d = df.assign(xs=(df["x"] - df["x"].mean()) / df["x"].std())
    a, b = mi.lmm("y ~ scale(x) + (1 | g)", df), mi.lmm("y ~ xs + (1 | g)", d)
    np.testing.assert_allclose(a.params.to_numpy(), b.params.to_numpy(), rtol=1e-8)
    assert mi.lmm("y ~ center(x) + (1 | g)", df).params.iloc[1] == pytest.approx(b.params.iloc[1] / df["x"].std(), rel=1e-8)
    assert mi.lmm("y ~ poly(x, 2) + (1 | g)", df).nobs == len(df)
    assert mi.lmm("y ~ 1 + (1 | g)", df, dispersion="~ scale(x)").loglik == pytest.approx(
        mi.lmm("y ~ 1 + (1 | g)", d, dispersion="~ xs").loglik, abs=1e-8)
    with pytest.raises(mi.DataError, match=r"columns 'x' \(1\) have missing values"):
        mi.lmm("y ~ scale(x) + (1 | g)", df.assign(x=df["x"].where(df.index != 3)))


def test_a_column_named_intercept_is_refused(df):
    """formulaic named both the intercept and the column 'Intercept': the fit silently lost
    its intercept; in imputation two parameters had the same name."""
    with pytest.raises(mi.DataError, match=r"reads a column named 'Intercept'.*rename the column"):
        mi.lmm("y ~ x + Intercept + (1 | g)", df.assign(Intercept=df["x"] ** 2))
    with pytest.raises(mi.DataError, match=r"covariate 'Intercept' has the name of the intercept term"):
        mi.impute(df.assign(Intercept=df["x"] ** 2), mi.ImputationModel(cluster="g", variables={"y": "continuous"},
                                                                     covariates=["Intercept"]), seed=1)


def test_messages_that_point_at_the_cause(df):
    """An unused category, a date column, as many fixed effects as rows (a number column
    stored as text: a level per value): numpy's errors, or advice that led nowhere, before."""
    d = df.assign(f=pd.Categorical(np.where(df["h"] < 2, "u", "v"), categories=["u", "v", "zz"]))
    with pytest.raises(mi.DataError, match=r"'f\[T.zz\]' is zero .*remove_unused_categories"):
        mi.lmm("y ~ x + f + (1 | g)", d)
    with pytest.raises(mi.DataError, match=r"column 't' .* holds dates or durations; convert it to a number"):
        mi.lmm("y ~ t + (1 | g)", df.assign(t=pd.Timestamp("2020-01-01") + pd.to_timedelta(df["h"], unit="D")))
    small = df.iloc[:40].assign(t=[f"{v:.6f}" for v in df["x"].iloc[:40]])
    with pytest.raises(mi.DataError, match=r"has 40 columns for 40 rows.*\['t'\] hold text.*pandas.to_numeric"):
        mi.lmm("y ~ t + (1 | g)", small)


def test_random_effects_counted_per_term_as_lme4():
    """lme4's check.nobs.vs.nRE counts each term's random effects: 40 groups of a 60-row
    dataset, (1 + x | g) has 80 >= 60 and is refused, (1 + x || g) is two terms of 40 and fits
    (it was refused: the effects were summed over the factor's terms)."""
    rng = np.random.default_rng(1)
    d = pd.DataFrame({"g": np.arange(60) % 40, "x": rng.normal(size=60)})
    d["y"] = d.x + rng.normal(size=60)
    with pytest.raises(mi.DataError, match=r"'g' has 40 levels x 2 random effects = 80 >= 60 observations"):
        mi.lmm("y ~ x + (1 + x | g)", d)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mi.ConvergenceWarning)   # tiny groups: a boundary fit is likely
        fit = mi.lmm("y ~ x + (1 + x || g)", d)
    assert np.isfinite(fit.loglik)
