"""Bad dispersion formulas are refused with messages that name the formula, the column and the fix."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mlimpute as mi

F = "y ~ x + (1 | g)"


@pytest.fixture(scope="module")
def df():
    rng = np.random.default_rng(5)
    J, n = 25, 8
    g = np.repeat(np.arange(J), n)
    x = rng.normal(size=J * n)
    sex = rng.choice(["boy", "girl"], J * n)
    e = rng.normal(size=J * n) * np.where(sex == "girl", 1.5, 1.0)
    y = 1 + 0.5 * x + rng.normal(0, 0.7, J)[g] + e
    return pd.DataFrame({"y": y, "x": x, "g": g, "sex": sex, "const": 2.0, "x2": 2 * x})


def test_unknown_column(df):
    with pytest.raises(mi.DataError, match="column 'sexx' in formula '~ sexx' is not in the data; did you mean 'sex'"):
        mi.lmm(F, df, dispersion="~ sexx")


def test_missing_values_follow_na_action(df):
    holes = df.assign(sex=df["sex"].where(df.index % 40 != 3))
    with pytest.raises(mi.DataError, match=r"columns 'sex' \(5\) have missing values.*na_action='drop'"):
        mi.lmm(F, holes, dispersion="~ sex")
    dropped = mi.lmm(F, holes, dispersion="~ sex", na_action="drop")
    complete = mi.lmm(F, holes.dropna().reset_index(drop=True), dispersion="~ sex")
    assert dropped.nobs == len(df) - 5
    assert dropped.loglik == pytest.approx(complete.loglik, abs=1e-8)


@pytest.mark.parametrize("bad", ["~ sex + (1 | g)", "(1 | g)", "~ x + (1 + x || g)"])
def test_random_term(df, bad):
    with pytest.raises(mi.SpecError, match=r"dispersion .* has a random term \('\|'\).*remove the bar term"):
        mi.lmm(F, df, dispersion=bad)


def test_constant_column(df):
    with pytest.raises(mi.DataError, match=r"dispersion column 'const' of '~ sex \+ const' is constant \(2\).*drop it"):
        mi.lmm(F, df, dispersion="~ sex + const")


def test_dependent_columns(df):
    with pytest.raises(mi.DataError, match=r"columns of dispersion formula '~ x \+ x2' .* linearly dependent: 'x2' is a combination of .*'x'"):
        mi.lmm(F, df, dispersion="~ x + x2")
    # without the intercept both dummies of sex are there, and together they are the intercept (σ²):
    # refused before that, with what to write (test_malformed)
    with pytest.raises(mi.SpecError, match=r"removes the intercept.*write '~ sex'"):
        mi.lmm(F, df, dispersion="~ 0 + sex")


@pytest.mark.parametrize("bad, match", [
    ("y ~ sex", "has a left-hand side 'y'; .* one-sided, like '~ sex'"),
    ("~ sex ~ x", "more than one '~'"),
    ("~ ", "is empty"),
    ("~ 1", "no column besides the intercept, which is the residual variance"),
    ("~ sex +", "cannot read the dispersion formula"),
    # the intercept is σ²: a fix "remove it from the formula" for one level of sex could not be followed (helper 39)
    ("~ 0 + sex", r"removes the intercept, which is the residual variance σ² itself .*: write '~ sex'"),
    ("~ sex - 1", r"removes the intercept.*: write '~ sex'"),
    ("~ -1", r"removes the intercept.*: leave dispersion out"),
    ("~ sex + 1 - 1", r"removes the intercept.*: write '~ sex'"),   # the last mark wins, as in R
])
def test_malformed(df, bad, match):
    with pytest.raises(mi.SpecError, match=match):
        mi.lmm(F, df, dispersion=bad)


def test_not_a_string(df):
    with pytest.raises(mi.SpecError, match="one-sided formula string like '~ sex', got list"):
        mi.lmm(F, df, dispersion=["sex"])


def test_one_sided_without_tilde_is_accepted(df):
    assert mi.lmm(F, df, dispersion="sex").loglik == pytest.approx(mi.lmm(F, df, dispersion="~ sex").loglik, abs=1e-9)


def test_glmm_has_no_dispersion(df):
    with pytest.raises(mi.SpecError, match="glmm\\(\\) got unknown option 'dispersion'"):
        mi.glmm("y ~ x + (1 | g)", df.assign(y=(df.y > 1).astype(int)), dispersion="~ sex")


def test_gamma_for_a_fit_without_variance_function(df):
    fit = mi.lmm(F, df)
    p = fit.covariance_parameters()
    assert "gamma" not in p and fit.dispersion is None and fit.dispersion_params.empty
    with pytest.raises(mi.SpecError, match="this fit has none"):
        fit.loglik_at(p["beta"], p["tau"], p["sigma2"], gamma=[0.1])


def test_unused_category(df):
    """A pandas Categorical level no row has: the fixed part's advice, not "drop the term" (helper 27)."""
    data = df.assign(sc=pd.Categorical(df["sex"], categories=["boy", "girl", "other"]))
    with pytest.raises(mi.DataError, match=r"'sc\[T.other\]' of '~ sc' is constant \(0\).*"
                                           r"drop it with .cat.remove_unused_categories\(\)"):
        mi.lmm(F, data, dispersion="~ sc")


@pytest.mark.parametrize("level_rows, constant", [(1, False), (6, True)])
def test_a_variance_running_to_zero_is_named(level_rows, constant):
    """A level with one row, or whose y is constant, whose variance runs to 0 (helper 27's data):
    the fit said nothing naming it (γ −16 with an SE in the hundreds) or leaked numpy's overflow
    warnings. (A one-row level can have a finite optimum too: then nothing is said.)"""
    import warnings

    rng = np.random.default_rng(5)
    J, n = 25, 8
    g = np.repeat(np.arange(J), n)
    x, sex = rng.normal(size=J * n), rng.choice(["boy", "girl"], J * n)
    y = 1 + 0.5 * x + rng.normal(0, 0.7, J)[g] + rng.normal(size=J * n) * np.where(sex == "girl", 1.5, 1.0)
    i = np.arange(J * n)
    data = pd.DataFrame({"y": y, "x": x, "g": g})
    if constant:
        data["grp"] = np.where(i < level_rows, "c", np.where(i % 2, "a", "b"))
        data.loc[data.grp == "c", "y"] = 2.5
    else:
        data["grp"] = np.where(i == 7, "c", np.where(i % 2, "a", "b"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = mi.lmm(F, data, dispersion="~ grp")
    messages = [str(w.message) for w in caught]
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], messages
    assert any("toward 0 or infinity for 'grp[T.c]' (γ = " in m and f", {level_rows} row" in m
               and "merge that level with another or drop the term" in m for m in messages), messages
    assert fit.dispersion_params["grp[T.c]"] < -10
    p = fit.covariance_parameters()
    with pytest.raises(mi.DataError, match="numerically singular at these parameters"):
        fit.loglik_at(p["beta"], p["tau"], p["sigma2"], gamma=np.array([0.0, -60.0]))


def test_variance_function_without_intercept():
    """The imputation side's variance= likewise ("linearly dependent (with the intercept); drop
    one" could not be followed either; helper 39)."""
    with pytest.raises(mi.SpecError, match=r"variance='~ 0 \+ sex' removes the intercept, which is the baseline "
                                           r"variance itself .*: write '~ sex'"):
        mi.Variable("continuous", variance="~ 0 + sex")
    with pytest.raises(mi.SpecError, match=r"write '~ sex \+ \(1 \| g\)'"):
        mi.Variable("continuous", variance="~ sex + (1 | g) - 1")
    mi.Variable("continuous", variance="~ sex - 1 + 1")   # put back: accepted (helper 40)
